//! The request log: one line per relayed request however it ends, and per request the gateway
//! refused, never a header value or a body (they may hold keys and prompts). The probes are not
//! logged: polled every few seconds, they would bury the lines that matter (gateway/README.md,
//! "Errors", lists what is and is not).
//!
//! A leaf: the relay, the limits, the API-key check and the WebSocket route all call it, and it
//! calls none of them. Three writers, one shape (method, path, status, outcome, bytes, duration):
//!
//! - [`LoggedStream`] wraps every relayed body and writes its line when the body is dropped, with
//!   the outcome `completed`, `client_gone` (the client left first) or `upstream_failed` (the
//!   upstream broke off; the client's body is cut short, which is the only honest way to say so
//!   once a `200` and part of the body have gone out);
//! - [`log_rejected`], for a request the gateway answered itself with an error;
//! - [`Waiting`], for a request whose client left before the upstream answered.
//!
//! The gateway's mode is not a field of these lines: it is a field of the one [`root_span`]
//! every request runs in, so each line carries it (`gateway{mode=broken}: ...`) without every
//! writer having to know it.
//!
//! [`LiveStreams`] counts the bodies being relayed right now: `/health`, `/metrics` and the
//! shutdown log read it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse as _, Response};
use futures_util::Stream;
use futures_util::stream::BoxStream;
use tracing::Span;

use crate::config::Mode;
use crate::error::ApiError;

/// A route, for the log line: its method and path as written in the router, never the raw
/// request URI (whose query may carry anything).
#[derive(Debug, Clone)]
pub struct Route {
    pub method: Method,
    pub path: &'static str,
}

/// Response bodies being relayed right now. Cloning is shallow: one counter, many handles.
#[derive(Debug, Clone, Default)]
pub struct LiveStreams(Arc<AtomicUsize>);

impl LiveStreams {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The span every request, stream and WebSocket of one gateway runs in, named after the crate
/// and carrying the mode. Created once per gateway (several may share a test process, each with
/// its own).
pub fn root_span(mode: Mode) -> Span {
    tracing::info_span!("gateway", %mode)
}

/// The one log line of a request the gateway answered itself with an error (bad input, missing
/// key, unreachable upstream), in the same shape as [`LoggedStream`]'s.
pub fn log_rejected(method: &Method, path: &str, error: &ApiError, received: Instant) {
    tracing::info!(
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

/// A middleware's refusal (a missing key, a full queue, a drain): the request's one log line,
/// with the route as written in the router rather than the raw URI, then the error as the
/// response.
pub fn refuse(request: &Request, error: ApiError, received: Instant) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("", MatchedPath::as_str);
    log_rejected(request.method(), path, &error, received);
    error.into_response()
}

/// Guards a request until it has a response. If the handler future is dropped before that,
/// which is what hyper does when the client hangs up while the gateway still waits for the
/// upstream's head, the request gets its one log line here, as `client_gone`.
#[derive(Debug)]
pub struct Waiting {
    route: Route,
    received: Instant,
    armed: bool,
}

impl Waiting {
    pub fn new(route: Route, received: Instant) -> Self {
        Self {
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
    /// Still running at the drain deadline (`--drain-secs`): the gateway ended it.
    DrainCut,
}

/// A body stream that counts its bytes and logs one line when it is dropped.
pub struct LoggedStream {
    inner: BoxStream<'static, std::io::Result<Bytes>>,
    /// The request's span (the gateway's [`root_span`]): the body is dropped by hyper's
    /// connection task, outside the request, so the line enters it again to carry the mode.
    span: Span,
    route: Route,
    status: StatusCode,
    /// When the request arrived: the logged duration includes any wait for a pool thread.
    received: Instant,
    bytes: u64,
    outcome: Outcome,
    /// Why the upstream broke off, when it did.
    error: Option<String>,
    /// This stream counts in it until it is dropped.
    live: LiveStreams,
}

impl LoggedStream {
    pub fn new(
        inner: BoxStream<'static, std::io::Result<Bytes>>,
        live: &LiveStreams,
        route: Route,
        status: StatusCode,
        received: Instant,
    ) -> Self {
        live.0.fetch_add(1, Ordering::Relaxed);
        Self {
            inner,
            span: Span::current(),
            route,
            status,
            received,
            bytes: 0,
            outcome: Outcome::Open,
            error: None,
            live: live.clone(),
        }
    }
}

impl LoggedStream {
    /// The gateway ends this stream itself, at the drain deadline: its line says `drain_cut`
    /// (see `crate::upstream::cutoff`).
    pub fn mark_cut(&mut self) {
        if self.outcome == Outcome::Open {
            self.outcome = Outcome::DrainCut;
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
        self.live.0.fetch_sub(1, Ordering::Relaxed);
        let _span = self.span.enter();
        let outcome = match self.outcome {
            Outcome::Open => "client_gone",
            Outcome::Completed => "completed",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::DrainCut => "drain_cut",
        };
        let duration_ms = self.received.elapsed().as_millis() as u64;
        match &self.error {
            None => tracing::info!(
                method = %self.route.method,
                path = self.route.path,
                status = self.status.as_u16(),
                outcome,
                bytes = self.bytes,
                duration_ms,
                "stream ended"
            ),
            Some(error) => tracing::warn!(
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
