//! Settings of the `gateway` binary. Every flag has an env override (`GATEWAY_*`) and can be a key
//! of the `--config` file ([`file`](mod@file) holds the precedence rule: file < environment < flags). Every
//! limit in force is logged at start-up in one block, so a reader of the log knows what was
//! running; `--check-config` prints that block and exits.

mod admin;
mod cache;
pub mod file;
mod jobs;
mod modes;
mod observe;
mod suggest;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use clap::builder::TypedValueParser as _;
use reqwest::Url;

use crate::descriptors;

pub use admin::{AdminListen, ReadinessSettings};
pub use cache::{CacheMode, RedisUrl};
pub use file::ProviderConfig;
pub use jobs::{JobsConfig, JobsStore};
pub use modes::{CpuMode, Mode};
pub use observe::{LogFormat, ObserveConfig};

/// An LLM gateway that relays slow upstream streams, in a broken or a fixed way.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version)]
pub struct Config {
    /// A TOML file of settings: any flag by its long name (`blocking-threads = 8`), plus the
    /// `[[providers]]` tables. Flags and environment variables override the file. See
    /// `gateway.example.toml`.
    #[arg(long, env = "GATEWAY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Check the settings (flags, environment, `--config` file), print the limits in force and
    /// exit: 0 when they are valid, 2 when not.
    #[arg(long)]
    pub check_config: bool,

    /// Upstream client strategy.
    #[arg(long, env = "GATEWAY_MODE", value_enum, default_value_t = Mode::Fixed)]
    pub mode: Mode,

    /// Size of the runtime's blocking pool (tokio `max_blocking_threads`).
    #[arg(long, env = "GATEWAY_BLOCKING_THREADS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    pub blocking_threads: usize,

    /// Async worker threads of the runtime (tokio `worker_threads`); default: tokio's, one per
    /// core. With `--mode inline` every open stream blocks one of them: at N streams, nothing
    /// else runs, not even `/debug/health-async`.
    #[arg(long, env = "GATEWAY_WORKER_THREADS",
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    pub worker_threads: Option<usize>,

    /// Rollout of the async client in `--mode broken`: this percentage of streams goes through
    /// the async client, the rest through the blocking one (every response says which, in
    /// `X-Stream-Method`). The split is deterministic: request n goes async when
    /// `floor((n+1)*P/100) > floor(n*P/100)`. In `--mode fixed` only 100 is accepted (every
    /// stream is async by definition); `--mode inline` takes no rollout.
    #[arg(long, env = "GATEWAY_ASYNC_ROLLOUT_PERCENT",
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub async_rollout_percent: Option<u8>,

    /// Where `POST /v1/solve` runs its CPU work: on the async worker (`inline`), on the blocking
    /// pool (`blocking`), or on the pool behind a semaphore with a bounded queue (`bounded`).
    #[arg(long, env = "GATEWAY_CPU_MODE", value_enum, default_value_t = CpuMode::Bounded)]
    pub cpu_mode: CpuMode,

    /// `--cpu-mode bounded`: computations running at once; default: one per core.
    #[arg(long, env = "GATEWAY_CPU_WORKERS",
          value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    pub cpu_workers: Option<usize>,

    /// `--cpu-mode bounded`: requests that may wait for a worker; past it, 503 + `Retry-After`.
    #[arg(long, env = "GATEWAY_CPU_QUEUE", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(0..=100_000).map(|n| n as usize))]
    pub cpu_queue: usize,

    /// Requests the gateway serves at once on `/v1/*` and `/chat/stream`. A streaming response
    /// holds its place until its last byte, not just until its headers.
    #[arg(long, env = "GATEWAY_MAX_CONCURRENT_REQUESTS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|n| n as usize))]
    pub max_concurrent_requests: usize,

    /// Requests that may wait for a place when all `--max-concurrent-requests` are taken; past
    /// it, an immediate 503 with `Retry-After`.
    #[arg(long, env = "GATEWAY_MAX_QUEUED_REQUESTS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000).map(|n| n as usize))]
    pub max_queued_requests: usize,

