//! The drain deadline as a relayed body meets it: a last word, then the end.
//!
//! A drain lets in-flight streams run on for `--drain-secs` (see [`crate::lifecycle`] and
//! `crate::http::shutdown`). A stream still running when that time is up must end, and how it
//! ends is the one thing its client will read about the shutdown:
//!
//! - an **SSE stream** (`text/event-stream`, e.g. `/v1/chat/completions` with `"stream": true`)
//!   gets one more event, `data: {"error": {..., "code": "shutting_down"}}`, OpenAI's error shape
//!   in the place OpenAI's own streams put a mid-stream failure, and then ends cleanly. The SDKs
//!   raise it as an API error the caller can retry, instead of a bare connection reset. The
//!   event goes out only **between events**, by the same rule as the keep-alive comment
//!   ([`super::keepalive`]): after half an event it would be glued to that event's text.
//! - any other body, and an SSE stream cut mid-event, ends with an **error**: hyper aborts the
//!   chunked body without its last chunk, which every HTTP client reports as a truncated
//!   response. That is the right answer for the plain `/chat/stream` lesson too: its lines are
//!   the payload, and a line saying "shutting down" would be read as one more line of it. A
//!   truncated body is the only signal a plain-text stream has that it is incomplete.
//!
//! Either way the upstream stream is dropped at once (in `fixed` mode that closes the upstream
//! connection; in `broken` mode the pool thread notices at its next chunk) and the request's log
//! line says `drain_cut`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::HeaderMap;
use futures_util::Stream;

use super::keepalive::{Tail, is_event_stream};
use crate::error::ApiError;
use crate::lifecycle::{Lifecycle, Phase};
use crate::telemetry::log::LoggedStream;

/// A relayed body that ends itself when the lifecycle reaches [`Phase::Stopped`].
pub struct Cutoff {
    /// `None` once the body ended, either way.
    inner: Option<LoggedStream>,
    deadline: Pin<Box<dyn Future<Output = ()> + Send>>,
    event_stream: bool,
    /// How the bytes sent so far end: the last event may only follow a complete one.
    tail: Tail,
}

impl Cutoff {
    pub fn new(inner: LoggedStream, headers: &HeaderMap, lifecycle: &Lifecycle) -> Self {
        let waiting = lifecycle.clone();
        Self {
            inner: Some(inner),
            deadline: Box::pin(async move { waiting.reached(Phase::Stopped).await }),
            event_stream: is_event_stream(headers),
            tail: Tail::default(),
        }
    }

    /// What the client gets instead of the rest of its stream.
    fn last_word(&self) -> std::io::Result<Bytes> {
        if self.event_stream && self.tail.at_boundary() {
            let error = ApiError::shutting_down(
                "the gateway is shutting down: this stream was still running at its drain \
                 deadline (--drain-secs); retry the request",
            );
            Ok(Bytes::from(format!("data: {}\n\n", error.body())))
        } else {
            Err(std::io::Error::other(
                "cut at the gateway's drain deadline (--drain-secs)",
            ))
        }
    }
}

impl std::fmt::Debug for Cutoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cutoff")
            .field("open", &self.inner.is_some())
            .field("event_stream", &self.event_stream)
            .finish_non_exhaustive()
    }
}

