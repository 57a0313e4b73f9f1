//! Lesson: a drain tells the load balancer first. `POST /admin/drain` or SIGTERM turns `/readyz`
//! to 503 `draining` at once while new requests are still served for `--drain-grace-secs`; then
//! new requests get 503 `shutting_down` (with `Retry-After` and `Connection: close`), the streams
//! in flight finish, and the process exits 0. Streams still running at the drain deadline end
//! with a last word: an SSE error event, a WebSocket Close 1001 (tests/ws.rs).
//!
//! The exit-status tests run the real `gateway` binary (`support::GatewayProcess`).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use support::{
    GatewayProcess, Mock, Streams, chat_body, client, expected_body, get_json, json_of,
    openai_error, post_chat, read_sse, wait_for,
};

const STREAMS: usize = 20;
/// 25 chunks every 200 ms: 5 s, well past the grace.
const CHUNKS: usize = 25;
const GRACE_SECS: u64 = 2;

#[derive(Debug, Clone, Copy)]
enum Trigger {
    AdminDrain,
    Sigterm,
}

async fn post_drain(admin: &str) -> (StatusCode, Value) {
    let response = client()
        .post(format!("{admin}/admin/drain"))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn drain_with_live_streams(trigger: Trigger) {
    let mock = Mock::start();
    let grace = GRACE_SECS.to_string();
    let mut gw = GatewayProcess::start(&[
        "--mode",
        "fixed",
        "--upstream",
        &mock.url(),
        "--admin-listen",
        "127.0.0.1:0",
        "--drain-grace-secs",
        &grace,
        "--drain-secs",
        "20",
        "--readiness-runtime-threshold-ms",
        "1000",
        "--readiness-pool-threshold-ms",
        "1000",
    ]);
    let admin = gw.admin_url();
    let readyz = format!("{admin}/readyz");
    wait_for("/readyz ready", Duration::from_secs(10), || async {
        let (status, _) = get_json(&client(), &readyz).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;

    let url = format!("{}/chat/stream?chunks={CHUNKS}&interval_ms=200", gw.url());
    let streams = Streams::open(&client(), &url, STREAMS);
    mock.wait_stats("every stream upstream", Duration::from_secs(10), |s| {
        s.active_streams == STREAMS as u64
    })
    .await;

    let started = Instant::now();
    match trigger {
        Trigger::AdminDrain => {
            let (status, body) = post_drain(&admin).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            assert_eq!(
                (&body["phase"], &body["started"]),
                (&"draining".into(), &true.into())
            );
            let (status, again) = post_drain(&admin).await;
            assert_eq!(
                status,
                StatusCode::ACCEPTED,
                "a second one is harmless: {again}"
            );
            assert_eq!(again["started"], false, "{again}");
            // At once: the very next answer says so.
            let (status, body) = get_json(&client(), &readyz).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body["status"], "draining", "{body}");
        }
        Trigger::Sigterm => {
            gw.sigterm();
            // A signal is delivered asynchronously: the first answer after it has arrived.
            let body = wait_for("/readyz draining", Duration::from_secs(1), || async {
                let (status, body) = get_json(&client(), &readyz).await;
                (status == StatusCode::SERVICE_UNAVAILABLE).then_some(body)
            })
            .await;
            assert_eq!(body["status"], "draining", "{body}");
        }
    }
    assert_eq!(
        get_json(&client(), &readyz).await.1["live_streams"],
        STREAMS
    );

    // During the grace, new work is still served.
    let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
    assert!(
        started.elapsed() < Duration::from_secs(GRACE_SECS),
        "the check came too late to be inside the grace; the machine is too slow"
    );
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::OK, "served during the grace: {body}");

    // After it, new work is refused, with an answer a client can act on.
    let base = gw.url();
    let response = wait_for("a 503 after the grace", Duration::from_secs(5), move || {
        let base = base.clone();
        async move {
            let response = post_chat(&base, &chat_body(false), &[]).await;
            (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
        }
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(GRACE_SECS * 1000 - 100),
        "refused only after the grace: {:?}",
        started.elapsed()
    );
    let headers = response.headers().clone();
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["connection"], "close");
    let (_, body) = json_of(response).await;
    assert_eq!(openai_error(&body)["code"], "shutting_down", "{body}");
    assert_eq!(
        get_json(&client(), &readyz).await.1["phase"],
        "shutting_down"
    );

    // Every stream that was running finishes whole, and then the process exits 0.
    for finished in streams.finish(Duration::from_secs(15)).await {
        assert_eq!(finished.status, StatusCode::OK);
        assert_eq!(finished.body, expected_body(CHUNKS), "{:?}", finished.error);
    }
    let status = gw.exit_within(Duration::from_secs(10)).await;
    let log = gw.log();
    assert!(status.success(), "{status}; log:\n{log}");
    for phase in [
        "shutdown requested",
        "draining:",
        "grace over",
        "drained; exiting",
    ] {
        assert!(log.contains(phase), "no {phase:?} in the log:\n{log}");
    }
    assert!(!log.contains("deadline passed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_serves_through_the_grace_then_refuses_and_lets_20_streams_finish() {
    drain_with_live_streams(Trigger::AdminDrain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_starts_the_same_drain() {
    drain_with_live_streams(Trigger::Sigterm).await;
}

#[tokio::test]
async fn at_the_drain_deadline_an_sse_stream_ends_with_an_error_event() {
    let mock = Mock::fast();
    let gw = support::gateway(
        "fixed",
        &mock.url(),
        &["--admin-listen", "127.0.0.1:0", "--drain-secs", "1"],
    );
    // 100 tokens 100 ms apart: 10 s, far beyond the 1 s drain.
    let slow = [("x-mock-itl-ms", "100"), ("x-mock-tokens", "100")];
    let response = post_chat(&gw.url(), &chat_body(true), &slow).await;
    assert_eq!(response.status(), StatusCode::OK);
    let reading = tokio::spawn(read_sse(response, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let drained = Instant::now();
    let (status, _) = post_drain(&gw.admin_url()).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    let sse = reading.await.unwrap();
    assert!(sse.error.is_none(), "ended cleanly: {:?}", sse.error);
    let last = sse.events.last().expect("events");
    let event: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(openai_error(&event)["code"], "shutting_down", "{event}");
    assert!(sse.events.len() > 2, "tokens came first: {:?}", sse.events);
    let waited = last.at.duration_since(drained);
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "cut at the 1 s deadline, not before and not much after: {waited:?}"
    );
}
