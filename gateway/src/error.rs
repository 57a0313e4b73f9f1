//! The gateway's errors, all in OpenAI's JSON shape: `{"error": {message, type, param, code}}`.
//!
//! One type, [`ApiError`], for everything a request can fail on, so no handler can answer with an
//! empty 500 or a plain-text rejection: bad parameters are 400, an unreachable upstream 502, a
//! silent one 504. Messages say what to change, because the reader is a person at a terminal.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
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
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
        }
    }

    /// The upstream could not be reached or broke the protocol.
    pub fn bad_gateway(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_GATEWAY,
            message: message.into(),
            kind: "upstream_error",
            param: None,
        }
    }

    /// The upstream was reached but did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: message.into(),
            kind: "upstream_error",
            param: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
            kind: "server_error",
            param: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, "{}", self.message);
        }
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": null,
        }});
        (self.status, Json(body)).into_response()
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(None, rejection.body_text())
    }
}

/// Fallback route: unknown paths get a JSON 404 naming the routes that exist.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "no route for {}; try /chat/stream, /health, /debug/pool, \
             /debug/health-sync or /debug/health-async",
            uri.path()
        ),
        kind: "invalid_request_error",
        param: None,
    }
}

/// Why the gateway could not start (bad TLS setup, unusable upstream URL, ...).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the async HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot derive the upstream stream URL: {0}")]
    Url(String),
}
