//! The relay every route shares: an upstream's response becomes the client's, chunk by chunk.
//!
//! The same in every mode; only the client that fetched the response differs
//! ([`crate::upstream`]). Nothing is buffered: each upstream chunk becomes one chunk of the
//! response as soon as it arrives. Every body is wrapped in a [`LoggedStream`], which writes one
//! log line when the stream ends, however it ends (see [`crate::telemetry::log`]), an SSE
//! body that goes quiet gets keep-alive comments between its events ([`super::keepalive`]), and
//! a body still running at the drain deadline ends with a last word ([`super::cutoff`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

use super::cutoff::Cutoff;
use super::{StreamMethod, UpstreamResponse};
use crate::lifecycle::Lifecycle;
use crate::telemetry::log::{LiveStreams, LoggedStream, Route};
use crate::telemetry::metrics::Metrics;

/// Which upstream client carried a relayed response: `async`, `blocking` or `inline` (see
/// [`crate::upstream::StreamMethod`]). Lets a client, or `diag`, count a rollout's split.
pub const STREAM_METHOD: HeaderName = HeaderName::from_static("x-stream-method");

/// What relaying needs: the keep-alive period, the counters, the live-stream count, and the
/// lifecycle whose drain deadline ends the streams still running.
#[derive(Debug)]
pub struct Relay {
    /// `--sse-keepalive-secs`, `None` when 0.
    keepalive: Option<Duration>,
    metrics: Arc<Metrics>,
    live: LiveStreams,
    lifecycle: Lifecycle,
}

impl Relay {
    pub fn new(
        keepalive: Option<Duration>,
        metrics: Arc<Metrics>,
        live: LiveStreams,
        lifecycle: Lifecycle,
    ) -> Self {
        Self {
            keepalive,
            metrics,
            live,
            lifecycle,
        }
    }

    /// The response bodies being relayed now.
    pub fn live(&self) -> &LiveStreams {
        &self.live
    }

    /// The upstream's response as the client's: its status, its relayed headers, and its body
    /// as a [`LoggedStream`], forwarded chunk by chunk as it arrives. Upstream errors (429, 5xx)
    /// take this same path, so they reach the client exactly as the upstream sent them.
    pub fn forward(&self, upstream: UpstreamResponse, route: Route, received: Instant) -> Response {
        let status = upstream.status;
        let body = flush_before_error(upstream.body);
        let body = super::keepalive::apply(body, &upstream.headers, self.keepalive, &self.metrics);
        let mut body = LoggedStream::new(body, &self.live, route, status, received);
        // First content, token gaps and tokens, for the access line and the LLM series; a
        // cached answer is relayed the same way but is not the upstream's latency.
        let sse = upstream
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        body.observe(&self.metrics, sse, upstream.method != StreamMethod::Cache);
        let body = Cutoff::new(body, &upstream.headers, &self.lifecycle);
        let mut response = Response::new(Body::from_stream(body));
        *response.status_mut() = status;
        *response.headers_mut() = upstream.headers;
        response.headers_mut().insert(
            STREAM_METHOD,
            HeaderValue::from_static(upstream.method.as_str()),
        );
        response
    }
}

/// An upstream that breaks off makes the body yield an error, and hyper then aborts the client's
/// connection, discarding what it had buffered but not yet written. When the last chunks and the
/// error are ready in the same poll (the blocking client hands them over back to back; a busy
/// runtime polls late), those chunks were lost: the client saw 2 of the 3 tokens the upstream
/// sent before its cut (`tests/openai.rs`, about 1 run in 8 on a loaded machine). Holding the
/// error back for one poll lets hyper flush them first; the client's body still ends in an error.
fn flush_before_error(
    body: BoxStream<'static, std::io::Result<Bytes>>,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    Box::pin(body.then(|item| async move {
        if item.is_err() {
            tokio::task::yield_now().await;
        }
        item
    }))
}