    /// The longest a queued request waits for a place (ms); then 503 with `Retry-After`.
    #[arg(long, env = "GATEWAY_MAX_QUEUE_WAIT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub max_queue_wait_ms: u64,

    /// Requests per minute per API key (per client IP when no key is configured); over it, 429
    /// with `Retry-After` and `x-ratelimit-*` headers. 0: no limit.
    #[arg(long, env = "GATEWAY_RATE_LIMIT_RPM", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub rate_limit_rpm: u32,

    /// The bucket's size: requests a key may send back to back after a quiet spell, before the
    /// steady rate applies; default: the whole minute's `--rate-limit-rpm`.
    #[arg(long, env = "GATEWAY_RATE_LIMIT_BURST",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub rate_limit_burst: Option<u32>,

    /// Retries of a failed upstream attempt (connect error, 429, 500, 502, 503, 504), only
    /// before the first byte has gone to the client. 0: no retries.
    #[arg(long, env = "GATEWAY_RETRIES", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,

    /// First retry's backoff ceiling (ms); it doubles per retry, and the wait is drawn at random
    /// below it ("full jitter"), so clients that failed together do not retry together.
    #[arg(long, env = "GATEWAY_RETRY_BACKOFF_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub retry_backoff_ms: u64,

    /// The largest backoff ceiling (ms), however many retries.
    #[arg(long, env = "GATEWAY_RETRY_BACKOFF_MAX_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub retry_backoff_max_ms: u64,

    /// An upstream's `Retry-After` is honoured up to this (ms); asking for longer, its answer
    /// goes to the client as it is, with its `Retry-After`.
    #[arg(long, env = "GATEWAY_RETRY_AFTER_MAX_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub retry_after_max_ms: u64,

    /// Retries may add at most this percentage of extra upstream requests (a token bucket per
    /// provider, shared by all its requests), so retries cannot multiply an outage.
    #[arg(long, env = "GATEWAY_RETRY_BUDGET_PERCENT", default_value_t = 20,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub retry_budget_percent: u8,

