//! The job queue (`/v1/jobs`), end to end: real gateways, a real mock upstream, real stores.
//!
//! Every test in [`both_stores!`] runs twice, against SQLite and against Postgres (a throwaway
//! cluster this binary starts once; a database per test). Without Postgres installed, the
//! Postgres half says so loudly and how to install it, and fails under `REQUIRE_SERVICES=1`.
//!
//! Times are short on purpose (leases of 1 s, a fast mock), so the suite stays quick; every wait
//! is bounded and generous.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::jobs::{Jobs, Kind, job_body, store};
use support::{GatewayProcess, Mock, gateway, metric};

const LIMIT: Duration = Duration::from_secs(20);

/// A fixed-mode gateway in front of `mock`, its jobs in `store`, with `extra` flags.
fn jobs_gateway(mock: &Mock, store: &str, extra: &[&str]) -> gateway::embed::Running {
    let mut flags = vec!["--jobs-store", store];
    flags.extend_from_slice(extra);
    gateway("fixed", &mock.url(), &flags)
}

/// Declares each listed `async fn name(kind, test)` as two tests, `sqlite::name` and
/// `postgres::name`.
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Sqlite, concat!("jobs_sqlite_", stringify!($name))).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Postgres, concat!("jobs_postgres_", stringify!($name))).await;
                }
            )*
        }
    };
}

both_stores!(
    submit_poll_list_and_count,
    cancel_queued_and_in_progress,
    another_key_sees_nothing,
    a_full_queue_is_503,
    concurrent_submits_never_queue_past_the_limit,
    ttl_expires_and_retention_deletes,
    an_expired_lease_goes_back_then_fails,
    sigkill_loses_no_job,
);

