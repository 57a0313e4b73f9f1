//! API keys: who may use the gateway's relaying routes, checked without leaking the keys.
//!
//! Keys come from `--api-key` (repeatable), `GATEWAY_API_KEYS` (comma-separated) and
//! `--api-keys-file` (one per line, `#` comments), all merged. A client presents one as
//! `Authorization: Bearer <key>` (what OpenAI's SDKs send) or `X-API-Key: <key>`. With no key
//! configured, authentication is off, so the demo runs without setup; the start-up log says so.
//!
//! # What is protected, and what is not
//!
//! [`refusal`] runs in the guard on `/v1/*` and `/chat/stream`: the routes that spend
//! upstream capacity (and, with a real provider, money). `/health` and `/debug/*` stay open on
//! purpose: load balancers, Kubernetes probes and `diag` must reach them without holding a
//! secret, and a probe that fails for want of a key would take a healthy instance out of
//! service. `/debug/*` shows internal state (pool counters) and is meant for operators: do not
//! expose it publicly; route only `/v1/*` through the public load balancer.
//!
//! # Comparing keys without leaking them
//!
//! A plain `==` stops at the first differing byte, so its timing tells an attacker how much of a
//! guess was right, one byte at a time. Here the presented key and every configured key are first
//! hashed with SHA-256, and the 32-byte digests are compared with `subtle`'s constant-time
//! equality, against *every* configured key, without stopping at a match. Fixed-length digests
//! also hide the keys' lengths (a byte-wise comparison of unequal lengths returns at once). The
//! time taken depends only on the number of keys, which is not a secret.
//!
//! Keys are never logged: the start-up log says how many there are, a rejection says only
//! `missing_api_key` or `invalid_api_key`, and `Config`'s `Debug` shows `Secret(<redacted>)`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::config::{Config, Secret};
use crate::error::{ApiError, StartError};
use crate::policy::limits::ClientId;

/// The header a client may use instead of `Authorization: Bearer`.
pub const API_KEY_HEADER: &str = "x-api-key";

/// The configured keys, kept only as SHA-256 digests.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Arc<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.len())
            .finish()
    }
}

impl ApiKeys {
    /// `--api-key` / `GATEWAY_API_KEYS`, plus the keys of `--api-keys-file`.
    pub fn from_config(config: &Config) -> Result<Self, StartError> {
        let mut keys = config.api_keys.clone();
        if let Some(path) = &config.api_keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StartError::ApiKeys(format!(
                    "cannot read --api-keys-file {}: {e}",
                    path.display()
                ))
            })?;
            let from_file = parse_keys_file(&text).map_err(|e| {
                StartError::ApiKeys(format!("--api-keys-file {}: {e}", path.display()))
            })?;
            // An empty file would silently turn authentication off: refuse it instead.
            if from_file.is_empty() {
                return Err(StartError::ApiKeys(format!(
                    "--api-keys-file {} holds no key; remove the flag to run without keys",
                    path.display()
                )));
            }
            keys.extend(from_file);
        }
        Ok(Self::new(&keys))
    }

    pub fn new(keys: &[Secret]) -> Self {
        let digests = keys.iter().map(|key| digest(key.expose())).collect();
        Self {
            digests: Arc::new(digests),
        }
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// No key configured: authentication is off.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// True when `presented` is one of the keys. Constant time in the key's content and length
    /// (see the module docs).
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = digest(presented);
        let mut matched = Choice::from(0);
        for key in self.digests.iter() {
            matched |= key.ct_eq(&presented);
        }
        matched.into()
    }

    pub fn log_startup(&self) {
        if self.is_empty() {
            tracing::warn!(
                "no API key configured: /v1/* and /chat/stream are open to anyone who can reach \
                 this port (set --api-key, GATEWAY_API_KEYS or --api-keys-file)"
            );
        } else {
            tracing::info!(
                "{} API keys configured: /v1/* and /chat/stream require one",
                self.len()
            );
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// One key per line; surrounding whitespace is trimmed; blank lines and `#` comments skipped.
fn parse_keys_file(text: &str) -> Result<Vec<Secret>, String> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(n, line)| line.parse().map_err(|e| format!("line {n}: {e}")))
        .collect()
}

/// `None` when authentication is off or the key is good (the key's client goes into the
/// request's extensions, for the limits); otherwise the 401 to answer instead, in OpenAI's shape,
/// with `WWW-Authenticate: Bearer` (RFC 6750).
pub fn refusal(keys: &ApiKeys, request: &mut Request) -> Option<Response> {
    if keys.is_empty() {
        return None;
    }
    let received = Instant::now();
    match check(keys, request.headers()) {
        Ok(client) => {
            request.extensions_mut().insert(client);
            None
        }
        Err(error) => {
            let mut response = crate::telemetry::log::refuse(request, error, received);
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(response)
        }
    }
}

