//! A deadline that moves with activity, without touching the timer for every chunk.
//!
//! Two adapters on a relayed body wait for silence: [`super::keepalive`] (nothing sent for
//! `--sse-keepalive-secs`: send a comment) and [`super::silence`] (nothing received for the read
//! timeout: give up). The obvious way, resetting a `tokio::time::Sleep` after every chunk, costs
//! more than it looks: a reset takes the runtime's timer-wheel lock and moves the entry, and a
//! stream moves a chunk per token, so 8,000 streams take that lock tens of thousands of times a
//! second, from every worker thread (issue 17 measured the per-token cost in instructions).
//!
//! [`IdleTimer`] turns it around. Activity only notes the time ([`IdleTimer::touch`]: a clock read,
//! a vDSO call, no lock). The timer is left alone until it fires; then, if something happened since
//! it was armed, it is pushed to `last activity + limit` and waited on again. It reports expiry at
//! the same moment a timer reset on every chunk would, and is reset about once per period instead
//! of once per chunk.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Expires `limit` after the last [`touch`](Self::touch) (or its creation).
#[derive(Debug)]
pub struct IdleTimer {
    limit: Duration,
    last: Instant,
    /// Fires at `last + limit` or earlier; re-armed only when it fires.
    timer: Pin<Box<Sleep>>,
}

impl IdleTimer {
    /// Starts the clock: must run inside the runtime.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            last: Instant::now(),
            timer: Box::pin(tokio::time::sleep(limit)),
        }
    }

    pub fn limit(&self) -> Duration {
        self.limit
    }

    /// Something moved: the deadline is now `limit` from here.
    pub fn touch(&mut self) {
        self.last = Instant::now();
    }

    /// Ready once `limit` has passed since the last touch; before that, pending, with `cx`'s
    /// task woken when it may have passed.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last + self.limit;
            if due <= Instant::now() {
                return Poll::Ready(());
            }
            self.timer.as_mut().reset(due);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_limit_after_the_last_touch_however_often_it_was_touched() {
        let limit = Duration::from_secs(1);
        let mut idle = IdleTimer::new(limit);
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            assert!(
                std::future::poll_fn(|cx| Poll::Ready(idle.poll_expired(cx).is_pending())).await
            );
            idle.touch();
        }
        let touched = Instant::now();
        std::future::poll_fn(|cx| idle.poll_expired(cx)).await;
        assert_eq!(Instant::now() - touched, limit);
        // Touched again after expiring, it waits a whole period again.
        idle.touch();
        let again = Instant::now();
        std::future::poll_fn(|cx| idle.poll_expired(cx)).await;
        assert_eq!(Instant::now() - again, limit);
    }
}
