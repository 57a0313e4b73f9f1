//! Lesson 8: every bound has an exact answer past it, and a counter that moved.
//!
//! Each test drives one limit past its bound with the mock's pacing knobs (`x-mock-itl-ms`,
//! `x-mock-tokens` make a stream as long as needed) and checks the response a client gets
//! (status, `code`, `Retry-After`, `x-ratelimit-*`) and the `/metrics` series that counted it:
//!
//! - the inbound cap holds for a stream's whole life, then requests queue, then they are shed
//!   (`queue_full` at once, `queue_timeout` after the wait), and `/health` still answers;
//! - a queued request gets the place a finished stream gives back;
//! - the per-key rate limit: `x-ratelimit-*` counting down, then 429, per key;
//! - providers: routing by `model`, 404 for an unknown one, a provider's `max-concurrent`
//!   (503 `provider_busy`) and `requests-per-minute` (429 `provider_rate_limited`, never sent).
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    Mock, chat_body, client, gateway, gateway_with_file, json_of, metric, metrics_text,
    openai_error, post_chat,
};

/// A streaming request the mock makes last about `secs` seconds (100 ms between tokens).
fn long_stream(secs: u64) -> [(&'static str, String); 2] {
    [
        ("x-mock-itl-ms", "100".to_owned()),
        ("x-mock-tokens", (secs * 10).to_string()),
    ]
}

async fn open_stream(base: &str, body: &Value, secs: u64) -> reqwest::Response {
    let headers = long_stream(secs);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let response = post_chat(base, body, &headers).await;
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// A 503 from the gateway's own limits: `Retry-After`, `retry-after-ms`, OpenAI's shape.
fn assert_shed(headers: &reqwest::header::HeaderMap, body: &Value, code: &str) {
    assert_eq!(headers["retry-after"], "1", "{body}");
    assert_eq!(headers["retry-after-ms"], "1000", "{body}");
    let error = openai_error(body);
    assert_eq!(error["code"], code, "{body}");
    assert_eq!(error["type"], "server_error", "{body}");
}

#[tokio::test]
async fn the_inbound_cap_holds_for_the_whole_stream_then_queues_then_sheds() {
    let mock = Mock::fast();
    for mode in support::MODES {
        let gw = gateway(
            mode,
            &mock.url(),
            &[
                "--max-concurrent-requests",
                "2",
                "--max-queued-requests",
                "1",
                // Long enough that the queued request is still waiting when the next one comes,
                // however slowly a busy machine gets there (at 500 ms it once had timed out
                // already, and the next one was queued, then timed out, instead of shed).
                "--max-queue-wait-ms",
                "2000",
            ],
        );
        let base = gw.url();
        // Two streams, headers received: a permit released at the headers would be free now.
        let first = open_stream(&base, &chat_body(true), 20).await;
        let second = open_stream(&base, &chat_body(true), 20).await;
        assert_eq!(metric(&base, "gateway_requests_in_flight").await, 2.0);

        let queued = tokio::spawn({
            let base = base.clone();
            async move {
                let started = Instant::now();
                let response = post_chat(&base, &chat_body(false), &[]).await;
                (response, started.elapsed())
            }
        });
        support::wait_for("one request queued", Duration::from_secs(10), || async {
            (metric(&base, "gateway_requests_queued").await == 1.0).then_some(())
        })
        .await;

        let full = post_chat(&base, &chat_body(false), &[]).await;
        let (full, body) = (full.headers().clone(), full);
        let (status, body_json) = json_of(body).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{mode}: {body_json}"
        );
        assert_shed(&full, &body_json, "queue_full");
        let message = openai_error(&body_json)["message"].as_str().unwrap();
        assert!(
            message.contains("--max-concurrent-requests"),
            "{mode}: {message}"
        );

        let (timed_out, waited) = queued.await.unwrap();
        assert!(
            waited >= Duration::from_millis(1900),
            "{mode}: shed after {waited:?}, before the 2000 ms wait"
        );
        let shed_headers = timed_out.headers().clone();
        let (status, body) = json_of(timed_out).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{mode}: {body}");
        assert_shed(&shed_headers, &body, "queue_timeout");

        // The probes are outside the limits: /health answers while the gateway sheds.
        let health = client().get(format!("{base}/health")).send().await.unwrap();
        assert!(health.status().is_success(), "{mode}: {}", health.status());

        let text = metrics_text(&base).await;
        let sample = |series: &str| common::prometheus::sample(&text, series);
        assert_eq!(
            sample("gateway_shed_total{reason=\"queue_full\"}"),
            Some(1.0),
            "{mode}: {text}"
        );
        assert_eq!(
            sample("gateway_shed_total{reason=\"queue_timeout\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample("gateway_requests_total{route=\"/v1/chat/completions\",status=\"503\"}"),
            Some(2.0),
            "{mode}: {text}"
        );
        assert_eq!(sample("gateway_requests_limit"), Some(2.0));

        // A stream that ends (here: its client leaves) gives its place back.
        drop(first);
        support::wait_for("a place freed", Duration::from_secs(10), || async {
            (metric(&base, "gateway_requests_in_flight").await == 1.0).then_some(())
        })
        .await;
        let admitted = post_chat(&base, &chat_body(false), &[]).await;
        assert_eq!(admitted.status(), StatusCode::OK, "{mode}");
        drop(second);
    }
}

#[tokio::test]
async fn a_queued_request_gets_the_place_a_finished_stream_frees() {
    let mock = Mock::fast();
    let gw = gateway(
        "fixed",
        &mock.url(),
        &[
            "--max-concurrent-requests",
            "1",
            "--max-queue-wait-ms",
            "20000",
        ],
    );
    let base = gw.url();
    let stream = open_stream(&base, &chat_body(true), 1).await;
    let queued = tokio::spawn({
        let base = base.clone();
        async move { post_chat(&base, &chat_body(false), &[]).await.status() }
    });
    support::wait_for("one request queued", Duration::from_secs(10), || async {
        (metric(&base, "gateway_requests_queued").await == 1.0).then_some(())
    })
    .await;
    // Read the stream to its end: that, not its headers, frees the place.
    let body = stream.text().await.unwrap();
    assert!(body.contains("[DONE]"));
    assert_eq!(queued.await.unwrap(), StatusCode::OK);
    let text = metrics_text(&base).await;
    for reason in ["queue_full", "queue_timeout"] {
        let series = format!("gateway_shed_total{{reason=\"{reason}\"}}");
        let shed = common::prometheus::sample(&text, &series);
        assert_eq!(shed, Some(0.0), "nothing shed: {text}");
    }
}

#[tokio::test]
async fn the_per_key_rate_limit_counts_down_then_answers_429() {
    let mock = Mock::fast();
    let gw = gateway(
        "fixed",
        &mock.url(),
        &[
            "--api-key",
            "key-one",
            "--api-key",
            "key-two",
            "--rate-limit-rpm",
            "60",
            "--rate-limit-burst",
            "2",
        ],
    );
    let base = gw.url();
    let one = [("authorization", "Bearer key-one")];
    for remaining in ["1", "0"] {
        let response = post_chat(&base, &chat_body(false), &one).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers["x-ratelimit-limit-requests"], "60");
        assert_eq!(headers["x-ratelimit-remaining-requests"], remaining);
        assert!(headers.contains_key("x-ratelimit-reset-requests"));
    }
    let refused = post_chat(&base, &chat_body(false), &one).await;
    let headers = refused.headers().clone();
    let (status, body) = json_of(refused).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        headers["retry-after"], "1",
        "one request per second refills"
    );
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    assert_eq!(headers["x-ratelimit-limit-requests"], "60");
    assert_eq!(openai_error(&body)["code"], "rate_limit_exceeded", "{body}");
    assert!(
        openai_error(&body)["message"]
            .as_str()
            .unwrap()
            .contains("--rate-limit-rpm"),
        "{body}"
    );

    // Another key has its own bucket.
    let two = [("x-api-key", "key-two")];
    assert_eq!(
        post_chat(&base, &chat_body(false), &two).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        metric(&base, "gateway_rate_limited_total{scope=\"key\"}").await,
        1.0
    );
    assert_eq!(
        mock.stats().await.chat.requests,
        3,
        "the refused request never reached the upstream"
    );
}

