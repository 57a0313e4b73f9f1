//! Lesson: a migration from the blocking to the async client can be rolled out by percentage.
//! `--async-rollout-percent P` in broken mode sends exactly P of every 100 consecutive requests
//! through the async client (a counter, not a dice roll), and every response names its client in
//! `X-Stream-Method`.
#![allow(clippy::unwrap_used)]

mod support;

use clap::Parser as _;
use reqwest::StatusCode;
use serde_json::json;
use support::{Mock, client, pool_gateway};

/// The `X-Stream-Method` of `n` short streams, one after the other.
async fn methods(gateway: &str, n: usize) -> Vec<String> {
    let client = client();
    let mut seen = Vec::new();
    for _ in 0..n {
        let response = client
            .get(format!("{gateway}/chat/stream?chunks=1&interval_ms=10"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let method = response
            .headers()
            .get("x-stream-method")
            .expect("X-Stream-Method on every stream")
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(response.text().await.unwrap(), "chunk 1/1\n");
        seen.push(method);
    }
    seen
}

fn count(methods: &[String], name: &str) -> usize {
    methods.iter().filter(|m| *m == name).count()
}

#[tokio::test]
async fn zero_percent_is_all_blocking_and_hundred_is_all_async() {
    let mock = Mock::start();
    let none = pool_gateway("broken", 4, &mock.url(), &["--async-rollout-percent", "0"]);
    let seen = methods(&none.url(), 10).await;
    assert_eq!(count(&seen, "blocking"), 10, "{seen:?}");
    let all = pool_gateway(
        "broken",
        4,
        &mock.url(),
        &["--async-rollout-percent", "100"],
    );
    let seen = methods(&all.url(), 10).await;
    assert_eq!(count(&seen, "async"), 10, "{seen:?}");
    // Without the flag, each mode names its one client.
    for (mode, method) in [("broken", "blocking"), ("fixed", "async")] {
        let gw = pool_gateway(mode, 4, &mock.url(), &[]);
        assert_eq!(methods(&gw.url(), 2).await, [method, method], "{mode}");
    }
}

#[tokio::test]
async fn fifty_percent_alternates_exactly_on_both_routes() {
    let mock = Mock::start();
    let gw = pool_gateway("broken", 4, &mock.url(), &["--async-rollout-percent", "50"]);
    let seen = methods(&gw.url(), 20).await;
    assert_eq!(count(&seen, "async"), 10, "{seen:?}");
    assert_eq!(count(&seen, "blocking"), 10, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] != w[1]),
        "a counter alternates: {seen:?}"
    );
    // The OpenAI route shares the counter and the header.
    let client = client();
    let mut chat = Vec::new();
    for _ in 0..4 {
        let response = client
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        chat.push(
            response.headers()["x-stream-method"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(count(&chat, "async"), 2, "{chat:?}");
    assert_eq!(count(&chat, "blocking"), 2, "{chat:?}");
}

#[test]
fn rollout_outside_broken_mode_does_not_start() {
    for (mode, percent) in [("fixed", "50"), ("inline", "10")] {
        let config = gateway::Config::try_parse_from([
            "gateway",
            "--mode",
            mode,
            "--async-rollout-percent",
            percent,
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        let error = config.check().expect_err(mode);
        assert!(error.contains("--mode broken"), "{error}");
        assert!(gateway::embed::start(config).is_err(), "{mode}");
    }
}
