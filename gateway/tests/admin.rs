//! Lesson: a health check must run outside what it measures. The admin plane answers from its
//! own thread and runtime and judges the main runtime from there: `/readyz` reads `degraded`
//! within its bound when every worker is blocked (while the main listener's own probe cannot
//! answer at all), names the starved pool in broken mode, and says `ready` in fixed mode under
//! the same load. `POST /admin/*` needs the token wherever others can reach it.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use support::{Mock, Streams, client, expected_body, get_json, pool_gateway, wait_for};

/// Wide thresholds, so that "ready" does not flake on a test machine busy compiling: the stalls
/// under test last seconds.
const READINESS: [&str; 6] = [
    "--admin-listen",
    "127.0.0.1:0",
    "--readiness-runtime-threshold-ms",
    "1000",
    "--readiness-pool-threshold-ms",
    "1000",
];

/// `GET {admin}/readyz`, which must answer within `bound` however busy the gateway is.
async fn readyz(admin: &str, bound: Duration) -> (StatusCode, Value) {
    let started = Instant::now();
    let answer = tokio::time::timeout(bound, get_json(&client(), &format!("{admin}/readyz")))
        .await
        .unwrap_or_else(|_| panic!("/readyz did not answer within {bound:?}"));
    assert!(started.elapsed() < bound);
    answer
}

/// Polls `/readyz` until its `status` is `wanted`; returns that answer.
async fn readyz_until(admin: &str, wanted: &'static str, limit: Duration) -> (StatusCode, Value) {
    let admin = admin.to_owned();
    wait_for(&format!("/readyz {wanted}"), limit, move || {
        let admin = admin.clone();
        async move {
            let (status, body) = readyz(&admin, Duration::from_secs(2)).await;
            (body["status"] == wanted).then_some((status, body))
        }
    })
    .await
}

