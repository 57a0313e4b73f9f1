//! Lesson: every failure is an answer, in one JSON shape, that says what to change.
//!
//! Bad query parameters are refused by the gateway itself (400, naming the parameter) before any
//! upstream call or pool thread is spent; values of the right type but out of range are judged by
//! the upstream, whose 400 is relayed unchanged in both modes; unknown paths get a JSON 404 listing
//! the routes; and an upstream nobody listens on is a prompt 502 (not a hang, not an empty 500),
//! after which the gateway is still healthy.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::{Mock, client, get_json, pool_gateway, wait_for};

/// Asserts OpenAI's error shape and returns the message.
fn error_message(body: &Value, kind: &str) -> String {
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(body["error"].get("param").is_some(), "{body}");
    assert!(body["error"].get("code").is_some(), "{body}");
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {body}"))
        .to_owned()
}

#[tokio::test]
async fn gateway_rejects_malformed_params_itself_naming_them() {
    let mock = Mock::start();
    // Broken mode, so the pool counters can show that no thread was spent on bad input.
    let gw = pool_gateway("broken", 2, &mock.url(), &[]);
    let client = client();
    let cases = [
        // (query, words the message must contain)
        ("chunks=abc", vec!["chunks", "invalid digit"]),
        ("interval_ms=-5", vec!["interval_ms"]),
        ("chunks=99999999999", vec!["chunks", "too large"]),
        // A typo must not silently run the default (45 s) stream.
        ("chunk=5", vec!["unknown field", "chunk", "chunks"]),
        ("chunks=2&model=gpt", vec!["unknown field", "model"]),
    ];
    for (query, words) in cases {
        let (status, body) = get_json(&client, &format!("{}/chat/stream?{query}", gw.url())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let message = error_message(&body, "invalid_request_error");
        for word in words {
            assert!(
                message.contains(word),
                "{query}: {message:?} lacks {word:?}"
            );
        }
    }
    let stats = mock.stats().await;
    assert_eq!(stats.started, 0, "no bad request reached the upstream");
    let (_, pool) = get_json(&client, &format!("{}/debug/pool", gw.url())).await;
    assert_eq!(
        pool["completed"], 0,
        "no pool thread spent on bad input: {pool}"
    );
}

#[tokio::test]
async fn gateway_relays_the_upstreams_range_errors_in_both_modes() {
    let mock = Mock::start();
    for mode in ["broken", "fixed"] {
        let gw = pool_gateway(mode, 2, &mock.url(), &[]);
        let client = client();
        let cases = [
            ("chunks=0", "chunks"),
            ("chunks=100001", "chunks"),
            ("interval_ms=60001", "interval_ms"),
        ];
        for (query, param) in cases {
            let url = format!("{}/chat/stream?{query}", gw.url());
            let response = client.get(&url).send().await.expect("answer");
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{mode} {query}");
            let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
            assert_eq!(content_type, "application/json", "{mode} {query}");
            let body: Value = response.json().await.expect("JSON body");
            assert_eq!(body["error"]["param"], param, "{mode} {query}: {body}");
            let message = error_message(&body, "invalid_request_error");
            assert!(message.contains("must be between"), "{mode}: {message}");
        }
    }
    // The range errors came from the upstream, which opened no stream for them.
    let stats = mock.stats().await;
    assert_eq!(stats.started, 0, "{stats:?}");
}

#[tokio::test]
async fn gateway_answers_unknown_paths_with_a_json_404_listing_the_routes() {
    let mock = Mock::start();
    let gw = pool_gateway("fixed", 2, &mock.url(), &[]);
    let (status, body) = get_json(&client(), &format!("{}/v1/nope", gw.url())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let message = error_message(&body, "invalid_request_error");
    assert!(message.contains("/v1/nope"), "{message}");
    assert!(message.contains("/chat/stream"), "{message}");
    assert!(message.contains("/health"), "{message}");
}

#[tokio::test]
async fn dead_upstream_gives_a_prompt_502_and_the_gateway_stays_healthy() {
    // A port that was just free: bind it, note it, let it go. Nobody listens there now.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let upstream = format!("http://{dead}");
    for mode in ["broken", "fixed"] {
        let gw = pool_gateway(mode, 2, &upstream, &[]);
        let client = client();
        let url = format!("{}/chat/stream?chunks=2&interval_ms=10", gw.url());
        // A refused connect fails in milliseconds; get_json would give up after 20 s.
        let (status, body) = get_json(&client, &url).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{mode}: {body}");
        let message = error_message(&body, "upstream_error");
        assert!(message.contains("unreachable"), "{mode}: {message}");
        assert!(
            message.contains(&dead.to_string()),
            "{mode}: the message names the upstream: {message}"
        );

        let (status, health) = get_json(&client, &format!("{}/health", gw.url())).await;
        assert_eq!(status, StatusCode::OK, "{mode}: {health}");
        assert_eq!(health["live_streams"], 0, "{mode}: {health}");
        // In broken mode the pool job sends its error a moment before it returns its thread,
        // so `running` may still read 1 right after the 502: poll for it, do not race it.
        let pool_url = format!("{}/debug/pool", gw.url());
        wait_for(
            "the failed relay to give its pool thread back",
            Duration::from_secs(5),
            || {
                let client = client.clone();
                let pool_url = pool_url.clone();
                async move {
                    let (_, pool) = get_json(&client, &pool_url).await;
                    (pool["running"] == 0).then_some(())
                }
            },
        )
        .await;
    }
}
