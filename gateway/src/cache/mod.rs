//! Lesson 11, the response cache: the same question, answered once, for the same caller.
//!
//! The same prompts reach a slow, paid upstream again and again: a system prompt with a fixed
//! question, a retried request, an evaluation run. With `--cache-mode deterministic` or `all`,
//! `POST /v1/chat/completions` answers a repeated request from here, in microseconds instead of
//! seconds, without an upstream request. The lesson is what may be cached, for whom, and how
//! an answer given twice stays an honest answer:
//!
//! - **What**: only answers meant to repeat. `deterministic` caches only requests with
//!   `temperature` 0 or a `seed`; `all` caches any (a sampled answer, once cached, is *the*
//!   answer until it expires: right for a FAQ bot, wrong for a poem generator). Only whole
//!   answers: status 200, every choice finished `stop` or `length` ([`entry`]).
//! - **For whom**: the key holds the caller (API key digest, or client IP without keys), the
//!   provider, and a hash of everything in the request that can change the answer ([`key`]).
//!   Never one tenant's answer for another.
//! - **The request's say**: `Cache-Control: no-cache` skips the read (the answer is still
//!   stored), `no-store` skips the write, `max-age=N` accepts only answers at most N seconds
//!   old. Both `no-cache` and `no-store`: the cache is bypassed.
//! - **Told, not hidden**: every response of the route says `x-gateway-cache: hit`, `miss` or
//!   `bypass` (no header with `--cache-mode off`), and a hit carries `Age` (seconds since the
//!   answer was made, across instances) and `X-Stream-Method: cache`.
//! - **Either form**: a `stream: true` request is served an answer first fetched without
//!   streaming, and the reverse; the replay is a proper SSE stream ([`replay`]). A streamed
//!   miss goes to its client as it arrives and is stored only once it has ended cleanly
//!   ([`tee`]).
//! - **One upstream request per question**: concurrent identical misses wait for the first
//!   ([`flight`]).
//! - **Two tiers**: in process (moka, weighed by bytes up to `--cache-max-bytes`, entries
//!   expiring `--cache-ttl-secs` after the answer was made), then the shared Redis
//!   (`--redis-url`, [`crate::redis`]) with the same TTL, so one instance's miss is every
//!   instance's hit. A Redis that is down or slow is a miss (counted), never an error.
//!
//! The cache is a step of `/v1/chat/completions`' handler and nothing else: the route calls
//! [`ResponseCache::lookup`] before it goes upstream and [`Ticket::tee`] on the way back. The
//! job queue (`/v1/jobs`) runs its requests through the policies directly and never reaches
//! here, on purpose: a job is work the caller asked to have done, and it is neither served from
//! nor written to the cache. `/v1/chat/ws` does not pass here either.

pub mod entry;
pub mod flight;
pub mod key;
pub mod replay;
pub mod tee;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use moka::future::Cache as Moka;
use moka::notification::RemovalCause;

use self::entry::Entry;
use self::flight::{Flights, Followed, Joined, Leader};
use self::key::{Directives, Facts};
use crate::config::{CacheMode, Config};
use crate::error::{ApiError, StartError};
use crate::policy::limits::ClientId;
use crate::redis::{RedisFailure, SharedRedis};
use crate::telemetry::labels::{
    CacheBypass, CacheEviction, CacheSkip, CacheSource, CacheTier, RedisFailureKind, RedisOp,
};
use crate::telemetry::metrics::{CacheMetrics, Metrics};
use crate::upstream::UpstreamResponse;

/// `x-gateway-cache: hit|miss|bypass` on every response of a cached route.
pub const CACHE_HEADER: HeaderName = HeaderName::from_static("x-gateway-cache");

/// The largest answer kept without an in-process tier (Redis values should stay small).
const MAX_ENTRY_WITHOUT_MEMORY: usize = 8 * 1024 * 1024;

/// The response cache of `/v1/chat/completions`; `--cache-mode off` makes every lookup a plain
/// "go upstream" with no header.
#[derive(Debug)]
pub struct ResponseCache {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    mode: CacheMode,
    /// The in-process tier; `None` with `--cache-max-bytes 0`.
    memory: Option<Moka<String, Arc<Entry>>>,
    /// The shared tier.
    redis: Option<SharedRedis>,
    ttl: Duration,
    /// An answer larger than this is not kept: a quarter of the in-process tier, so one answer
    /// cannot flush it.
    max_entry_bytes: usize,
    /// A follower waits at most this without a deadline of its own.
    default_wait: Duration,
    flights: Arc<Flights>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("mode", &self.mode)
            .field("redis", &self.redis)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// What one request of the route gets from the cache.
#[derive(Debug)]
pub enum Lookup {
    /// Answered: relay it (it is already in the form the request asked for).
    Hit(Hit),
    /// Go upstream, and hand the answer to the ticket on the way back.
    Upstream(Ticket),
}

/// A cached answer, ready to relay.
#[derive(Debug)]
pub struct Hit {
    pub response: UpstreamResponse,
    age: u64,
}

impl Hit {
    pub fn status(&self) -> CacheStatus {
        CacheStatus::Hit { age: self.age }
    }
}

/// What the cache says about a response, in its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Off,
    Bypass,
    Miss,
    Hit { age: u64 },
}

