//! Admission: the one shape of bound the gateway uses, and the permit that holds a place.
//!
//! An [`Admission`] is `limit` places plus a short, bounded wait for one; past it, an immediate
//! refusal ([`Shed`]) the caller turns into its own 503 or close frame. It needs nothing of the
//! app (no state, no metrics, no error type), so every layer can bound something with it: the
//! inbound cap (`crate::policy::limits`), a provider's upstream slots, `/v1/solve`'s workers,
//! the WebSocket cap and the main listener's connection cap (`crate::http::server`).
//!
//! The permit *is* the place, and where it lives decides what is bounded. tower's
//! `ConcurrencyLimitLayer` releases its permit when the response's headers are ready, i.e. at
//! the first byte of a 45 s stream, so it bounds nothing that matters here. [`hold`] moves the
//! permit into the response body instead, which is dropped when the stream ends or the client
//! leaves (lesson 8).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::Response;
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `limit` places, at most `max_queued` waiting for one, each for at most `max_wait`: the one
/// shape of bound the gateway uses, everywhere it bounds something. Inbound requests
/// (`--max-concurrent-requests`, `--max-queued-requests`, `--max-queue-wait-ms`), a provider's
/// upstream slots (`max-concurrent`, `pool-timeout-ms`), `/v1/solve`'s computations
/// (`--cpu-workers`, `--cpu-queue`), WebSockets (`--ws-max-connections`, no queue) and
/// connections (`--max-connections`, no queue: [`Admission::try_admit`]).
#[derive(Debug)]
pub struct Admission {
    /// One permit per place. Tokio's semaphore is fair: waiters get permits in arrival order.
    slots: Arc<Semaphore>,
    limit: usize,
    /// Requests waiting now; never above `max_queued` (a place is reserved before waiting).
    queued: AtomicUsize,
    max_queued: usize,
    max_wait: Duration,
}

/// Why a request was refused: every place taken and no room to wait, or no place within the
/// longest wait. The caller names it (`telemetry::labels::ShedReason` for the inbound limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Every place taken and the wait queue full: refused at once.
    QueueFull,
    /// Waited the longest allowed without getting a place.
    QueueTimeout,
}

impl Admission {
    /// `max_wait` may be `Duration::MAX`: wait as long as it takes (tokio caps the timer).
    pub fn new(limit: usize, max_queued: usize, max_wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            queued: AtomicUsize::new(0),
            max_queued,
            max_wait,
        }
    }

    /// A place, now or after a bounded wait. The permit is the place: drop it to give it back.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Shed> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_queued).then_some(n + 1)
            })
            .map_err(|_| Shed::QueueFull)?;
        // Leaves the queue however the wait ends, including the client hanging up mid-wait.
        let _waiting = Decrement(&self.queued);
        match tokio::time::timeout(self.max_wait, Arc::clone(&self.slots).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Shed::QueueTimeout),
        }
    }

    /// A place now, or `None`: no waiting at all, for callers that cannot wait (the accept
    /// loop refuses a connection rather than hold it in a queue).
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    pub fn in_use(&self) -> usize {
        self.limit.saturating_sub(self.slots.available_permits())
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests that may wait for a place.
    pub fn max_queued(&self) -> usize {
        self.max_queued
    }

    /// The longest a request waits for a place.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `response` with `guard` moved into its body: the guard is dropped when the body is, i.e.
/// when the last byte is sent or the client goes away, not when the headers leave.
pub fn hold<G: Send + Unpin + 'static>(response: Response, guard: G) -> Response {
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(Held {
            body,
            _guard: guard,
        }),
    )
}

/// A body that owns a guard. Size and end-of-stream are the inner body's, so a JSON error keeps
/// its `Content-Length`.
struct Held<G> {
    body: Body,
    _guard: G,
}

impl<G: Unpin> http_body::Body for Held<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_queue_and_shed() {
        let inbound = Arc::new(Admission::new(1, 1, Duration::from_millis(300)));
        let first = inbound.admit().await.expect("a free place");
        assert_eq!(inbound.in_use(), 1);
        let second = tokio::spawn({
            let inbound = Arc::clone(&inbound);
            async move { inbound.admit().await.map(drop) }
        });
        while inbound.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(inbound.admit().await.map(drop), Err(Shed::QueueFull));
        assert_eq!(second.await.expect("join"), Err(Shed::QueueTimeout));
        assert_eq!(inbound.queued(), 0, "a timed-out waiter leaves the queue");
        drop(first);
        assert!(inbound.admit().await.is_ok(), "a returned place is reused");
    }
}
