//! The instance's lifecycle: one value every part reads to know whether to take new work.
//!
//! A gateway that is stopping has to tell three audiences, in order: the load balancer first
//! (readiness turns 503 `draining` while requests are still served, so its checks notice before
//! anything is refused), then new requests (503 `shutting_down` with `Connection: close`, idle
//! keep-alive connections closed), and finally the streams still running (they end at the drain
//! deadline). Each step is a [`Phase`]; the phases only move forward, and everyone who cares
//! (the admin plane's `/readyz`, the accept loop, a middleware, the relay, the WebSockets)
//! watches the same [`Lifecycle`] instead of keeping a flag of its own.
//!
//! A leaf: it knows nothing of the rest of the gateway.

use std::sync::Arc;

use tokio::sync::watch;

/// Where the instance is, in order: every phase comes after the one above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Bound and serving, but the first readiness measurement is not in yet.
    Starting,
    /// Taking work.
    Serving,
    /// Drain started (`POST /admin/drain`, SIGTERM or SIGINT): readiness answers 503 `draining`,
    /// and requests are still served for `--drain-grace-secs`, so a load balancer sees the
    /// readiness failure before any refusal.
    Draining,
    /// After the grace: new requests get 503 `shutting_down`, idle connections are closed, and
    /// in-flight streams run on until the drain deadline.
    ShuttingDown,
    /// The drain deadline passed or nothing was left: the server returns.
    Stopped,
}

impl Phase {
    /// As shown in `/readyz` and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Serving => "serving",
            Self::Draining => "draining",
            Self::ShuttingDown => "shutting_down",
            Self::Stopped => "stopped",
        }
    }
}

/// The shared lifecycle. Cloning is shallow: every clone watches the same phase.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    phase: Arc<watch::Sender<Phase>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            phase: Arc::new(watch::Sender::new(Phase::Starting)),
        }
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// A receiver that sees every later change (`changed().await`, `wait_for`).
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Moves to `to` if that is later than the current phase; returns whether it moved. Phases
    /// never go back, so a second signal or a second `POST /admin/drain` changes nothing.
    pub fn advance(&self, to: Phase) -> bool {
        self.phase.send_if_modified(|phase| {
            let later = to > *phase;
            if later {
                *phase = to;
            }
            later
        })
    }

    /// Completes once the phase is `phase` or later.
    pub async fn reached(&self, phase: Phase) {
        let mut rx = self.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|now| *now >= phase).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward() {
        let lifecycle = Lifecycle::default();
        assert_eq!(lifecycle.phase(), Phase::Starting);
        assert!(lifecycle.advance(Phase::Serving));
        assert!(lifecycle.advance(Phase::Draining));
        assert!(!lifecycle.advance(Phase::Serving), "never back");
        assert!(!lifecycle.advance(Phase::Draining), "twice is once");
        let waiter = {
            let lifecycle = lifecycle.clone();
            tokio::spawn(async move { lifecycle.reached(Phase::ShuttingDown).await })
        };
        assert!(lifecycle.advance(Phase::ShuttingDown));
        waiter.await.expect("woken");
        assert_eq!(lifecycle.phase().as_str(), "shutting_down");
    }
}
