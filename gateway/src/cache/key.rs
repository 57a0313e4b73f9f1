//! Which requests share an answer: the cache key, and the request's own say (`Cache-Control`).
//!
//! Two requests share a cached answer only when everything that could make their answers
//! differ is the same. The key is
//!
//! ```text
//! gateway:cache:v1:<provider>:<caller>:<sha256 of the canonical request>
//! ```
//!
//! - `v1`: the format of what is stored. A change to it (or to what goes into the hash) bumps
//!   the version, so instances with the new code never read entries written by the old.
//! - `<caller>`: whose answer it is, as a digest: the API key's (never the key), or the client's
//!   IP address when the gateway has no keys. Two keys never share an entry, even for the same
//!   prompt: an answer may hold what one tenant's system prompt or tools put there, and one
//!   tenant must not learn from timing whether another asked the same. Other gateways have
//!   shipped exactly that leak.
//! - `<provider>`: the provider that serves the model; the model itself is in the hash.
//! - the hash covers the canonical JSON of every body field that can change the answer, and the
//!   `x-mock-*` headers (the mock's knobs travel as headers and change its answer). Left out:
//!   `stream` and `stream_options` (how the answer is delivered, not what it is: a streamed
//!   request can be served an answer first fetched without streaming, and the reverse), and
//!   `user` (an end-user id for abuse tracking, not an input of the model). Canonical: object
//!   keys sorted, numbers normalised (`0`, `0.0` and `0e0` are one number), no whitespace, so
//!   two clients that serialise the same request differently still meet.

use std::fmt::Write as _;

use axum::http::{HeaderMap, header};
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::policy::limits::ClientId;

/// Bump when what is stored or what is hashed changes.
pub const VERSION: &str = "v1";

/// Body fields that do not change the answer.
const NOT_IN_KEY: [&str; 3] = ["stream", "stream_options", "user"];

/// What the cache needs to know of a request body, read once.
#[derive(Debug)]
pub struct Facts {
    /// `stream: true`: a hit is replayed as SSE.
    pub stream: bool,
    /// `stream_options.include_usage`: the replay ends with a usage chunk.
    pub include_usage: bool,
    /// `temperature` 0 or a `seed`: what `--cache-mode deterministic` caches.
    pub deterministic: bool,
    /// SHA-256 (hex) of the canonical request (see the module docs).
    pub hash: String,
}

impl Facts {
    /// `None` when the body is not a JSON object (the handler has already refused that).
    pub fn read(body: &[u8], headers: &HeaderMap) -> Option<Facts> {
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let stream = fields.get("stream") == Some(&Value::Bool(true));
        let include_usage = stream
            && fields
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                == Some(&Value::Bool(true));
        let zero = |v: &Value| v.as_f64() == Some(0.0);
        let deterministic = fields.get("temperature").is_some_and(zero)
            || fields.get("seed").is_some_and(|s| !s.is_null());
        for name in NOT_IN_KEY {
            fields.remove(name);
        }
        let knobs: Map<String, Value> = headers
            .iter()
            .filter(|(name, _)| name.as_str().starts_with("x-mock-"))
            .map(|(name, value)| {
                let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
                (name.as_str().to_owned(), Value::String(text))
            })
            .collect();
        let mut canonical = String::new();
        write_canonical(
            &mut canonical,
            &Value::Object(Map::from_iter([
                ("body".to_owned(), Value::Object(fields)),
                ("headers".to_owned(), Value::Object(knobs)),
            ])),
        );
        Some(Facts {
            stream,
            include_usage,
            deterministic,
            hash: hex(&Sha256::digest(canonical.as_bytes())),
        })
    }
}

/// Whose answers these are, as it appears in the key; `None` when nobody can be told apart.
pub fn caller(client: Option<&ClientId>) -> Option<String> {
    // A digest of a digest, under the cache's own label: the key names a caller without being
    // the value the rate limiter or anything else uses for it.
    client?.labelled_digest(b"gateway-cache-caller\0")
}

/// The key of one answer.
pub fn key(provider: &str, caller: &str, hash: &str) -> String {
    format!("gateway:cache:{VERSION}:{provider}:{caller}:{hash}")
}

/// What the request's `Cache-Control` asks of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// `no-cache`: do not answer from the cache (the answer may still be stored).
    pub no_cache: bool,
    /// `no-store`: do not store this answer.
    pub no_store: bool,
    /// `max-age=N`: only answers at most N seconds old.
    pub max_age: Option<u64>,
}

impl Directives {
    /// Every `Cache-Control` header, comma-separated directives, case-insensitive; directives
    /// that mean nothing to a request cache (`no-transform`, ...) are ignored. A malformed
    /// `max-age` is a 400: the client meant a bound, and serving an answer of any age would
    /// ignore it.
    pub fn read(headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut directives = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let text = value.to_str().map_err(|_| bad("it is not visible ASCII"))?;
            for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                let (name, argument) = match directive.split_once('=') {
                    Some((name, argument)) => (name.trim(), Some(argument.trim())),
                    None => (directive, None),
                };
                if name.eq_ignore_ascii_case("no-cache") {
                    directives.no_cache = true;
                } else if name.eq_ignore_ascii_case("no-store") {
                    directives.no_store = true;
                } else if name.eq_ignore_ascii_case("max-age") {
                    let seconds = argument
                        .map(|a| a.trim_matches('"'))
                        .and_then(|a| a.parse::<u64>().ok())
                        .ok_or_else(|| {
                            bad(&format!(
                                "max-age must be a whole number of seconds, got {directive:?}"
                            ))
                        })?;
                    // Two bounds: the stricter one holds.
                    directives.max_age =
                        Some(directives.max_age.map_or(seconds, |m| m.min(seconds)));
                }
            }
        }
        Ok(directives)
    }
}

