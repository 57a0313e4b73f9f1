//! OpenAI chat requests through the gateway: a minimal body, a bounded POST, SSE read event by
//! event with arrival times, and OpenAI's error shape.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client;

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

/// Asserts OpenAI's error shape and returns `error`.
pub fn openai_error(body: &Value) -> &Value {
    let error = &body["error"];
    assert!(error["message"].is_string(), "no error.message: {body}");
    assert!(error["type"].is_string(), "no error.type: {body}");
    assert!(error.get("param").is_some(), "no error.param: {body}");
    assert!(error.get("code").is_some(), "no error.code: {body}");
    error
}
