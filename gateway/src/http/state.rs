//! The shared state: one cheap handle, and the parts each handler takes from it.
//!
//! [`AppState`] is one pointer (`Arc<Shared>`, cloning is shallow), the way mini-redis shares its
//! `Db`: axum clones the router's state once per request, so a request pays one atomic
//! increment for it, not one per field. The fields are private; the gateway's own probes and
//! the shutdown read them through methods.
//!
//! A handler does not take the whole state. Each takes the one part it uses, through axum's
//! [`FromRef`]: `/v1/solve` a `State<Arc<Cpu>>`, the OpenAI routes a `State<Arc<OpenAi>>`, the
//! API-key check a `State<ApiKeys>`. So a handler's signature says what it can touch, the
//! lessons and the policies never name `AppState` (it lives above them), and extracting a part
//! is one more pointer clone. The parts are built once, here, from the layers that own them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use tracing::Span;

use super::jobs::MaxBody;
use super::openai::OpenAi;
use super::server::Connections;
use super::ws::Sockets;
use crate::cache::ResponseCache;
use crate::config::{Config, Mode};
use crate::error::StartError;
use crate::jobs::Jobs;
use crate::lessons::solve::Cpu;
use crate::lessons::stream::PlainStream;
use crate::lifecycle::Lifecycle;
use crate::policy::auth::ApiKeys;
use crate::policy::limits::Inbound;
use crate::policy::resilience::Resilience;
use crate::ratelimit::LimitStore;
use crate::redis::SharedRedis;
use crate::telemetry::log::{LiveStreams, root_span};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::pool::BlockingPool;
use crate::upstream::providers::Providers;
use crate::upstream::relay::Relay;

/// Everything the handlers share, behind one pointer.
#[derive(Debug, Clone)]
pub struct AppState {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    mode: Mode,
    /// The gateway's root span, with the mode: every request runs in it (see `routes`).
    span: Span,
    /// The only door to the blocking pool: every job goes through it so it can be counted.
    pool: Arc<BlockingPool>,
    /// Every counter and gauge `/metrics` serves.
    metrics: Arc<Metrics>,
    /// The upstreams, each with its own client and limits; requests are routed by `model`.
    providers: Arc<Providers>,
    /// Response bodies being relayed now: `/health`, `/metrics` and the shutdown log show it.
    live_streams: LiveStreams,
    /// `/health` reports `degraded` when a trivial pool job takes longer than this.
    health_threshold: Duration,
    /// `/health` gives up waiting for the pool after this, so the check itself never hangs.
    health_timeout: Duration,
    /// `--max-body-bytes`: the router refuses larger chat requests with 413 before anything else.
    max_body_bytes: usize,
    /// Starting, serving, draining...: the accept loop, the relay, the WebSockets, the refusal
    /// of new requests after the grace and the admin plane's `/readyz` all watch this one value.
    lifecycle: Lifecycle,
    /// The main listener's connections: cap, timeouts, how many are open.
    connections: Arc<Connections>,
    /// `/v1/chat/completions`' response cache; `/metrics` reads its size.
    cache: Arc<ResponseCache>,
    // The parts handlers and middleware take (see the module docs).
    api_keys: ApiKeys,
    inbound: Arc<Inbound>,
    openai: Arc<OpenAi>,
    sockets: Arc<Sockets>,
    plain_stream: Arc<PlainStream>,
    cpu: Arc<Cpu>,
    /// The job queue (`/v1/jobs`): its store, workers and housekeeper.
    jobs: Arc<Jobs>,
}

