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
//! - `inline`: the blocking client called straight from the async handler, no `spawn_blocking`.
//!   Each stream blocks an async *worker*; once every worker holds one, nothing runs at all, not
//!   even the async health probe. The reason `spawn_blocking` exists.
//!
//! In `broken` mode, `--async-rollout-percent P` sends P % of streams through the async client
//! (a deterministic counter decides), to watch a migration step by step; every relayed response
//! names its client in `X-Stream-Method`.
//!
//! The same endpoints run in both modes, so the difference is visible from outside (see the
//! `diag` crate, which measures it).
//!
//! # Layout
//!
//! Each folder is a layer, and a module imports only from its own layer and the layers below it,
//! never above (ARCHITECTURE.md draws the same picture):
//!
//! ```text
//! admin/      own thread + runtime: /livez · /readyz (probes the main runtime from outside)
//!   │         · /metrics · /debug/pool · POST /admin/drain. Reads the state, serves no traffic.
//!   ▼
//! http/       routes (the one route table) · state (AppState and its parts) · openai · ws
//!   │   │     · probes (/health, /metrics) · shutdown (the drain) · closing (503 after it)
//!   │   │     · server, connection (the accept loop and its bounds) · observe (each request's
//!   │   │     id, span, count, access record and duration) · guard (drain, key, limits, in order)
//!   │   ├──▶ lessons/   stream (/chat/stream) · health (/debug/*) · solve (/v1/solve)
//!   │   └──▶ jobs/      the durable queue of /v1/jobs: store (one trait; sqlite | postgres)
//!   │          │        · worker (lease, heartbeat) · housekeeping · view; runs each job
//!   ▼          │        through policy::chat, the path a chat request takes (never the cache)
//! cache/      the response cache of /v1/chat/completions: key · entry · replay · tee · flight
//!   │          │  (a step of that route's handler only; its Redis tier is `redis` below)
//!   ▼          ▼
//! policy/     auth · limits · resilience (retries, hedges) · chat (route, plan, send)
//!   ▼
//! upstream/   providers and their budgets · clients broken | fixed | inline · proxy · error
//!   │         · relay · keepalive · cutoff · silence (the fixed client's read timeout) · idle
//!   ▼
//! ratelimit/  GCRA buckets per key or provider: in process (governor), or across instances in
//!   │         the shared Redis (one Lua script a check), local at rate / --instances-hint while
//!   ▼         Redis does not answer
//! telemetry/  the request log and root span · access (the line's record) · meter (first
//!   │         content, token gaps, tokens) · metrics, llm and labels · otel and subscriber
//!   │         (text or JSON lines, OTLP traces) · the counted blocking pool
//!   ▼
//! config/ (settings types)  ·  error (OpenAI's error shape)  ·  admission (bounds, permits)
//!   ·  lifecycle (starting → serving → draining → shutting down → stopped)
//!   ·  descriptors (the open-file limit, raised; the connection cap derived from it)
//!   ·  redis (the one shared Redis connection, every call bounded; the cache's second tier,
//!      and ratelimit's store)  ·  request_id (the id of the request being served)
//! ```
//!
//! The lessons sit beside the gateway: the route table names them, nothing below knows them, and
//! a provider knows only its OpenAI base URL.
//!
//! - [`config`]: flags, env overrides, the `--config` file and its precedence, the three modes,
//!   the rollout percentage.
//! - [`error`]: the one JSON error shape (OpenAI's) every failure is returned in;
//!   [`upstream::error`]: why an upstream attempt gave no answer, as a type retries match on.
//! - [`admission`]: the one shape of bound: places, a bounded wait, a permit held by the body.
//! - [`lifecycle`]: the phase every part watches to know whether to take new work (the drain).
//! - [`descriptors`]: the soft `RLIMIT_NOFILE` raised to the hard limit at start-up, and the
//!   default `--max-connections` derived from it (two sockets per relayed stream, plus a
//!   reserve).
//! - [`admin`]: the admin plane on its own thread and runtime: liveness, readiness measured
//!   from outside the main runtime ([`admin::readiness`]), metrics, and `POST /admin/drain`;
//!   why a check must not run inside what it measures.
//! - [`telemetry::pool`]: lesson 1, *seeing* the blocking pool: a counting wrapper around
//!   `spawn_blocking`.
//! - [`telemetry::log`], [`telemetry::metrics`], [`telemetry::labels`]: one log line per relayed
//!   or refused request (not the probes), in the gateway's root span (which carries the mode);
//!   every bound and every time one was hit, with label values as enums.
//! - [`request_id`], [`http::observe`], [`telemetry::access`], [`telemetry::llm`],
//!   [`telemetry::otel`]: observing it as an operator would: an id on every request (kept from
//!   the client when it is a good one), one access line with model, provider, attempts, first
//!   byte and tokens (`--log-format text|json`), latency, time-to-first-token and token
//!   histograms by provider and model with bounded labels, and OTLP traces
//!   (`--otlp-endpoint`) whose `traceparent` goes upstream with each attempt.
//! - [`upstream::broken`]: lesson 2, how a blocking client pins pool threads.
//! - [`upstream::fixed`]: lesson 3, the async fix, and how a client disconnect reaches upstream.
//! - [`upstream::inline`]: lesson 6, the blocking client on an async worker: the whole runtime
//!   stalls, which is why `spawn_blocking` exists.
//! - [`upstream`]: the request type every client sends, the rollout split, and which headers
//!   cross the gateway; [`upstream::providers`]: several upstreams, each with its own client
//!   pool, concurrency cap, rpm and retry budgets, routed by `model`; [`upstream::relay`]: an
//!   upstream response forwarded chunk by chunk, with [`upstream::keepalive`] comments on idle
//!   SSE streams; [`upstream::proxy`]: direct or through the environment's proxy, decided once
//!   per provider for both clients, and never a proxy for a loopback upstream.
//! - [`ratelimit`]: the per-key and per-provider rpm limits counted across every instance with
//!   `--redis-url` (GCRA in one Lua script, one round trip a check), or in process; during a
//!   Redis outage each instance counts its share (`--instances-hint`), logged once, counted in
//!   `/metrics`, never an error.
//! - [`policy::auth`]: API keys for `/v1/*` and `/chat/stream`, compared in constant time,
//!   never logged; why `/health` and `/debug/*` stay open.
//! - [`policy::limits`]: lesson 8, bound everything: a concurrency cap held for a stream's whole
//!   life, a bounded wait queue with 503 past it, per-key rate limits with 429 and
//!   `x-ratelimit-*`.
//! - [`jobs`]: lesson 10, a job queue that is bounded and durable: `POST /v1/jobs` answers 202
//!   only once the job is committed, positions come from the store, workers hold leases they
//!   renew, a dead worker's jobs are taken back, the drain hands running jobs back;
//!   [`policy::chat`]: the one path from a chat body to its provider, shared by
//!   `/v1/chat/completions` and the job workers.
//! - [`policy::resilience`]: lesson 9, retries before the first byte and hedged requests, each
//!   bounded by a count, a deadline and a budget so they cannot amplify an outage.
//! - [`cache`]: lesson 11, the response cache: what may be cached and for whom (the key holds
//!   the caller), `Cache-Control` per request, a streamed request replayed as a proper stream,
//!   single-flight for identical misses, in process (moka, by bytes) and shared through Redis;
//!   [`redis`]: the shared Redis, a miss rather than an error when it is down or slow.
//! - [`http::openai`]: `POST /v1/chat/completions` and `GET /v1/models`: validate the request,
//!   forward the bytes, never buffer the SSE stream, pass upstream errors through, cancel on
//!   disconnect.
//! - [`http::ws`]: `GET /v1/chat/ws`, chat over a WebSocket, one frame per token: long-lived
//!   sockets under their own cap (close 1013 past it), and a client that leaves cancels the
//!   upstream.
//! - [`http::probes`]: `GET /health` and `GET /metrics`; [`http::shutdown`]: lesson 5, graceful
//!   shutdown that cannot hang: a drain deadline.
//! - [`http::server`]: the main listener's own accept loop: `--max-connections` (closed at once
//!   past it), the head and idle timeouts ([`http::connection`]), a listener that stays open
//!   during the drain.
//!   shutdown that tells the load balancer first and cannot hang: a grace, then 503
//!   `shutting_down` ([`http::closing`]), then a drain deadline with a last word for the streams
//!   still running ([`upstream::cutoff`]).
//! - [`http::routes`]: the route table the router, the 404 and the 405 are built from;
//!   [`http::state`]: [`AppState`], one cheap handle, and the part each handler takes from it.
//! - [`lessons::stream`]: `GET /chat/stream`, one relayed stream of the mock's `/slow_stream`.
//! - [`lessons::health`]: lesson 4, health checks that do and do not depend on the pool.
//! - [`lessons::solve`]: lesson 7, `POST /v1/solve`: CPU-bound work inline, on the pool, or
//!   bounded with a 503 past a queue limit; which to choose when.
//! - [`embed`]: a gateway on its own thread and runtime, for tests and tools.
//!
//! [`app`] builds the router; [`serve`] runs it; [`runtime`] builds the runtime whose blocking
//! pool size is part of the lesson, so the gateway must run on it.

