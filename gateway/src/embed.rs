//! Running a gateway inside another program: on its own thread, with its own runtime.
//!
//! Tests, `diag`'s tests and benchmarks start real gateways on `127.0.0.1:0`. They cannot simply
//! `tokio::spawn` [`crate::serve`] on their own runtime: the blocking-pool size is a property of
//! the *runtime* (`max_blocking_threads`), so a gateway borrowed onto the test's runtime would
//! starve, or fail to starve, the wrong pool. [`start`] gives each gateway the runtime the binary
//! would have built, and [`Running`] stops it when dropped.

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::Config;

/// A gateway serving on its own thread. Dropping it shuts the gateway down (drain included).
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// The address it actually listens on (the port is real even when `--listen` said `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, ready for paths to be appended.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds `config.listen` and serves on a new thread with the runtime from [`crate::runtime`].
/// Returns once the socket is bound, so the gateway accepts connections from then on.
///
/// A flag combination [`Config::check`] refuses is an `InvalidInput` error, before anything starts.
pub fn start(config: Config) -> std::io::Result<Running> {
    config
        .check()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let runtime = crate::runtime(&config)?;
    let listener = {
        // `enter`, not `block_on`: callers are often async tests, and blocking on a runtime from
        // inside another one panics. Binding only needs this runtime's reactor. Same socket
        // options as `TcpListener::bind` (SO_REUSEADDR on Unix, backlog 1024).
        let _guard = runtime.enter();
        let socket = if config.listen.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(config.listen)?;
        socket.listen(1024)?
    };
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("gateway-{addr}"))
        .spawn(move || {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = runtime.block_on(crate::serve(listener, config, shutdown)) {
                tracing::error!("gateway on {addr} failed: {e}");
            }
            // As in `main`: pool threads may sit in upstream reads; do not wait for them.
            runtime.shutdown_timeout(Duration::from_secs(1));
        })?;
    Ok(Running {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
