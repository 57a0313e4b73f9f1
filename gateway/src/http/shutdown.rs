//! Lesson 5: graceful shutdown must have a deadline.
//!
//! axum's graceful shutdown stops accepting connections and then waits for every open one to
//! finish, with no time limit, including a 45 s streaming body, or one that never ends. So on
//! SIGTERM/SIGINT the gateway stops accepting, lets in-flight streams run on for the drain
//! period, and then returns anyway. `main` then drops the runtime with `shutdown_timeout`,
//! because dropping a runtime waits for its blocking threads forever, and in broken mode those
//! threads are sitting inside `read()` on upstream sockets.
//!
//! WebSockets need a word of their own: once upgraded, a connection is no longer HTTP, and
//! axum's graceful shutdown neither waits for it nor tells it. So the drain also flips
//! `Sockets::begin_drain` (`super::ws`): an idle socket is closed at once with code 1001 (Going Away), a busy
//! one after its current chat, and the drain waits for the sockets like for the streams, up to
//! the same deadline. A client then reconnects to another instance, instead of seeing its
//! connection vanish with an abnormal close (1006).

use std::future::{Future, IntoFuture};
use std::time::Duration;

use super::state::AppState;

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
    let (start_drain, drain_started) = tokio::sync::oneshot::channel::<()>();
    // The peer address is the rate-limit key when authentication is off (see `limits`).
    let app =
        super::routes::app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Small writes go out at once. With Nagle's algorithm on, a token written right after the
    // response head waits for the client's (delayed, up to 40 ms) ACK of the head: measured as
    // +40 ms of time to first token on every hedged stream, whose head and first token leave
    // together.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = drain_started.await;
        })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    tracing::info!(
        live_streams = live.get(),
        "shutdown requested: no new connections; draining open streams for up to {drain:?}"
    );
    let _ = start_drain.send(());
    sockets.begin_drain();
    let drained = async {
        let result = server.await;
        while sockets.in_use() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        result
    };
    match tokio::time::timeout(drain, drained).await {
        Ok(result) => {
            tracing::info!("drained; exiting");
            result
        }
        Err(_) => {
            tracing::warn!(
                live_streams = live.get(),
                websockets = sockets.in_use(),
                "drain deadline passed; cutting the remaining streams"
            );
            Ok(())
        }
    }
}