impl Stream for Cutoff {
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // The deadline first: a stream with a chunk always ready would otherwise never see it.
        // Polled every time. Issue 17 once polled it only when the phase had changed since its
        // last poll (a watch's `changed()` takes a lock per poll), trusting the waker it left
        // to be woken at the next change. A watch wakes its receivers one notifier shard after
        // another: the connection's task, woken through another receiver's shard, polled this
        // one before its own shard was notified (Pending), then ignored the wake that followed
        // because the phase had not changed since. The stream relayed past its deadline until
        // the server cut it, and `tests/drain.rs` failed about 1 run in 4. The saving it bought
        // was within the noise of the instruction counts.
        if this.deadline.as_mut().poll(cx).is_ready() {
            inner.mark_cut();
            // Dropping it logs the line and drops the upstream stream.
            this.inner = None;
            return Poll::Ready(Some(this.last_word()));
        }
        match Pin::new(inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.tail.push(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                this.inner = None;
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::http::{Method, StatusCode, header};
    use futures_util::StreamExt as _;

    use super::*;
    use crate::telemetry::log::{LiveStreams, Route};

    fn body(
        chunks: &'static [&'static str],
        content_type: &'static str,
        lifecycle: &Lifecycle,
    ) -> Cutoff {
        let first = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(Bytes::from_static(c.as_bytes())))
                .collect::<Vec<_>>(),
        );
        // Then nothing, for ever: only the deadline can end it.
        let stream = Box::pin(first.chain(futures_util::stream::pending()));
        let route = Route {
            method: Method::GET,
            path: "/t",
        };
        let logged = LoggedStream::new(
            stream,
            &LiveStreams::default(),
            route,
            StatusCode::OK,
            Instant::now(),
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().expect("header"));
        Cutoff::new(logged, &headers, lifecycle)
    }

    async fn cut(mut body: Cutoff, lifecycle: &Lifecycle, sent: usize) -> Vec<String> {
        let mut seen = Vec::new();
        for _ in 0..sent {
            let chunk = body.next().await.expect("a chunk").expect("ok");
            seen.push(String::from_utf8_lossy(&chunk).into_owned());
        }
        lifecycle.advance(Phase::Stopped);
        while let Some(item) = body.next().await {
            seen.push(match item {
                Ok(chunk) => String::from_utf8_lossy(&chunk).into_owned(),
                Err(e) => format!("ERR {e}"),
            });
        }
        seen
    }

    /// A stream parked on its upstream through every phase of a drain must still be woken, and
    /// cut, at the last one: only the deadline's own wake-up can do that.
    #[tokio::test]
    async fn an_idle_stream_is_woken_at_the_deadline_through_every_phase() {
        let lifecycle = Lifecycle::default();
        let mut idle = body(&["data: {}\n\n"], "text/event-stream", &lifecycle);
        idle.next().await.expect("a chunk").expect("ok");
        let waiting = tokio::spawn(async move {
            let last = idle.next().await.expect("the last word").expect("ok");
            String::from_utf8_lossy(&last).into_owned()
        });
        for phase in [
            Phase::Serving,
            Phase::Draining,
            Phase::ShuttingDown,
            Phase::Stopped,
        ] {
            tokio::task::yield_now().await;
            lifecycle.advance(phase);
        }
        let last = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken at the deadline, not left parked")
            .expect("the task");
        assert!(last.contains("\"code\":\"shutting_down\""), "{last}");
    }

    #[tokio::test]
    async fn an_event_stream_ends_with_an_error_event_between_events() {
        let lifecycle = Lifecycle::default();
        let sse = body(&["data: {}\n\n"], "text/event-stream", &lifecycle);
        let seen = cut(sse, &lifecycle, 1).await;
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[1].starts_with("data: {\"error\":"), "{seen:?}");
        assert!(seen[1].contains("\"code\":\"shutting_down\""), "{seen:?}");
        assert!(seen[1].ends_with("\n\n"), "{seen:?}");
    }

    #[tokio::test]
    async fn mid_event_or_plain_text_the_body_is_cut_with_an_error() {
        let lifecycle = Lifecycle::default();
        let half = body(&["data: {\"a\""], "text/event-stream", &lifecycle);
        let seen = cut(half, &lifecycle, 1).await;
        assert!(
            seen[1].starts_with("ERR cut at the gateway's drain deadline"),
            "{seen:?}"
        );
        let lifecycle = Lifecycle::default();
        let plain = body(&["chunk 1/3\n"], "text/plain", &lifecycle);
        let seen = cut(plain, &lifecycle, 1).await;
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[1].starts_with("ERR "), "{seen:?}");
    }
}
