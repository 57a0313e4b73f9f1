//! Lesson: graceful shutdown refuses new work with an answer (503 `shutting_down`, not a refused
//! connection), lets in-flight streams finish, and still cannot hang: after the drain deadline
//! the remaining streams are cut and the process exits, even in broken mode, where a pool thread
//! sits in a blocking `read()` that nothing can abort. (The grace before the refusals, and the
//! drain through the admin plane, are tests/drain.rs.)
//!
//! These tests run the real `gateway` binary and send it a real SIGTERM.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use reqwest::StatusCode;
use support::{GatewayProcess, Mock, client, expected_body, wait_for};

/// The status of a new `GET /chat/stream`, and whether the answer closed its connection.
async fn new_request(base: &str) -> Option<(StatusCode, bool)> {
    let response = client()
        .get(format!("{base}/chat/stream?chunks=1&interval_ms=10"))
        .send()
        .await
        .ok()?;
    let closes = response
        .headers()
        .get("connection")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    Some((response.status(), closes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_requests_but_lets_the_in_flight_stream_finish() {
    let mock = Mock::start();
    let mut gw = GatewayProcess::start(&[
        "--mode",
        "fixed",
        "--drain-secs",
        "5",
        "--upstream",
        &mock.url(),
    ]);
    let client = client();
    let url = format!("{}/chat/stream?chunks=6&interval_ms=200", gw.url());
    let mut response = client.get(&url).send().await.expect("stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = String::new();
    let first = response
        .chunk()
        .await
        .expect("readable")
        .expect("first chunk");
    body.push_str(&String::from_utf8_lossy(&first));

    gw.sigterm();
    let base = gw.url();
    // No grace here (`--drain-grace-secs 0`): new work is refused at once, with an answer a
    // client can act on rather than a refused connection.
    let (status, closes) = wait_for(
        "a new request to be refused with 503",
        Duration::from_secs(5),
        move || {
            let base = base.clone();
            async move {
                new_request(&base)
                    .await
                    .filter(|(status, _)| *status == StatusCode::SERVICE_UNAVAILABLE)
            }
        },
    )
    .await;
    assert!(closes, "the refusal closes its connection");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        gw.is_running(),
        "refusing new requests while still draining, not because it already exited"
    );

    // The in-flight stream runs on to its last chunk.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = response.chunk().await.expect("stream not cut") {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(rest.is_ok(), "stream did not end; log:\n{}", gw.log());
    assert_eq!(body, expected_body(6));

    let status = gw.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}; log:\n{}", gw.log());
    let log = gw.log();
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(
        log.contains("drained; exiting"),
        "exited because drained: {log}"
    );
    assert!(!log.contains("deadline passed"), "{log}");
    assert_eq!(mock.stats().await.completed, 1);
}

/// Opens a stream that will not finish for a long time and returns its response once the
/// headers are in.
async fn open_long_stream(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let response = client.get(url).send().await.expect("stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// Reads what is left of `response`; it must end (cut) within `limit`. Returns the lines read.
async fn read_until_cut(mut response: reqwest::Response, limit: Duration) -> usize {
    let mut body = String::new();
    let read = tokio::time::timeout(limit, async {
        // Ends at the cut: an error (truncated body) or, if the cut fell between chunks, EOF.
        while let Ok(Some(chunk)) = response.chunk().await {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(read.is_ok(), "the stream was not cut");
    body.lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cuts_a_long_stream_and_exits() {
    let mock = Mock::start();
    let mut gw = GatewayProcess::start(&[
        "--mode",
        "fixed",
        "--drain-secs",
        "1",
        "--upstream",
        &mock.url(),
    ]);
    let client = client();
    // 100 chunks x 100 ms: 10 s, far beyond the 1 s drain.
    let url = format!("{}/chat/stream?chunks=100&interval_ms=100", gw.url());
    let response = open_long_stream(&client, &url).await;

    let signalled = Instant::now();
    gw.sigterm();
    let status = gw.exit_within(Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "a cut at the deadline is by design: {status}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "it drained first: {took:?}"
    );
    let log = gw.log();
    assert!(log.contains("drain deadline passed"), "{log}");

    let lines = read_until_cut(response, Duration::from_secs(5)).await;
    assert!(lines < 100, "the stream was cut, got {lines} of 100 chunks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_exits_even_with_a_pool_thread_stuck_in_a_blocking_read() {
    let mock = Mock::start();
    let mut gw = GatewayProcess::start(&[
        "--mode",
        "broken",
        "--blocking-threads",
        "2",
        "--drain-secs",
        "1",
        "--upstream",
        &mock.url(),
    ]);
    let client = client();
    // The next chunk is 30 s away: the pool thread sits in `read()` for all of that. Dropping the
    // runtime plainly would wait for it; the binary's `shutdown_timeout` must not.
    let url = format!("{}/chat/stream?chunks=2&interval_ms=30000", gw.url());
    let response = open_long_stream(&client, &url).await;

    gw.sigterm();
    let status = gw.exit_within(Duration::from_secs(6)).await;
    assert!(status.success(), "{status}; log:\n{}", gw.log());
    assert!(gw.log().contains("drain deadline passed"), "{}", gw.log());
    assert_eq!(read_until_cut(response, Duration::from_secs(5)).await, 0);
}

/// A second signal exits at once, with 128 + its number, whichever the first one was.
async fn second_signal_exits_at_once(signal: Signal, code: i32) {
    let mock = Mock::start();
    let mut gw = GatewayProcess::start(&[
        "--mode",
        "fixed",
        "--drain-grace-secs",
        "30",
        "--drain-secs",
        "30",
        "--upstream",
        &mock.url(),
    ]);
    let client = client();
    let url = format!("{}/chat/stream?chunks=100&interval_ms=100", gw.url());
    let _response = open_long_stream(&client, &url).await;

    gw.signal(signal);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.log().contains("draining:") {
        assert!(Instant::now() < deadline, "no drain; log:\n{}", gw.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A minute of grace and drain ahead; whoever signals again does not want to wait for it.
    gw.signal(signal);
    let status = gw.exit_within(Duration::from_secs(5)).await;
    assert_eq!(
        status.code(),
        Some(code),
        "128 + {signal}; log:\n{}",
        gw.log()
    );
    assert!(
        gw.log().contains(&format!("{signal} again: exiting now")),
        "{}",
        gw.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    second_signal_exits_at_once(Signal::SIGTERM, 143).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_exits_at_once_with_130() {
    second_signal_exits_at_once(Signal::SIGINT, 130).await;
}
