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
//! What a line says beyond its own facts (the request id, model, provider, attempts, cache) comes
//! from the request's [`Access`] record, and the line's shape is [`super::access`]'s. A relayed
//! body given [`LoggedStream::observe`] is read as it passes ([`super::meter`]): its first
//! content, its token gaps and its tokens go to the line and to the LLM series of `/metrics`.
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

use prometheus_client::metrics::histogram::Histogram;

use super::access::{self, Access, Line};
use super::labels::{ProviderModelLabels, ShedReason, UpstreamErrorKind, UpstreamErrorLabels};
use super::meter::Meter;
use super::metrics::Metrics;
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
/// key, unreachable upstream), in the same shape as [`LoggedStream`]'s. Its outcome: `shed` for
/// the gateway's own 503s (a full queue, a busy provider, a drain), `upstream_failed` when the
/// upstream gave no answer, `rejected` for the rest.
pub fn log_rejected(method: &Method, path: &str, error: &ApiError, received: Instant) {
    let shed = error
        .code
        .is_some_and(|code| ShedReason::ALL.iter().any(|r| r.as_str() == code));
    let outcome = if shed {
        "shed"
    } else if error.kind == "upstream_error" {
        "upstream_failed"
    } else {
        "rejected"
    };
    let line = Line {
        message: "request ended",
        method,
        path,
        status: Some(error.status.as_u16()),
        outcome,
        code: Some(error.code.unwrap_or("")),
        bytes: 0,
        duration: received.elapsed(),
        ttft: None,
        tokens: None,
        error: None,
    };
    access::write(&line, Access::current().as_deref());
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
    /// The request's record: the handler future is dropped outside the request's task-local.
    access: Option<Arc<Access>>,
}

impl Waiting {
    pub fn new(route: Route, received: Instant) -> Self {
        Self {
            route,
            received,
            armed: true,
            access: Access::current(),
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
            let line = Line {
                message: "request ended: the client left before the upstream answered",
                method: &self.route.method,
                path: self.route.path,
                status: None,
                outcome: "client_gone",
                code: None,
                bytes: 0,
                duration: self.received.elapsed(),
                ttft: None,
                tokens: None,
                error: None,
            };
            access::write(&line, self.access.as_deref());
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
    /// The request's record (see [`super::access`]), taken while the handler ran.
    access: Option<Arc<Access>>,
    /// When the first byte (or, observed, the first content) went out, after `received`.
    ttft: Option<std::time::Duration>,
    /// Set by [`LoggedStream::observe`]: the body is read as it passes.
    observer: Option<Box<Observer>>,
    /// The request's `stream` span: from the response's head to the body's end.
    stream_span: Span,
}

/// What an observed body feeds: its meter, and the LLM series of its provider and model.
struct Observer {
    meter: Meter,
    metrics: Arc<Metrics>,
    /// `None` for an answer that did not come from an upstream now (a cache hit), or whose
    /// model is not known (`/chat/stream`): no upstream series then.
    labels: Option<ProviderModelLabels>,
    /// The labels' inter-token histogram, looked up once.
    gaps: Option<Histogram>,
    upstream_started: Option<Instant>,
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
            access: Access::current(),
            ttft: None,
            observer: None,
            stream_span: tracing::debug_span!("stream", bytes = tracing::field::Empty),
        }
    }

    /// Reads the body as it passes: its first content and tokens for the log line, and, for a
    /// successful answer fetched `from_upstream` for a known model, the LLM series of `/metrics`
    /// (see [`super::llm`]). `sse`: the body is a `text/event-stream`.
    pub fn observe(&mut self, metrics: &Arc<Metrics>, sse: bool, from_upstream: bool) {
        let record = self.access.as_deref().map(Access::snapshot);
        let labels = record.as_ref().and_then(|record| {
            Some(ProviderModelLabels {
                provider: record.provider.clone()?,
                model: record.model_label.clone()?,
            })
        });
        let labels = labels.filter(|_| from_upstream && self.status.is_success());
        let gaps = labels
            .as_ref()
            .filter(|_| sse)
            .map(|labels| metrics.llm.inter_token.get_or_create(labels).clone());
        self.observer = Some(Box::new(Observer {
            meter: Meter::new(sse),
            metrics: Arc::clone(metrics),
            labels,
            gaps,
            upstream_started: record.and_then(|record| record.upstream_started),
        }));
    }

    /// A chunk went out at `now`: the meter's turn, and the first byte's.
    fn saw(&mut self, chunk: &Bytes) {
        let now = Instant::now();
        let Some(observer) = self.observer.as_mut() else {
            if self.ttft.is_none() && !chunk.is_empty() {
                self.ttft = Some(now.saturating_duration_since(self.received));
            }
            return;
        };
        let seen = observer.meter.chunk(chunk, now);
        if seen.first {
            self.ttft = Some(now.saturating_duration_since(self.received));
            if let Some(access) = &self.access {
                access.first_byte();
            }
            if let (Some(labels), Some(started)) = (&observer.labels, observer.upstream_started) {
                observer
                    .metrics
                    .llm
                    .ttft
                    .get_or_create(labels)
                    .observe(now.saturating_duration_since(started).as_secs_f64());
            }
        }
        if let (Some(gap), Some(gaps)) = (seen.gap, &observer.gaps) {
            gaps.observe(gap.as_secs_f64());
        }
    }

    /// At the end: the stream's duration and tokens, or the upstream's failure, into `/metrics`.
    fn record_end(&self, observer: &Observer) {
        let llm = &observer.metrics.llm;
        if self.outcome == Outcome::UpstreamFailed
            && let Some(provider) = self
                .access
                .as_deref()
                .and_then(|access| access.snapshot().provider)
        {
            llm.upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    provider,
                    kind: UpstreamErrorKind::BrokeOff,
                })
                .inc();
        }
        let Some(labels) = &observer.labels else {
            return;
        };
        if self.outcome != Outcome::Completed {
            return;
        }
        if let Some(started) = observer.upstream_started {
            llm.stream_duration
                .get_or_create(labels)
                .observe(started.elapsed().as_secs_f64());
        }
        if let Some((tokens, _)) = observer.meter.tokens() {
            #[allow(clippy::cast_precision_loss)]
            llm.output_tokens
                .get_or_create(labels)
                .observe(tokens as f64);
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
            Poll::Ready(Some(Ok(chunk))) => {
                self.bytes += chunk.len() as u64;
                self.saw(chunk);
            }
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
        self.stream_span.record("bytes", self.bytes);
        let observer = self.observer.take();
        if let Some(observer) = &observer {
            self.record_end(observer);
        }
        let message = match self.error {
            None => "stream ended",
            Some(_) => "stream ended: the upstream broke off mid-stream; the client's body was cut",
        };
        let line = Line {
            message,
            method: &self.route.method,
            path: self.route.path,
            status: Some(self.status.as_u16()),
            outcome,
            code: None,
            bytes: self.bytes,
            duration: self.received.elapsed(),
            ttft: self.ttft,
            tokens: observer
                .as_ref()
                .and_then(|o| o.meter.tokens())
                .map(|(n, source)| (n, source.as_str())),
            error: self.error.as_deref(),
        };
        access::write(&line, self.access.as_deref());
    }
}
