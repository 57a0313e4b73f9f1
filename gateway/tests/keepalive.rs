//! SSE keep-alive, seen by a client: a stream silent longer than `--sse-keepalive-secs` gets
//! `: keep-alive` comments before its first event, the events after them are intact, and
//! `gateway_sse_keepalives_total` counts the comments; with the default period (15 s) a stream
//! silent for 16.5 s gets exactly one, at 15 s, and a fast stream none.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{Mock, chat_body, gateway, metric, post_chat};

/// The whole raw body, bounded at 20 s.
async fn raw_body(response: reqwest::Response) -> String {
    tokio::time::timeout(Duration::from_secs(20), response.text())
        .await
        .expect("the stream ends within 20 s")
        .expect("body")
}

#[tokio::test]
async fn a_silent_stream_gets_keep_alives_before_its_first_event() {
    let mock = Mock::fast();
    for mode in support::MODES {
        let gw = gateway(mode, &mock.url(), &["--sse-keepalive-secs", "1"]);
        let response = post_chat(&gw.url(), &chat_body(true), &[("x-mock-ttft-ms", "2500")]).await;
        assert_eq!(response.status(), 200, "{mode}");
        let body = raw_body(response).await;
        let comment = body.find(": keep-alive\n\n").unwrap_or_else(|| {
            panic!("{mode}: no keep-alive in {body:?}");
        });
        let first_event = body.find("data:").unwrap();
        assert!(comment < first_event, "{mode}: {body:?}");
        // The events are untouched: every chunk, then the end.
        let events: Vec<&str> = body
            .split("\n\n")
            .filter(|event| event.starts_with("data:"))
            .collect();
        assert_eq!(events.last(), Some(&"data: [DONE]"), "{mode}: {body:?}");
        assert!(events.len() >= 5, "{mode}: {body:?}");
        assert!(
            !body[first_event..].contains(": keep-alive"),
            "{mode}: a fast stream once started needs none: {body:?}"
        );
        assert!(
            metric(&gw.url(), "gateway_sse_keepalives_total").await >= 1.0,
            "{mode}"
        );
    }
}

/// The default, exercised: no flag, a stream silent for 16.5 s. One comment, not before 14 s
/// (a shorter default would send it sooner, and more than one), and the events after it.
#[tokio::test]
async fn by_default_a_stream_silent_for_15_s_gets_one_keep_alive() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &[]);
    let mut response = post_chat(&gw.url(), &chat_body(true), &[("x-mock-ttft-ms", "16500")]).await;
    assert_eq!(response.status(), 200);
    let opened = Instant::now();
    let mut body = String::new();
    let mut comment_at = None;
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(30), response.chunk())
            .await
            .expect("the stream ends within 30 s")
            .expect("readable");
        let Some(chunk) = chunk else { break };
        body.push_str(&String::from_utf8_lossy(&chunk));
        if comment_at.is_none() && body.contains(": keep-alive\n\n") {
            comment_at = Some(opened.elapsed());
        }
    }
    let comment_at = comment_at.unwrap_or_else(|| panic!("no keep-alive in {body:?}"));
    assert!(
        comment_at >= Duration::from_secs(14),
        "the default period is 15 s, yet the comment came after {comment_at:?}"
    );
    assert_eq!(body.matches(": keep-alive").count(), 1, "{body:?}");
    assert!(
        body.find(": keep-alive").unwrap() < body.find("data:").unwrap(),
        "{body:?}"
    );
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body:?}");
    assert_eq!(metric(&gw.url(), "gateway_sse_keepalives_total").await, 1.0);
}

#[tokio::test]
async fn the_default_period_leaves_a_fast_stream_alone() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &[]);
    let response = post_chat(&gw.url(), &chat_body(true), &[]).await;
    let body = raw_body(response).await;
    assert!(body.contains("data: [DONE]"), "{body:?}");
    assert!(!body.contains(": keep-alive"), "{body:?}");
    assert_eq!(metric(&gw.url(), "gateway_sse_keepalives_total").await, 0.0);
}
