//! The OpenAI Chat Completions wire format: request validation and the response / chunk bodies.
//!
//! A gateway in front of OpenAI-compatible providers is tested with OpenAI clients, so the mock
//! must speak the format exactly enough that those clients cannot tell: the same JSON fields,
//! the same SSE framing (`data: {...}\n\n`, closed by `data: [DONE]\n\n`), the same error shape.
//!
//! Validation follows the real API where it matters to a client: the body must be JSON (the 400
//! quotes serde's line and column), `model` and a non-empty `messages` are required, each field
//! has a type, numbers have ranges, and the error's `param` names the field, as a path
//! (`messages[1].content[0].text`). Top-level fields the mock does not know (`user`, `seed`,
//! `tools`, `response_format`, ...) are accepted and ignored, as real clients send many.
//! The request is checked on a [`serde_json::Value`] rather than derived with serde so that
//! every error can name its field.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Roles a message may have.
pub const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "developer"];

/// What the mock needs from a valid request; everything else is checked and dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// Echoed back in every response; any name is accepted.
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: add a usage chunk before `[DONE]`.
    pub include_usage: bool,
    /// The smaller of `max_tokens` and `max_completion_tokens`, when given.
    pub max_tokens: Option<u32>,
    /// Whitespace-separated words in all message texts: a rough token count.
    pub prompt_tokens: u32,
}

impl ChatRequest {
    /// Parses and validates a request body.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                None,
                format!("We could not parse the JSON body of your request: {e}"),
            )
            .with_code("invalid_json")
        })?;
        let Value::Object(body) = value else {
            return Err(ApiError::bad_request(
                None,
                format!(
                    "The request body must be a JSON object, got {}",
                    kind_of(&value)
                ),
            )
            .with_code("invalid_type"));
        };

        let model = match body.get("model") {
            None | Some(Value::Null) => return Err(missing("model")),
            Some(Value::String(model)) if model.is_empty() => {
                return Err(ApiError::invalid(
                    "model",
                    "invalid_value",
                    "Invalid 'model': empty string.",
                ));
            }
            Some(Value::String(model)) => model.clone(),
            Some(other) => return Err(wrong_type("model", "a string", other)),
        };
        let prompt_tokens = messages(&body)?;

        let stream = optional_bool(&body, "stream")?.unwrap_or(false);
        let include_usage = match body.get("stream_options") {
            None | Some(Value::Null) => false,
            Some(_) if !stream => {
                return Err(ApiError::invalid(
                    "stream_options",
                    "invalid_value",
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                ));
            }
            Some(Value::Object(options)) => optional_bool(options, "include_usage")
                .map_err(|e| rename(e, "stream_options.include_usage"))?
                .unwrap_or(false),
            Some(other) => return Err(wrong_type("stream_options", "an object", other)),
        };

        let max_tokens = optional_positive(&body, "max_tokens")?;
        let max_completion_tokens = optional_positive(&body, "max_completion_tokens")?;
        let max_tokens = match (max_tokens, max_completion_tokens) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };

        if let Some(n) = optional_integer(&body, "n")? {
            if n < 1 {
                return Err(ApiError::invalid(
                    "n",
                    "integer_below_min_value",
                    format!(
                        "Invalid 'n': integer below minimum value. Expected a value >= 1, but got {n} instead."
                    ),
                ));
            }
            if n > 1 {
                return Err(ApiError::invalid(
                    "n",
                    "unsupported_value",
                    format!(
                        "Unsupported value for 'n': mock-llm generates one choice (n = 1), got {n}."
                    ),
                ));
            }
        }
        number_in(&body, "temperature", 0.0, 2.0)?;
        number_in(&body, "top_p", 0.0, 1.0)?;
        number_in(&body, "presence_penalty", -2.0, 2.0)?;
        number_in(&body, "frequency_penalty", -2.0, 2.0)?;

        Ok(Self {
            model,
            stream,
            include_usage,
            max_tokens,
            prompt_tokens,
        })
    }
}

