//! Shared helpers for the mock's integration tests: a real `mock-llm` on `127.0.0.1:0`, real HTTP.
//!
//! The mock runs on its own thread and runtime, so its timers keep their pace however busy the
//! test's own runtime (the clients) gets, and dropping [`Mock`] cuts every stream it still serves.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use clap::Parser as _;
use reqwest::StatusCode;
use serde_json::Value;

#[derive(Debug)]
pub struct Mock {
    running: mock_llm::embed::Running,
}

impl Mock {
    pub fn start() -> Self {
        let mut config = mock_llm::Config::try_parse_from(["mock-llm"]).expect("config");
        config.listen = ([127, 0, 0, 1], 0).into();
        Self {
            running: mock_llm::embed::start(config).expect("start the mock"),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.running.addr())
    }

    /// `GET /stats` as `(active_streams, started, completed, cancelled)`.
    pub async fn stats(&self, client: &reqwest::Client) -> (u64, u64, u64, u64) {
        let (status, body) = get_json(client, &format!("{}/stats", self.url())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let field = |name: &str| {
            body[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: {body}"))
        };
        (
            field("active_streams"),
            field("started"),
            field("completed"),
            field("cancelled"),
        )
    }
}

/// `GET url` (bounded to 20 s), returning the status and the body parsed as JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = tokio::time::timeout(Duration::from_secs(20), client.get(url).send())
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no answer in 20 s"))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("GET {url}: body is not JSON ({e}): {text:?}"));
    (status, json)
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
