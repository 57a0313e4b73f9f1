//! Lesson 5: graceful shutdown must have a deadline.
//!
//! axum's graceful shutdown stops accepting connections and then waits for every open one to
//! finish, with no time limit, including a 45 s streaming body, or one that never ends. So on
//! SIGTERM/SIGINT the gateway closes its idle connections, lets in-flight streams run on for
//! the drain period, and then returns anyway. Its listener stays open meanwhile, and a client
//! that connects is answered, then its connection closed (`super::server`): a refused
//! connection would tell a load balancer "dead host", not "draining". `main` then drops the runtime with `shutdown_timeout`,
//! because dropping a runtime waits for its blocking threads forever, and in broken mode those
//! threads are sitting inside `read()` on upstream sockets.
//!
//! WebSockets need a word of their own: once upgraded, a connection is no longer HTTP, and
//! axum's graceful shutdown neither waits for it nor tells it. So the drain also flips
//! `Sockets::begin_drain` (`super::ws`): an idle socket is closed at once with code 1001 (Going Away), a busy
//! one after its current chat, and the drain waits for the sockets like for the streams, up to
//! the same deadline. A client then reconnects to another instance, instead of seeing its
//! connection vanish with an abnormal close (1006).

use std::future::Future;
use std::time::Duration;

use super::state::AppState;
use crate::lifecycle::Phase;

/// Completes on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); only Ctrl-C stops the gateway");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Serves until `shutdown`, then drains for at most `drain`.
pub async fn serve_with_drain(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let live = state.live_streams().clone();
    let sockets = std::sync::Arc::clone(state.sockets());
    let connections = std::sync::Arc::clone(state.connections());
    let lifecycle = state.lifecycle().clone();
    // The gateway's own accept loop (`super::server`): a connection cap, head and idle
    // timeouts, and a listener that stays open during the drain.
    let server = tokio::spawn(std::sync::Arc::clone(&connections).run(
        listener,
        super::routes::app(state),
        lifecycle.clone(),
    ));
    lifecycle.advance(Phase::Serving);
    tokio::pin!(server);
    tokio::select! {
        // The loop ends on its own only at `Phase::Stopped`, so this is a panic in it.
        joined = &mut server => return joined.map_err(std::io::Error::other),
        () = shutdown => {}
    }
    tracing::info!(
        live_streams = live.get(),
        connections = connections.open(),
        "shutdown requested: idle connections closed, new ones answered once; draining open \
         streams for up to {drain:?}"
    );
    lifecycle.advance(Phase::ShuttingDown);
    sockets.begin_drain();
    let drained = async {
        while connections.serving() > 0 || sockets.in_use() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let result = match tokio::time::timeout(drain, drained).await {
        Ok(()) => {
            tracing::info!("drained; exiting");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                live_streams = live.get(),
                websockets = sockets.in_use(),
                "drain deadline passed; cutting the remaining streams"
            );
            Ok(())
        }
    };
    lifecycle.advance(Phase::Stopped);
    // The loop stops accepting and cuts what is left; it returns at once.
    (&mut server).await.map_err(std::io::Error::other)?;
    result
}