    /// Routes whose requests are hedged: a second (and third) attempt fires when the first
    /// has not succeeded (for a stream: sent its first token) within `--hedge-delay-ms`.
    /// Comma-separated; a request can turn hedging on or off with `x-gateway-hedge-delay-ms`.
    #[arg(long, env = "GATEWAY_HEDGE_ROUTES", value_delimiter = ',',
          value_parser = ["/v1/chat/completions", "/chat/stream", "/v1/chat/ws"])]
    pub hedge_routes: Vec<String>,

    /// How long an attempt may go without success before a hedge fires (ms).
    #[arg(long, env = "GATEWAY_HEDGE_DELAY_MS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub hedge_delay_ms: u64,

    /// Attempts of a hedged request in all, the first included.
    #[arg(long, env = "GATEWAY_HEDGE_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(2..=3))]
    pub hedge_max_attempts: u32,

    /// A hedged request that has no successful attempt after this long (ms) gets 504.
    /// Per request: `x-gateway-deadline-ms`.
    #[arg(long, env = "GATEWAY_HEDGE_DEADLINE_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub hedge_deadline_ms: u64,

    /// Hedges may add at most this percentage of extra upstream requests (per provider); past
    /// it, requests wait for their first attempt like unhedged ones. Keeps hedging from
    /// amplifying an overloaded upstream.
    #[arg(long, env = "GATEWAY_HEDGE_BUDGET_PERCENT", default_value_t = 10,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub hedge_budget_percent: u8,

    /// Live `/v1/chat/ws` connections; past it, a new socket is closed with code 1013 (try
    /// again later) and a reason.
    #[arg(long, env = "GATEWAY_WS_MAX_CONNECTIONS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000).map(|n| n as usize))]
    pub ws_max_connections: usize,

    /// A relayed SSE stream idle this long (seconds) gets a `: keep-alive` comment, so proxies
    /// and clients with idle timeouts do not cut a slow generation. 0: never.
    #[arg(long, env = "GATEWAY_SSE_KEEPALIVE_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub sse_keepalive_secs: u64,

    /// Connections open at once on the main listener; past it a new connection is closed at
    /// once (and counted), while the open ones are served on. Default: derived from the
    /// descriptor limit, `(soft RLIMIT_NOFILE − 128) / 2`, since each relayed stream holds two
    /// sockets (the client's and the upstream one) and the rest is headroom for the admin plane,
    /// DNS and files; the soft limit is raised to the hard one at start-up first.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..=10_000_000).map(|n| n as usize))]
    pub max_connections: Option<usize>,

    /// A connection must send a whole request head within this (ms): from its accept for its
    /// first request, from the first byte for a later one. Otherwise it is closed: a client
    /// that sends half a head and stops holds a socket for this long, not forever.
    #[arg(long, env = "GATEWAY_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub header_read_timeout_ms: u64,

    /// A keep-alive connection with no request in flight is closed after this long without a
    /// new one (seconds). A connection relaying a stream is never idle, however quiet the
    /// stream.
    #[arg(long, env = "GATEWAY_IDLE_TIMEOUT_SECS", default_value_t = 75,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,

    /// Base URL of the upstream, when the `--config` file defines no `[[providers]]`: it is then
    /// the one provider, `default`, serving every model. Use an IP literal: a host name is resolved on the blocking pool.
    #[arg(long, env = "GATEWAY_UPSTREAM", default_value = "http://127.0.0.1:8001",
          value_parser = parse_upstream)]
    pub upstream: Url,

    /// Address to listen on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// The main listener's accept queue: connections the kernel completes before the gateway
    /// takes them. Past it a SYN is dropped and the client retries after 1 s, then 3 s. Rust's
    /// default is 128 (nginx's 511); Linux caps it at `net.core.somaxconn` (4096 by default).
    #[arg(long, env = "GATEWAY_LISTEN_BACKLOG", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub listen_backlog: u32,

    /// `/health` says `degraded` when a trivial blocking-pool job takes longer than this (ms).
    #[arg(long, env = "GATEWAY_HEALTH_THRESHOLD_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub health_threshold_ms: u64,

    /// `/health` stops waiting for the blocking pool after this (ms), so it never hangs itself.
    #[arg(long, env = "GATEWAY_HEALTH_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub health_timeout_ms: u64,

    /// On a drain, after `--drain-grace-secs`, how long in-flight streams and WebSockets may run
    /// on before they are cut (seconds): an SSE stream then ends with an error event, a
    /// WebSocket with Close 1001.
    #[arg(long, env = "GATEWAY_DRAIN_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_secs: u64,

    /// Give up on an upstream that sends nothing for this long (seconds); the client gets 504.
    #[arg(long, env = "GATEWAY_UPSTREAM_READ_TIMEOUT_SECS", default_value_t = 90,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub upstream_read_timeout_secs: u64,

    /// Give up connecting to the upstream after this long (seconds); the client gets 504.
    #[arg(long, env = "GATEWAY_UPSTREAM_CONNECT_TIMEOUT_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub upstream_connect_timeout_secs: u64,

    /// Largest accepted request body of `POST /v1/chat/completions`, in bytes; larger is a 413.
    #[arg(long, env = "GATEWAY_MAX_BODY_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=(256 * 1024 * 1024))
              .map(|n| usize::try_from(n).unwrap_or(usize::MAX)))]
    pub max_body_bytes: usize,

    /// The gateway's own credential towards the upstream, sent as `Authorization: Bearer`.
    /// The client's `Authorization` is never forwarded: it is a key for the gateway, not for
    /// the provider.
    #[arg(long, env = "GATEWAY_UPSTREAM_API_KEY", hide_env_values = true)]
    pub upstream_api_key: Option<Secret>,

    /// An API key clients must present (`Authorization: Bearer KEY` or `X-API-Key: KEY`) on
    /// `/v1/*` and `/chat/stream`. Repeat the flag for several keys; the env variable takes a
    /// comma-separated list. No key anywhere (flag, env or file) means no authentication.
    #[arg(
        long = "api-key",
        value_name = "KEY",
        env = "GATEWAY_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<Secret>,

    /// A file of API keys, one per line; blank lines and lines starting with `#` are skipped.
    /// Added to `--api-key`. Read once at start-up.
    #[arg(long, value_name = "PATH", env = "GATEWAY_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Where the admin plane listens: `/livez`, `/readyz`, `/health`, `/metrics`, `/debug/pool`
    /// and `POST /admin/drain`, served by a thread and runtime of its own, so they answer however
    /// busy (or stalled) the main runtime is. `off` disables it. Keep it off the public network:
    /// a non-loopback address needs `--admin-token`.
    #[arg(long, env = "GATEWAY_ADMIN_LISTEN", default_value = "127.0.0.1:8002")]
    pub admin_listen: AdminListen,

    /// The bearer token `POST /admin/*` requires (`Authorization: Bearer TOKEN`); compared in
    /// constant time, never logged. Required when `--admin-listen` is not a loopback address.
    #[arg(
        long,
        env = "GATEWAY_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<Secret>,

    /// How often the admin plane probes the main runtime for `/readyz` (ms). A probe still
    /// outstanding is not sent again: its age counts as its delay.
    #[arg(long, env = "GATEWAY_READINESS_INTERVAL_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub readiness_interval_ms: u64,

    /// `/readyz` says `degraded` when a task spawned on the main runtime waits longer than this
    /// to be polled (ms): every relayed stream's next chunk waits about as long.
    #[arg(long, env = "GATEWAY_READINESS_RUNTIME_THRESHOLD_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub readiness_runtime_threshold_ms: u64,

    /// `/readyz` says `degraded` when a trivial blocking-pool job waits longer than this to start
    /// (ms): the starved pool of `--mode broken`.
    #[arg(long, env = "GATEWAY_READINESS_POOL_THRESHOLD_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub readiness_pool_threshold_ms: u64,

    /// On a drain (`POST /admin/drain`, SIGTERM, SIGINT), how long new requests are still served
    /// while `/readyz` already answers 503 `draining`, so load balancers take the instance out
    /// before anything is refused (seconds). Then new requests get 503 `shutting_down`, and
    /// `--drain-secs` starts.
    #[arg(long, env = "GATEWAY_DRAIN_GRACE_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_grace_secs: u64,

    /// The job queue: `--jobs-store`, `--job-workers`, `--max-queued-jobs`, leases, retention.
    #[command(flatten)]
    pub jobs: JobsConfig,
    /// The log lines' shape and the trace export: `--log-format`, `--otlp-endpoint`.
    #[command(flatten)]
    pub observe: ObserveConfig,
    /// Which chat completions may be answered from the response cache: `off`, `deterministic`
    /// (`temperature` 0 or a `seed`), or `all`. Per request, `Cache-Control: no-cache` skips the
    /// read, `no-store` the write, `max-age=N` the older answers; responses say
    /// `x-gateway-cache: hit|miss|bypass` (and `Age` on a hit). Never across API keys.
    #[arg(long, env = "GATEWAY_CACHE_MODE", value_enum, default_value_t = CacheMode::Off)]
    pub cache_mode: CacheMode,

    /// The in-process cache's size in bytes (answers and keys, weighed as stored); the least
    /// useful answers are evicted past it. 0: no in-process tier (needs `--redis-url`).
    #[arg(long, env = "GATEWAY_CACHE_MAX_BYTES", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(0..=(64 * 1024 * 1024 * 1024_u64)))]
    pub cache_max_bytes: u64,

    /// How long a cached answer may be served (seconds), in process and in Redis alike.
    #[arg(long, env = "GATEWAY_CACHE_TTL_SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=(30 * 86_400)))]
    pub cache_ttl_secs: u64,

    /// A Redis shared by every instance (`redis://host:port[/db]`): the response cache's second
    /// tier, and where `--rate-limit-rpm` and the providers' `requests-per-minute` are counted,
    /// so they hold across every instance. A Redis that is down or slow is a cache miss and a
    /// local rate limit (see `--instances-hint`), never an error (counted in
    /// `gateway_cache_redis_errors_total`, `gateway_rate_limit_fallback_total`).
    #[arg(
        long,
        env = "GATEWAY_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis_url: Option<RedisUrl>,

    /// The longest one Redis call may take (ms), connecting included; then it counts as failed
    /// and the request goes on without it.
    #[arg(long, env = "GATEWAY_REDIS_TIMEOUT_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_timeout_ms: u64,

    /// How many instances share the rate limits through `--redis-url`. While Redis does not
    /// answer, each instance counts the limits locally at every rate and burst divided by this
    /// (at least 1), so the fleet stays near the limit rather than at N times it. Needs
    /// `--redis-url`.
    #[arg(long, env = "GATEWAY_INSTANCES_HINT", default_value_t = NonZeroU32::MIN,
          value_parser = clap::value_parser!(u32).range(1..=10_000)
              .map(|n| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)))]
    pub instances_hint: NonZeroU32,

    /// The `[[providers]]` of the `--config` file; empty means one provider from `--upstream`
    /// (see [`Config::providers`]).
    #[arg(skip)]
    pub providers: Vec<ProviderConfig>,

    /// What [`Config::load`] found suspicious but not wrong (a `GATEWAY_*` variable no setting
    /// reads): logged at start-up, printed by `--check-config`.
    #[arg(skip)]
    pub warnings: Vec<String>,
}

