//! The gateway's errors, all in OpenAI's JSON shape: `{"error": {message, type, param, code}}`.
//!
//! One type, [`ApiError`], for everything a request can fail on, so no handler can answer with an
//! empty 500 or a plain-text rejection: bad parameters are 400, an unreachable upstream 502, a
//! silent one 504. Messages say what to change, because the reader is a person at a terminal.
//!
//! `param` names the offending field (`messages`, `model`) and `code` is a stable, machine-readable
//! reason (`missing_api_key`, `invalid_api_key`, `request_too_large`, ...) for clients that branch
//! on it, as OpenAI's SDKs do. Errors that come *from* the upstream are not rebuilt here: the relay
//! passes them through as the upstream sent them (status, body, `Retry-After`). A failure to get
//! an answer at all is first a `crate::upstream::UpstreamError`, which the retries match on, and
//! becomes an `ApiError` only where a handler answers.
//!
//! The gateway's own errors also carry the request's id, `error.request_id` (see
//! [`crate::request_id`]), so a client that logs the body has the name to quote; OpenAI's SDKs
//! ignore a field they do not know.
//!
//! Nearly a leaf: it imports only `request_id`, another leaf, so every layer can fail in this
//! shape.

use std::borrow::Cow;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A failed request: the status and a message a person can act on.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's `type` field: `invalid_request_error`, `upstream_error`, ...
    pub kind: &'static str,
    /// The request field at fault, e.g. `messages` or `messages[0].role`.
    pub param: Option<Cow<'static, str>>,
    /// OpenAI's `code` field: a stable reason a program can match on.
    pub code: Option<&'static str>,
    /// Sent with the error: `Retry-After`, `x-ratelimit-*`. Boxed: most errors have none, and
    /// a `Result` carrying a bare `HeaderMap` would be large on every happy path.
    pub headers: Box<HeaderMap>,
}

impl ApiError {
    pub fn bad_request(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(Cow::Borrowed),
            code: None,
            headers: Box::default(),
        }
    }

    /// No usable API key (see [`crate::policy::auth`]). `code` is `missing_api_key` or `invalid_api_key`.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: Some(code),
            ..Self::bad_request(None, message)
        }
    }

    /// The request body is over `--max-body-bytes`.
    pub fn too_large(limit: usize) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: Some("request_too_large"),
            ..Self::bad_request(
                None,
                format!(
                    "the request body is larger than {limit} bytes (the gateway's --max-body-bytes)"
                ),
            )
        }
    }

    /// The body is not declared as JSON.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: Some("unsupported_media_type"),
            ..Self::bad_request(None, message)
        }
    }

    /// The gateway is at a limit it set itself (a full queue, a busy provider): 503, so a
    /// client or load balancer retries later or elsewhere. Give it a [`Self::retry_after`].
    pub fn overloaded(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: Some(code),
            ..Self::internal(message)
        }
    }

    /// The instance is draining (see [`crate::lifecycle`]): 503 `shutting_down`, to be retried
    /// on another instance. Give it a [`Self::retry_after`].
    pub fn shutting_down(message: impl Into<String>) -> Self {
        Self::overloaded("shutting_down", message)
    }

    /// A rate limit: 429 `rate_limit_exceeded` (what OpenAI's SDKs recognise and retry), with
    /// `code` saying whose limit it was.
    pub fn rate_limited(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "rate_limit_exceeded",
            code: Some(code),
            ..Self::internal(message)
        }
    }

    /// `Retry-After` in whole seconds, rounded up and at least 1 (the header has no fractions),
    /// and `retry-after-ms`, the exact figure OpenAI's SDKs read first.
    pub fn retry_after(self, wait: Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.with_header(header::RETRY_AFTER, secs.max(1))
            .with_header(
                HeaderName::from_static("retry-after-ms"),
                wait.as_millis().max(1),
            )
    }

    pub fn with_header(mut self, name: HeaderName, value: impl std::fmt::Display) -> Self {
        if let Ok(value) = HeaderValue::try_from(value.to_string()) {
            self.headers.insert(name, value);
        }
        self
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn with_param(mut self, param: impl Into<Cow<'static, str>>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// The upstream could not be reached or broke the protocol.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            message: message.into(),
            kind: "upstream_error",
            param: None,
            code: None,
            headers: Box::default(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            headers: Box::default(),
        }
    }
}

impl ApiError {
    /// `{"error": {message, type, param, code}}`: the body of the response, and the payload of
    /// an SSE error event when the failure comes after a stream began.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }});
        // Only inside a request: a job's stored error, written by a worker, has no request.
        if let Some(id) = crate::request_id::current() {
            body["error"]["request_id"] = serde_json::Value::from(id.as_str());
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, "{}", self.message);
        }
        let body = self.body();
        (self.status, *self.headers, Json(body)).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(None, rejection.body_text())
    }
}

/// Why the gateway could not start (bad TLS setup, unusable upstream URL, ...).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the async HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot derive an upstream URL: {0}")]
    Url(String),
    #[error("API keys: {0}")]
    ApiKeys(String),
    #[error("{0}")]
    Config(String),
}
