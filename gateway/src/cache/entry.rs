//! What is stored: one finished chat completion, as OpenAI's non-streaming JSON, and when it
//! was made; and the rules for what may be stored at all.
//!
//! Only an answer that is whole and would be given again is kept: status 200, and every choice
//! ended with `finish_reason` `stop` or `length`. Not `tool_calls` (the model is waiting for the
//! caller's tools, whose results differ), not `content_filter`, not a stream cut half way or
//! ended by an error event, not an answer with `logprobs` (which the replay does not rebuild).
//!
//! A non-streamed answer is stored as the upstream's bytes, untouched: a hit gives the same
//! `choices`, byte for byte. A streamed answer is assembled from its chunks into the same
//! non-streamed shape (content and refusal concatenated, tool calls merged by index, usage from
//! the usage chunk if the client asked for one), so either form of a request can be served
//! from either form of a miss ([`super::replay`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use serde_json::{Map, Value, json};

use crate::telemetry::labels::CacheSkip;

/// The bytes in front of an entry in Redis: a format tag and the version of the key.
const MAGIC: &[u8; 4] = b"GWC1";

/// The fields a completion and each of its chunks share, copied from one to the other.
pub const HEAD_FIELDS: [&str; 5] = [
    "id",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
];

/// One cached answer.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the answer was made (ms since the Unix epoch): every instance computes the same
    /// `Age` from it.
    created_ms: u64,
    /// A `chat.completion` object, as JSON.
    pub body: Bytes,
    /// Whether `body` has `usage`: a stream assembled without `include_usage` has none, and
    /// cannot answer a request that wants it.
    pub has_usage: bool,
}

impl Entry {
    /// A non-streamed answer, checked (see the module docs).
    pub fn from_json(body: Bytes) -> Result<Self, CacheSkip> {
        let value: Value = serde_json::from_slice(&body).map_err(|_| CacheSkip::Unreadable)?;
        check(&value)?;
        Ok(Self {
            created_ms: now_ms(),
            has_usage: value.get("usage").is_some_and(|u| !u.is_null()),
            body,
        })
    }

    /// A streamed answer (its SSE body, whole), assembled and checked.
    pub fn from_sse(sse: &[u8]) -> Result<Self, CacheSkip> {
        let completion = assemble(sse)?;
        check(&completion)?;
        Ok(Self {
            created_ms: now_ms(),
            has_usage: completion.get("usage").is_some_and(|u| !u.is_null()),
            body: Bytes::from(completion.to_string()),
        })
    }

    /// Whole seconds since the answer was made.
    pub fn age(&self) -> u64 {
        now_ms().saturating_sub(self.created_ms) / 1000
    }

    /// How long it may still be served, under `ttl`.
    pub fn remaining(&self, ttl: Duration) -> Duration {
        let age = Duration::from_millis(now_ms().saturating_sub(self.created_ms));
        ttl.saturating_sub(age)
    }

    /// What the in-process tier weighs it at: what it holds, plus its key and bookkeeping.
    pub fn weight(&self, key: &str) -> u32 {
        u32::try_from(self.body.len() + key.len() + 64).unwrap_or(u32::MAX)
    }

