//! A server inside another program: on its own thread, with its own runtime.
//!
//! Tests, diag's tests and benchmarks start real gateways and mocks on `127.0.0.1:0`. They do not
//! `tokio::spawn` the server on the test's runtime, for two reasons that are lessons of their own:
//! the blocking-pool size is a property of the *runtime* (`max_blocking_threads`), so a gateway
//! borrowed onto the test's runtime would starve, or fail to starve, the wrong pool; and a mock on
//! its own thread keeps its timers' pace however busy the test's runtime gets with its clients.
//!
//! [`start`] binds the listener, hands it to the server's future on a new thread, and returns
//! once the socket is bound, so the server accepts connections from then on. [`Running`] stops
//! the server when dropped: the future's shutdown signal fires and the thread is joined.

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// A server serving on its own thread. Dropping it shuts the server down and joins the thread.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// The address it listens on (a real port even when the configuration said `:0`).
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

/// The shutdown signal handed to the server: completes when the [`Running`] is dropped.
pub type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Binds `listen` on `runtime`, then runs `serve(listener, shutdown)` on a new thread named
/// `{name}-{addr}`. After the server returns, the runtime gets `shutdown_grace` to finish
/// blocking work: a dropped runtime would wait for its blocking threads forever, and a
/// gateway's pool threads may sit in upstream reads.
pub fn start<F, Fut>(
    name: &str,
    runtime: Runtime,
    listen: SocketAddr,
    shutdown_grace: Duration,
    serve: F,
) -> std::io::Result<Running>
where
    F: FnOnce(TcpListener, Shutdown) -> Fut + Send + 'static,
    Fut: Future<Output = std::io::Result<()>>,
{
    let listener = {
        // `enter`, not `block_on`: callers are often async tests, and blocking on a runtime from
        // inside another one panics. Binding only needs this runtime's reactor. Same socket
        // options as `TcpListener::bind` (SO_REUSEADDR on Unix, backlog 1024).
        let _guard = runtime.enter();
        let socket = if listen.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(listen)?;
        socket.listen(1024)?
    };
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let label = format!("{name}-{addr}");
    let thread = std::thread::Builder::new()
        .name(label.clone())
        .spawn(move || {
            let shutdown: Shutdown = Box::pin(async {
                let _ = stopped.await;
            });
            if let Err(e) = runtime.block_on(serve(listener, shutdown)) {
                tracing::error!("{label} failed: {e}");
            }
            runtime.shutdown_timeout(shutdown_grace);
        })?;
    Ok(Running {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
