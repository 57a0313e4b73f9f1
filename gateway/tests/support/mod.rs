//! Helpers for the OpenAI-API and API-key tests: a `mock-llm` with chosen flags, gateways in
//! either mode, SSE reading with arrival times, and the mock's `chat` counters.
//!
//! `tests/common` starts the mock with its default pacing only; chat tests need fast defaults
//! (5 ms) and a fixed seed, with slow requests asked for per request through `x-mock-*`
//! headers. Every server runs on `127.0.0.1:0` on its own thread and runtime (the gateway's pool
//! size is a property of its runtime; the mock's pacing must not depend on the test's runtime).
#![allow(dead_code, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clap::Parser as _;
use serde_json::{Value, json};

pub const MODES: [&str; 2] = ["broken", "fixed"];

/// A `mock-llm` on its own thread and current-thread runtime. Dropping it cuts its streams.
#[derive(Debug)]
pub struct Mock {
    running: mock_llm::embed::Running,
}

impl Mock {
    /// Fast defaults: TTFT and ITL 5 ms, 4 tokens, seed 1. Slow cases set `x-mock-*` headers.
    pub fn fast() -> Self {
        Self::fast_with(&[])
    }

    /// The fast defaults plus `extra` flags (a fault, say).
    pub fn fast_with(extra: &[&str]) -> Self {
        let mut args = vec![
            "--ttft-ms",
            "5",
            "--itl-ms",
            "5",
            "--tokens",
            "4",
            "--seed",
            "1",
        ];
        args.extend_from_slice(extra);
        Self::start(&args)
    }

    pub fn start(args: &[&str]) -> Self {
        let mut argv = vec!["mock-llm"];
        argv.extend_from_slice(args);
        let mut config = mock_llm::Config::try_parse_from(argv).expect("mock flags");
        config.listen = ([127, 0, 0, 1], 0).into();
        Self {
            running: mock_llm::embed::start(config).expect("start the mock"),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.running.addr())
    }

    /// The mock's `/stats` `chat` object.
    pub async fn chat(&self) -> Value {
        let body: Value = client()
            .get(format!("{}/stats", self.url()))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats JSON");
        body["chat"].clone()
    }

    /// Polls `/stats` until `chat.<field>` reaches `at_least`; returns when that was seen.
    pub async fn wait_chat(&self, field: &str, at_least: u64, limit: Duration) -> Instant {
        let what = format!("mock chat.{field} >= {at_least}");
        wait_for(&what, limit, || async {
            let chat = self.chat().await;
            (chat[field].as_u64().unwrap_or(0) >= at_least).then(Instant::now)
        })
        .await
    }
}

/// A gateway in `mode` in front of `upstream`, on its own runtime with a pool of 4.
pub fn gateway(mode: &str, upstream: &str, extra: &[&str]) -> gateway::embed::Running {
    let mut args = vec![
        "gateway",
        "--mode",
        mode,
        "--blocking-threads",
        "4",
        "--upstream",
        upstream,
        "--listen",
        "127.0.0.1:0",
        "--drain-secs",
        "0",
    ];
    args.extend_from_slice(extra);
    let config = gateway::Config::try_parse_from(args).expect("valid gateway flags");
    gateway::embed::start(config).expect("gateway starts")
}

/// A gateway whose settings come from a `--config` file holding `toml` (e.g. `[[providers]]`),
/// plus `extra` flags.
pub fn gateway_with_file(mode: &str, toml: &str, extra: &[&str]) -> gateway::embed::Running {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("gateway-test-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, toml).expect("write the config file");
    let path = path.to_str().expect("UTF-8 temp path").to_owned();
    let mut args = vec![
        "gateway",
        "--config",
        &path,
        "--mode",
        mode,
        "--listen",
        "127.0.0.1:0",
        "--drain-secs",
        "0",
    ];
    args.extend_from_slice(extra);
    let config = gateway::Config::load(args).expect("valid gateway settings");
    gateway::embed::start(config).expect("gateway starts")
}

/// `GET {base}/metrics` as text.
pub async fn metrics_text(base: &str) -> String {
    client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// One series of `/metrics` (`name{labels}`), 0 when it does not exist yet.
pub async fn metric(base: &str, series: &str) -> f64 {
    ::common::prometheus::sample(&metrics_text(base).await, series).unwrap_or(0.0)
}

/// No overall timeout (streams are long), a connect timeout so a dead server fails fast, and no
/// connection reuse, so that dropping a response always closes its socket.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// A minimal valid chat request body.
pub fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o",
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello there"}],
    })
}

/// `POST {base}/v1/chat/completions` with `body` and extra headers; bounded at 20 s.
pub async fn post_chat(base: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(format!("{base}/v1/chat/completions"))
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    tokio::time::timeout(Duration::from_secs(20), request.send())
        .await
        .expect("an answer within 20 s")
        .expect("request sent")
}

/// A response's status and body parsed as JSON (panics, showing the text, if it is not).
pub async fn json_of(response: reqwest::Response) -> (reqwest::StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, value)
}

/// One SSE event's payload (`data: ...`) and when its last byte arrived.
#[derive(Debug, Clone)]
pub struct Event {
    pub data: String,
    pub at: Instant,
}

/// How a streamed body ended.
#[derive(Debug)]
pub struct Sse {
    pub events: Vec<Event>,
    /// `Some` when the body broke off with an error instead of ending cleanly.
    pub error: Option<String>,
}

impl Sse {
    /// The concatenated `delta.content` of every chunk.
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter(|e| e.data != "[DONE]")
            .filter_map(|e| {
                let chunk: Value = serde_json::from_str(&e.data).ok()?;
                chunk["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// Reads a streamed body event by event (bounded at `limit`), stamping each event's arrival.
pub async fn read_sse(mut response: reqwest::Response, limit: Duration) -> Sse {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buffer = String::new();
    let mut events = Vec::new();
    let error = loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("stream still open after {limit:?}; got {events:?}"));
        match chunk {
            Ok(Some(bytes)) => {
                buffer.push_str(&String::from_utf8_lossy(&bytes));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    for line in event.lines() {
                        if let Some(data) = line.strip_prefix("data: ") {
                            events.push(Event {
                                data: data.to_owned(),
                                at: Instant::now(),
                            });
                        }
                    }
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(format!("{e:?}")),
        }
    };
    Sse { events, error }
}

/// The one polling helper of the gateway's tests, shared with `tests/common`.
pub use crate::common::wait_for;

/// Asserts OpenAI's error shape and returns `error`.
pub fn openai_error(body: &Value) -> &Value {
    let error = &body["error"];
    assert!(error["message"].is_string(), "no error.message: {body}");
    assert!(error["type"].is_string(), "no error.type: {body}");
    assert!(error.get("param").is_some(), "no error.param: {body}");
    assert!(error.get("code").is_some(), "no error.code: {body}");
    error
}

/// A port that was free a moment ago and that nobody listens on now.
pub fn dead_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}