#[tokio::test]
async fn providers_route_by_model_and_enforce_their_own_limits() {
    let slow = Mock::fast();
    let metered = Mock::fast();
    let toml = format!(
        r#"
[[providers]]
name = "slow"
base-url = "{}"
models = ["model-a"]
max-concurrent = 1
pool-timeout-ms = 300

[[providers]]
name = "metered"
base-url = "{}"
models = ["model-b"]
requests-per-minute = 2
"#,
        slow.url(),
        metered.url()
    );
    let gw = gateway_with_file("fixed", &toml, &[]);
    let base = gw.url();
    let model = |name: &str| {
        let mut body = chat_body(false);
        body["model"] = json!(name);
        body
    };

    // Routing: each model reaches its own provider's upstream.
    let mut stream_body = model("model-a");
    stream_body["stream"] = json!(true);
    let stream = open_stream(&base, &stream_body, 20).await;
    assert_eq!(slow.stats().await.chat.requests, 1);
    assert_eq!(metered.stats().await.chat.requests, 0);

    // slow: one request at a time, held by the open stream.
    let busy = post_chat(&base, &model("model-a"), &[]).await;
    let headers = busy.headers().clone();
    let (status, body) = json_of(busy).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(openai_error(&body)["code"], "provider_busy", "{body}");
    assert!(
        openai_error(&body)["message"]
            .as_str()
            .unwrap()
            .contains("provider slow"),
        "{body}"
    );
    let text = metrics_text(&base).await;
    let sample = |series: &str| common::prometheus::sample(&text, series);
    assert_eq!(
        sample("gateway_upstream_in_use{provider=\"slow\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample("gateway_upstream_limit{provider=\"slow\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample("gateway_shed_total{reason=\"provider_busy\"}"),
        Some(1.0)
    );
    drop(stream);

    // metered: two a minute, the third refused without being sent.
    for _ in 0..2 {
        let response = post_chat(&base, &model("model-b"), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let limited = post_chat(&base, &model("model-b"), &[]).await;
    let headers = limited.headers().clone();
    let (status, body) = json_of(limited).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (1..=30).contains(&retry_after),
        "2/min refills one every 30 s: {retry_after}"
    );
    assert_eq!(
        openai_error(&body)["code"],
        "provider_rate_limited",
        "{body}"
    );
    assert_eq!(
        metered.stats().await.chat.requests,
        2,
        "the third never left"
    );
    assert_eq!(
        metric(&base, "gateway_rate_limited_total{scope=\"provider\"}").await,
        1.0
    );

    // A model nobody serves: OpenAI's 404.
    let (status, body) = json_of(post_chat(&base, &model("gpt-9"), &[]).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let error = openai_error(&body);
    assert_eq!(error["code"], "model_not_found", "{body}");
    assert_eq!(error["param"], "model", "{body}");
    assert!(error["message"].as_str().unwrap().contains("gpt-9"));

    // /v1/models is the routing table.
    let (status, models) = json_of(
        client()
            .get(format!("{base}/v1/models"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<(&str, &str)> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["owned_by"].as_str().unwrap()))
        .collect();
    assert_eq!(listed, [("model-a", "slow"), ("model-b", "metered")]);
}

#[tokio::test]
async fn a_catch_all_provider_takes_the_other_models_and_lists_its_own() {
    let named = Mock::fast();
    let rest = Mock::with_flags(&["--models", "mock-1,mock-2", "--tokens", "2"]);
    let toml = format!(
        "[[providers]]\nname = \"named\"\nbase-url = \"{}\"\nmodels = [\"model-a\"]\n\n\
         [[providers]]\nname = \"rest\"\nbase-url = \"{}\"\nmodels = [\"*\"]\n",
        named.url(),
        rest.url()
    );
    let gw = gateway_with_file("broken", &toml, &["--blocking-threads", "4"]);
    let mut body = chat_body(false);
    body["model"] = json!("anything-else");
    assert_eq!(
        post_chat(&gw.url(), &body, &[]).await.status(),
        StatusCode::OK
    );
    assert_eq!(rest.stats().await.chat.requests, 1);
    assert_eq!(named.stats().await.chat.requests, 0);
    let (_, models) = json_of(
        client()
            .get(format!("{}/v1/models", gw.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["model-a", "mock-1", "mock-2"], "{models}");
}

#[tokio::test]
async fn metrics_serves_every_family_in_openmetrics_text() {
    let mock = Mock::fast();
    let gw = gateway("broken", &mock.url(), &[]);
    let base = gw.url();
    assert!(
        client()
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let response = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    for family in [
        "gateway_requests counter",
        "gateway_requests_in_flight gauge",
        "gateway_requests_queued gauge",
        "gateway_requests_limit gauge",
        "gateway_shed counter",
        "gateway_rate_limited counter",
        "gateway_upstream_in_use gauge",
        "gateway_upstream_limit gauge",
        "gateway_blocking_pool_running gauge",
        "gateway_blocking_pool_queued gauge",
        "gateway_blocking_pool_threads gauge",
        "gateway_health_probe_seconds histogram",
        "gateway_live_streams gauge",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family}")),
            "{family}:\n{text}"
        );
    }
    let sample = |series: &str| common::prometheus::sample(&text, series);
    assert_eq!(
        sample("gateway_requests_total{route=\"/health\",status=\"200\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample("gateway_health_probe_seconds_count"), Some(1.0));
    assert_eq!(sample("gateway_blocking_pool_threads"), Some(4.0));
    assert_eq!(
        sample("gateway_upstream_limit{provider=\"default\"}"),
        Some(1024.0)
    );
    assert!(text.trim_end().ends_with("# EOF"));

    // Every family: the ones gateway/README.md's Metrics table documents are exactly the ones
    // served, each with its type, so neither can gain a family the other lacks.
    let served: BTreeSet<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect();
    let documented = documented_families();
    assert!(documented.len() >= 28, "{documented:?}");
    assert_eq!(
        served, documented,
        "/metrics (left) and gateway/README.md's Metrics table (right) disagree"
    );
    // Every known label value is there from the start, at 0 (the README's promise, so that a
    // `rate()` sees the first event as an increase).
    use gateway::telemetry::metrics::{RateLimitScope, ShedReason};
    for reason in ShedReason::ALL.map(ShedReason::as_str) {
        let series = format!("gateway_shed_total{{reason=\"{reason}\"}}");
        assert_eq!(support::series(&text, &series), 0.0, "{series}");
    }
    for scope in RateLimitScope::ALL.map(RateLimitScope::as_str) {
        let series = format!("gateway_rate_limited_total{{scope=\"{scope}\"}}");
        assert_eq!(support::series(&text, &series), 0.0, "{series}");
    }
}

/// The families of gateway/README.md's Metrics table, as `# TYPE` lines name them: `(name,
/// type)`, a counter without its `_total`. A row may name several, `a_running` / `_queued`: a
/// name that starts with `_` replaces as many `_words` at the end of the first one.
fn documented_families() -> BTreeSet<(String, String)> {
    let readme = include_str!("../README.md");
    let table = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a Metrics section")
        .split("\n\n")
        .find(|block| block.starts_with("| family |"))
        .expect("the Metrics table");
    let mut families = BTreeSet::new();
    for row in table.lines().skip(2) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2]);
        let mut first: Option<String> = None;
        for name in names.split(" / ") {
            let name = name.trim_matches('`');
            let name = name.split('{').next().unwrap();
            let full = match (&first, name.strip_prefix('_')) {
                (Some(first), Some(suffix)) => {
                    let words = suffix.split('_').count();
                    let kept: Vec<&str> = first.split('_').collect();
                    format!("{}_{suffix}", kept[..kept.len() - words].join("_"))
                }
                _ => name.to_owned(),
            };
            first.get_or_insert_with(|| full.clone());
            let family = match kind {
                "counter" => full.strip_suffix("_total").unwrap_or(&full).to_owned(),
                _ => full,
            };
            families.insert((family, kind.to_owned()));
        }
    }
    families
}
