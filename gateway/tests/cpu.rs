//! Lesson: where CPU-bound work runs decides what else it slows down (`POST /v1/solve`).
//!
//! - `bounded`: at most `--cpu-workers` computations, at most `--cpu-queue` waiting; the rest get
//!   an immediate 503 with `Retry-After`, in OpenAI's error shape.
//! - `blocking`: every job goes through the counted blocking pool, which queues without limit.
//! - `inline`: the computation runs on the async worker; with one worker, even
//!   `/debug/health-async` waits for it.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Mock, client, get_json, metric, num, pool_gateway, wait_for};

async fn solve(client: &reqwest::Client, gateway: &str, work: &Value) -> reqwest::Response {
    tokio::time::timeout(
        Duration::from_secs(60),
        client
            .post(format!("{gateway}/v1/solve"))
            .json(&json!({ "work": work }))
            .send(),
    )
    .await
    .expect("an answer within 60 s")
    .unwrap()
}

/// 20 concurrent solves of `work`; returns (status, Retry-After, body) of each.
async fn burst(gateway: &str, work: u64) -> Vec<(StatusCode, Option<String>, Value)> {
    let client = client();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (client, gateway) = (client.clone(), gateway.to_owned());
            tokio::spawn(async move {
                let response = solve(&client, &gateway, &json!(work)).await;
                let status = response.status();
                let retry = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned());
                (status, retry, response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

/// A `work` that takes at least about `target` to compute on this machine, in this build.
///
/// From the fastest of three samples: a machine busy with other work only ever makes a sample
/// slower, and a slow sample would under-size the work (a "2 s" computation done in 300 ms
/// would let the test's probe through). Over-sizing only makes the test a little longer.
async fn calibrated(gateway: &str, target: Duration) -> u64 {
    let mut fastest = f64::INFINITY;
    for _ in 0..3 {
        let response = solve(&client(), gateway, &json!(2000)).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        fastest = fastest.min(num(&body, "/compute_ms"));
    }
    let per_unit_ms = fastest.max(0.01) / 2000.0;
    let work = (target.as_secs_f64() * 1e3 / per_unit_ms) as u64;
    work.clamp(1, gateway::lessons::solve::MAX_WORK)
}

#[tokio::test]
async fn bounded_mode_turns_excess_load_into_503_with_retry_after() {
    let mock = Mock::start();
    let gw = pool_gateway(
        "fixed",
        4,
        &mock.url(),
        &[
            "--cpu-mode",
            "bounded",
            "--cpu-workers",
            "1",
            "--cpu-queue",
            "2",
        ],
    );
    let work = calibrated(&gw.url(), Duration::from_millis(200)).await;
    let results = burst(&gw.url(), work).await;
    let ok: Vec<_> = results.iter().filter(|r| r.0 == StatusCode::OK).collect();
    let busy: Vec<_> = results
        .iter()
        .filter(|r| r.0 == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(ok.len() + busy.len(), 20, "{results:?}");
    assert!(
        ok.len() >= 3,
        "the running one and the queued ones finish: {results:?}"
    );
    assert!(
        !busy.is_empty(),
        "20 at once cannot fit 1 worker + 2 queued: {results:?}"
    );
    for (_, retry, body) in &busy {
        assert_eq!(retry.as_deref(), Some("1"), "{body}");
        assert_eq!(body["error"]["code"], "cpu_queue_full", "{body}");
        assert_eq!(body["error"]["type"], "server_error", "{body}");
    }
    // Each one counted where a dashboard looks for it.
    assert_eq!(
        metric(&gw.url(), "gateway_shed_total{reason=\"cpu_queue_full\"}").await,
        busy.len() as f64
    );
    for (_, _, body) in &ok {
        assert_eq!(body["cpu_mode"], "bounded", "{body}");
        assert_eq!(body["digest"].as_str().unwrap().len(), 64, "{body}");
    }
    // Some request waited for the single worker.
    assert!(
        ok.iter()
            .any(|(_, _, body)| num(body, "/queued_ms") > 0.5 * num(body, "/compute_ms")),
        "{ok:?}"
    );
}

#[tokio::test]
async fn blocking_mode_runs_every_job_on_the_counted_pool() {
    let mock = Mock::start();
    let gw = pool_gateway("fixed", 2, &mock.url(), &["--cpu-mode", "blocking"]);
    let client = client();
    let (_, before) = get_json(&client, &format!("{}/debug/pool", gw.url())).await;
    let results = burst(&gw.url(), 2000).await;
    for (status, _, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["cpu_mode"], "blocking", "{body}");
    }
    let digests: std::collections::HashSet<_> =
        results.iter().map(|r| r.2["digest"].clone()).collect();
    assert_eq!(digests.len(), 1, "same work, same digest");
    let (_, after) = get_json(&client, &format!("{}/debug/pool", gw.url())).await;
    assert!(
        num(&after, "/completed") - num(&before, "/completed") >= 20.0,
        "{before} -> {after}"
    );
    assert_eq!(after["max_threads"], 2, "{after}");
    assert!(num(&after, "/peak_running") >= 1.0, "{after}");
}

#[tokio::test]
async fn inline_mode_on_one_worker_delays_even_the_async_probe() {
    let mock = Mock::start();
    // The admin plane, on its own thread, sees when the one worker is taken (its runtime probe
    // stays pending): the condition to wait for before the probe, instead of a guessed sleep.
    let gw = pool_gateway(
        "fixed",
        4,
        &mock.url(),
        &[
            "--cpu-mode",
            "inline",
            "--worker-threads",
            "1",
            "--admin-listen",
            "127.0.0.1:0",
            "--readiness-interval-ms",
            "20",
        ],
    );
    let work = calibrated(&gw.url(), Duration::from_secs(2)).await;
    let url = gw.url();
    let long = tokio::spawn(async move { solve(&client(), &url, &json!(work)).await.status() });
    let readyz = format!("{}/readyz", gw.admin_url());
    wait_for(
        "the admin plane to see the only worker busy",
        Duration::from_secs(10),
        || async {
            let (_, body) = get_json(&client(), &readyz).await;
            let runtime = &body["checks"]["runtime"];
            (runtime["pending"] == true && num(runtime, "/delay_ms") >= 100.0).then_some(())
        },
    )
    .await;
    let started = Instant::now();
    let (status, _) = get_json(&client(), &format!("{}/debug/health-async", gw.url())).await;
    let waited = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(long.await.unwrap(), StatusCode::OK);
    assert!(
        waited > Duration::from_millis(500),
        "the only worker was hashing, the probe had to wait: {waited:?}"
    );
}

#[tokio::test]
async fn bad_work_is_a_400_naming_the_field() {
    let mock = Mock::start();
    let gw = pool_gateway("fixed", 2, &mock.url(), &[]);
    let client = client();
    for work in [
        json!(0),
        json!(gateway::lessons::solve::MAX_WORK + 1),
        json!("many"),
        json!(-1),
    ] {
        let response = solve(&client, &gw.url(), &work).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{work}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");
        assert_eq!(body["error"]["param"], "work", "{body}");
    }
    // Out of range is the documented `invalid_value` (a body of the wrong shape has no code).
    for work in [json!(0), json!(gateway::lessons::solve::MAX_WORK + 1)] {
        let body: Value = solve(&client, &gw.url(), &work).await.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_value", "{body}");
    }
    let response = solve(&client, &gw.url(), &json!(0)).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "work", "{body}");
    let response = client
        .post(format!("{}/v1/solve", gw.url()))
        .body("work=3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unsupported_media_type", "{body}");
}