    /// The Redis value: `MAGIC`, the creation time, the JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 9 + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.push(u8::from(self.has_usage));
        out.extend_from_slice(&self.body);
        out
    }

    /// `None` for a value this version did not write.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC)?;
        let (created, rest) = rest.split_first_chunk::<8>()?;
        let (&usage, body) = rest.split_first()?;
        Some(Self {
            created_ms: u64::from_be_bytes(*created),
            has_usage: usage == 1,
            body: Bytes::copy_from_slice(body),
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A `chat.completion` whose every choice ended `stop` or `length`, without logprobs.
fn check(completion: &Value) -> Result<(), CacheSkip> {
    let Some(Value::Array(choices)) = completion.get("choices") else {
        return Err(CacheSkip::Unreadable);
    };
    if choices.is_empty() {
        return Err(CacheSkip::Unreadable);
    }
    for choice in choices {
        if choice.get("logprobs").is_some_and(|l| !l.is_null()) || !choice["message"].is_object() {
            return Err(CacheSkip::Unreadable);
        }
        match choice["finish_reason"].as_str() {
            Some("stop" | "length") => {}
            _ => return Err(CacheSkip::FinishReason),
        }
    }
    Ok(())
}

/// One choice being assembled from its deltas.
#[derive(Default)]
struct Choice {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Vec<Map<String, Value>>,
    finish_reason: Value,
    logprobs: bool,
}

/// The `chat.completion` a complete SSE body adds up to; [`CacheSkip::Incomplete`] without
/// `data: [DONE]` or after an error event.
fn assemble(sse: &[u8]) -> Result<Value, CacheSkip> {
    let text = std::str::from_utf8(sse).map_err(|_| CacheSkip::Unreadable)?;
    let mut head = Map::new();
    let mut choices: Vec<(u64, Choice)> = Vec::new();
    let mut usage = Value::Null;
    let mut done = false;
    for data in events(text) {
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(&data).map_err(|_| CacheSkip::Unreadable)?;
        if chunk.get("error").is_some() {
            return Err(CacheSkip::Incomplete);
        }
        for field in HEAD_FIELDS {
            if let Some(value) = chunk.get(field).filter(|v| !v.is_null()) {
                head.entry(field).or_insert_with(|| value.clone());
            }
        }
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        for delta_choice in chunk["choices"].as_array().into_iter().flatten() {
            let index = delta_choice["index"].as_u64().unwrap_or(0);
            let at = match choices.iter().position(|(i, _)| *i == index) {
                Some(at) => at,
                None => {
                    choices.push((index, Choice::default()));
                    choices.len() - 1
                }
            };
            merge(&mut choices[at].1, delta_choice);
        }
    }
    if !done {
        return Err(CacheSkip::Incomplete);
    }
    choices.sort_by_key(|(index, _)| *index);
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, choice)| finish(index, choice))
        .collect::<Result<_, _>>()?;
    let mut completion = head;
    completion.insert("object".into(), json!("chat.completion"));
    completion.insert("choices".into(), Value::Array(choices));
    if !usage.is_null() {
        completion.insert("usage".into(), usage);
    }
    Ok(Value::Object(completion))
}

/// The `data:` payloads of an SSE body, one per event (multi-line data joined with `\n`).
fn events(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split("\n\n")
        .flat_map(|block| block.split("\r\n\r\n"))
        .filter_map(|event| {
            let lines: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                .collect();
            (!lines.is_empty()).then(|| lines.join("\n"))
        })
}

fn merge(choice: &mut Choice, delta_choice: &Value) {
    let delta = &delta_choice["delta"];
    if let Some(role) = delta["role"].as_str() {
        choice.role.get_or_insert_with(|| role.to_owned());
    }
    for (field, into) in [
        ("content", &mut choice.content),
        ("refusal", &mut choice.refusal),
    ] {
        if let Some(piece) = delta[field].as_str() {
            into.get_or_insert_with(String::new).push_str(piece);
        }
    }
    for call in delta["tool_calls"].as_array().into_iter().flatten() {
        let index = call["index"].as_u64().unwrap_or(0);
        let slot = match choice
            .tool_calls
            .iter()
            .position(|c| c.get("index").and_then(Value::as_u64) == Some(index))
        {
            Some(at) => &mut choice.tool_calls[at],
            None => {
                choice.tool_calls.push(Map::from_iter([
                    ("index".to_owned(), json!(index)),
                    ("function".to_owned(), json!({"name": "", "arguments": ""})),
                ]));
                let last = choice.tool_calls.len() - 1;
                &mut choice.tool_calls[last]
            }
        };
        for field in ["id", "type"] {
            if let Some(value) = call.get(field).filter(|v| !v.is_null()) {
                slot.insert(field.to_owned(), value.clone());
            }
        }
        for field in ["name", "arguments"] {
            if let Some(piece) = call["function"][field].as_str() {
                let function = &mut slot["function"];
                let so_far = function[field].as_str().unwrap_or_default().to_owned();
                function[field] = Value::String(so_far + piece);
            }
        }
    }
    if !delta_choice["finish_reason"].is_null() {
        choice.finish_reason = delta_choice["finish_reason"].clone();
    }
    if delta_choice.get("logprobs").is_some_and(|l| !l.is_null()) {
        choice.logprobs = true;
    }
}

