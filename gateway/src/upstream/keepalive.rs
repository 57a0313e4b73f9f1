//! SSE keep-alive: a comment on a relayed event stream that has been silent too long.
//!
//! Between the gateway and its client there is often something else: a load balancer, a reverse
//! proxy, a corporate proxy, a NAT. Most of them close a connection on which nothing has moved
//! for a while (AWS's ALB and nginx's `proxy_read_timeout` default to 60 s; some are as short as
//! 30 s), and so do clients with a read timeout. A chat stream can be silent that long honestly:
//! a reasoning model thinking before its first token, a queue at the provider, a long tool call.
//! The cut looks to the user like the gateway failing mid-answer.
//!
//! So when the upstream has sent nothing for `--sse-keepalive-secs` (default 15, 0 = off), the
//! gateway sends `: keep-alive\n\n` itself, then waits again. A line starting with `:` is a
//! *comment* in the SSE format (WHATWG HTML, "event stream interpretation"): every conforming
//! parser, OpenAI's SDKs included, drops it without dispatching an event. Bytes moved, so the
//! idle timers restart; nothing the client reads has changed.
//!
//! One rule makes it safe: a comment may only go out **between events**. Upstream chunks do not
//! follow event boundaries; were the comment sent after half an event, it would become part of
//! that event's text. So the adapter remembers how the bytes it forwarded end, and sends a
//! comment only when they end an event (a blank line: `\n\n` or `\r\n\r\n`) or when nothing has
//! been sent yet. Mid-event it waits another period; the rest of the event is due any moment,
//! and if it never comes, the upstream read timeout ends the stream.
//!
//! Applied by [`super::relay::Relay::forward`] to responses whose `Content-Type` is `text/event-stream`,
//! on every route and in every mode; each comment counts in `gateway_sse_keepalives_total`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, header};
use futures_util::Stream;
use futures_util::stream::BoxStream;

use super::idle::IdleTimer;
use crate::telemetry::metrics::Metrics;

/// The comment sent on an idle stream.
pub const COMMENT: &[u8] = b": keep-alive\n\n";

type Body = BoxStream<'static, std::io::Result<Bytes>>;

/// `body` with keep-alive comments when it is an event stream and keep-alive is on; else as is.
pub fn apply(
    body: Body,
    headers: &HeaderMap,
    idle: Option<Duration>,
    metrics: &Arc<Metrics>,
) -> Body {
    match idle {
        Some(idle) if is_event_stream(headers) => {
            Box::pin(KeepAlive::new(body, idle, Arc::clone(metrics)))
        }
        _ => body,
    }
}

pub(super) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// An event stream that sends [`COMMENT`] after `idle` without a chunk, at event boundaries.
pub struct KeepAlive {
    inner: Body,
    /// Expires `idle` after the last chunk or comment went out.
    idle: IdleTimer,
    tail: Tail,
    metrics: Arc<Metrics>,
}

impl KeepAlive {
    /// Starts the idle timer: must run inside the runtime (a relay handler does).
    pub fn new(inner: Body, idle: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            idle: IdleTimer::new(idle),
            tail: Tail::default(),
            metrics,
        }
    }
}

impl std::fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepAlive")
            .field("idle", &self.idle.limit())
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

impl Stream for KeepAlive {
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.tail.push(&chunk);
                this.idle.touch();
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(other) => return Poll::Ready(other),
            Poll::Pending => {}
        }
        if this.idle.poll_expired(cx).is_pending() {
            return Poll::Pending;
        }
        this.idle.touch();
        if this.tail.at_boundary() {
            this.metrics.sse_keepalives.inc();
            this.tail.push(COMMENT);
            return Poll::Ready(Some(Ok(Bytes::from_static(COMMENT))));
        }
        // Mid-event: no comment. Poll the re-armed timer so it wakes this task next period.
        let _ = this.idle.poll_expired(cx);
        Poll::Pending
    }
}