impl CacheStatus {
    /// `hit`, `miss` or `bypass`, as `x-gateway-cache` and the access line say it; `None` when
    /// the cache is off.
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            CacheStatus::Off => None,
            CacheStatus::Bypass => Some("bypass"),
            CacheStatus::Miss => Some("miss"),
            CacheStatus::Hit { .. } => Some("hit"),
        }
    }

    /// Adds `x-gateway-cache` (and `Age` on a hit) to `response`.
    pub fn mark(self, mut response: Response) -> Response {
        let value = match self {
            CacheStatus::Off => return response,
            CacheStatus::Bypass => "bypass",
            CacheStatus::Miss => "miss",
            CacheStatus::Hit { age } => {
                response
                    .headers_mut()
                    .insert(header::AGE, HeaderValue::from(age));
                "hit"
            }
        };
        response
            .headers_mut()
            .insert(CACHE_HEADER, HeaderValue::from_static(value));
        response
    }
}

/// A request going upstream: what to say about it, and whether (and as whom) to keep its answer.
#[derive(Debug)]
pub struct Ticket {
    status: CacheStatus,
    store: Option<Store>,
}

impl Ticket {
    fn new(status: CacheStatus) -> Self {
        Self {
            status,
            store: None,
        }
    }

    pub fn status(&self) -> CacheStatus {
        self.status
    }

    /// The upstream's answer on its way to the client, copied for the cache when it is one to
    /// keep (see [`tee`]). Dropping the ticket instead (the upstream failed) releases the
    /// requests waiting for this one.
    pub fn tee(self, mut upstream: UpstreamResponse) -> UpstreamResponse {
        let Some(store) = self.store else {
            return upstream;
        };
        if upstream.status != StatusCode::OK {
            store.give_up(CacheSkip::Status);
            return upstream;
        }
        let body = std::mem::replace(&mut upstream.body, Box::pin(futures_util::stream::empty()));
        upstream.body = Box::pin(tee::Tee::new(body, store));
        upstream
    }
}

/// The right to keep one answer under one key: the flight it leads, if any, lands with it.
#[derive(Debug)]
pub struct Store {
    inner: Arc<Inner>,
    key: String,
    streamed: bool,
    leader: Option<Leader>,
}

impl Store {
    fn max_bytes(&self) -> usize {
        self.inner.max_entry_bytes
    }

    /// The answer ended cleanly: check and write it, off the client's path.
    fn keep(self, chunks: Vec<axum::body::Bytes>, size: usize) {
        tokio::spawn(async move {
            let mut whole = Vec::with_capacity(size);
            for chunk in &chunks {
                whole.extend_from_slice(chunk);
            }
            let entry = if self.streamed {
                Entry::from_sse(&whole)
            } else {
                Entry::from_json(whole.into())
            };
            match entry {
                Ok(entry) => {
                    self.inner
                        .write(self.key, Arc::new(entry), self.leader)
                        .await
                }
                Err(reason) => self.give_up(reason),
            }
        });
    }

    /// Not kept, and why; the followers (if any) are released by the leader's drop.
    fn give_up(self, reason: CacheSkip) {
        self.inner.metrics.cache.not_stored(reason);
    }
}

/// The parts of a request the cache reads.
#[derive(Debug)]
pub struct CacheRequest<'a> {
    pub client: Option<&'a ClientId>,
    /// The provider that serves the request's model.
    pub provider: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// The request's deadline, if it has one: the longest a follower waits.
    pub deadline: Option<Duration>,
}