/// A secret string (an API key) whose `Debug` never shows it, so `Config` can be logged or
/// printed in a test failure without leaking keys. The value is reachable only through
/// [`Secret::expose`], which makes every use of it easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = String;

    /// Trims surrounding whitespace (a pasted key often carries a newline) and refuses an empty
    /// key, which would otherwise match an empty `Authorization: Bearer ` header.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim();
        if key.is_empty() {
            return Err("an API key must not be empty".into());
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "an API key must be visible ASCII without spaces (it travels in an HTTP header)"
                    .into(),
            );
        }
        Ok(Self(key.to_owned()))
    }
}

impl Config {
    /// Combinations clap cannot express: the rollout percentage only means something in broken
    /// mode. The binary turns an `Err` into a usage error (exit 2).
    pub fn check(&self) -> Result<(), String> {
        file::check_providers(&self.providers)?;
        admin::check(self)?;
        cache::check(self)?;
        if self.retry_backoff_max_ms < self.retry_backoff_ms {
            return Err(format!(
                "--retry-backoff-max-ms {} is below --retry-backoff-ms {}",
                self.retry_backoff_max_ms, self.retry_backoff_ms
            ));
        }
        if self.instances_hint.get() > 1 && self.redis_url.is_none() {
            return Err(format!(
                "--instances-hint {} needs --redis-url: it divides the rate limits only while \
                 the shared Redis does not answer; without one each instance counts its own",
                self.instances_hint
            ));
        }
        if self.rate_limit_burst.is_some() && self.rate_limit_rpm == 0 {
            return Err(
                "--rate-limit-burst needs --rate-limit-rpm (it is the burst of that rate)".into(),
            );
        }
        match (self.mode, self.async_rollout_percent) {
            (_, None) | (Mode::Broken, Some(_)) | (Mode::Fixed, Some(100)) => Ok(()),
            (Mode::Fixed, Some(p)) => Err(format!(
                "--async-rollout-percent {p} needs --mode broken: in fixed mode every stream is \
                 async, i.e. 100"
            )),
            (Mode::Inline, Some(p)) => Err(format!(
                "--async-rollout-percent {p} needs --mode broken: inline mode has no async client"
            )),
        }
    }

