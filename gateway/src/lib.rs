//! # gateway: an LLM gateway, and the lesson of the starved blocking pool
//!
//! The gateway relays slow upstream streams to its clients. Its upstream client is a strategy
//! chosen at start-up ([`config::Mode`]):
//!
//! - `broken`: a blocking HTTP client (ureq) run through `spawn_blocking`. Each open stream pins
//!   one thread of the runtime's blocking pool for its whole life. With a pool of N threads only N
//!   streams make progress, the rest queue, and so does every other job that needs the pool, such
//!   as the sync health check. Nothing crashes; the service just stops answering in time.
//! - `fixed`: an async client (reqwest) whose response body is forwarded as a stream. A stream is
//!   a few kilobytes of state on the async workers; the blocking pool stays idle.
//!
//! The same endpoints run in both modes, so the difference is visible from outside (see the
//! `diag` crate, which measures it).
//!
//! # Layout
//!
//! - [`config`]: flags, env overrides, the two modes.
//! - [`pool`]: lesson 1, *seeing* the blocking pool: a counting wrapper around `spawn_blocking`.
//! - [`upstream::broken`]: lesson 2, how a blocking client pins pool threads.
//! - [`upstream::fixed`]: lesson 3, the async fix, and how a client disconnect reaches upstream.
//! - [`relay`]: `GET /chat/stream`, one relayed stream, logged with its bytes and duration.
//! - [`health`]: lesson 4, health checks that do and do not depend on the pool.
//! - [`shutdown`]: lesson 5, graceful shutdown that cannot hang: a drain deadline.
//! - [`error`]: the one JSON error shape (OpenAI's) every failure is returned in.
//! - [`embed`]: a gateway on its own thread and runtime, for tests and tools.
//!
//! [`app`] builds the router; [`serve`] runs it; [`runtime`] builds the runtime whose blocking
//! pool size is part of the lesson, so the gateway must run on it.

pub mod config;
pub mod embed;
pub mod error;
pub mod health;
pub mod pool;
pub mod relay;
pub mod shutdown;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

pub use config::{Config, Mode};
use pool::BlockingPool;
use upstream::Upstream;

/// Everything the handlers share. Cheap to clone: all `Arc`s.
#[derive(Debug, Clone)]
pub struct AppState {
    pub mode: Mode,
    /// The only door to the blocking pool: every job goes through it so it can be counted.
    pub pool: Arc<BlockingPool>,
    pub upstream: Arc<Upstream>,
    /// The upstream's `/slow_stream` URL; each request adds its own query.
    pub stream_url: reqwest::Url,
    /// `/health` reports `degraded` when a trivial pool job takes longer than this.
    pub health_threshold: Duration,
    /// `/health` gives up waiting for the pool after this, so the check itself never hangs.
    pub health_timeout: Duration,
    /// Streams currently being relayed; shown by `/health` and the shutdown log.
    pub live_streams: Arc<AtomicUsize>,
}

impl AppState {
    pub fn new(config: &Config) -> Result<Self, error::StartError> {
        let pool = Arc::new(BlockingPool::new(config.blocking_threads));
        let upstream = Upstream::new(config, Arc::clone(&pool))?;
        Ok(Self {
            mode: config.mode,
            pool,
            upstream: Arc::new(upstream),
            stream_url: config
                .upstream
                .join("slow_stream")
                .map_err(|e| error::StartError::Url(e.to_string()))?,
            health_threshold: Duration::from_millis(config.health_threshold_ms),
            health_timeout: Duration::from_millis(config.health_timeout_ms),
            live_streams: Arc::default(),
        })
    }
}

/// The gateway's routes. Kept apart from [`serve`] so tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/chat/stream", get(relay::chat_stream))
        .route("/health", get(health::health))
        .route("/debug/health-sync", get(health::health_sync))
        .route("/debug/health-async", get(health::health_async))
        .route("/debug/pool", get(health::pool))
        .fallback(error::not_found)
        .with_state(state)
}

/// Builds the runtime the gateway must run on.
///
/// `max_blocking_threads` is the size of the pool that `spawn_blocking` draws from. Tokio's
/// default is 512, which only moves the cliff further out; the demo makes it small so the cliff
/// is reached with a handful of streams.
pub fn runtime(config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(config.blocking_threads)
        .build()
}

/// Serves the gateway on `listener` until `shutdown` completes, then drains (see [`shutdown`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState::new(&config).map_err(std::io::Error::other)?;
    config.log_startup(listener.local_addr()?);
    shutdown::serve_with_drain(listener, state, shutdown, config.drain()).await
}