// The Rust examples in docs/ are compiled and run as doctests of this crate, so the guides
// cannot drift from the crates they describe (`cargo test -p gateway --doc`).
#[cfg(doctest)]
#[doc = include_str!("../../docs/pitfalls.md")]
pub struct PitfallsDoc;
#[cfg(doctest)]
#[doc = include_str!("../../docs/find-it-in-your-app.md")]
pub struct FindItDoc;
#[cfg(doctest)]
#[doc = include_str!("../../docs/reading-the-report.md")]
pub struct ReadingTheReportDoc;
#[cfg(doctest)]
#[doc = include_str!("../../docs/migration.md")]
pub struct MigrationDoc;
#[cfg(doctest)]
#[doc = include_str!("../../docs/the-problem.md")]
pub struct TheProblemDoc;

pub mod admin;
pub mod admission;
pub mod cache;
pub mod config;
pub mod descriptors;
pub mod embed;
pub mod error;
pub mod http;
pub mod jobs;
pub mod lessons;
pub mod lifecycle;
pub mod policy;
pub mod ratelimit;
pub mod redis;
pub mod request_id;
pub mod telemetry;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use config::{Config, Mode};
pub use http::routes::app;
pub use http::state::AppState;
use tracing::Instrument as _;

/// Builds the runtime the gateway must run on.
///
/// `max_blocking_threads` is the size of the pool that `spawn_blocking` draws from. Tokio's
/// default is 512, which only moves the cliff further out; the demo makes it small so the cliff
/// is reached with a handful of streams.
///
/// `worker_threads` (`--worker-threads`, default: tokio's, one per core) is the other half of the
/// lesson: in `inline` mode each stream blocks one worker, and with all of them blocked nothing
/// runs at all (see [`upstream::inline`]).
pub fn runtime(config: &Config) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .max_blocking_threads(config.blocking_threads);
    if let Some(workers) = config.worker_threads {
        builder.worker_threads(workers);
    }
    builder.build()
}

