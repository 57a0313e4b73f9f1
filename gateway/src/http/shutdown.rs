//! Lesson 5: graceful shutdown must have a deadline, and must tell the load balancer first.
//!
//! axum's graceful shutdown stops accepting connections and then waits for every open one to
//! finish, with no time limit, including a 45 s streaming body, or one that never ends. And a
//! listener that closes at once shows the load balancer "connection refused" before any check
//! of its has failed. So a drain here has phases ([`crate::lifecycle`]), each logged with the
//! counts of what is still running:
//!
//! 1. **Draining** (SIGTERM, SIGINT or `POST /admin/drain`, whichever comes first): the admin
//!    plane's `/readyz` answers 503 `draining` at once, and the main listener keeps serving new
//!    requests for `--drain-grace-secs`, so the balancer's checks fail and it stops sending
//!    before anything is refused.
//! 2. **Shutting down**: new requests get 503 `shutting_down` with `Retry-After` and
//!    `Connection: close` ([`super::closing`]); idle keep-alive connections are closed
//!    ([`super::server`]), and a new one is still accepted, answered and closed; idle WebSockets
//!    are closed with 1001; in-flight streams and chats run on for up to `--drain-secs`.
//! 3. **Stopped**: when nothing is left, or at the deadline. At the deadline an SSE stream ends
//!    with an error event, another body is cut (`crate::upstream::cutoff`), a chat's WebSocket
//!    is closed with 1001. The server then stops accepting and returns, giving the last words a
//!    second to go out; the process exits 0.
//!
//! `main` then drops the runtime with `shutdown_timeout`, because dropping a runtime waits for
//! its blocking threads forever, and in broken mode those threads are sitting inside `read()` on
//! upstream sockets. A second signal does not wait for any of this: it exits at once
//! ([`signal`]).
//!
//! WebSockets need a word of their own: once upgraded, a connection is no longer HTTP, and
//! axum's graceful shutdown neither waits for it nor tells it. So the sockets watch the same
//! lifecycle (`super::ws`): an idle socket is closed with code 1001 (Going Away) once the grace
//! is over, a busy one after its current chat, and the drain waits for the sockets like for the
//! streams, up to the same deadline. A client then reconnects to another instance, instead of
//! seeing its connection vanish with an abnormal close (1006).

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind};

use super::state::AppState;
use crate::lifecycle::Phase;

/// Completes on the first SIGTERM or SIGINT (Ctrl-C), and from then on a second one exits the
/// process at once, with 128 + the signal's number (143, 130) like a process the signal killed:
/// whoever sends it twice does not want to wait for the drain.
pub async fn signal() {
    let mut signals = Signals::new();
    let _ = signals.next().await;
    tokio::spawn(async move {
        let (name, code) = signals.next().await;
        tracing::warn!("{name} again: exiting now, without waiting for the drain");
        std::process::exit(code);
    });
}

/// SIGTERM and SIGINT, each listened for once and kept: once tokio listens for a signal, its
/// default action (ending the process) no longer applies, so a second signal must find a
/// listener too.
struct Signals {
    term: Option<Signal>,
    int: Option<Signal>,
}

impl Signals {
    fn new() -> Self {
        let listen = |kind: SignalKind, name: &str| match tokio::signal::unix::signal(kind) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("cannot listen for {name} ({e}); it will not stop the gateway");
                None
            }
        };
        Self {
            term: listen(SignalKind::terminate(), "SIGTERM"),
            int: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The next signal's name and the exit status it stands for.
    async fn next(&mut self) -> (&'static str, i32) {
        let Self { term, int } = self;
        tokio::select! {
            () = wait(term.as_mut()) => ("SIGTERM", 143),
            () = wait(int.as_mut()) => ("SIGINT", 130),
        }
    }
}

/// The next delivery of `signal`; never, when it could not be listened for.
async fn wait(signal: Option<&mut Signal>) {
    if let Some(signal) = signal
        && signal.recv().await.is_some()
    {
        return;
    }
    std::future::pending().await
}

/// The drain's two periods.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// `--drain-grace-secs`: new requests are still served while `/readyz` says `draining`.
    pub grace: Duration,
    /// `--drain-secs`: then, how long in-flight streams and WebSockets may run on.
    pub deadline: Duration,
}