impl ResponseCache {
    /// The cache `config` asks for (nothing with `--cache-mode off`), its second tier in `redis`
    /// (the gateway's one connection, shared with the rate limits) when there is one.
    pub fn new(
        config: &Config,
        redis: Option<SharedRedis>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartError> {
        if config.cache_mode == CacheMode::Off {
            return Ok(Self { inner: None });
        }
        let ttl = Duration::from_secs(config.cache_ttl_secs);
        let max_bytes = usize::try_from(config.cache_max_bytes).unwrap_or(usize::MAX);
        let memory = (max_bytes > 0).then(|| memory_tier(config.cache_max_bytes, ttl, &metrics));
        metrics
            .cache
            .max_bytes
            .set(i64::try_from(config.cache_max_bytes).unwrap_or(i64::MAX));
        Ok(Self {
            inner: Some(Arc::new(Inner {
                mode: config.cache_mode,
                memory,
                redis,
                ttl,
                max_entry_bytes: if max_bytes > 0 {
                    max_bytes / 4
                } else {
                    MAX_ENTRY_WITHOUT_MEMORY
                },
                default_wait: config.upstream_read_timeout(),
                flights: Arc::new(Flights::default()),
                metrics,
            })),
        })
    }

    /// Answers `request` from the cache, or says how to go upstream (see the module docs). An
    /// `Err` is the request's own fault (a malformed `Cache-Control`) or a follower's deadline.
    pub async fn lookup(&self, request: CacheRequest<'_>) -> Result<Lookup, ApiError> {
        let Some(inner) = &self.inner else {
            return Ok(Lookup::Upstream(Ticket::new(CacheStatus::Off)));
        };
        let directives = Directives::read(request.headers)?;
        let Some(facts) = Facts::read(request.body, request.headers) else {
            return Ok(Lookup::Upstream(Ticket::new(CacheStatus::Bypass)));
        };
        let caller = key::caller(request.client);
        let bypass = if inner.mode == CacheMode::Deterministic && !facts.deterministic {
            Some(CacheBypass::NotDeterministic)
        } else if directives.no_cache && directives.no_store {
            Some(CacheBypass::RequestHeaders)
        } else if caller.is_none() {
            Some(CacheBypass::NoCaller)
        } else {
            None
        };
        let (Some(caller), None) = (caller, bypass) else {
            if let Some(reason) = bypass {
                inner.metrics.cache.bypass(reason);
            }
            return Ok(Lookup::Upstream(Ticket::new(CacheStatus::Bypass)));
        };
        let key = key::key(request.provider, &caller, &facts.hash);
        let ask = Ask {
            facts: &facts,
            max_age: directives.max_age,
        };
        let mut leader = None;
        if !directives.no_cache {
            if let Some((entry, source)) = inner.read(&key, &ask).await {
                return Ok(inner.hit(&entry, source, &facts));
            }
            if !directives.no_store {
                match inner.flights.join(&key) {
                    // A flight that landed between the read above and the join: its answer is
                    // in process now, so this one need not go upstream again.
                    Joined::Lead(lead) => match inner.read_memory(&key, &ask).await {
                        Some(entry) => {
                            lead.land(Arc::clone(&entry));
                            return Ok(inner.hit(&entry, CacheSource::Memory, &facts));
                        }
                        None => leader = Some(lead),
                    },
                    Joined::Follow(follower) => {
                        let bound = request.deadline.unwrap_or(inner.default_wait);
                        let waited = Instant::now();
                        match follower.wait(bound).await {
                            Followed::Landed(entry) if ask.accepts(&entry) => {
                                return Ok(inner.hit(&entry, CacheSource::InFlight, &facts));
                            }
                            Followed::TimedOut => return Err(deadline_exceeded(waited)),
                            Followed::Landed(_) | Followed::Released => {}
                        }
                    }
                }
            }
        }
        inner.metrics.cache.miss();
        if directives.no_store {
            inner.metrics.cache.not_stored(CacheSkip::NoStore);
        }
        Ok(Lookup::Upstream(Ticket {
            status: CacheStatus::Miss,
            store: (!directives.no_store).then(|| Store {
                inner: Arc::clone(inner),
                key,
                streamed: facts.stream,
                leader,
            }),
        }))
    }

    /// Sets the in-process tier's gauges, for `/metrics` (cheap: two atomic reads).
    pub fn observe(&self, metrics: &CacheMetrics) {
        let Some(memory) = self.inner.as_ref().and_then(|i| i.memory.as_ref()) else {
            return;
        };
        metrics
            .bytes
            .set(i64::try_from(memory.weighted_size()).unwrap_or(i64::MAX));
        metrics
            .entries
            .set(i64::try_from(memory.entry_count()).unwrap_or(i64::MAX));
    }

    /// Applies the in-process tier's pending evictions now, so its size is exact (tests, and
    /// the benchmark's last reading).
    pub async fn settle(&self) {
        if let Some(memory) = self.inner.as_ref().and_then(|i| i.memory.as_ref()) {
            memory.run_pending_tasks().await;
        }
    }
}

/// What a request will accept from the cache.
struct Ask<'a> {
    facts: &'a Facts,
    max_age: Option<u64>,
}