/// The last bytes forwarded: enough to tell whether they end an event. The drain's last event
/// obeys the same rule ([`super::cutoff`]).
///
/// Kept as one `u32` shifted a byte at a time: this runs on every chunk of every stream, twice
/// (here and in the cutoff), and a `[u8; 4]` with `rotate_left` compiled to a call into the
/// generic slice rotation with a `memcpy` per byte: ~1,100 instructions per relayed token
/// (callgrind, issue 17), for four bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tail {
    /// The last (up to) four bytes, the latest in the lowest byte.
    last: u32,
    /// How many of them there are (0..=4).
    len: usize,
}

impl Tail {
    pub(super) fn push(&mut self, chunk: &[u8]) {
        for &byte in &chunk[chunk.len().saturating_sub(4)..] {
            self.last = (self.last << 8) | u32::from(byte);
        }
        self.len = (self.len + chunk.len()).min(4);
    }

    /// Nothing sent yet, or what was sent ends with a blank line.
    pub(super) fn at_boundary(&self) -> bool {
        const LF_LF: u32 = u32::from_be_bytes([0, 0, b'\n', b'\n']);
        const CRLF_CRLF: u32 = u32::from_be_bytes(*b"\r\n\r\n");
        self.len == 0
            || (self.len >= 2 && self.last & 0xFFFF == LF_LF)
            || (self.len == 4 && self.last == CRLF_CRLF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(chunks: &[&str]) -> bool {
        let mut tail = Tail::default();
        for chunk in chunks {
            tail.push(chunk.as_bytes());
        }
        tail.at_boundary()
    }

    #[test]
    fn comments_only_between_events() {
        assert!(after(&[]), "nothing sent yet");
        assert!(after(&["data: {}\n\n"]));
        assert!(after(&["data: {}\r\n\r\n"]));
        assert!(!after(&["data: {\"a\""]), "half an event");
        assert!(
            !after(&["data: {}\n"]),
            "one line end is not the end of an event"
        );
        assert!(
            after(&["data: {}\n", "\n"]),
            "the blank line split across chunks"
        );
        assert!(after(&["data: {}\r\n\r", "\n"]));
        assert!(
            after(&["data: a\n\n", ""]),
            "an empty chunk changes nothing"
        );
        assert!(!after(&["data: a\n\n", "data: b"]), "the next event begun");
        assert!(after(&[": keep-alive\n\n"]));
        assert!(
            after(&["data: x", "\r", "\n", "\r", "\n"]),
            "a byte per chunk"
        );
        assert!(after(&["\n\n"]), "the blank line alone");
        assert!(!after(&["\n\n", "a"]));
        assert!(!after(&["\n"]));
    }

    #[test]
    fn only_event_streams_get_comments() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header"));
            is_event_stream(&headers)
        };
        assert!(with("text/event-stream"));
        assert!(with("Text/Event-Stream; charset=utf-8"));
        assert!(!with("application/json"));
        assert!(!is_event_stream(&HeaderMap::new()));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_stream_gets_a_comment_then_its_events() {
        use futures_util::StreamExt as _;
        let metrics = Arc::new(Metrics::default());
        let slow = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            Ok(Bytes::from_static(b"data: {}\n\n"))
        });
        let body = KeepAlive::new(Box::pin(slow), Duration::from_secs(1), Arc::clone(&metrics));
        let chunks: Vec<Bytes> = body.map(|c| c.expect("chunk")).collect().await;
        assert_eq!(
            chunks,
            [COMMENT, COMMENT, b"data: {}\n\n".as_slice()],
            "a comment at 1 s and 2 s, the event at 2.5 s"
        );
        assert_eq!(metrics.sse_keepalives.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_half_event_gets_no_comment() {
        use futures_util::StreamExt as _;
        let metrics = Arc::new(Metrics::default());
        let half = futures_util::stream::once(async { Ok(Bytes::from_static(b"data: {")) });
        let rest = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            Ok(Bytes::from_static(b"}\n\n"))
        });
        let body = KeepAlive::new(
            Box::pin(half.chain(rest)),
            Duration::from_secs(1),
            Arc::clone(&metrics),
        );
        let chunks: Vec<Bytes> = body.map(|c| c.expect("chunk")).collect().await;
        assert_eq!(chunks, [b"data: {".as_slice(), b"}\n\n"]);
        assert_eq!(metrics.sse_keepalives.get(), 0);
    }
}
