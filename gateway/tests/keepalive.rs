//! SSE keep-alive, seen by a client: a stream silent longer than `--sse-keepalive-secs` gets
//! `: keep-alive` comments before its first event, the events after them are intact, and
//! `gateway_sse_keepalives_total` counts the comments; with the default period (15 s) a fast
//! stream carries none.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

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
