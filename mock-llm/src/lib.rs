//! # mock-llm: a slow, honest upstream
//!
//! The gateway's lessons are about what happens while a response is *slowly* streaming, so the
//! upstream it talks to must stream slowly on purpose, and must tell afterwards what it saw. This
//! crate is that upstream. It is a test double, but a truthful one: it paces real HTTP chunked
//! responses with timers and counts, for every stream, whether the client read it to the end or
//! went away early. Tests and people use those counters (`GET /stats`) to prove what happened on
//! the far side of the gateway, e.g. that a client disconnect really closed the upstream stream.
//!
//! It also speaks OpenAI's Chat Completions format (`POST /v1/chat/completions`, streaming or
//! not, and `GET /v1/models`), with knobs for the time to first token, the pace of tokens, their
//! jitter, and injected faults (429, 500, 503, a cut connection, a silent stall), all seeded so
//! that a run that found a bug can be run again.
//!
//! It must never be the bottleneck of a measurement: every stream is a timer on the async
//! runtime, not a thread, so one process holds ten thousand concurrent streams.
//!
//! # Layout
//!
//! - [`config`]: command-line flags (each with an env override) and their defaults.
//! - [`slow_stream`]: `GET /slow_stream`, the paced chunk stream, and its parameter checks.
//! - [`chat`]: `POST /v1/chat/completions` and `GET /v1/models`: the token schedule, the SSE
//!   body, and how a client's hang-up is seen, streaming or not.
//! - [`openai`]: the wire format: request validation and the response and chunk bodies.
//! - [`knobs`]: pacing defaults, `x-mock-*` header overrides, the jitter and heavy-tail model.
//! - [`faults`]: the injectable faults and the per-request seeded PRNG that decides them.
//! - [`stats`]: the counters behind `GET /stats` and the drop guards that classify each stream.
//! - [`error`]: the JSON error body every rejection uses.
//! - [`embed`]: the mock on its own thread and runtime, for tests and tools.
//! - `testing` (feature `testing`): the one mock starter and `/stats` reader every test suite uses.
//!
//! [`app`] builds the router (tests can call it directly); [`serve`] runs it on a listener.

pub mod chat;
pub mod config;
pub mod embed;
pub mod error;
pub mod faults;
pub mod knobs;
pub mod openai;
pub mod slow_stream;
pub mod stats;
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use config::Config;
use stats::Stats;

/// Shared state of the handlers: the defaults from the command line and the counters.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub stats: Arc<Stats>,
    /// `--seed`, or a random one (logged) when not given: every chat request's PRNG derives
    /// from it (see [`faults`]).
    pub seed: u64,
    /// Start-up time in Unix seconds: the `created` of the models in `/v1/models`.
    pub started_unix: u64,
}

/// The mock's routes. Separate from [`serve`] so tests can drive it without a socket.
pub fn app(config: Config) -> Router {
    let seed = config.seed.unwrap_or_else(|| fastrand::u64(..));
    tracing::info!(
        seed,
        "chat completions: delays and faults seeded (pass --seed to repeat)"
    );
    let state = AppState {
        config: Arc::new(config),
        stats: Arc::new(Stats::default()),
        seed,
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    Router::new()
        .route("/slow_stream", get(slow_stream::handler))
        .route("/stats", get(stats::handler))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/v1/chat/completions",
            post(chat::completions).layer(DefaultBodyLimit::max(chat::MAX_BODY_BYTES)),
        )
        .route("/v1/models", get(chat::models))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}

/// Serves the mock on `listener` until `shutdown` completes.
///
/// Shutdown is immediate, not graceful: open streams are cut. An upstream that vanishes
/// mid-stream is one of the faults the gateway has to survive, so the mock does not hide it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Each SSE event is a small write; without TCP_NODELAY one following another unacknowledged
    // write waits for the peer's delayed ACK, and the mock's pacing would not be what it says.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, app(config));
    tokio::select! {
        result = server => result,
        () = shutdown => Ok(()),
    }
}
