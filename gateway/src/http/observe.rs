//! The middleware that names, counts and times every request: its id, its span, its access
//! record, its count and duration in `/metrics`.
//!
//! [`observe`] wraps the whole router, and runs everything below it in the gateway's root span
//! (`gateway{mode=...}`, so every line names the mode):
//!
//! 1. the request id: the client's `x-request-id` when it is a good one, else a fresh one
//!    ([`crate::request_id`]); written back into the request's headers, so the allow-list that
//!    decides what goes upstream sends it on (and a job keeps it with its headers);
//! 2. the span `request{request_id=...}`, in which everything the request does runs (with
//!    traces on, the root of its trace, continuing the client's `traceparent`);
//! 3. the task-locals the layers below read: the id (error bodies) and the [`Access`] record (the
//!    access line);
//! 4. on the way out: `x-request-id` on the response (whatever the upstream sent: the client's
//!    name for its request is the one it gets back), and the body wrapped so its last byte (or
//!    its client leaving) ends the `request` span and observes
//!    `gateway_request_duration_seconds{route,status}`. For a stream, that is its whole life, not
//!    the moment its headers were ready. `gateway_requests_total{route,status}` counts it when its
//!    head is ready. The route is the router's pattern (`/v1/chat/completions`), never the raw
//!    path, so a scanner probing random URLs adds one `unmatched` series, not one per URL.
//!
//! Cost, measured by `cargo xtask bench observe`: the id, two task-locals, one span and one
//! histogram observation per request. The root span, the count and the rest are one layer, not
//! three: each `from_fn` layer costs a boxed future and a service clone per request (see
//! [`super::guard`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::histogram::Histogram;
use tracing::{Instrument as _, Span};

use crate::request_id::{self, RequestId};
use crate::telemetry::access::Access;
use crate::telemetry::labels::RouteStatus;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::otel;

/// Names, traces and times one request (see the module docs).
pub async fn observe(State(observe): State<Observe>, request: Request, next: Next) -> Response {
    let Observe { metrics, root } = observe;
    run(metrics, request, next).instrument(root).await
}

/// What [`observe`] reads: the metrics it writes, and the gateway's root span it runs in.
#[derive(Debug, Clone)]
pub struct Observe {
    pub metrics: Arc<Metrics>,
    /// `gateway{mode=...}`: every line a request logs names the mode.
    pub root: Span,
}

async fn run(metrics: Arc<Metrics>, mut request: Request, next: Next) -> Response {
    let received = Instant::now();
    let (id, replaced) = RequestId::resolve(request.headers().get(request_id::HEADER));
    request
        .headers_mut()
        .insert(request_id::HEADER, id.header_value());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = otel::request_span(
        id.as_str(),
        request.method().as_str(),
        &route,
        request.headers(),
    );
    if replaced {
        tracing::debug!(
            parent: &span,
            "the client's x-request-id was replaced: not 1..={} visible ASCII characters",
            request_id::MAX_LEN
        );
    }
    let access = Access::new(id.clone());
    let run = access.scope(next.run(request)).instrument(span.clone());
    let mut response = id.clone().scope(run).await;
    let status = response.status().as_u16();
    response
        .headers_mut()
        .insert(request_id::HEADER, id.header_value());
    let labels = RouteStatus { route, status };
    metrics.requests.get_or_create(&labels).inc();
    let duration = metrics.llm.request_duration.get_or_create(&labels).clone();
    response.map(|body| {
        Body::new(Timed {
            inner: body,
            end: Some(End {
                duration,
                received,
                _span: span,
            }),
        })
    })
}

/// What a response body does when it ends.
#[derive(Debug)]
struct End {
    duration: Histogram,
    received: Instant,
    /// The `request` span, held open to the last byte.
    _span: Span,
}

impl Drop for End {
    fn drop(&mut self) {
        self.duration.observe(self.received.elapsed().as_secs_f64());
    }
}

/// A response body that observes the request's duration when it is dropped: after its last
/// byte, or when the client leaves.
#[derive(Debug)]
struct Timed {
    inner: Body,
    end: Option<End>,
}

impl http_body::Body for Timed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            // The last byte is out: time it now, not when hyper gets round to dropping us.
            self.end = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
