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
        // The documented code of a query error: none (null), not a missing field.
        assert_eq!(body["error"]["code"], Value::Null, "{query}: {body}");
        for word in words {
            assert!(
                message.contains(word),
                "{query}: {message:?} lacks {word:?}"
            );
        }
    }
    let stats = mock.stats().await;
    assert_eq!(
        (stats.bad_requests, stats.started),
        (0, 0),
        "no bad request reached the upstream: {stats:?}"
    );
    let (_, pool) = get_json(&client, &format!("{}/debug/pool", gw.url())).await;
    assert_eq!(
        pool["completed"], 0,
        "no pool thread spent on bad input: {pool}"
    );
}

#[tokio::test]
async fn gateway_relays_the_upstreams_range_errors_in_both_modes() {
    let mock = Mock::start();
    let mut relayed = 0;
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
            // The gateway's own refusals come before any attempt; this one went upstream once.
            assert_eq!(
                response.headers()["x-gateway-attempts"],
                "1",
                "{mode} {query}"
            );
            let body: Value = response.json().await.expect("JSON body");
            assert_eq!(body["error"]["param"], param, "{mode} {query}: {body}");
            let message = error_message(&body, "invalid_request_error");
            assert!(message.contains("must be between"), "{mode}: {message}");
            relayed += 1;
            // Seen from the far side: the mock received each one and refused it itself.
            let stats = mock.stats().await;
            assert_eq!(stats.bad_requests, relayed, "{mode} {query}: {stats:?}");
        }
    }
    // ... and opened no stream for any of them.
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
    assert_eq!(body["error"]["code"], Value::Null, "{body}");
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

/// gateway/README.md's "Which test proves each error" stays true: every test it names exists,
/// and every `code` the Errors and Limits tables document has a row. A new code without a
/// test, or a renamed test, fails here.
#[test]
fn every_documented_error_names_a_test_that_exists() {
    let readme = include_str!("../README.md");
    let section = |heading: &str| {
        readme
            .split(heading)
            .nth(1)
            .unwrap_or_else(|| panic!("no {heading:?} in gateway/README.md"))
    };
    // The first table after `heading`, as rows of cells (the header and rule skipped).
    let table = |heading: &str| -> Vec<Vec<String>> {
        section(heading)
            .lines()
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .skip(2)
            .map(|row| row.split('|').map(|c| c.trim().to_owned()).collect())
            .collect()
    };
    // The backticked words of a cell, before any parenthesis (`model_not_found` (`param`: ...)).
    let ticked = |cell: &str| -> Vec<String> {
        let cell = cell.split('(').next().unwrap_or_default();
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };

    let proofs = table("\n### Which test proves each error\n");
    assert!(proofs.len() >= 40, "{proofs:?}");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for row in &proofs {
        let tests = ticked(&row[3]);
        assert!(!tests.is_empty(), "a row without a test: {row:?}");
        for test in tests {
            let (file, name) = test.split_once("::").expect("file::name");
            let path = if file.starts_with("src/") {
                root.join(file)
            } else {
                root.join("tests").join(file)
            };
            let source = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{test}: cannot read {}: {e}", path.display()));
            assert!(source.contains(&format!("fn {name}(")), "no test {test}");
        }
    }
    let proved: Vec<String> = proofs.iter().flat_map(|row| ticked(&row[1])).collect();
    let errors = table("\n## Errors\n");
    let limits = table("\n## Limits and what a client gets past each\n");
    let documented = errors
        .iter()
        .flat_map(|row| ticked(&row[3]))
        .chain(limits.iter().flat_map(|row| ticked(&row[4])));
    for code in documented {
        assert!(
            proved.contains(&code),
            "`{code}` is documented but has no row in \"Which test proves each error\""
        );
    }
}