/// Checks `messages` and returns the prompt's word count.
fn messages(body: &Map<String, Value>) -> Result<u32, ApiError> {
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(missing("messages")),
        Some(Value::Array(messages)) => messages,
        Some(other) => return Err(wrong_type("messages", "an array", other)),
    };
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "empty_array",
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        ));
    }
    let mut words: usize = 0;
    for (i, message) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Value::Object(message) = message else {
            return Err(wrong_type(at, "an object", message));
        };
        let role = match message.get("role") {
            None | Some(Value::Null) => return Err(missing(format!("{at}.role"))),
            Some(Value::String(role)) => role.as_str(),
            Some(other) => return Err(wrong_type(format!("{at}.role"), "a string", other)),
        };
        if !ROLES.contains(&role) {
            return Err(ApiError::invalid(
                format!("{at}.role"),
                "invalid_value",
                format!(
                    "Invalid value for '{at}.role': {role:?}. Supported values are: {}.",
                    ROLES.map(|r| format!("'{r}'")).join(", ")
                ),
            ));
        }
        words += match message.get("content") {
            // An assistant turn that only called tools has no content.
            None | Some(Value::Null) if role == "assistant" => 0,
            None | Some(Value::Null) => return Err(missing(format!("{at}.content"))),
            Some(Value::String(text)) => text.split_whitespace().count(),
            Some(Value::Array(parts)) => content_parts(&at, parts)?,
            Some(other) => {
                return Err(wrong_type(
                    format!("{at}.content"),
                    "a string or an array of content parts",
                    other,
                ));
            }
        };
    }
    Ok(u32::try_from(words).unwrap_or(u32::MAX))
}

/// Checks an array of content parts (`{"type": "text", "text": ...}`, images, audio, ...) and
/// returns the words of its text parts.
fn content_parts(at: &str, parts: &[Value]) -> Result<usize, ApiError> {
    if parts.is_empty() {
        return Err(ApiError::invalid(
            format!("{at}.content"),
            "empty_array",
            format!(
                "Invalid '{at}.content': empty array. Expected an array with minimum length 1."
            ),
        ));
    }
    let mut words = 0;
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}.content[{j}]");
        let Value::Object(part) = part else {
            return Err(wrong_type(at, "an object", part));
        };
        let kind = match part.get("type") {
            None | Some(Value::Null) => return Err(missing(format!("{at}.type"))),
            Some(Value::String(kind)) => kind.as_str(),
            Some(other) => return Err(wrong_type(format!("{at}.type"), "a string", other)),
        };
        if kind == "text" {
            words += match part.get("text") {
                None | Some(Value::Null) => return Err(missing(format!("{at}.text"))),
                Some(Value::String(text)) => text.split_whitespace().count(),
                Some(other) => return Err(wrong_type(format!("{at}.text"), "a string", other)),
            };
        }
        // Other part types (image_url, input_audio, file, refusal) are accepted as they are.
    }
    Ok(words)
}

fn optional_bool(body: &Map<String, Value>, name: &'static str) -> Result<Option<bool>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(wrong_type(name, "a boolean", other)),
    }
}

fn optional_integer(
    body: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        // Larger than i64::MAX: still an integer; saturate.
        Some(Value::Number(n)) if n.is_u64() => Ok(Some(i64::MAX)),
        Some(other) => Err(wrong_type(name, "an integer", other)),
    }
}

/// An optional integer >= 1 (token limits), saturated to `u32`.
fn optional_positive(
    body: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<u32>, ApiError> {
    match optional_integer(body, name)? {
        None => Ok(None),
        Some(n) if n < 1 => Err(ApiError::invalid(
            name,
            "integer_below_min_value",
            format!(
                "Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {n} instead."
            ),
        )),
        Some(n) => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
    }
}

fn number_in(
    body: &Map<String, Value>,
    name: &'static str,
    min: f64,
    max: f64,
) -> Result<(), ApiError> {
    let value = match body.get(name) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(other) => return Err(wrong_type(name, "a number", other)),
    };
    if value < min {
        return Err(ApiError::invalid(
            name,
            "decimal_below_min_value",
            format!(
                "Invalid '{name}': decimal below minimum value. Expected a value >= {min}, but got {value} instead."
            ),
        ));
    }
    if value > max {
        return Err(ApiError::invalid(
            name,
            "decimal_above_max_value",
            format!(
                "Invalid '{name}': decimal above maximum value. Expected a value <= {max}, but got {value} instead."
            ),
        ));
    }
    Ok(())
}

fn missing(param: impl Into<String>) -> ApiError {
    let param = param.into();
    let message = format!("Missing required parameter: '{param}'.");
    ApiError::invalid(param, "missing_required_parameter", message)
}

fn wrong_type(param: impl Into<String>, expected: &str, got: &Value) -> ApiError {
    let param = param.into();
    let message = format!(
        "Invalid type for '{param}': expected {expected}, but got {} instead.",
        kind_of(got)
    );
    ApiError::invalid(param, "invalid_type", message)
}

