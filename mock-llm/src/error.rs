//! The one JSON error body of the mock: OpenAI's shape, `{"error": {message, type, param, code}}`,
//! so a client that handles a real provider's errors handles ours.
//!
//! `param` names the request field (or header) at fault, e.g. `messages[0].role` or
//! `x-mock-tokens`, the way OpenAI names fields; `code` is OpenAI's machine-readable reason
//! (`invalid_type`, `rate_limit_exceeded`, ...) where one applies.

use std::borrow::Cow;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A rejected request: status plus a message a person can act on.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request parameter at fault, when there is one.
    pub param: Option<Cow<'static, str>>,
    /// OpenAI's `type`. `None` derives it from the status: `invalid_request_error` for 4xx,
    /// `server_error` otherwise.
    pub kind: Option<&'static str>,
    /// OpenAI's `code`, e.g. `invalid_type` or `rate_limit_exceeded`; `null` when `None`.
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            kind: None,
            code: None,
        }
    }

    pub fn bad_request(param: Option<&'static str>, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::BAD_REQUEST, message);
        error.param = param.map(Cow::Borrowed);
        error
    }

    /// A 400 about `param`, a field path built at run time such as `messages[2].content`.
    pub fn invalid(
        param: impl Into<Cow<'static, str>>,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let mut error = Self::new(StatusCode::BAD_REQUEST, message);
        error.param = Some(param.into());
        error.code = Some(code);
        error
    }

    #[must_use]
    pub fn with_kind(mut self, kind: &'static str) -> Self {
        self.kind = Some(kind);
        self
    }

    #[must_use]
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.kind.unwrap_or(if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        });
        let body = json!({"error": {
            "message": self.message,
            "type": kind,
            "param": self.param,
            "code": self.code,
        }});
        (self.status, Json(body)).into_response()
    }
}

/// Fallback for unknown paths: a JSON 404 rather than an empty body.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {}; try /slow_stream, /stats or /health \
             (OpenAI-style: POST /v1/chat/completions, GET /v1/models)",
            uri.path()
        ),
    )
}

/// Fallback for a known path with the wrong method, e.g. `GET /v1/chat/completions`.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
