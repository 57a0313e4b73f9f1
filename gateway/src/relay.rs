//! `GET /chat/stream`: relay one upstream stream to the client, chunk by chunk.
//!
//! The handler is the same in both modes; only [`crate::upstream`] differs. Nothing is buffered:
//! each upstream chunk becomes one chunk of the response as soon as it arrives. Every stream is
//! wrapped in a [`LoggedStream`], which writes one log line when the stream ends, however it ends,
//! with its duration, its bytes and whether the client stayed to the end.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use futures_util::Stream;
use futures_util::stream::BoxStream;
use serde::Deserialize;

use crate::AppState;
use crate::config::Mode;
use crate::error::ApiError;

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
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let Query(params) = params?;
    let mut url = state.stream_url.clone();
    {
        let mut query = url.query_pairs_mut();
        if let Some(chunks) = params.chunks {
            query.append_pair("chunks", &chunks.to_string());
        }
        if let Some(interval_ms) = params.interval_ms {
            query.append_pair("interval_ms", &interval_ms.to_string());
        }
    }
    let upstream = state.upstream.get(url).await?;
    let status = upstream.status;
    let body = LoggedStream::new(upstream.body, &state, status, received);
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    if let Some(content_type) = upstream.content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    Ok(response)
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
    status: StatusCode,
    /// When the request arrived: the logged duration includes any wait for a pool thread.
    received: Instant,
    bytes: u64,
    outcome: Outcome,
    /// `AppState::live_streams`: this stream counts in it until it is dropped.
    live: Arc<AtomicUsize>,
}

impl LoggedStream {
    fn new(
        inner: BoxStream<'static, std::io::Result<Bytes>>,
        state: &AppState,
        status: StatusCode,
        received: Instant,
    ) -> Self {
        state.live_streams.fetch_add(1, Ordering::Relaxed);
        Self {
            inner,
            mode: state.mode,
            status,
            received,
            bytes: 0,
            outcome: Outcome::Open,
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
            Poll::Ready(Some(Err(_))) => self.outcome = Outcome::UpstreamFailed,
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
        tracing::info!(
            mode = %self.mode,
            status = self.status.as_u16(),
            outcome,
            bytes = self.bytes,
            duration_ms = self.received.elapsed().as_millis() as u64,
            "stream ended"
        );
    }
}
