//! Lesson: when a client of `/v1/chat/completions` goes away, does the upstream stop generating?
//!
//! Proven from the far side, with `mock-llm`'s `/stats.chat` counters, in three phases:
//! (a) a stream waiting for its first token, (b) a stream mid-way, (c) a non-streaming request
//! still in flight. The next upstream event is always seconds away, so "seen before the next
//! event" and "seen only at the next event" are far apart (wide margins, never tight timings).
//!
//! - `fixed`: the upstream sees the cancel in every phase within milliseconds (bounded here by a
//!   poll of at most 3 s, against 4 s or more until the next event: a machine busy enough to
//!   starve the gateway for 2 s has been seen).
//! - `broken`: (a) and (b) are seen only when the upstream's next event reaches the pool thread
//!   and `blocking_send` fails; (c) is never seen: the thread sits in ureq's `run()` until the
//!   whole answer arrives, so the upstream completes the generation for nobody.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{Mock, chat_body, client, gateway, post_chat, read_sse};
use tokio::io::AsyncWriteExt;

/// The next upstream event in every test is this far away from the client's hang-up, or more.
const NEXT_EVENT_MS: &str = "4000";

/// Opens a stream and hangs up `after` its headers arrived, without reading a byte of body.
async fn hang_up_before_the_first_token(base: &str, after: Duration) -> Instant {
    let response = post_chat(
        base,
        &chat_body(true),
        // The tokens after the first as far apart: a gateway that learns of the hang-up only
        // when it writes the first token must still find the upstream mid-stream (at 5 ms apart
        // the mock had once finished all four, and counted the stream completed, by then).
        &[
            ("x-mock-ttft-ms", NEXT_EVENT_MS),
            ("x-mock-itl-ms", NEXT_EVENT_MS),
            ("x-mock-tokens", "4"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::sleep(after).await;
    drop(response);
    Instant::now()
}

/// Opens a stream, reads the role chunk and the first token, then hangs up.
async fn hang_up_mid_stream(base: &str) -> Instant {
    let mut response = post_chat(
        base,
        &chat_body(true),
        &[
            ("x-mock-ttft-ms", "5"),
            ("x-mock-itl-ms", NEXT_EVENT_MS),
            ("x-mock-tokens", "4"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut seen = String::new();
    while !seen.contains("This ") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("first token in time")
            .expect("readable")
            .expect("a chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);
    Instant::now()
}

/// Sends a non-streaming request on a raw socket (so the moment it closes is ours alone), waits
/// until the mock has begun generating it, and closes it, long before the answer is due.
///
/// The wait is a condition, not a sleep: after a fixed 300 ms, a gateway starved of CPU had not
/// yet read the request, saw it together with the hang-up, and never sent it upstream, so
/// there was no cancel to see.
async fn hang_up_non_streaming(addr: std::net::SocketAddr, mock: &Mock) -> Instant {
    let body = serde_json::to_string(&chat_body(false)).unwrap();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-mock-ttft-ms: {NEXT_EVENT_MS}\r\nx-mock-tokens: 1\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    mock.wait_stats(
        "the mock to begin the request",
        Duration::from_secs(10),
        |s| s.chat.started >= 1,
    )
    .await;
    drop(socket);
    Instant::now()
}

/// The measurement, for `cargo test -p gateway --test openai_cancel -- --nocapture`
/// (resolution: one `/stats` poll, 10 ms plus a request).
fn report(mode: &str, phase: &str, after: Duration) {
    println!(
        "{mode} {phase}: the upstream saw the cancel {} ms after the client left \
         (next upstream event {NEXT_EVENT_MS} ms after the request or last token)",
        after.as_millis()
    );
}

async fn pool_running(base: &str) -> u64 {
    let pool: serde_json::Value = client()
        .get(format!("{base}/debug/pool"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    pool["running"].as_u64().unwrap()
}

/// Fixed mode: the cancel reaches the upstream long before its next event would have.
fn assert_prompt(phase: &str, left: Instant, seen: Instant) {
    let after = seen - left;
    report("fixed", phase, after);
    assert!(
        after < Duration::from_secs(3),
        "fixed {phase}: the upstream saw the cancel {after:?} after the client left"
    );
}

/// Broken mode: the cancel reaches the upstream only with its next event, ~4 s after the hang-up.
fn assert_late(phase: &str, left: Instant, seen: Instant) {
    let after = seen - left;
    report("broken", phase, after);
    assert!(
        after >= Duration::from_millis(2000),
        "broken {phase}: expected the cancel only at the next upstream event, saw it after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_cancels_while_waiting_for_the_first_token() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &[]);
    let left = hang_up_before_the_first_token(&gw.url(), Duration::from_millis(200)).await;
    let seen = mock
        .wait_stats("mock chat.cancelled >= 1", Duration::from_secs(3), |s| {
            s.chat.cancelled >= 1
        })
        .await;
    assert_prompt("(a)", left, seen);
    let chat = mock.stats().await.chat;
    // Measured by the mock: from the request's arrival to the hang-up reaching it.
    let time_to_cancel = chat.time_to_cancel_ms.last.unwrap();
    assert!(time_to_cancel < 3000, "{chat:?}");
    assert_eq!(chat.completed, 0, "{chat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_cancels_only_when_the_first_token_arrives() {
    let mock = Mock::fast();
    let gw = gateway("broken", &mock.url(), &[]);
    let left = hang_up_before_the_first_token(&gw.url(), Duration::from_millis(200)).await;
    // The pool thread is in `read()`, waiting for the first token: nothing has noticed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pool_running(&gw.url()).await,
        1,
        "the thread is still pinned"
    );
    assert_eq!(mock.stats().await.chat.cancelled, 0);
    let seen = mock
        .wait_stats("mock chat.cancelled >= 1", Duration::from_secs(8), |s| {
            s.chat.cancelled >= 1
        })
        .await;
    assert_late("(a)", left, seen);
    let chat = mock.stats().await.chat;
    assert_eq!(chat.completed, 0, "{chat:?}");
    support::wait_for(
        "the pool thread to be released",
        Duration::from_secs(3),
        || async { (pool_running(&gw.url()).await == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_cancels_mid_stream() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &[]);
    let left = hang_up_mid_stream(&gw.url()).await;
    let seen = mock
        .wait_stats("mock chat.cancelled >= 1", Duration::from_secs(3), |s| {
            s.chat.cancelled >= 1
        })
        .await;
    assert_prompt("(b)", left, seen);
    // Measured by the mock: from the token it last sent to the cancel, i.e. well under an ITL.
    let chat = mock.stats().await.chat;
    assert!(chat.time_to_cancel_ms.last.unwrap() < 3000, "{chat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_cancels_mid_stream_only_at_the_next_token() {
    let mock = Mock::fast();
    let gw = gateway("broken", &mock.url(), &[]);
    let left = hang_up_mid_stream(&gw.url()).await;
    let seen = mock
        .wait_stats("mock chat.cancelled >= 1", Duration::from_secs(8), |s| {
            s.chat.cancelled >= 1
        })
        .await;
    assert_late("(b)", left, seen);
    // The mock's own clock says ~0 ms: it counts from its last progress, and here its last
    // progress was the very token whose hand-over to the pool thread revealed the hang-up. The
    // wall clock above is the honest measure: a whole ITL of generation for nobody.
    let chat = mock.stats().await.chat;
    assert!(chat.time_to_cancel_ms.last.unwrap() < 1000, "{chat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_cancels_a_non_streaming_request_in_flight() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &[]);
    let left = hang_up_non_streaming(gw.addr(), &mock).await;
    let seen = mock
        .wait_stats("mock chat.cancelled >= 1", Duration::from_secs(3), |s| {
            s.chat.cancelled >= 1
        })
        .await;
    assert_prompt("(c)", left, seen);
    let chat = mock.stats().await.chat;
    assert_eq!(chat.completed, 0, "{chat:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_never_cancels_a_non_streaming_request_the_upstream_completes_it() {
    let mock = Mock::fast();
    let gw = gateway("broken", &mock.url(), &[]);
    let left = hang_up_non_streaming(gw.addr(), &mock).await;
    // The thread sits inside ureq's `run()` until the head arrives, with the whole answer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pool_running(&gw.url()).await,
        1,
        "the thread is still pinned"
    );
    let done = mock
        .wait_stats("mock chat.completed >= 1", Duration::from_secs(8), |s| {
            s.chat.completed >= 1
        })
        .await;
    println!(
        "broken (c): the upstream saw no cancel; it completed {} ms after the client left",
        (done - left).as_millis()
    );
    assert!(
        done - left >= Duration::from_millis(1500),
        "the upstream finished at its own pace"
    );
    let chat = mock.stats().await.chat;
    assert_eq!(chat.cancelled, 0, "the upstream never learnt: {chat:?}");
    support::wait_for(
        "the pool thread to be released",
        Duration::from_secs(3),
        || async { (pool_running(&gw.url()).await == 0).then_some(()) },
    )
    .await;
}

/// A control for the tests above: a client that stays gets the whole stream in both modes, and
/// the mock counts it completed, not cancelled.
#[tokio::test]
async fn a_client_that_stays_is_not_counted_as_cancelled() {
    let mock = Mock::fast();
    for mode in support::MODES {
        let gw = gateway(mode, &mock.url(), &[]);
        let response = post_chat(&gw.url(), &chat_body(true), &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{mode}");
        let sse = read_sse(response, Duration::from_secs(10)).await;
        assert!(sse.error.is_none(), "{mode}: {:?}", sse.error);
        // The whole stream: every token of the mock's completion (4 with `Mock::fast`), in
        // order, then the end marker.
        assert_eq!(
            sse.text(),
            mock_llm::openai::text(4),
            "{mode}: {:?}",
            sse.events
        );
        assert_eq!(
            sse.events.last().map(|e| e.data.as_str()),
            Some("[DONE]"),
            "{mode}"
        );
    }
    mock.wait_stats("mock chat.completed >= 2", Duration::from_secs(5), |s| {
        s.chat.completed >= 2
    })
    .await;
    assert_eq!(mock.stats().await.chat.cancelled, 0);
}