/// Re-targets an error found in a nested object at its full path.
fn rename(mut error: ApiError, param: &'static str) -> ApiError {
    if let Some(old) = error.param.take() {
        error.message = error.message.replace(old.as_ref(), param);
    }
    error.param = Some(param.into());
    error
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------------------------------------
// Responses.

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The completion ran to its natural end (`x-mock-tokens` / `--tokens` tokens).
    Stop,
    /// `max_tokens` / `max_completion_tokens` cut it short.
    Length,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// A non-streaming response, `object: "chat.completion"`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: [Choice; 1],
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub index: u32,
    pub message: Message,
    pub logprobs: Option<()>,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
    pub refusal: Option<()>,
}

/// One streamed event, `object: "chat.completion.chunk"`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatCompletionChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    /// One choice, except in the usage chunk, where it is empty.
    pub choices: Vec<ChunkChoice<'a>>,
    /// Absent unless `stream_options.include_usage`; then `null` on every chunk but the usage
    /// chunk, as OpenAI does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<FinishReason>,
}

/// The change a chunk brings: the role (first chunk), a piece of content, or nothing (last).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Model {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

// ---------------------------------------------------------------------------------------------
// The generated text.

/// The words the mock "generates", in order, wrapping around. Deterministic, so a test can
/// compare the text; plain words, so the whole completion reads as one.
const WORDS: [&str; 24] = [
    "This",
    "is",
    "a",
    "mock",
    "completion",
    "from",
    "mock-llm,",
    "streamed",
    "one",
    "token",
    "at",
    "a",
    "time",
    "so",
    "that",
    "a",
    "gateway",
    "can",
    "be",
    "tested",
    "against",
    "a",
    "slow",
    "upstream.",
];

/// Token `k` (from 0) of every completion: a word and a space.
pub fn token(k: u32) -> String {
    let i = usize::try_from(k).unwrap_or(0) % WORDS.len();
    format!("{} ", WORDS[i])
}

/// The first `n` tokens joined: what the streamed deltas add up to.
pub fn text(n: u32) -> String {
    (0..n).map(token).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ChatRequest, ApiError> {
        ChatRequest::parse(json.as_bytes())
    }

    fn param(json: &str) -> Option<String> {
        parse(json)
            .err()
            .and_then(|e| e.param)
            .map(|p| p.into_owned())
    }

    #[test]
    fn minimal_request() {
        let request =
            parse(r#"{"model":"m","messages":[{"role":"user","content":"hi there you"}]}"#)
                .expect("valid");
        assert_eq!(request.model, "m");
        assert!(!request.stream);
        assert_eq!(request.prompt_tokens, 3);
        assert_eq!(request.max_tokens, None);
    }

    #[test]
    fn params_name_the_field() {
        let msg = r#""messages":[{"role":"user","content":"x"}]"#;
        assert_eq!(param(r#"{"messages":[]}"#).as_deref(), Some("model"));
        assert_eq!(param(r#"{"model":"m"}"#).as_deref(), Some("messages"));
        assert_eq!(
            param(r#"{"model":"m","messages":[]}"#).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param(r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param(
                r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":1}]}]}"#
            )
            .as_deref(),
            Some("messages[0].content[0].text")
        );
        assert_eq!(
            param(&format!(r#"{{"model":"m",{msg},"max_tokens":0}}"#)).as_deref(),
            Some("max_tokens")
        );
        assert_eq!(
            param(&format!(r#"{{"model":"m",{msg},"temperature":2.5}}"#)).as_deref(),
            Some("temperature")
        );
        assert_eq!(
            param(&format!(
                r#"{{"model":"m",{msg},"stream":true,"stream_options":{{"include_usage":"yes"}}}}"#
            ))
            .as_deref(),
            Some("stream_options.include_usage")
        );
    }

    #[test]
    fn tool_call_turns_and_parts_are_accepted() {
        let request = parse(
            r#"{"model":"m","user":"u","seed":3,"tools":[],"messages":[
                {"role":"system","content":"be brief"},
                {"role":"assistant","content":null,"tool_calls":[]},
                {"role":"user","content":[{"type":"text","text":"two words"},{"type":"image_url","image_url":{"url":"x"}}]}
            ]}"#,
        )
        .expect("valid");
        assert_eq!(request.prompt_tokens, 4);
    }

    #[test]
    fn text_is_the_tokens_joined() {
        assert_eq!(text(3), "This is a ");
        assert_eq!(token(24), token(0));
    }
}
