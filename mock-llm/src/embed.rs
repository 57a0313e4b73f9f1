//! Running the mock inside another program: on its own thread, with its own runtime.
//!
//! Every test suite in the workspace needs a real upstream on `127.0.0.1:0`. On its own thread
//! the mock's timers keep their pace however busy the test's runtime gets with its clients, so a
//! test measures the code under test rather than its own scheduling. [`Running`] stops the mock
//! when dropped, cutting any stream it still serves (as the binary's SIGTERM does).

use std::net::SocketAddr;
use std::thread::JoinHandle;

use crate::Config;

/// A mock serving on its own thread. Dropping it stops it.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// The address it listens on (a real port even when `--listen` said `:0`).
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

/// Binds `config.listen` and serves on a new thread with a current-thread runtime. Returns once
/// the socket is bound, so the mock accepts connections from then on.
pub fn start(config: Config) -> std::io::Result<Running> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        // Binding needs a runtime context, but not a running runtime: this works from inside a
        // `#[tokio::test]` too, where `block_on` would panic.
        let _guard = runtime.enter();
        let std_listener = std::net::TcpListener::bind(config.listen)?;
        std_listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(std_listener)?
    };
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("mock-llm-{addr}"))
        .spawn(move || {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = runtime.block_on(crate::serve(listener, config, shutdown)) {
                tracing::error!("mock-llm on {addr} failed: {e}");
            }
        })?;
    Ok(Running {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}