/// After the deadline, how long the cut streams get to send their last event and the sockets
/// their Close frame before the server returns regardless.
const LAST_WORD: Duration = Duration::from_secs(1);

/// Serves until a drain starts (`shutdown` completes, or someone else, `POST /admin/drain`,
/// moves the lifecycle to `Draining`), then drains in phases (see the module docs).
pub async fn serve_with_drain(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Drain,
) -> std::io::Result<()> {
    let lifecycle = state.lifecycle().clone();
    let work = Work(state.clone());
    // The signal is watched for the whole life of the server, not only until a drain starts: a
    // SIGTERM during a drain begun by `POST /admin/drain` arms the second signal's exit too.
    let _trigger = Trigger(tokio::spawn({
        let lifecycle = lifecycle.clone();
        async move {
            shutdown.await;
            // Said before the drain's own first line, which the advance wakes.
            if lifecycle.phase() < Phase::Draining {
                tracing::info!("shutdown requested (signal)");
            } else {
                tracing::info!("shutdown signal during the drain: it goes on");
            }
            lifecycle.advance(Phase::Draining);
        }
    }));
    // The gateway's own accept loop (`super::server`): a connection cap, head and idle timeouts,
    // and a listener that stays open through the grace and the refusals (a refused connection
    // would tell a load balancer "dead host", not "draining"). At `Phase::ShuttingDown` it closes
    // idle keep-alive connections; at `Phase::Stopped` it stops accepting, cuts what is left and
    // returns.
    let connections = std::sync::Arc::clone(state.connections());
    let server =
        tokio::spawn(connections.run(listener, super::routes::app(state), lifecycle.clone()));
    let server = async move { server.await.map_err(std::io::Error::other) };
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result,
        () = lifecycle.reached(Phase::Draining) => {}
    }
    tracing::info!(
        live_streams = work.streams(),
        websockets = work.sockets(),
        requests_in_flight = work.requests(),
        "draining: /readyz answers 503 draining; new requests are still served for {:?} \
         (--drain-grace-secs)",
        drain.grace
    );
    tokio::select! {
        result = &mut server => return result,
        () = tokio::time::sleep(drain.grace) => {}
    }

    lifecycle.advance(Phase::ShuttingDown);
    tracing::info!(
        live_streams = work.streams(),
        websockets = work.sockets(),
        requests_in_flight = work.requests(),
        "grace over: new requests get 503 shutting_down; in-flight streams and WebSockets run \
         on for up to {:?} (--drain-secs)",
        drain.deadline
    );
    let settled = tokio::select! {
        result = &mut server => return result,
        settled = tokio::time::timeout(drain.deadline, work.settled()) => settled.is_ok(),
    };
    if settled {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!(
            live_streams = work.streams(),
            websockets = work.sockets(),
            requests_in_flight = work.requests(),
            "drain deadline passed; cutting the remaining streams"
        );
    }

    lifecycle.advance(Phase::Stopped);
    match tokio::time::timeout(LAST_WORD, &mut server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::debug!("connections still open {LAST_WORD:?} after the drain; returning");
            Ok(())
        }
    }
}

/// What a drain waits for, read from the state's counters.
struct Work(AppState);

impl Work {
    fn streams(&self) -> usize {
        self.0.live_streams().get()
    }

    fn sockets(&self) -> usize {
        self.0.sockets().in_use()
    }

    /// Requests holding or waiting for an inbound place (a stream holds one to its last byte).
    fn requests(&self) -> usize {
        let places = self.0.inbound().places();
        places.in_use() + places.queued()
    }

    /// HTTP connections with a request in flight (`super::server`).
    fn serving(&self) -> usize {
        self.0.connections().serving()
    }

    /// Jobs this instance's workers are running (`crate::jobs`): they run on to the deadline
    /// like streams, then give their leases back.
    fn jobs(&self) -> usize {
        self.0.jobs().running()
    }

    /// Completes once nothing is running: no stream, no socket, no request, no connection
    /// still answering one, no job.
    async fn settled(&self) {
        while self.streams() + self.sockets() + self.requests() + self.serving() + self.jobs() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The task that turns the shutdown signal into a drain; it ends with the server.
struct Trigger(tokio::task::JoinHandle<()>);

impl Drop for Trigger {
    fn drop(&mut self) {
        self.0.abort();
    }
}