impl AppState {
    pub fn new(config: &Config) -> Result<Self, StartError> {
        config.check().map_err(StartError::Config)?;
        let pool = Arc::new(BlockingPool::new(config.blocking_threads));
        let metrics = Arc::new(Metrics::default());
        // The one connection to the shared Redis (lazy: made at the first call), for the cache's
        // second tier and the shared rate limits alike.
        let redis = config
            .redis_url
            .as_ref()
            .map(|url| SharedRedis::connect(url, Duration::from_millis(config.redis_timeout_ms)))
            .transpose()?;
        let limits = LimitStore::new(redis.clone(), config.instances_hint, &metrics);
        let providers = Arc::new(Providers::new(config, &pool, &metrics, &limits)?);
        let live_streams = LiveStreams::default();
        let lifecycle = Lifecycle::default();
        let keepalive =
            (config.sse_keepalive_secs > 0).then(|| Duration::from_secs(config.sse_keepalive_secs));
        let relay = Arc::new(Relay::new(
            keepalive,
            Arc::clone(&metrics),
            live_streams.clone(),
            lifecycle.clone(),
        ));
        let resilience = Arc::new(Resilience::new(config, Arc::clone(&metrics)));
        let cache = Arc::new(ResponseCache::new(config, redis, Arc::clone(&metrics))?);
        let shared = Shared {
            mode: config.mode,
            span: root_span(config.mode),
            health_threshold: Duration::from_millis(config.health_threshold_ms),
            health_timeout: Duration::from_millis(config.health_timeout_ms),
            max_body_bytes: config.max_body_bytes,
            connections: Arc::new(Connections::new(config, Arc::clone(&metrics))),
            api_keys: ApiKeys::from_config(config)?,
            inbound: Arc::new(Inbound::new(config, &limits, Arc::clone(&metrics))),
            openai: Arc::new(OpenAi::new(
                Arc::clone(&providers),
                Arc::clone(&resilience),
                Arc::clone(&relay),
                config.max_body_bytes,
                Arc::clone(&cache),
            )),
            sockets: Arc::new(Sockets::new(
                config,
                Arc::clone(&providers),
                Arc::clone(&resilience),
                Arc::clone(&metrics),
                lifecycle.clone(),
            )),
            jobs: Arc::new(Jobs::new(
                config,
                Arc::clone(&providers),
                Arc::clone(&resilience),
                Arc::clone(&metrics),
                lifecycle.clone(),
            )),
            plain_stream: Arc::new(PlainStream::new(&providers, resilience, relay)?),
            cpu: Arc::new(Cpu::new(config, Arc::clone(&pool), Arc::clone(&metrics))),
            live_streams,
            lifecycle,
            cache,
            providers,
            metrics,
            pool,
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode
    }

    /// The span every request runs in: the gateway's, with its mode.
    pub fn span(&self) -> &Span {
        &self.shared.span
    }

    pub fn pool(&self) -> &Arc<BlockingPool> {
        &self.shared.pool
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    pub fn providers(&self) -> &Providers {
        &self.shared.providers
    }

    pub fn live_streams(&self) -> &LiveStreams {
        &self.shared.live_streams
    }

    /// `(threshold, timeout)` of `/health`.
    pub fn health_limits(&self) -> (Duration, Duration) {
        (self.shared.health_threshold, self.shared.health_timeout)
    }

    pub fn max_body_bytes(&self) -> usize {
        self.shared.max_body_bytes
    }

    pub fn api_keys(&self) -> &ApiKeys {
        &self.shared.api_keys
    }

    pub fn inbound(&self) -> &Arc<Inbound> {
        &self.shared.inbound
    }

    pub fn sockets(&self) -> &Arc<Sockets> {
        &self.shared.sockets
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.shared.lifecycle
    }

    pub fn connections(&self) -> &Arc<Connections> {
        &self.shared.connections
    }

    pub fn jobs(&self) -> &Arc<Jobs> {
        &self.shared.jobs
    }

    pub fn cache(&self) -> &Arc<ResponseCache> {
        &self.shared.cache
    }
}

/// One `FromRef` per part: extracting it clones that part's pointer, nothing else.
macro_rules! parts {
    ($($part:ty => $field:ident),* $(,)?) => {$(
        impl FromRef<AppState> for $part {
            fn from_ref(state: &AppState) -> Self {
                state.shared.$field.clone()
            }
        }
    )*};
}

parts! {
    Arc<BlockingPool> => pool,
    Arc<Metrics> => metrics,
    ApiKeys => api_keys,
    Arc<Inbound> => inbound,
    Arc<OpenAi> => openai,
    Arc<Sockets> => sockets,
    Arc<PlainStream> => plain_stream,
    Arc<Cpu> => cpu,
    Lifecycle => lifecycle,
    Arc<Jobs> => jobs,
}

impl FromRef<AppState> for MaxBody {
    fn from_ref(state: &AppState) -> Self {
        MaxBody(state.shared.max_body_bytes)
    }
}
