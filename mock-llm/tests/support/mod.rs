//! The one support module of the mock's integration tests. [`Mock`] and [`wait_for`] come from
//! `mock_llm::testing`, the one way every suite of the workspace starts a mock and reads its
//! typed `/stats`, and `get_json`; this adds what only these tests need: [`Chat`], a
//! client for `/v1/chat/completions` with the helpers that read its server-sent events.
//!
//! Each test starts its own mock on `127.0.0.1:0`, on its own thread and runtime, so its timers
//! keep their pace however busy the test's runtime (the clients) gets, and dropping the mock cuts
//! every stream it still serves.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub use mock_llm::stats::{ChatSnapshot, Snapshot};
// Each test binary uses a different subset of these.
#[allow(unused_imports)]
pub use mock_llm::testing::{Mock, get_json, wait_for};

/// The `/slow_stream` counters of a `/stats` snapshot, as `(active_streams, started, completed,
/// cancelled)`: the order the stream tests compare them in.
pub fn streams(stats: &Snapshot) -> (u64, u64, u64, u64) {
    (
        stats.active_streams,
        stats.started,
        stats.completed,
        stats.cancelled,
    )
}

/// A mock and a client for its chat endpoint.
#[derive(Debug)]
pub struct Chat {
    pub mock: Mock,
    pub client: reqwest::Client,
}

impl Chat {
    /// A mock started as `mock-llm <flags>`.
    pub fn start(flags: &[&str]) -> Self {
        Self {
            mock: Mock::with_flags(flags),
            client: reqwest::Client::new(),
        }
    }

    /// A mock whose completions take a few milliseconds (TTFT 5 ms, ITL 1 ms, 5 tokens), plus
    /// `extra` flags.
    pub fn fast(extra: &[&str]) -> Self {
        let mut flags = vec!["--ttft-ms", "5", "--itl-ms", "1", "--tokens", "5"];
        flags.extend_from_slice(extra);
        Self::start(&flags)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.mock.url())
    }

    /// The mock's `host:port`, for a raw socket.
    pub fn addr(&self) -> String {
        self.mock.url().trim_start_matches("http://").to_owned()
    }

    /// `POST /v1/chat/completions` with `body` and `x-mock-*` headers.
    pub async fn chat(&self, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/v1/chat/completions"))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("mock answers")
    }

    /// Like [`Chat::chat`], for a response expected to be JSON: status and body.
    pub async fn chat_json(&self, body: &Value, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self.chat(body, headers).await;
        let status = response.status();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, json)
    }

    /// The mock's `/stats`, typed.
    pub async fn stats(&self) -> Snapshot {
        self.mock.stats().await
    }

    /// Polls `/stats` until `check` holds on its `chat` object, or panics after 5 s naming
    /// `what`; returns the snapshot that held.
    pub async fn wait_chat(&self, what: &str, check: impl Fn(&ChatSnapshot) -> bool) -> Snapshot {
        wait_for(what, Duration::from_secs(5), || async {
            let stats = self.stats().await;
            check(&stats.chat).then_some(stats)
        })
        .await
    }
}

/// A chat request the mock accepts: two messages, 7 words of prompt, streamed or not.
pub fn request(stream: bool) -> Value {
    json!({
        "model": "gpt-test",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something slowly please"},
        ],
    })
}

/// Words in [`request`]'s messages: the mock's `prompt_tokens`.
pub const PROMPT_WORDS: u64 = 3 + 4;

/// One SSE event as received: when (since the request was sent) and its `data:` payload.
#[derive(Debug)]
pub struct Event {
    pub at: Duration,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// Reads SSE events until the body ends or `limit` events came. Returns the events and the body
/// error, if the body ended with one.
pub async fn read_events(
    response: reqwest::Response,
    sent: Instant,
    limit: usize,
) -> (Vec<Event>, Option<reqwest::Error>) {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < limit {
        match body.next().await {
            None => break,
            Some(Err(e)) => return (events, Some(e)),
            Some(Ok(bytes)) => {
                buffer.push_str(std::str::from_utf8(&bytes).expect("utf-8"));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let data = frame
                        .trim_end()
                        .strip_prefix("data: ")
                        .unwrap_or_else(|| panic!("not an SSE data event: {frame:?}"));
                    events.push(Event {
                        at: sent.elapsed(),
                        data: data.to_owned(),
                    });
                }
            }
        }
    }
    assert!(buffer.is_empty(), "trailing partial event: {buffer:?}");
    (events, None)
}

/// The `content` deltas of the token chunks, in order.
pub fn contents(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// `future`, or a panic naming `what` after 10 s: bounds a broken test, does not time a good one.
pub async fn with_timeout<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} took more than 10 s"))
}

/// `body` is an OpenAI-shaped error: a message, a type, a code (maybe null), and `param`.
pub fn assert_openai_error(body: &Value, param: Option<&str>) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("code").is_some(), "{body}");
    assert_eq!(error["param"].as_str(), param, "{body}");
}
