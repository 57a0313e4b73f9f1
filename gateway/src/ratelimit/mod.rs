//! Rate limits that hold across a fleet: GCRA, counted in process or in the shared Redis.
//!
//! Lesson 8's per-key and per-provider limits (`--rate-limit-rpm`, a provider's
//! `requests-per-minute`) counted in each process's memory. Behind a load balancer that spreads
//! a key over three instances, each one admits the key's whole minute: the key gets three times
//! its limit, and a provider three times its quota (LiteLLM's users reported exactly this). A
//! limit has to be counted where every instance counts.
//!
//! # One number per bucket, one round trip per check
//!
//! GCRA keeps one timestamp per bucket (the *theoretical arrival time*, see `gcra.lua`), so a
//! bucket fits in one Redis string and a check is one Lua script run atomically by Redis: read
//! the time, decide, move the timestamp. No lock, no read-then-write race between instances, one
//! round trip (`EVALSHA`), Redis's clock for every instance. The key expires when the bucket is
//! full again, so idle callers cost nothing. Keys: `gateway:ratelimit:v1:key:<digest>` (a digest
//! of the API key's digest: never the key) and `gateway:ratelimit:v1:provider:<name>`.
//!
//! # Redis is an optimisation, never a dependency
//!
//! Each check is bounded by `--redis-timeout-ms` ([`crate::redis`]). When Redis does not answer
//! in time, this instance decides locally, with governor, at each rate divided by
//! `--instances-hint`: N instances each admitting 1/N keep the fleet near the limit, not N times
//! it. The outage is logged once when it starts and once when it ends, every local decision is
//! counted (`gateway_rate_limit_fallback_total{scope}`, and `gateway_rate_limit_shared` drops to
//! 0), and no request ever fails because Redis is down. After a failure the limits stay local
//! for [`RETRY_SHARED_AFTER`] before Redis is asked again, so a Redis that hangs costs one
//! timeout a second, not one per request.
//!
//! Without `--redis-url` every limit is the local one at its full rate, as before.
//!
//! Between `upstream/` (whose providers use it) and `telemetry/`: it knows the shared Redis, the
//! metrics and nothing of HTTP. The callers turn a [`Verdict`] into headers and errors.

mod local;
mod shared;

use std::borrow::Cow;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use crate::redis::SharedRedis;
use crate::telemetry::metrics::{Metrics, RateLimitScope};

pub use shared::RETRY_SHARED_AFTER;

/// The Redis keys' prefix. `v1`: what a key holds (a TAT in microseconds of Redis's clock); a
/// change to that bumps it, so instances running the new code never read the old state.
pub const PREFIX: &str = "gateway:ratelimit:v1";

/// A limit: requests per minute, and how many may come back to back after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub rpm: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Quota {
    /// `rpm` with `burst` (default: the whole minute), or `None` for no limit (`rpm` 0).
    pub fn per_minute(rpm: u32, burst: Option<u32>) -> Option<Self> {
        let rpm = NonZeroU32::new(rpm)?;
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(rpm);
        Some(Self { rpm, burst })
    }

    /// What one request takes out of the bucket: 60 s / rpm.
    pub fn interval(self) -> Duration {
        Duration::from_secs(60) / self.rpm.get()
    }

    /// One instance's share while the limits cannot be shared: rate and burst divided by
    /// `instances`, rounded down, never below one.
    pub fn divided(self, instances: NonZeroU32) -> Self {
        let share =
            |n: NonZeroU32| NonZeroU32::new(n.get() / instances.get()).unwrap_or(NonZeroU32::MIN);
        Self {
            rpm: share(self.rpm),
            burst: share(self.burst),
        }
    }
}

/// A check's answer, with what the `x-ratelimit-*` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admit {
        /// Requests that could follow right now.
        remaining: u32,
        /// Until the bucket is full again.
        reset: Duration,
    },
    Refuse {
        /// Until this request would have been admitted: the `Retry-After`.
        wait: Duration,
        /// Until the bucket is full again.
        reset: Duration,
    },
}