fn finish(index: u64, choice: Choice) -> Result<Value, CacheSkip> {
    if choice.logprobs {
        return Err(CacheSkip::Unreadable);
    }
    let mut message = Map::new();
    message.insert(
        "role".into(),
        json!(choice.role.as_deref().unwrap_or("assistant")),
    );
    message.insert("content".into(), json!(choice.content));
    message.insert("refusal".into(), json!(choice.refusal));
    if !choice.tool_calls.is_empty() {
        let calls = choice
            .tool_calls
            .into_iter()
            .map(|mut call| {
                call.remove("index");
                Value::Object(call)
            })
            .collect();
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    Ok(json!({
        "index": index,
        "message": message,
        "logprobs": null,
        "finish_reason": choice.finish_reason,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse(chunks: &[Value]) -> String {
        let mut text: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        text.push_str("data: [DONE]\n\n");
        text
    }

    fn chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "c-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
    }

    #[test]
    fn a_stream_adds_up_to_a_completion() {
        let body = sse(&[
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": "Hello "}), Value::Null),
            chunk(json!({"content": "world"}), Value::Null),
            chunk(json!({}), json!("stop")),
            json!({"id": "c-1", "object": "chat.completion.chunk", "created": 7, "model": "m",
                   "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        ]);
        let entry = Entry::from_sse(body.as_bytes()).expect("storable");
        assert!(entry.has_usage);
        let value: Value = serde_json::from_slice(&entry.body).expect("json");
        assert_eq!(value["object"], "chat.completion");
        assert_eq!(value["id"], "c-1");
        assert_eq!(value["choices"][0]["message"]["content"], "Hello world");
        assert_eq!(value["choices"][0]["message"]["role"], "assistant");
        assert_eq!(value["choices"][0]["finish_reason"], "stop");
        assert_eq!(value["usage"]["total_tokens"], 5);
    }

    #[test]
    fn tool_calls_are_merged_by_index() {
        let call =
            |index: u64, extra: Value| json!({"tool_calls": [{"index": index, "function": extra}]});
        let mut first = call(0, json!({"name": "get_weather", "arguments": ""}));
        first["tool_calls"][0]["id"] = json!("call_1");
        first["tool_calls"][0]["type"] = json!("function");
        let body = sse(&[
            chunk(json!({"role": "assistant", "content": null}), Value::Null),
            chunk(first, Value::Null),
            chunk(call(0, json!({"arguments": "{\"city\":"})), Value::Null),
            chunk(call(0, json!({"arguments": "\"Paris\"}"})), Value::Null),
            chunk(json!({}), json!("stop")),
        ]);
        let entry = Entry::from_sse(body.as_bytes()).expect("storable");
        assert!(!entry.has_usage);
        let value: Value = serde_json::from_slice(&entry.body).expect("json");
        let calls = &value["choices"][0]["message"]["tool_calls"];
        assert_eq!(calls[0]["id"], "call_1");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert!(calls[0].get("index").is_none());
    }

    #[test]
    fn only_whole_answers_are_kept() {
        let cut = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
        assert_eq!(
            Entry::from_sse(cut.as_bytes()).err(),
            Some(CacheSkip::Incomplete)
        );
        let tools = sse(&[chunk(json!({}), json!("tool_calls"))]);
        assert_eq!(
            Entry::from_sse(tools.as_bytes()).err(),
            Some(CacheSkip::FinishReason)
        );
        let error = "data: {\"error\":{\"message\":\"cut\"}}\n\ndata: [DONE]\n\n";
        assert_eq!(
            Entry::from_sse(error.as_bytes()).err(),
            Some(CacheSkip::Incomplete)
        );
        let json = |finish: &str| {
            Bytes::from(format!(
                r#"{{"object":"chat.completion","choices":[{{"index":0,"message":{{"role":"assistant","content":"x"}},"finish_reason":"{finish}"}}]}}"#
            ))
        };
        assert!(Entry::from_json(json("length")).is_ok());
        assert_eq!(
            Entry::from_json(json("content_filter")).err(),
            Some(CacheSkip::FinishReason)
        );
        assert_eq!(
            Entry::from_json(Bytes::from_static(b"not json")).err(),
            Some(CacheSkip::Unreadable)
        );
    }

    #[test]
    fn the_redis_value_reads_back() {
        let body = Bytes::from_static(
            br#"{"choices":[{"index":0,"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"total_tokens":1}}"#,
        );
        let entry = Entry::from_json(body.clone()).expect("storable");
        let back = Entry::decode(&entry.encode()).expect("decodes");
        assert_eq!(back.body, body);
        assert_eq!(back.created_ms, entry.created_ms);
        assert!(back.has_usage);
        assert!(Entry::decode(b"GWC0xxxxxxxxx").is_none());
        assert!(Entry::decode(b"GWC1").is_none());
    }
}
