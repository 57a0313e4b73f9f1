//! The wire of one `diag llm` stream: the request it sends, the server-sent events it reads
//! back, and the ways either can fail.
//!
//! The events are split by `eventsource-stream` (events split across TCP chunks, several events
//! in one chunk, CRLF, comments: the WHATWG rules), and each `data:` is read as an OpenAI
//! `chat.completion.chunk`, leniently, because servers (vLLM, Ollama, gateways) vary.

use std::borrow::Cow;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError};
use futures_util::{Stream, StreamExt as _};
use serde::Deserialize;

use crate::cli::LlmArgs;
use crate::root_cause;

/// The body of every request, encoded once.
pub(super) fn request_body(args: &LlmArgs) -> anyhow::Result<Bytes> {
    let mut body = serde_json::json!({
        "model": args.model,
        "messages": [{"role": "user", "content": args.prompt}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(max_tokens) = args.max_tokens {
        body["max_tokens"] = max_tokens.into();
    }
    Ok(serde_json::to_vec(&body)
        .context("cannot encode the request")?
        .into())
}

/// Why a stream failed: a short kind (`http_500`, `connect`, `timeout`, `cut`, …) that keys
/// the error counts, and a message for a person.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Failure {
    pub(super) kind: String,
    pub(super) message: String,
}

impl Failure {
    fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// A request that got no response.
    fn sending(error: &reqwest::Error) -> Self {
        let kind = if error.is_connect() {
            "connect"
        } else if error.is_timeout() {
            "timeout"
        } else {
            "other"
        };
        Self::new(kind, root_cause(error))
    }
}

/// Waits for the response to `request`, at most `timeout`. Anything but a 2xx is a failure
/// named after its status.
pub(super) async fn response(
    request: impl Future<Output = Result<reqwest::Response, reqwest::Error>>,
    timeout: Duration,
) -> Result<reqwest::Response, Failure> {
    let response = match tokio::time::timeout(timeout, request).await {
        Err(_) => {
            return Err(Failure::new(
                "timeout",
                format!("no response within {timeout:?}"),
            ));
        }
        Ok(Err(error)) => return Err(Failure::sending(&error)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if !status.is_success() {
        // The server explains a refusal in the body: keep the start of it.
        let body = tokio::time::timeout(timeout, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let body: String = body.trim().chars().take(160).collect();
        return Err(Failure::new(
            format!("http_{}", status.as_u16()),
            format!("HTTP {status}: {body}"),
        ));
    }
    Ok(response)
}

/// The next event's `data`, waiting at most `timeout`. A stream that goes quiet, ends before
/// `[DONE]` or breaks is a failure; `tokens` (content events so far) goes into its message.
pub(super) async fn next_data(
    events: &mut (impl Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Unpin),
    timeout: Duration,
    tokens: u64,
) -> Result<String, Failure> {
    match tokio::time::timeout(timeout, events.next()).await {
        Err(_) => Err(Failure::new(
            "timeout",
            format!("no event for {timeout:?} (after {tokens} tokens)"),
        )),
        Ok(None) => Err(Failure::new(
            "cut",
            format!("the stream ended before [DONE] (after {tokens} tokens)"),
        )),
        Ok(Some(Err(EventStreamError::Transport(error)))) => Err(Failure::new(
            "cut",
            format!("{} (after {tokens} tokens)", root_cause(&error)),
        )),
        Ok(Some(Err(error))) => Err(Failure::new("bad_event", error.to_string())),
        Ok(Some(Ok(event))) => Ok(event.data),
    }
}

/// What one event's `data` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Data {
    /// `[DONE]`: the stream completed.
    Done,
    /// A chunk: whether it carried content (a token), and the usage count if it had one.
    Chunk {
        content: bool,
        usage_tokens: Option<u64>,
    },
}

/// Reads one event's `data`: `[DONE]`, a chunk, or a failure (not JSON, or an error object).
pub(super) fn read(data: &str) -> Result<Data, Failure> {
    if data == "[DONE]" {
        return Ok(Data::Done);
    }
    let chunk: Chunk<'_> = serde_json::from_str(data).map_err(|error| {
        let data: String = data.chars().take(80).collect();
        Failure::new("bad_event", format!("{error} in `{data}`"))
    })?;
    if let Some(error) = &chunk.error {
        let error: String = error.to_string().chars().take(160).collect();
        return Err(Failure::new("api_error", error));
    }
    Ok(Data::Chunk {
        content: chunk.has_content(),
        usage_tokens: chunk.usage.and_then(|usage| usage.completion_tokens),
    })
}

/// The parts of an OpenAI `chat.completion.chunk` diag reads. Lenient: a field it does not
/// know or that is `null` is skipped, as other servers (vLLM, Ollama, gateways) vary.
#[derive(Debug, Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    /// Some servers report a failure mid-stream as `data: {"error": {...}}`.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Debug, Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    completion_tokens: Option<u64>,
}

impl Chunk<'_> {
    fn has_content(&self) -> bool {
        self.choices.iter().any(|choice| {
            choice
                .delta
                .as_ref()
                .and_then(|delta| delta.content.as_deref())
                .is_some_and(|content| !content.is_empty())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_read_leniently() {
        let role: Chunk<'_> = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}"#,
        )
        .expect("role chunk");
        assert!(!role.has_content());
        let token: Chunk<'_> =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"Hi \"you\""}}]}"#)
                .expect("token chunk");
        assert!(token.has_content());
        let usage: Chunk<'_> =
            serde_json::from_str(r#"{"choices":[],"usage":{"completion_tokens":10}}"#)
                .expect("usage chunk");
        assert_eq!(usage.usage.and_then(|u| u.completion_tokens), Some(10));
        let error: Chunk<'_> =
            serde_json::from_str(r#"{"error":{"message":"overloaded"}}"#).expect("error chunk");
        assert!(error.error.is_some());
    }

    #[test]
    fn data_is_done_a_chunk_or_a_failure() {
        assert_eq!(read("[DONE]"), Ok(Data::Done));
        assert_eq!(
            read(r#"{"choices":[{"delta":{"content":"Hi"}}],"usage":{"completion_tokens":3}}"#),
            Ok(Data::Chunk {
                content: true,
                usage_tokens: Some(3)
            })
        );
        let bad = read("not json").expect_err("not a chunk");
        assert_eq!(bad.kind, "bad_event");
        assert!(bad.message.ends_with("in `not json`"), "{bad:?}");
        let api = read(r#"{"error":{"message":"overloaded"}}"#).expect_err("an error chunk");
        assert_eq!(api.kind, "api_error");
        assert!(api.message.contains("overloaded"), "{api:?}");
    }
}