async fn submit_poll_list_and_count(kind: Kind, test: &str) {
    let Some(store) = store(kind, test) else {
        return;
    };
    let mock = Mock::fast();
    let gw = jobs_gateway(&mock, &store, &[]);
    let jobs = Jobs::new(&gw.url(), None);

    let (status, headers, first) = jobs.submit_with(&job_body("1"), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let id = first["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("job_"), "{first}");
    assert_eq!(headers["location"], format!("/v1/jobs/{id}").as_str());
    assert_eq!(first["object"], "job");
    assert_eq!(first["status"], "queued");
    assert_eq!(first["model"], "gpt-4o");
    assert!(
        first["queue_position"].as_u64().is_some_and(|p| p >= 1),
        "{first}"
    );
    let second = jobs.submit(&job_body("2"), &[]).await;
    let third = jobs.submit(&job_body("3"), &[]).await;

    for id in [&id, &second, &third] {
        let done = jobs.wait_status(id, "completed", LIMIT).await;
        assert_eq!(done["attempts"], 1, "{done}");
        assert!(done["queue_position"].is_null(), "{done}");
        assert!(done["processing_ms"].as_i64().is_some(), "{done}");
        assert!(done["started_at"].as_i64().is_some(), "{done}");
        // The upstream's own answer, whole.
        assert_eq!(done["result"]["object"], "chat.completion", "{done}");
        assert!(
            done["result"]["choices"][0]["message"]["content"].is_string(),
            "{done}"
        );
    }

    let (status, page) = jobs.list("limit=2").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true, "{page}");
    assert_eq!(
        page["data"][0]["id"],
        third.as_str(),
        "newest first: {page}"
    );
    assert_eq!(page["first_id"], third.as_str());
    assert_eq!(page["last_id"], second.as_str());
    assert!(
        page["data"][0].get("result").is_none(),
        "lists carry no results"
    );
    let (_, rest) = jobs.list(&format!("after={second}")).await;
    assert_eq!(rest["data"].as_array().map(Vec::len), Some(1), "{rest}");
    assert_eq!(rest["has_more"], false);
    let (_, completed) = jobs.list("status=completed").await;
    assert_eq!(
        completed["data"].as_array().map(Vec::len),
        Some(3),
        "{completed}"
    );

    let stats = jobs.stats().await;
    assert_eq!(stats["completed"], 3, "{stats}");
    assert_eq!(stats["queued"], 0, "{stats}");
    assert_eq!(stats["workers"], 4, "{stats}");
    assert_eq!(stats["capacity"], 10_000, "{stats}");
    let base = gw.url();
    assert_eq!(metric(&base, "gateway_jobs_submitted_total").await, 3.0);
    assert_eq!(
        metric(&base, "gateway_jobs_finished_total{status=\"completed\"}").await,
        3.0
    );
    assert_eq!(metric(&base, "gateway_jobs_wait_seconds_count").await, 3.0);
    // The gauges are read from the store once a second.
    mock_llm::testing::wait_for("gateway_jobs{status=completed} = 3", LIMIT, || async {
        (metric(&base, "gateway_jobs{status=\"completed\"}").await == 3.0).then_some(())
    })
    .await;
}

async fn cancel_queued_and_in_progress(kind: Kind, test: &str) {
    let Some(store) = store(kind, test) else {
        return;
    };
    let mock = Mock::fast();
    let gw = jobs_gateway(&mock, &store, &["--job-workers", "1"]);
    let jobs = Jobs::new(&gw.url(), None);
    // The one worker takes the slow job; the second waits behind it.
    let slow = jobs
        .submit(&job_body("slow"), &[("x-mock-ttft-ms", "20000")])
        .await;
    jobs.wait_status(&slow, "in_progress", LIMIT).await;
    mock.wait_stats("the upstream request started", LIMIT, |s| {
        s.chat.active == 1
    })
    .await;
    let waiting = jobs.submit(&job_body("waiting"), &[]).await;
    let (_, queued) = jobs.get(&waiting).await;
    assert_eq!(queued["queue_position"], 1, "{queued}");

    let (status, cancelled) = jobs.cancel(&waiting).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");

    let (status, cancelled) = jobs.cancel(&slow).await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    // The upstream saw its request dropped, long before its first token was due.
    mock.wait_stats(
        "the upstream request cancelled",
        Duration::from_secs(5),
        |s| s.chat.cancelled == 1,
    )
    .await;
    let (status, again) = jobs.cancel(&slow).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");
    assert_eq!(again["error"]["code"], "job_not_cancellable");
    let (_, after) = jobs.get(&slow).await;
    assert_eq!(
        after["status"], "cancelled",
        "the worker wrote nothing after: {after}"
    );
    assert_eq!(mock.stats().await.chat.completed, 0);
}

async fn another_key_sees_nothing(kind: Kind, test: &str) {
    let Some(store) = store(kind, test) else {
        return;
    };
    let mock = Mock::fast();
    let gw = jobs_gateway(&mock, &store, &["--api-key", "k1", "--api-key", "k2"]);
    let mine = Jobs::new(&gw.url(), Some("k1"));
    let theirs = Jobs::new(&gw.url(), Some("k2"));
    let id = mine.submit(&job_body("mine"), &[]).await;
    let (status, body) = theirs.get(&id).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "job_not_found");
    let (status, _) = theirs.cancel(&id).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = theirs.list("").await;
    assert_eq!(list["data"], json!([]), "{list}");
    let (status, body) = mine.get(&id).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = Jobs::new(&gw.url(), None).get(&id).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

async fn a_full_queue_is_503(kind: Kind, test: &str) {
    let Some(store) = store(kind, test) else {
        return;
    };
    let mock = Mock::fast();
    let gw = jobs_gateway(
        &mock,
        &store,
        &["--job-workers", "0", "--max-queued-jobs", "2"],
    );
    let jobs = Jobs::new(&gw.url(), None);
    for expected in [1, 2] {
        let (status, _, job) = jobs.submit_with(&job_body("fill"), &[]).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        assert_eq!(job["queue_position"], expected, "{job}");
    }
    let (status, headers, refused) = jobs.submit_with(&job_body("over"), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert_eq!(refused["error"]["code"], "job_queue_full");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--max-queued-jobs 2")),
        "{refused}"
    );
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(
        metric(
            &gw.url(),
            "gateway_jobs_refused_total{reason=\"queue_full\"}"
        )
        .await,
        1.0
    );
    assert_eq!(jobs.stats().await["queued"], 2);
}

/// The limit holds for submits that race: each one counts the queue and inserts, and with
/// Postgres several of those transactions run at once (on every instance of a fleet). Two
/// gateways on one store, 48 submits at once, room for 5.
async fn concurrent_submits_never_queue_past_the_limit(kind: Kind, test: &str) {
    let Some(store) = store(kind, test) else {
        return;
    };
    let mock = Mock::fast();
    let flags = ["--job-workers", "0", "--max-queued-jobs", "5"];
    // SQLite is one instance's store (one writer); Postgres is the fleet's.
    let second = (kind == Kind::Postgres).then(|| jobs_gateway(&mock, &store, &flags));
    let first = jobs_gateway(&mock, &store, &flags);
    let urls: Vec<String> = std::iter::once(first.url())
        .chain(second.as_ref().map(|gw| gw.url()))
        .collect();
    let submits = (0..48).map(|n| {
        let jobs = Jobs::new(&urls[n % urls.len()], None);
        async move { jobs.submit_with(&job_body(&n.to_string()), &[]).await.0 }
    });
    let statuses = futures_util::future::join_all(submits).await;
    let accepted = statuses
        .iter()
        .filter(|s| **s == StatusCode::ACCEPTED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!((accepted, refused), (5, 43), "{statuses:?}");
    assert_eq!(Jobs::new(&urls[0], None).stats().await["queued"], 5);
}

async fn ttl_expires_and_retention_deletes(kind: Kind, test: &str) {
    let Some(store) = store(kind, test) else {
        return;
    };
    let mock = Mock::fast();
    let gw = jobs_gateway(
        &mock,
        &store,
        &[
            "--job-workers",
            "0",
            "--job-ttl-secs",
            "1",
            "--job-retention-secs",
            "2",
        ],
    );
    let jobs = Jobs::new(&gw.url(), None);
    let id = jobs.submit(&job_body("forgotten"), &[]).await;
    let expired = jobs.wait_status(&id, "expired", LIMIT).await;
    assert_eq!(expired["error"]["code"], "job_expired", "{expired}");
    // Kept for the retention after it finished, then deleted.
    let deadline = Instant::now() + LIMIT;
    loop {
        let (status, body) = jobs.get(&id).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "still there: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&gw.url(), "gateway_jobs_finished_total{status=\"expired\"}").await,
        1.0
    );
}

async fn an_expired_lease_goes_back_then_fails(kind: Kind, test: &str) {
    let Some(url) = store(kind, test) else { return };
    let mock = Mock::fast();
    let gw = jobs_gateway(
        &mock,
        &url,
        &[
            "--job-workers",
            "0",
            "--job-lease-secs",
            "1",
            "--job-max-attempts",
            "2",
        ],
    );
    let jobs = Jobs::new(&gw.url(), None);
    let first = jobs.submit(&job_body("first"), &[]).await;
    let second = jobs.submit(&job_body("second"), &[]).await;
    // The test is a worker that claims and then stalls: it never renews, never finishes.
    let stalled = gateway::jobs::store::open(&url.parse().expect("store url"), 2)
        .await
        .expect("open the store")
        .expect("a store");
    let claim = |n: u32| {
        let stalled = &stalled;
        async move {
            let now = gateway::jobs::now_ms();
            stalled
                .claim(&format!("stalled:{n}"), now, now + 1000)
                .await
                .expect("claim")
                .expect("a queued job")
        }
    };
    assert_eq!(claim(0).await.job.id, first);
    let back = jobs.wait_status(&first, "queued", LIMIT).await;
    assert_eq!(back["attempts"], 1, "{back}");
    // Back in the queue, behind the job that waited all along: no waiting job moved back.
    assert_eq!(back["queue_position"], 2, "{back}");
    assert_eq!(claim(1).await.job.id, second);
    assert_eq!(claim(2).await.job.id, first);
    let failed = jobs.wait_status(&first, "failed", LIMIT).await;
    assert_eq!(failed["error"]["code"], "lease_expired", "{failed}");
    assert_eq!(failed["attempts"], 2, "{failed}");
    let again = jobs.wait_status(&second, "queued", LIMIT).await;
    assert_eq!(again["attempts"], 1, "{again}");
    assert!(metric(&gw.url(), "gateway_jobs_lease_expired_total").await >= 3.0);
}

/// The crash test: 200 jobs against a paced upstream, the gateway SIGKILLed while some run,
/// started again on the same store: every job completes, none is lost, and no waiting job's
/// position ever grows.
async fn sigkill_loses_no_job(kind: Kind, test: &str) {
    const JOBS: usize = 200;
    let Some(store) = store(kind, test) else {
        return;
    };
    let mock = Mock::fast_with(&["--ttft-ms", "60"]);
    let upstream = mock.url();
    let flags = [
        "--upstream",
        &upstream,
        "--jobs-store",
        &store,
        "--job-workers",
        "8",
        "--job-lease-secs",
        "1",
    ];
    let mut first = GatewayProcess::start(&flags);
    let jobs = Jobs::new(&first.url(), None);
    let mut ids = Vec::with_capacity(JOBS);
    for n in 0..JOBS {
        ids.push(jobs.submit(&job_body(&n.to_string()), &[]).await);
    }
    let watched: Vec<String> = ids[JOBS - 20..].to_vec();
    let mut positions: HashMap<String, u64> = HashMap::new();
    // Kill it with jobs done, jobs running and jobs waiting.
    let deadline = Instant::now() + LIMIT;
    loop {
        check_positions(&jobs, &watched, &mut positions).await;
        if jobs.stats().await["completed"].as_u64() >= Some(40) {
            break;
        }
        assert!(Instant::now() < deadline, "no progress before the kill");
    }
    first.sigkill();
    let second = GatewayProcess::start(&flags);
    let jobs = Jobs::new(&second.url(), None);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        check_positions(&jobs, &watched, &mut positions).await;
        let stats = jobs.stats().await;
        if stats["completed"].as_u64() == Some(JOBS as u64) {
            break;
        }
        assert!(Instant::now() < deadline, "not all completed: {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ran_twice = 0;
    for id in &ids {
        let (_, job) = jobs.get(id).await;
        assert_eq!(job["status"], "completed", "{job}");
        if job["attempts"].as_u64() > Some(1) {
            ran_twice += 1;
        }
    }
    let chat = mock.stats().await.chat;
    println!(
        "{test}: {JOBS} jobs, 0 lost; {ran_twice} started twice (their lease expired with the \
         killed gateway); the upstream completed {} requests",
        chat.completed
    );
    assert!(
        ran_twice <= 8,
        "at most one per worker was running: {ran_twice}"
    );
    assert!(
        chat.completed as usize <= JOBS + ran_twice,
        "only a job whose lease expired may run to completion twice: {chat:?}"
    );
}

/// Reads the watched jobs' positions; a position may only go down while a job waits.
async fn check_positions(jobs: &Jobs, watched: &[String], seen: &mut HashMap<String, u64>) {
    for id in watched {
        let (_, job) = jobs.get(id).await;
        let Some(position) = job["queue_position"].as_u64() else {
            continue;
        };
        if let Some(before) = seen.insert(id.clone(), position) {
            assert!(
                position <= before,
                "{id}: position {before} then {position}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let store = store(Kind::Sqlite, "jobs_bad_requests").expect("sqlite");
    let mock = Mock::fast();
    let gw = jobs_gateway(&mock, &store, &[]);
    let jobs = Jobs::new(&gw.url(), None);
    let cases = [
        (
            json!({"model": "m", "stream": true, "messages": []}),
            "stream",
        ),
        (json!({"model": "m"}), "messages"),
        (json!({"messages": []}), "model"),
    ];
    for (body, param) in cases {
        let (status, _, error) = jobs.submit_with(&body, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error["error"]["param"], param, "{error}");
    }
    let (status, _, error) = jobs
        .submit_with(&job_body("x"), &[("x-gateway-deadline-ms", "5")])
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a bad plan is refused at submit: {error}"
    );
    let client = support::client();
    let raw = client
        .post(format!("{}/v1/jobs", gw.url()))
        .header("content-type", "application/json")
        .body("{\"model\":")
        .send()
        .await
        .expect("answer");
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let (_, error) = support::json_of(raw).await;
    assert_eq!(error["error"]["code"], "invalid_json", "{error}");
    let form = client
        .post(format!("{}/v1/jobs", gw.url()))
        .body("model=m")
        .send()
        .await
        .expect("answer");
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    for query in ["status=done", "limit=0", "limit=101", "after=job_nope"] {
        let (status, error) = jobs.list(query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {error}");
    }
    let (status, error) = jobs.get("job_nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["code"], "job_not_found");
    assert!(
        !std::path::Path::new(store.trim_start_matches("sqlite://")).exists(),
        "no job was accepted, so no file was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_off_is_a_404_naming_the_flag() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &["--jobs-store", "off"]);
    let jobs = Jobs::new(&gw.url(), None);
    let (status, _, error) = jobs.submit_with(&job_body("x"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert_eq!(error["error"]["code"], "jobs_disabled");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("--jobs-store")),
        "{error}"
    );
}

/// SIGTERM with a job running: at the drain deadline the job is dropped and its lease given
/// back, so it is queued again at once (not after its 30 s lease), its attempt not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_hands_a_running_job_back() {
    let store = store(Kind::Sqlite, "jobs_drain").expect("sqlite");
    let mock = Mock::fast();
    let upstream = mock.url();
    let mut gw = GatewayProcess::start(&[
        "--upstream",
        &upstream,
        "--jobs-store",
        &store,
        "--drain-secs",
        "1",
    ]);
    let jobs = Jobs::new(&gw.url(), None);
    let id = jobs
        .submit(&job_body("long"), &[("x-mock-ttft-ms", "20000")])
        .await;
    jobs.wait_status(&id, "in_progress", LIMIT).await;
    gw.sigterm();
    assert!(gw.exit_within(Duration::from_secs(10)).await.success());
    mock.wait_stats("the upstream request dropped", LIMIT, |s| {
        s.chat.cancelled == 1
    })
    .await;
    let log = gw.log();
    assert!(log.contains("lease given back"), "{log}");
    let reader = GatewayProcess::start(&[
        "--upstream",
        &upstream,
        "--jobs-store",
        &store,
        "--job-workers",
        "0",
    ]);
    let (_, job) = Jobs::new(&reader.url(), None).get(&id).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["attempts"], 0, "{job}");
    assert_eq!(job["queue_position"], 1, "{job}");
}

/// Jobs never pass through the response cache: the same deterministic job twice under
/// `--cache-mode all` reaches the upstream twice and moves no cache counter, while the same body
/// on `/v1/chat/completions` twice (the control) is answered once upstream, once from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_never_touch_the_response_cache() {
    let store = store(Kind::Sqlite, "jobs_no_cache").expect("sqlite");
    let mock = Mock::fast();
    let gw = jobs_gateway(&mock, &store, &["--cache-mode", "all"]);
    let jobs = Jobs::new(&gw.url(), None);
    let mut body = job_body("cached?");
    body["temperature"] = json!(0);
    for _ in 0..2 {
        let id = jobs.submit(&body, &[]).await;
        jobs.wait_status(&id, "completed", LIMIT).await;
    }
    assert_eq!(
        mock.stats().await.chat.requests,
        2,
        "each job went upstream"
    );
    let counters = [
        "gateway_cache_misses_total",
        "gateway_cache_hits_total{source=\"memory\"}",
        "gateway_cache_bypasses_total{reason=\"not_deterministic\"}",
        "gateway_cache_stores_total{tier=\"memory\"}",
    ];
    let text = support::metrics_text(&gw.url()).await;
    for series in counters {
        let value = common::prometheus::sample(&text, series)
            .unwrap_or_else(|| panic!("{series} missing from /metrics"));
        assert_eq!(value, 0.0, "{series}: a job touched the cache");
    }

    let client = support::client();
    for expected in ["miss", "hit"] {
        let response = client
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&body)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-gateway-cache"], expected);
        response.bytes().await.expect("body");
    }
    assert_eq!(
        mock.stats().await.chat.requests,
        3,
        "the control's hit stayed home"
    );
}

/// Two instances on one Postgres queue (issue 16): jobs submitted on A and running there when A
/// is SIGKILLed come back after their lease and are finished by B, each on its second attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_killed_instance_are_finished_by_another() {
    let test = "jobs_postgres_finished_by_another_instance";
    let Some(store) = store(Kind::Postgres, test) else {
        return;
    };
    let mock = Mock::fast_with(&["--ttft-ms", "1500"]);
    let upstream = mock.url();
    let flags = [
        "--upstream",
        &upstream,
        "--jobs-store",
        &store,
        "--job-workers",
        "2",
        "--job-lease-secs",
        "1",
    ];
    let mut a = GatewayProcess::start(&flags);
    let on_a = Jobs::new(&a.url(), None);
    let ids = [
        on_a.submit(&job_body("a1"), &[]).await,
        on_a.submit(&job_body("a2"), &[]).await,
    ];
    for id in &ids {
        on_a.wait_status(id, "in_progress", LIMIT).await;
    }
    let b = GatewayProcess::start(&flags);
    a.sigkill();
    let on_b = Jobs::new(&b.url(), None);
    for id in &ids {
        let job = on_b.wait_status(id, "completed", LIMIT).await;
        assert_eq!(job["attempts"], 2, "run once on A, then on B: {job}");
    }
    assert_eq!(
        metric(
            &b.url(),
            "gateway_jobs_finished_total{status=\"completed\"}"
        )
        .await,
        2.0,
        "B finished both"
    );
    assert!(metric(&b.url(), "gateway_jobs_lease_expired_total").await >= 2.0);
}

/// A store that stops answering refuses the submit with 503 `job_store_unavailable` and
/// `Retry-After`: the job was not accepted, and the client is told to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_is_a_503_job_store_unavailable() {
    // A cluster of its own: stopping the binary's shared one would break the other tests.
    let Some(postgres) =
        common::services::Postgres::start_for("jobs_postgres_store_that_is_down_is_a_503")
    else {
        return;
    };
    let store = postgres.create_database("down").expect("createdb");
    let mock = Mock::fast();
    let gw = jobs_gateway(&mock, &store, &[]);
    let jobs = Jobs::new(&gw.url(), None);
    jobs.submit(&job_body("before"), &[]).await;
    postgres.stop();
    let (status, headers, error) = jobs.submit_with(&job_body("after"), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
    assert_eq!(error["error"]["code"], "job_store_unavailable", "{error}");
    assert!(headers.contains_key("retry-after"), "{headers:?}");
}
