//! A cached answer given back: as the JSON it is stored as, or as a proper SSE stream.
//!
//! A `stream: true` request served from the cache must not be able to tell. Its stream is the
//! shape OpenAI sends and its SDKs parse, chunk for chunk:
//!
//! 1. per choice, a role chunk: `delta: {role: "assistant", content: ""}`;
//! 2. the content in word-sized deltas (a word and the space after it; a long run without a
//!    space in pieces of at most 24 characters), then the refusal the same way;
//! 3. each tool call: its `id`, `type` and function `name` with empty arguments, then the
//!    arguments in pieces;
//! 4. a finish chunk, `delta: {}` with the stored `finish_reason`;
//! 5. with `stream_options.include_usage`, a chunk with `choices: []` and the stored `usage`
//!    (and `usage: null` on every chunk before it, as OpenAI does);
//! 6. `data: [DONE]`.
//!
//! Replaying the whole content as one delta would be shorter, and would break clients that
//! render as they go, count deltas, or time them; replaying in 5-character fragments (which
//! other gateways have shipped) multiplies the events for nothing. A word is what a token
//! roughly is.

use std::io;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use futures_util::stream;
use serde_json::{Map, Value, json};

use super::entry::{Entry, HEAD_FIELDS};
use crate::upstream::{StreamMethod, UpstreamResponse};

/// The longest delta a run of text without spaces is cut into.
const MAX_PIECE_CHARS: usize = 24;

/// `entry` as the non-streamed answer: its stored bytes.
pub fn json(entry: &Entry) -> UpstreamResponse {
    let body = entry.body.clone();
    respond("application/json", vec![body])
}

/// `entry` as an SSE stream (see the module docs). A stored body that is not the JSON it was
/// checked to be when stored cannot happen; it would replay as a stream of `[DONE]` alone.
pub fn sse(entry: &Entry, include_usage: bool) -> UpstreamResponse {
    let completion: Value = serde_json::from_slice(&entry.body).unwrap_or(Value::Null);
    respond("text/event-stream", events(&completion, include_usage))
}

fn respond(content_type: &'static str, chunks: Vec<Bytes>) -> UpstreamResponse {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    UpstreamResponse {
        status: StatusCode::OK,
        headers,
        body: Box::pin(stream::iter(chunks.into_iter().map(Ok::<_, io::Error>))),
        method: StreamMethod::Cache,
    }
}

/// Every event of the replay, `data: [DONE]` last.
pub fn events(completion: &Value, include_usage: bool) -> Vec<Bytes> {
    let mut head = Map::new();
    for field in HEAD_FIELDS {
        if let Some(value) = completion.get(field) {
            head.insert(field.to_owned(), value.clone());
        }
    }
    head.insert("object".into(), json!("chat.completion.chunk"));
    if include_usage {
        head.insert("usage".into(), Value::Null);
    }
    let chunk = |index: &Value, delta: Value, finish: &Value| {
        let mut chunk = head.clone();
        chunk.insert(
            "choices".into(),
            json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]),
        );
        event(&Value::Object(chunk))
    };
    let mut out = Vec::new();
    for choice in completion["choices"].as_array().into_iter().flatten() {
        let index = &choice["index"];
        let message = &choice["message"];
        let role = message["role"].as_str().unwrap_or("assistant");
        out.push(chunk(
            index,
            json!({"role": role, "content": ""}),
            &Value::Null,
        ));
        for field in ["content", "refusal"] {
            for piece in words(message[field].as_str().unwrap_or_default()) {
                out.push(chunk(index, json!({ field: piece }), &Value::Null));
            }
        }
        for (i, call) in message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let function = &call["function"];
            let opening = json!({"tool_calls": [{
                "index": i, "id": call["id"], "type": call["type"],
                "function": {"name": function["name"], "arguments": ""},
            }]});
            out.push(chunk(index, opening, &Value::Null));
            for piece in pieces(function["arguments"].as_str().unwrap_or_default()) {
                let delta = json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]});
                out.push(chunk(index, delta, &Value::Null));
            }
        }
        out.push(chunk(index, json!({}), &choice["finish_reason"]));
    }
    if include_usage {
        let mut last = head.clone();
        last.insert("choices".into(), json!([]));
        last.insert(
            "usage".into(),
            completion.get("usage").cloned().unwrap_or(Value::Null),
        );
        out.push(event(&Value::Object(last)));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// `text` as word-sized pieces: each ends after a run of whitespace, so `"Hello big world"`
/// is `["Hello ", "big ", "world"]`; a word longer than `MAX_PIECE_CHARS` is cut.
pub fn words(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = 0;
    let mut prev_space = false;
    for (at, c) in text.char_indices() {
        let space = c.is_whitespace();
        if at > start && ((prev_space && !space) || chars >= MAX_PIECE_CHARS) {
            out.push(&text[start..at]);
            start = at;
            chars = 0;
        }
        chars += 1;
        prev_space = space;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// `text` in pieces of at most [`MAX_PIECE_CHARS`] characters (tool-call arguments are JSON,
/// where words mean little).
fn pieces(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (n, (at, _)) in text.char_indices().enumerate() {
        if n > 0 && n % MAX_PIECE_CHARS == 0 {
            out.push(&text[start..at]);
            start = at;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_their_spaces_and_add_up() {
        assert_eq!(words("Hello big  world"), ["Hello ", "big  ", "world"]);
        assert_eq!(words(" lead"), [" ", "lead"]);
        assert!(words("").is_empty());
        let long = "x".repeat(50);
        assert_eq!(words(&long).len(), 3);
        let text = "été à l'eau, 日本語のテキスト and more ";
        assert_eq!(words(text).concat(), text);
        let args = "{\"city\":\"Paris\",\"unit\":\"celsius\",\"days\":3}";
        assert_eq!(pieces(args).concat(), args);
        assert!(
            pieces(args)
                .iter()
                .all(|p| p.chars().count() <= MAX_PIECE_CHARS)
        );
    }

    /// The replay of a stored answer, assembled again, is that answer: content, tool calls,
    /// finish reason and usage survive the round trip.
    #[test]
    fn a_replay_assembles_back_into_its_entry() {
        let stored = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 5, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there you",
                "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "f", "arguments": "{\"a\":\"a long argument value here\"}"}}]},
                "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
        });
        let entry = Entry::from_json(Bytes::from(stored.to_string())).expect("storable");
        let events = events(&stored, true);
        let text: String = events
            .iter()
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect();
        assert!(text.ends_with("data: [DONE]\n\n"));
        let first: Value = serde_json::from_str(
            text.lines()
                .next()
                .and_then(|l| l.strip_prefix("data: "))
                .expect("an event"),
        )
        .expect("json");
        assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(first["object"], "chat.completion.chunk");
        assert!(first["usage"].is_null() && first.get("usage").is_some());
        let back = Entry::from_sse(text.as_bytes()).expect("a whole stream");
        let back: Value = serde_json::from_slice(&back.body).expect("json");
        let original: Value = serde_json::from_slice(&entry.body).expect("json");
        assert_eq!(back["choices"], original["choices"].clone().tap_refusal());
        assert_eq!(back["usage"], original["usage"]);
        assert_eq!(back["id"], original["id"]);
    }

    trait TapRefusal {
        fn tap_refusal(self) -> Value;
    }

    /// The assembled message always names `refusal` (null when there was none), as OpenAI's
    /// non-streamed messages do.
    impl TapRefusal for Value {
        fn tap_refusal(mut self) -> Value {
            for choice in self.as_array_mut().into_iter().flatten() {
                choice["message"]["refusal"] = Value::Null;
            }
            self
        }
    }
}