fn failing(body: &Value) -> Vec<&str> {
    body["failing"]
        .as_array()
        .unwrap_or_else(|| panic!("no failing list: {body}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_mode_with_every_worker_blocked_reads_degraded_on_the_admin_plane() {
    let mock = Mock::start();
    let mut flags = vec!["--worker-threads", "2"];
    flags.extend(READINESS);
    let gw = pool_gateway("inline", 4, &mock.url(), &flags);
    let admin = gw.admin_url();
    let (status, body) = readyz_until(&admin, "ready", Duration::from_secs(10)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["phase"], "serving", "{body}");

    let client = client();
    let url = format!("{}/chat/stream?chunks=10&interval_ms=500", gw.url());
    let streams = Streams::block_every_worker(&client, &url, &mock, &admin).await;

    // The main runtime's own probe: no answer, as in tests/inline.rs.
    let health = format!("{}/debug/health-async", gw.url());
    let stalled = tokio::time::timeout(Duration::from_secs(1), client.get(&health).send()).await;
    assert!(stalled.is_err(), "the main runtime answered: {stalled:?}");

    // The admin plane: every answer at once, and `degraded` once the probe's age passes 1 s.
    let (status, body) = readyz_until(&admin, "degraded", Duration::from_secs(3)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(failing(&body).contains(&"runtime"), "{body}");
    assert_eq!(body["checks"]["runtime"]["pending"], true, "{body}");
    assert!(
        body["checks"]["runtime"]["delay_ms"].as_f64().unwrap() > 1000.0,
        "{body}"
    );
    let (status, live) = get_json(&client, &format!("{admin}/livez")).await;
    assert_eq!((status, &live["status"]), (StatusCode::OK, &"alive".into()));
    assert!(
        mock.stats().await.active_streams >= 1,
        "still stalled while /readyz answered"
    );

    for finished in streams.finish(Duration::from_secs(20)).await {
        assert_eq!(finished.body, expected_body(10), "{:?}", finished.error);
    }
    let (status, body) = readyz_until(&admin, "ready", Duration::from_secs(10)).await;
    assert_eq!(status, StatusCode::OK, "workers free again: {body}");
}

/// Four 4-second streams on a pool of two: broken mode starves the pool, fixed mode does not
/// use it.
async fn readiness_under_four_streams(mode: &str) -> (StatusCode, Value) {
    let mock = Mock::start();
    let gw = pool_gateway(mode, 2, &mock.url(), &READINESS);
    let admin = gw.admin_url();
    readyz_until(&admin, "ready", Duration::from_secs(10)).await;
    let client = client();
    let url = format!("{}/chat/stream?chunks=10&interval_ms=400", gw.url());
    let streams = Streams::open(&client, &url, 4);
    mock.wait_stats("two streams upstream", Duration::from_secs(10), |s| {
        s.active_streams >= 2
    })
    .await;
    let verdict = if mode == "broken" {
        readyz_until(&admin, "degraded", Duration::from_secs(5)).await
    } else {
        // Longer than the threshold, so a probe stuck behind the streams would show.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        readyz(&admin, Duration::from_secs(2)).await
    };
    drop(streams);
    verdict
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_mode_with_the_pool_full_reads_degraded_naming_the_pool() {
    let (status, body) = readiness_under_four_streams("broken").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(failing(&body), ["blocking_pool"], "{body}");
    assert_eq!(body["checks"]["runtime"]["ok"], true, "{body}");
    assert_eq!(body["pool"]["running"], 2, "{body}");
    assert_eq!(body["mode"], "broken", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_mode_under_the_same_load_is_ready() {
    let (status, body) = readiness_under_four_streams("fixed").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready", "{body}");
    assert!(failing(&body).is_empty(), "{body}");
    assert_eq!(body["live_streams"], 4, "{body}");
    assert_eq!(body["pool"]["running"], 0, "{body}");
}

#[tokio::test]
async fn the_admin_plane_serves_health_metrics_and_the_pool() {
    let mock = Mock::fast();
    let gw = pool_gateway("fixed", 2, &mock.url(), &READINESS);
    let admin = gw.admin_url();
    let (_, ready) = readyz_until(&admin, "ready", Duration::from_secs(10)).await;
    let (status, health) = get_json(&client(), &format!("{admin}/health")).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    for field in [
        "status",
        "phase",
        "mode",
        "failing",
        "checks",
        "pool",
        "live_streams",
    ] {
        assert!(
            health.get(field).is_some(),
            "/health lacks {field}: {health}"
        );
        assert!(ready.get(field).is_some(), "/readyz lacks {field}: {ready}");
    }
    let (status, pool) = get_json(&client(), &format!("{admin}/debug/pool")).await;
    assert_eq!((status, &pool["max_threads"]), (StatusCode::OK, &2.into()));
    let metrics = support::metrics_text(&admin).await;
    assert!(metrics.contains("gateway_requests_in_flight"), "{metrics}");
    let (status, missing) = get_json(&client(), &format!("{admin}/v1/models")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "traffic is not served here: {missing}"
    );
}

#[test]
fn a_non_loopback_admin_address_without_a_token_does_not_start() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "0.0.0.0:0"])
        .env_remove("GATEWAY_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--admin-token"), "{stderr}");
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

#[tokio::test]
async fn posts_need_the_token_off_loopback() {
    let mock = Mock::fast();
    let gw = pool_gateway(
        "fixed",
        2,
        &mock.url(),
        &[
            "--admin-listen",
            "0.0.0.0:0",
            "--admin-token",
            "s3cret-admin",
            // A grace, so that the drain the last POST starts is still `draining` when it
            // answers: without one (the test default) it could already read `stopped`.
            "--drain-grace-secs",
            "2",
        ],
    );
    let admin = format!("http://127.0.0.1:{}", gw.admin_addr().unwrap().port());
    let drain = format!("{admin}/admin/drain");
    let post = |token: Option<&'static str>| {
        let mut request = client().post(&drain);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "missing_admin_token", "{body}");
    let (status, body) = post(Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "invalid_admin_token", "{body}");
    assert!(!body.to_string().contains("wrong"), "never echoed: {body}");
    // Reading needs no token: probes must not hold secrets.
    let (status, _) = get_json(&client(), &format!("{admin}/livez")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post(Some("s3cret-admin")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["phase"], "draining", "{body}");
}
