//! The admin plane: health, metrics and the drain, on a thread and a runtime of their own.
//!
//! Lesson 4's last word ([`crate::lessons::health`]): a check must not run inside what it
//! measures. The main listener's probes are tasks of the main runtime; when its queue is long
//! they wait in it, and when its workers are blocked (`--mode inline`) they do not run at all.
//! So the checks an orchestrator acts on live here, beside the gateway rather than in it:
//!
//! - their own **OS thread** and **current-thread runtime**: nothing the main runtime does can
//!   delay an answer, and their timers fire however stalled it is;
//! - their own **listener**, `--admin-listen` (default `127.0.0.1:8002`, `off` to disable), so
//!   they are not behind the main listener's accept queue (or its connection bounds);
//! - they **read** the gateway's state (counters, the lifecycle) and never serve traffic.
//!
//! What they answer is in [`routes`]; how `/readyz` measures the main runtime from outside is
//! [`readiness`]. The plane starts with the gateway ([`crate::serve`]) and stops when it
//! returns.

pub mod readiness;
pub mod routes;

use std::future::IntoFuture as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tracing::Instrument as _;

use crate::config::{AdminListen, Config};
use crate::http::shutdown::Drain;
use crate::http::state::AppState;
use crate::policy::auth::ApiKeys;
use readiness::Readiness;
use routes::Admin;

/// Binds `--admin-listen`, before anything starts: a port in use is a start-up error, and the
/// bound address (a real port for `:0`) is known to whoever started the gateway. `None` when
/// the plane is `off`.
pub fn bind(config: &Config) -> std::io::Result<Option<std::net::TcpListener>> {
    let AdminListen::At(addr) = config.admin_listen else {
        return Ok(None);
    };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on --admin-listen {addr}: {e}"),
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// The running admin plane. Dropping it stops the plane and joins its thread.
#[derive(Debug)]
pub struct AdminPlane {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AdminPlane {
    /// Serves the admin routes on `listener` from a new thread, probing the runtime behind
    /// `main` (the gateway's) in the background.
    pub fn start(
        listener: std::net::TcpListener,
        state: AppState,
        config: &Config,
        main: Handle,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let readiness = Arc::new(Readiness::new(config.readiness()));
        let admin = Admin {
            state: state.clone(),
            readiness: Arc::clone(&readiness),
            token: ApiKeys::new(config.admin_token.as_slice()),
            drain: Drain {
                grace: config.drain_grace(),
                deadline: config.drain(),
            },
        };
        let token = if config.admin_token.is_some() {
            "needs the admin token"
        } else {
            "open (loopback only)"
        };
        let span = state.span().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gateway-admin".into())
            .spawn(move || {
                let prober_span = span.clone();
                let serve = async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!("admin plane: cannot use its listener: {e}");
                            return;
                        }
                    };
                    tracing::info!(
                        "admin plane listening on {addr}: GET /livez /readyz /health /metrics \
                         /debug/pool; POST /admin/drain {token}"
                    );
                    let publisher =
                        tokio::spawn(Arc::clone(&readiness).publish_every(state.clone()));
                    let prober = tokio::spawn(readiness.probe(main, state).instrument(prober_span));
                    let app =
                        routes::router(admin).into_make_service_with_connect_info::<SocketAddr>();
                    tokio::select! {
                        result = axum::serve(listener, app).into_future() => {
                            if let Err(e) = result {
                                tracing::error!("admin plane stopped: {e}");
                            }
                        }
                        _ = stopped => {}
                    }
                    prober.abort();
                    publisher.abort();
                };
                runtime.block_on(serve.instrument(span));
                runtime.shutdown_timeout(Duration::from_millis(100));
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