/// The key's identity for rate limits (its digest), or the 401.
fn check(keys: &ApiKeys, headers: &HeaderMap) -> Result<ClientId, ApiError> {
    let presented = match presented_key(headers) {
        Presented::Key(key) => key,
        Presented::Missing => {
            return Err(ApiError::unauthorized(
                "missing_api_key",
                "missing API key: send Authorization: Bearer <key> or X-API-Key",
            ));
        }
        Presented::Malformed(why) => return Err(ApiError::unauthorized("invalid_api_key", why)),
    };
    if keys.accepts(presented) {
        Ok(ClientId::Key(digest(presented)))
    } else {
        // Never echo the key, not even a part of it: logs and terminals keep what they show.
        Err(ApiError::unauthorized(
            "invalid_api_key",
            "invalid API key: it is not one of the keys this gateway accepts",
        ))
    }
}

enum Presented<'a> {
    Key(&'a str),
    Missing,
    Malformed(&'static str),
}

/// `Authorization: Bearer <key>` wins over `X-API-Key`, since it is what OpenAI's SDKs send.
fn presented_key(headers: &HeaderMap) -> Presented<'_> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let Ok(value) = value.to_str() else {
            return Presented::Malformed("the Authorization header is not visible ASCII");
        };
        return match value.split_once(' ') {
            Some((scheme, key))
                if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() =>
            {
                Presented::Key(key.trim())
            }
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("bearer") => Presented::Missing,
            _ => Presented::Malformed(
                "the Authorization header must be `Bearer <key>`; or send the key as X-API-Key",
            ),
        };
    }
    match headers.get(API_KEY_HEADER).map(HeaderValue::to_str) {
        None => Presented::Missing,
        Some(Ok(key)) if key.trim().is_empty() => Presented::Missing,
        Some(Ok(key)) => Presented::Key(key.trim()),
        Some(Err(_)) => Presented::Malformed("the X-API-Key header is not visible ASCII"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> ApiKeys {
        let secrets: Vec<Secret> = list.iter().map(|k| k.parse().expect("key")).collect();
        ApiKeys::new(&secrets)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(n, v)| {
                (
                    axum::http::HeaderName::from_static(n),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn accepts_each_configured_key_and_nothing_else() {
        let keys = keys(&["alpha-1", "beta-2"]);
        assert!(keys.accepts("alpha-1"));
        assert!(keys.accepts("beta-2"));
        for wrong in ["alpha-", "alpha-12", "", "ALPHA-1", "beta-2 "] {
            assert!(!keys.accepts(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn reads_bearer_then_x_api_key() {
        let keys = keys(&["k1"]);
        assert!(check(&keys, &headers(&[("authorization", "Bearer k1")])).is_ok());
        assert!(check(&keys, &headers(&[("authorization", "bearer k1")])).is_ok());
        assert!(check(&keys, &headers(&[("x-api-key", "k1")])).is_ok());
        let code = |h: &[(&'static str, &'static str)]| {
            check(&keys, &headers(h)).err().and_then(|e| e.code)
        };
        assert_eq!(code(&[]), Some("missing_api_key"));
        assert_eq!(
            code(&[("authorization", "Bearer ")]),
            Some("missing_api_key")
        );
        assert_eq!(
            code(&[("authorization", "Bearer k2")]),
            Some("invalid_api_key")
        );
        assert_eq!(
            code(&[("authorization", "Basic azE6")]),
            Some("invalid_api_key")
        );
        assert_eq!(code(&[("x-api-key", "k2")]), Some("invalid_api_key"));
    }

    #[test]
    fn keys_file_skips_comments_and_blanks_and_names_bad_lines() {
        let parsed = parse_keys_file("# team a\n  key-a  \n\nkey-b\n").expect("valid");
        assert_eq!(
            parsed.iter().map(Secret::expose).collect::<Vec<_>>(),
            ["key-a", "key-b"]
        );
        let error = parse_keys_file("ok\nhas space\n").expect_err("invalid");
        assert!(error.contains("line 2"), "{error}");
    }

    #[test]
    fn debug_shows_the_count_not_the_keys() {
        let text = format!("{:?}", keys(&["very-secret-key"]));
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains("count: 1"), "{text}");
    }
}