    /// Parses flags, environment and the `--config` file; see [`file::load`].
    pub fn load<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        file::load(args)
    }

    /// The providers in force: the file's, or the one built from `--upstream`.
    pub fn providers(&self) -> Vec<ProviderConfig> {
        if self.providers.is_empty() {
            vec![ProviderConfig::from_flags(self)]
        } else {
            self.providers.clone()
        }
    }

    pub fn max_queue_wait(&self) -> Duration {
        Duration::from_millis(self.max_queue_wait_ms)
    }

    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }

    /// `--max-connections`, or the default derived from the descriptor limit in force now (see
    /// [`crate::descriptors`]).
    pub fn max_connections(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| descriptors::max_connections_for(descriptors::soft_limit()))
    }

    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn upstream_read_timeout(&self) -> Duration {
        Duration::from_secs(self.upstream_read_timeout_secs)
    }

    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_secs(self.upstream_connect_timeout_secs)
    }

    /// Every limit in force, one per line, after file, environment and flags were merged: what
    /// `--check-config` prints and the start-up log shows.
    pub fn limits_block(&self) -> String {
        let or_default = |value: Option<usize>, default: &str| {
            value.map_or_else(|| default.to_owned(), |n| n.to_string())
        };
        let rate_limit = match self.rate_limit_rpm {
            0 => "off".to_owned(),
            rpm => format!(
                "{rpm} requests/min per key, burst {}",
                self.rate_limit_burst.unwrap_or(rpm)
            ),
        };
        let mut lines = vec![
            format!("mode                   {}", self.mode),
            format!(
                "listen                 {}, accept queue {}",
                self.listen, self.listen_backlog
            ),
            format!(
                "config file            {}",
                self.config
                    .as_ref()
                    .map_or_else(|| "none".into(), |p| p.display().to_string())
            ),
            format!("blocking pool          {} threads", self.blocking_threads),
            format!(
                "async workers          {}",
                or_default(self.worker_threads, "one per core")
            ),
            format!(
                "inbound                {} at once (a stream until its last byte), {} queued, \
                 wait up to {} ms, then 503",
                self.max_concurrent_requests, self.max_queued_requests, self.max_queue_wait_ms
            ),
            format!(
                "connections            {} open at once ({}), then closed at once; a request \
                 head within {} ms; idle keep-alive closed after {} s",
                self.max_connections(),
                match self.max_connections {
                    Some(_) => "--max-connections".to_owned(),
                    None => format!(
                        "derived: ({} descriptors - {}) / 2",
                        descriptors::soft_limit(),
                        descriptors::RESERVED
                    ),
                },
                self.header_read_timeout_ms,
                self.idle_timeout_secs
            ),
            format!("rate limit             {rate_limit}"),
            format!("shared rate limits     {}", self.shared_limits()),
            format!("request body           up to {} bytes", self.max_body_bytes),
            format!(
                "retries                {} before the first byte, backoff {}..{} ms with jitter, \
                 Retry-After up to {} ms, budget {} %",
                self.retries,
                self.retry_backoff_ms,
                self.retry_backoff_max_ms,
                self.retry_after_max_ms,
                self.retry_budget_percent
            ),
            format!(
                "hedging                {}; after {} ms, {} attempts in all, deadline {} ms, \
                 budget {} %",
                if self.hedge_routes.is_empty() {
                    "per request only (x-gateway-hedge-delay-ms)".to_owned()
                } else {
                    self.hedge_routes.join(",")
                },
                self.hedge_delay_ms,
                self.hedge_max_attempts,
                self.hedge_deadline_ms,
                self.hedge_budget_percent
            ),
            format!(
                "websocket              {} live connections, then close 1013",
                self.ws_max_connections
            ),
            format!(
                "sse keep-alive         {}",
                match self.sse_keepalive_secs {
                    0 => "off".to_owned(),
                    n => format!("a comment after {n} s idle"),
                }
            ),
            format!(
                "api keys               {}",
                if self.api_keys.is_empty() && self.api_keys_file.is_none() {
                    "none: /v1/* is open"
                } else {
                    "required"
                }
            ),
            format!(
                "health                 degraded past {} ms, gives up at {} ms",
                self.health_threshold_ms, self.health_timeout_ms
            ),
            format!("drain on shutdown      {} s", self.drain_secs),
            format!(
                "drain grace            {} s serving, /readyz 503 draining, before new requests \
                 get 503 shutting_down",
                self.drain_grace_secs
            ),
            format!(
                "admin plane            {}",
                match self.admin_listen {
                    AdminListen::Off => "off".to_owned(),
                    AdminListen::At(addr) => format!(
                        "{addr}, POST /admin/* {}",
                        if self.admin_token.is_some() {
                            "needs the token"
                        } else {
                            "open (loopback only)"
                        }
                    ),
                }
            ),
            format!(
                "readiness              degraded past {} ms runtime delay or {} ms pool start, \
                 probed every {} ms",
                self.readiness_runtime_threshold_ms,
                self.readiness_pool_threshold_ms,
                self.readiness_interval_ms
            ),
            format!(
                "/v1/solve              {}, {}, {} queued",
                self.cpu_mode.as_str(),
                self.cpu_workers.map_or_else(
                    || "one worker per core".to_owned(),
                    |n| format!("{n} workers")
                ),
                self.cpu_queue
            ),
        ];
        lines.push(format!("jobs                   {}", self.jobs.describe()));
        lines.push(format!(
            "telemetry              {}",
            self.observe.describe()
        ));
        lines.extend(cache::limits_lines(self));
        if let Some(percent) = self.async_rollout_percent {
            lines.push(format!("async rollout          {percent} %"));
        }
        for provider in self.providers() {
            lines.push(format!("provider {}", provider.describe(self)));
        }
        lines.iter().map(|line| format!("  {line}\n")).collect()
    }

    /// Whether the rate limits hold across instances, for the limits block.
    fn shared_limits(&self) -> String {
        if self.redis_url.is_none() {
            return "no: each instance counts its own (no --redis-url)".to_owned();
        }
        let hint = self.instances_hint.get();
        format!(
            "yes, in redis (one script call a check); if it does not answer within {} ms, each \
             instance counts locally at {}",
            self.redis_timeout_ms,
            if hint == 1 {
                "the full rate (--instances-hint 1)".to_owned()
            } else {
                format!("1/{hint} of each rate and burst (--instances-hint {hint})")
            }
        )
    }

    /// The start-up log: the address (first, on its own line, for scripts that wait for it),
    /// the limits block, and a warning for each setting that is part of a lesson.
    pub fn log_startup(&self, bound: SocketAddr) {
        tracing::info!(
            "gateway listening on {bound}\nlimits in force:\n{}",
            self.limits_block()
        );
        for warning in &self.warnings {
            tracing::warn!("{warning}");
        }
        if self.mode == Mode::Inline {
            tracing::warn!(
                "mode=inline: each stream blocks one async worker thread ({}) for its whole life; \
                 once every worker holds a stream, nothing else runs: not /health, not \
                 /debug/health-async, not even the accept loop",
                self.worker_threads.map_or_else(
                    || "tokio's default: one per core".to_owned(),
                    |n| n.to_string()
                )
            );
        }
        if self.mode == Mode::Broken && self.async_rollout_percent.is_some_and(|p| p > 0) {
            tracing::warn!(
                "mode=broken with --async-rollout-percent {}: that share of streams uses the \
                 async client, the rest each hold one of {} blocking threads",
                self.async_rollout_percent.unwrap_or(0),
                self.blocking_threads
            );
        } else if self.mode == Mode::Broken {
            tracing::warn!(
                "mode=broken: each stream holds one of {} blocking threads until it ends; \
                 stream {} onwards, and every sync health check, will queue",
                self.blocking_threads,
                self.blocking_threads + 1
            );
        }
        for provider in self.providers() {
            let host = Url::parse(&provider.base_url)
                .ok()
                .and_then(|url| url.host_str().map(str::to_owned));
            if host
                .as_deref()
                .and_then(|h| h.parse::<IpAddr>().ok())
                .is_none()
            {
                tracing::warn!(
                    "provider {}: host {host:?} is a name: each new connection resolves it with \
                     getaddrinfo on the blocking pool, so a starved pool delays DNS too; prefer \
                     an IP literal where you can",
                    provider.name
                );
            }
        }
    }
}

fn parse_upstream(s: &str) -> Result<Url, String> {
    let url =
        Url::parse(s).map_err(|e| format!("not a URL ({e}); example: http://127.0.0.1:8001"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("the URL has no host".into()),
        other => Err(format!("scheme must be http or https, not {other:?}")),
    }
}