/// Serves the gateway on `listener`, and the admin plane on `admin` (bound by [`admin::bind`];
/// `None` when `--admin-listen off`), until `shutdown` completes or `POST /admin/drain` is
/// called, then drains (see [`http::shutdown`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    admin: Option<std::net::TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Before anything reads the limit: the default `--max-connections` is derived from it.
    // Embedded gateways (tests) raise their process's limit too; harmless, see `descriptors`.
    let raised = descriptors::raise_soft_limit();
    let state = AppState::new(&config).map_err(std::io::Error::other)?;
    config.log_startup(listener.local_addr()?);
    match raised {
        Ok(r) if r.to > r.from => tracing::info!(
            "open-file limit raised from {} to {} (the hard limit is {})",
            r.from,
            r.to,
            r.hard
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            "cannot raise the open-file limit ({e}); connections are capped at {}",
            state.connections().limit()
        ),
    }
    state.providers().log_startup();
    state.api_keys().log_startup();
    // With an admin plane, its first readiness probes move the lifecycle to `Serving`; without
    // one, nobody measures, and the gateway serves from the start.
    let _admin = match admin {
        Some(admin) => Some(admin::AdminPlane::start(
            admin,
            state.clone(),
            &config,
            tokio::runtime::Handle::current(),
        )?),
        None => {
            state.lifecycle().advance(lifecycle::Phase::Serving);
            None
        }
    };
    // Rate-limit buckets of clients that went quiet are full again: forget them, so the map
    // of one bucket per client seen stays bounded.
    let inbound = Arc::clone(state.inbound());
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(Duration::from_secs(60));
        loop {
            every_minute.tick().await;
            inbound.forget_idle();
        }
    });
    // The job queue: its store opened (or its file left to the first job), expired leases
    // taken back, then its workers and housekeeper; before the first request is accepted.
    let jobs = Arc::clone(state.jobs());
    jobs.start()
        .await
        .map_err(|e| std::io::Error::other(format!("the jobs store: {e}")))?;
    // The drain's own lines (shutdown requested, drained) carry the mode too.
    let span = state.span().clone();
    let drain = http::shutdown::Drain {
        grace: config.drain_grace(),
        deadline: config.drain(),
    };
    let served = http::shutdown::serve_with_drain(listener, state, shutdown, drain)
        .instrument(span.clone())
        .await;
    // After the drain: a job still running gives its lease back.
    jobs.stop().instrument(span).await;
    served
    // The admin plane stops here, with the gateway.
}