impl Ask<'_> {
    fn accepts(&self, entry: &Entry) -> bool {
        let fresh = self.max_age.is_none_or(|max| entry.age() <= max);
        // A stream assembled without `include_usage` has no usage to give back.
        let complete = entry.has_usage || (self.facts.stream && !self.facts.include_usage);
        fresh && complete
    }
}

impl Inner {
    /// The in-process tier, then Redis (whose answer is kept in process too).
    async fn read(&self, key: &str, ask: &Ask<'_>) -> Option<(Arc<Entry>, CacheSource)> {
        if let Some(entry) = self.read_memory(key, ask).await {
            return Some((entry, CacheSource::Memory));
        }
        let redis = self.redis.as_ref()?;
        let bytes = match redis.get(key).await {
            Ok(bytes) => bytes?,
            Err(failure) => {
                self.redis_failed(RedisOp::Get, &failure);
                return None;
            }
        };
        let entry = Arc::new(Entry::decode(&bytes)?);
        if entry.remaining(self.ttl).is_zero() || !ask.accepts(&entry) {
            return None;
        }
        if let Some(memory) = &self.memory {
            memory.insert(key.to_owned(), Arc::clone(&entry)).await;
        }
        Some((entry, CacheSource::Redis))
    }

    async fn read_memory(&self, key: &str, ask: &Ask<'_>) -> Option<Arc<Entry>> {
        let entry = self.memory.as_ref()?.get(key).await?;
        ask.accepts(&entry).then_some(entry)
    }

    fn hit(&self, entry: &Entry, source: CacheSource, facts: &Facts) -> Lookup {
        self.metrics.cache.hit(source);
        let response = if facts.stream {
            replay::sse(entry, facts.include_usage)
        } else {
            replay::json(entry)
        };
        Lookup::Hit(Hit {
            response,
            age: entry.age(),
        })
    }

    /// Both tiers; the flight lands as soon as the answer is in process, before Redis.
    async fn write(&self, key: String, entry: Arc<Entry>, leader: Option<Leader>) {
        if let Some(memory) = &self.memory {
            memory.insert(key.clone(), Arc::clone(&entry)).await;
            self.metrics.cache.stored(CacheTier::Memory);
        }
        if let Some(leader) = leader {
            leader.land(Arc::clone(&entry));
        }
        if let Some(redis) = &self.redis {
            match redis.set_ex(&key, &entry.encode(), self.ttl).await {
                Ok(()) => self.metrics.cache.stored(CacheTier::Redis),
                Err(failure) => self.redis_failed(RedisOp::Set, &failure),
            }
        }
    }

    fn redis_failed(&self, op: RedisOp, failure: &RedisFailure) {
        let kind = match failure {
            RedisFailure::Timeout => RedisFailureKind::Timeout,
            RedisFailure::Error(_) => RedisFailureKind::Error,
        };
        tracing::debug!("cache: redis {} failed: {failure}", op.as_str());
        self.metrics.cache.redis_error(op, kind);
    }
}

/// The in-process tier: weighed by bytes, each entry expiring `ttl` after its answer was made
/// (an entry read from Redis keeps its own age), evictions counted.
fn memory_tier(max_bytes: u64, ttl: Duration, metrics: &Arc<Metrics>) -> Moka<String, Arc<Entry>> {
    let metrics = Arc::clone(metrics);
    Moka::builder()
        .max_capacity(max_bytes)
        .weigher(|key: &String, entry: &Arc<Entry>| entry.weight(key))
        .expire_after(Expiry { ttl })
        .eviction_listener(move |_key, _entry, cause| match cause {
            RemovalCause::Size => metrics.cache.evicted(CacheEviction::Size),
            RemovalCause::Expired => metrics.cache.evicted(CacheEviction::Expired),
            RemovalCause::Explicit | RemovalCause::Replaced => {}
        })
        .build()
}

struct Expiry {
    ttl: Duration,
}

impl moka::Expiry<String, Arc<Entry>> for Expiry {
    fn expire_after_create(
        &self,
        _key: &String,
        entry: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.remaining(self.ttl))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.remaining(self.ttl))
    }
}

fn deadline_exceeded(waited: Instant) -> ApiError {
    let mut error = ApiError::bad_gateway(format!(
        "waited {} ms for an identical request already in flight (single-flight) and its answer \
         did not come within this request's deadline; raise it with x-gateway-deadline-ms",
        waited.elapsed().as_millis()
    ))
    .with_code("deadline_exceeded");
    error.status = StatusCode::GATEWAY_TIMEOUT;
    error
}