/// What a limit counts against: a client, or the one bucket of a provider (`()`).
pub trait Bucket: Hash + Eq + Clone + Send + Sync + 'static {
    /// Its name in Redis, after the limit's namespace (empty for the limit's only bucket). Never
    /// a secret: Redis is shared, its keys are listed by anyone who can reach it.
    fn shared_name(&self) -> Cow<'static, str>;
}

impl Bucket for () {
    fn shared_name(&self) -> Cow<'static, str> {
        Cow::Borrowed("")
    }
}

/// What every limit of this instance shares: the Redis they count in (if any), its outage
/// state, and `--instances-hint`. Built once per gateway; cloning is shallow.
#[derive(Debug, Clone)]
pub struct LimitStore {
    shared: Option<Arc<shared::Store>>,
    instances: NonZeroU32,
}

impl LimitStore {
    /// Limits counted in this process only: no `--redis-url`.
    pub fn local() -> Self {
        Self {
            shared: None,
            instances: NonZeroU32::MIN,
        }
    }

    /// Limits counted in `redis` when there is one, else in process. `gateway_rate_limit_shared`
    /// starts at 1 with a Redis (nothing has failed yet), 0 without.
    pub fn new(redis: Option<SharedRedis>, instances: NonZeroU32, metrics: &Arc<Metrics>) -> Self {
        metrics.rate_limits.shared.set(i64::from(redis.is_some()));
        Self {
            shared: redis
                .map(|redis| Arc::new(shared::Store::new(redis, instances, Arc::clone(metrics)))),
            instances,
        }
    }

    /// Whether the limits are counted across instances (a Redis is configured).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }
}

/// One limit (`--rate-limit-rpm`, or a provider's `requests-per-minute`), with a bucket per `K`.
#[derive(Debug)]
pub struct RpmLimit<K: Bucket> {
    quota: Quota,
    scope: RateLimitScope,
    /// `gateway:ratelimit:v1:<namespace>`: the Redis key of the limit's only bucket, or the
    /// prefix of each bucket's key.
    prefix: String,
    /// The local buckets: the whole quota without Redis, the instance's share with one (used
    /// only while Redis does not answer).
    local: local::Buckets<K>,
    shared: Option<Arc<shared::Store>>,
}

impl<K: Bucket> RpmLimit<K> {
    /// `quota` for `scope`, its Redis keys under `namespace` (`key`, `provider:<name>`).
    pub fn new(quota: Quota, scope: RateLimitScope, namespace: &str, store: &LimitStore) -> Self {
        let local = match store.shared {
            Some(_) => quota.divided(store.instances),
            None => quota,
        };
        Self {
            quota,
            scope,
            prefix: format!("{PREFIX}:{namespace}"),
            local: local::Buckets::new(local),
            shared: store.shared.clone(),
        }
    }

    /// The quota as configured (not the local share).
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Takes one request out of `key`'s bucket, or says how long until it could. In Redis when
    /// there is one and it answers in time, else locally (counted; see the module docs).
    pub async fn check(&self, key: &K) -> Verdict {
        if let Some(store) = &self.shared {
            let name = key.shared_name();
            let key = if name.is_empty() {
                Cow::Borrowed(self.prefix.as_str())
            } else {
                Cow::Owned(format!("{}:{name}", self.prefix))
            };
            match store.check(self.quota, &key, self.scope).await {
                Some(verdict) => return verdict,
                None => store.fell_back(self.scope),
            }
        }
        self.local.check(key)
    }

    /// Forgets local buckets that are full again, so one bucket per client ever seen cannot grow
    /// without bound (Redis expires its own).
    pub fn forget_idle(&self) {
        self.local.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_divides_but_never_to_zero() {
        let quota = Quota::per_minute(30, None).expect("a limit");
        let two = NonZeroU32::new(2).expect("2");
        assert_eq!(quota.divided(two), Quota::per_minute(15, None).expect("15"));
        let quota = Quota::per_minute(3, Some(1)).expect("a limit");
        let many = NonZeroU32::new(10).expect("10");
        assert_eq!(
            quota.divided(many),
            Quota::per_minute(1, Some(1)).expect("1")
        );
        assert_eq!(quota.interval(), Duration::from_secs(20));
        assert_eq!(Quota::per_minute(0, Some(5)), None);
    }
}