fn bad(why: &str) -> ApiError {
    ApiError::bad_request(
        None,
        format!(
            "invalid Cache-Control header: {why} (the gateway reads no-cache, no-store and \
             max-age=SECONDS)"
        ),
    )
    .with_code("invalid_cache_control")
}

/// `value` as canonical JSON: sorted keys, normalised numbers, no whitespace.
fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            let mut names: Vec<&String> = fields.keys().collect();
            names.sort_unstable();
            out.push('{');
            for (i, name) in names.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_canonical(out, &fields[name]);
            }
            out.push('}');
        }
    }
}

/// An integral value within ±2^53 as an integer (`1.0`, `1e0` and `1` are all `1`); any other
/// float in the shortest text that reads back to it; larger integers as they are.
fn write_number(out: &mut String, n: &Number) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(x) = n.as_f64() {
        if x.fract() == 0.0 && x.abs() < EXACT {
            // `as` is exact here: integral and within f64's contiguous integers.
            #[allow(clippy::cast_possible_truncation)]
            let i = x as i64;
            let _ = write!(out, "{i}");
        } else {
            let _ = write!(out, "{x:e}");
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    // serde_json's escaping is deterministic: the same string always gives the same text.
    out.push_str(&Value::String(s.to_owned()).to_string());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use axum::http::HeaderValue;

    use super::*;

    fn hash(body: &str) -> String {
        Facts::read(body.as_bytes(), &HeaderMap::new())
            .expect("an object")
            .hash
    }

    #[test]
    fn spelling_does_not_change_the_key() {
        let a = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#;
        let b =
            r#"{ "temperature": 0.0, "messages": [{"content":"hi","role":"user"}], "model": "m" }"#;
        let c = r#"{"temperature":0e0,"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"user":"u-1"}"#;
        assert_eq!(hash(a), hash(b));
        assert_eq!(
            hash(a),
            hash(c),
            "stream, stream_options and user are not in the key"
        );
        assert_eq!(
            hash(r#"{"x":1.50}"#),
            hash(r#"{"x":1.5}"#),
            "numbers are normalised"
        );
    }

    #[test]
    fn what_changes_the_answer_changes_the_key() {
        let base = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        for other in [
            r#"{"model":"n","messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"n":2}"#,
        ] {
            assert_ne!(hash(base), hash(other), "{other}");
        }
        let mut knobs = HeaderMap::new();
        knobs.insert("x-mock-tokens", HeaderValue::from_static("7"));
        let with = Facts::read(base.as_bytes(), &knobs).expect("object").hash;
        assert_ne!(hash(base), with, "the mock's knobs change its answer");
    }

    #[test]
    fn deterministic_means_temperature_zero_or_a_seed() {
        let facts = |body: &str| Facts::read(body.as_bytes(), &HeaderMap::new()).expect("object");
        assert!(facts(r#"{"temperature":0}"#).deterministic);
        assert!(facts(r#"{"temperature":0.7,"seed":3}"#).deterministic);
        assert!(!facts(r#"{"temperature":0.7}"#).deterministic);
        assert!(
            !facts(r#"{}"#).deterministic,
            "the default temperature is 1"
        );
        assert!(!facts(r#"{"seed":null}"#).deterministic);
        let streamed = facts(r#"{"stream":true,"stream_options":{"include_usage":true}}"#);
        assert!(streamed.stream && streamed.include_usage);
        assert!(!facts(r#"{"stream_options":{"include_usage":true}}"#).include_usage);
    }

    #[test]
    fn callers_never_share() {
        let a = caller(Some(&ClientId::Key([1; 32]))).expect("a key");
        let b = caller(Some(&ClientId::Key([2; 32]))).expect("a key");
        let ip = caller(Some(&ClientId::Ip(IpAddr::from([127, 0, 0, 1])))).expect("an ip");
        assert!(a != b && a != ip);
        assert_eq!(caller(Some(&ClientId::Unknown)), None);
        assert_eq!(caller(None), None);
    }

    #[test]
    fn cache_control_is_read() {
        let read = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
            Directives::read(&headers)
        };
        assert!(read("no-cache").expect("ok").no_cache);
        let both = read("No-Store, max-age=60, no-transform").expect("ok");
        assert!(both.no_store && !both.no_cache);
        assert_eq!(both.max_age, Some(60));
        assert_eq!(read("max-age=\"5\"").expect("ok").max_age, Some(5));
        let error = read("max-age=soon").expect_err("not a number");
        assert_eq!(error.code, Some("invalid_cache_control"));
        assert!(error.message.contains("max-age=soon"), "{}", error.message);
        assert_eq!(
            Directives::read(&HeaderMap::new()).expect("ok"),
            Directives::default()
        );
    }
}
