//! `GET /chat/stream`: relay one upstream stream to the client, chunk by chunk; and the relay
//! every route shares ([`relay`]).
//!
//! The handler is the same in both modes; only [`crate::upstream`] differs. Nothing is buffered:
//! each upstream chunk becomes one chunk of the response as soon as it arrives. Every stream is
//! wrapped in a [`LoggedStream`], which writes one log line when the stream ends, however it ends
//! (see [`crate::telemetry::log`]).

use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;
use crate::telemetry::log::{LoggedStream, Route, Waiting};
use crate::upstream::{UpstreamRequest, UpstreamResponse};

/// Query parameters passed through to the upstream's `/slow_stream`. Types are checked here,
/// ranges by the upstream (whose 400 is relayed as is). Unknown names are rejected: a typo such
/// as `chunk=5` would otherwise silently run a 45 s default stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    chunks: Option<u32>,
    interval_ms: Option<u64>,
}

pub async fn chat_stream(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let Query(params) = params?;
    let provider = state.providers.first();
    let mut url = provider.stream_url.clone();
    {
        let mut query = url.query_pairs_mut();
        if let Some(chunks) = params.chunks {
            query.append_pair("chunks", &chunks.to_string());
        }
        if let Some(interval_ms) = params.interval_ms {
            query.append_pair("interval_ms", &interval_ms.to_string());
        }
    }
    let plan = state.resilience.plan(CHAT_STREAM.path, &headers)?;
    let waiting = Waiting::new(state.mode, CHAT_STREAM, received);
    let outcome = state
        .resilience
        .send(provider, UpstreamRequest::get(url), plan, &state.metrics)
        .await;
    waiting.answered();
    let response = match outcome.result {
        Ok(upstream) => relay(upstream, &state, CHAT_STREAM, received),
        Err(error) => error.into_response(),
    };
    Ok(crate::resilience::mark(response, outcome.attempts))
}

const CHAT_STREAM: Route = Route {
    method: Method::GET,
    path: "/chat/stream",
};

/// Which upstream client carried a relayed response: `async`, `blocking` or `inline` (see
/// [`crate::upstream::StreamMethod`]). Lets a client, or `diag`, count a rollout's split.
pub const STREAM_METHOD: HeaderName = HeaderName::from_static("x-stream-method");

/// The upstream's response as the client's: its status, its relayed headers, and its body as a
/// [`LoggedStream`], forwarded chunk by chunk as it arrives. Upstream errors (429, 5xx) take this
/// same path, so they reach the client exactly as the upstream sent them. An SSE body that goes
/// quiet gets keep-alive comments between its events ([`crate::keepalive`]).
pub fn relay(
    upstream: UpstreamResponse,
    state: &AppState,
    route: Route,
    received: Instant,
) -> Response {
    let status = upstream.status;
    let body = crate::keepalive::apply(
        upstream.body,
        &upstream.headers,
        state.sse_keepalive,
        &state.metrics,
    );
    let body = LoggedStream::new(
        body,
        &state.live_streams,
        state.mode,
        route,
        status,
        received,
    );
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    *response.headers_mut() = upstream.headers;
    response.headers_mut().insert(
        STREAM_METHOD,
        HeaderValue::from_static(upstream.method.as_str()),
    );
    response
}
