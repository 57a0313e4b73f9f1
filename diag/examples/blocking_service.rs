//! A service that is not this project's, for `diag watch --probe` to watch: the example of
//! docs/find-it-in-your-app.md ("Watch your own service").
//!
//! Two endpoints, the two kinds every real service has:
//!
//! - `GET /healthz` answers on an async worker and touches nothing shared: it stays fast
//!   whatever the rest of the service is doing, which is why it is a poor health check.
//! - `GET /report` does its work the way a service does blocking work (a synchronous database
//!   driver, a file, a CPU-heavy library): in `spawn_blocking`, on tokio's blocking pool. The
//!   pool is small here (`--blocking-threads`, default 4) and each job takes `--work-ms`
//!   (default 200), so more than 4 reports at once queue for a thread.
//!
//! Under load the pair shows the starved-pool signature: `/report` waits for seconds while
//! `/healthz` answers in a millisecond. That is what `diag watch --pair healthz=report` names.
//!
//! ```sh
//! cargo run -p diag --example blocking_service -- --listen 127.0.0.1:8090
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;

/// A tiny service with a fast endpoint and one on a small blocking pool.
#[derive(Debug, Parser)]
struct Args {
    /// Where to listen (an IP literal and a port).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The blocking pool's size: reports beyond this many at once wait for a thread.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    blocking_threads: u16,
    /// How long one report holds its pool thread, in milliseconds.
    #[arg(long, default_value_t = 200)]
    work_ms: u64,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    // The pool's size is the runtime's, so the runtime is built by hand, not by #[tokio::main].
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(usize::from(args.blocking_threads))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!(
            "blocking_service on http://{}: GET /healthz (async), GET /report ({} ms on a pool of {})",
            listener.local_addr()?,
            args.work_ms,
            args.blocking_threads
        );
        let app = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/report", get(report))
            .with_state(Duration::from_millis(args.work_ms));
        axum::serve(listener, app).await
    })
}

/// Blocking work, done where blocking work belongs: off the async workers, on the pool that a
/// burst of reports then fills.
async fn report(State(work): State<Duration>) -> Result<&'static str, StatusCode> {
    tokio::task::spawn_blocking(move || std::thread::sleep(work))
        .await
        .map(|()| "report ready\n")
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}
