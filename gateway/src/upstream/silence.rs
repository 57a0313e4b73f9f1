//! The fixed client's read timeout: a relayed body that has sent nothing for `--upstream-read-
//! timeout-secs` ends with an error, and the upstream request with it.
//!
//! reqwest has this built in (`read_timeout`), and the gateway used it. But reqwest's resets a
//! tokio timer after every frame, which takes the timer wheel's lock once per token per stream;
//! this one waits on an [`IdleTimer`], which a chunk only touches (see [`super::idle`]). It ends
//! the body at the same moment.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use futures_util::Stream;

use super::idle::IdleTimer;

/// A body stream that fails after `limit` without a chunk.
pub struct Silence<S> {
    inner: S,
    idle: IdleTimer,
    /// The timeout was reported: the body is over.
    ended: bool,
}

impl<S> Silence<S> {
    /// Starts the clock: must run inside the runtime (the client's `send` does).
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            idle: IdleTimer::new(limit),
            ended: false,
        }
    }
}

impl<S> std::fmt::Debug for Silence<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Silence")
            .field("limit", &self.idle.limit())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<S> Stream for Silence<S>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    type Item = std::io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.idle.touch();
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(other) => return Poll::Ready(other),
            Poll::Pending => {}
        }
        if this.idle.poll_expired(cx).is_pending() {
            return Poll::Pending;
        }
        this.ended = true;
        Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the upstream sent nothing for {:?}", this.idle.limit()),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;
    use tokio::time::Instant;

    use super::*;

    fn chunks(n: usize, every: Duration) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
        Box::pin(
            futures_util::stream::iter(0..n)
                .then(move |i| async move {
                    tokio::time::sleep(every).await;
                    Ok(Bytes::from(format!("{i}")))
                })
                .chain(futures_util::stream::pending()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn steady_chunks_never_time_out_then_silence_does_after_the_limit() {
        let limit = Duration::from_secs(1);
        // Five chunks 600 ms apart: 3 s in all, each gap under the limit.
        let mut body = Silence::new(chunks(5, Duration::from_millis(600)), limit);
        for _ in 0..5 {
            body.next().await.expect("a chunk").expect("not a timeout");
        }
        let last_chunk = Instant::now();
        let error = body
            .next()
            .await
            .expect("an item")
            .expect_err("the timeout");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(
            Instant::now() - last_chunk,
            limit,
            "timed from the last chunk"
        );
        assert!(body.next().await.is_none(), "the body is over");
    }
}
