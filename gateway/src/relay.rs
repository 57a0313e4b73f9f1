//! `GET /chat/stream`: relay one upstream stream to the client, chunk by chunk; and the relay
//! machinery every route shares ([`relay`], [`LoggedStream`], [`log_rejected`]).
//!
//! The handler is the same in both modes; only [`crate::upstream`] differs. Nothing is buffered:
//! each upstream chunk becomes one chunk of the response as soon as it arrives. Every stream is
//! wrapped in a [`LoggedStream`], which writes one log line when the stream ends, however it ends,
//! with its method and path, status, duration, bytes, and outcome: `completed`, `client_gone`
//! (the client left first) or `upstream_failed` (the upstream broke off; the client's body is cut
//! short, which is the only honest way to say so once a `200` and part of the body have gone
//! out). A request refused before any upstream call gets its one line from [`log_rejected`].
//! Neither ever logs a header value or a body: they may hold keys and prompts.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse as _, Response};
use futures_util::Stream;
use futures_util::stream::BoxStream;
use serde::Deserialize;

use crate::AppState;
use crate::config::Mode;
use crate::error::ApiError;
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
    let plan = state
        .resilience
        .plan(Route::GET_CHAT_STREAM.path, &headers)?;
    let waiting = Waiting::new(state.mode, Route::GET_CHAT_STREAM, received);
    let outcome = state
        .resilience
        .send(provider, UpstreamRequest::get(url), plan, &state.metrics)
        .await;
    waiting.answered();
    let response = match outcome.result {
        Ok(upstream) => relay(upstream, &state, Route::GET_CHAT_STREAM, received),
        Err(error) => error.into_response(),
    };
    Ok(crate::resilience::mark(response, outcome.attempts))
}

/// A route, for the log line: its method and path as written in the router, never the raw
/// request URI (whose query may carry anything).
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
}

impl Route {
    pub const GET_CHAT_STREAM: Route = Route {
        method: Method::GET,
        path: "/chat/stream",
    };
}

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
    let body = LoggedStream::new(body, state, route, status, received);
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    *response.headers_mut() = upstream.headers;
    response.headers_mut().insert(
        STREAM_METHOD,
        HeaderValue::from_static(upstream.method.as_str()),
    );
    response
}

/// The one log line of a request the gateway answered itself with an error (bad input, missing
/// key, unreachable upstream), in the same shape as [`LoggedStream`]'s.
pub fn log_rejected(mode: Mode, method: &Method, path: &str, error: &ApiError, received: Instant) {
    tracing::info!(
        mode = %mode,
        method = %method,
        path,
        status = error.status.as_u16(),
        outcome = "rejected",
        code = error.code.unwrap_or(""),
        bytes = 0,
        duration_ms = received.elapsed().as_millis() as u64,
        "request ended"
    );
}

/// Guards a request until it has a response. If the handler future is dropped before that,
/// which is what hyper does when the client hangs up while the gateway still waits for the
/// upstream's head, the request gets its one log line here, as `client_gone`.
#[derive(Debug)]
pub struct Waiting {
    mode: Mode,
    route: Route,
    received: Instant,
    armed: bool,
}

impl Waiting {
    pub fn new(mode: Mode, route: Route, received: Instant) -> Self {
        Self {
            mode,
            route,
            received,
            armed: true,
        }
    }

    /// The request has a response (relayed or refused), which logs itself.
    pub fn answered(mut self) {
        self.armed = false;
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.armed {
            tracing::info!(
                mode = %self.mode,
                method = %self.route.method,
                path = self.route.path,
                outcome = "client_gone",
                bytes = 0,
                duration_ms = self.received.elapsed().as_millis() as u64,
                "request ended: the client left before the upstream answered"
            );
        }
    }
}

/// How a relayed stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Still running; if it is dropped like this, the client went away first.
    Open,
    Completed,
    UpstreamFailed,
}

/// A body stream that counts its bytes and logs one line when it is dropped.
pub struct LoggedStream {
    inner: BoxStream<'static, std::io::Result<Bytes>>,
    mode: Mode,
    route: Route,
    status: StatusCode,
    /// When the request arrived: the logged duration includes any wait for a pool thread.
    received: Instant,
    bytes: u64,
    outcome: Outcome,
    /// Why the upstream broke off, when it did.
    error: Option<String>,
    /// `AppState::live_streams`: this stream counts in it until it is dropped.
    live: Arc<AtomicUsize>,
}

impl LoggedStream {
    fn new(
        inner: BoxStream<'static, std::io::Result<Bytes>>,
        state: &AppState,
        route: Route,
        status: StatusCode,
        received: Instant,
    ) -> Self {
        state.live_streams.fetch_add(1, Ordering::Relaxed);
        Self {
            inner,
            mode: state.mode,
            route,
            status,
            received,
            bytes: 0,
            outcome: Outcome::Open,
            error: None,
            live: Arc::clone(&state.live_streams),
        }
    }
}

impl std::fmt::Debug for LoggedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoggedStream")
            .field("bytes", &self.bytes)
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

impl Stream for LoggedStream {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.as_mut().poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => self.bytes += chunk.len() as u64,
            Poll::Ready(Some(Err(e))) => {
                // hyper aborts the response on this error: the client's body ends truncated
                // (no final chunk), which every HTTP client reports as an error.
                self.error = Some(e.to_string());
                self.outcome = Outcome::UpstreamFailed;
            }
            Poll::Ready(None) if self.outcome == Outcome::Open => {
                self.outcome = Outcome::Completed;
            }
            _ => {}
        }
        next
    }
}

impl Drop for LoggedStream {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        let outcome = match self.outcome {
            Outcome::Open => "client_gone",
            Outcome::Completed => "completed",
            Outcome::UpstreamFailed => "upstream_failed",
        };
        let duration_ms = self.received.elapsed().as_millis() as u64;
        match &self.error {
            None => tracing::info!(
                mode = %self.mode,
                method = %self.route.method,
                path = self.route.path,
                status = self.status.as_u16(),
                outcome,
                bytes = self.bytes,
                duration_ms,
                "stream ended"
            ),
            Some(error) => tracing::warn!(
                mode = %self.mode,
                method = %self.route.method,
                path = self.route.path,
                status = self.status.as_u16(),
                outcome,
                bytes = self.bytes,
                duration_ms,
                error = %error,
                "stream ended: the upstream broke off mid-stream; the client's body was cut"
            ),
        }
    }
}
