//! The buckets in the shared Redis: the GCRA script (`gcra.lua`), and the outage state that
//! decides when to ask Redis and says, once, when it stops and starts answering.
//!
//! The script is sent by its SHA-1 (`EVALSHA`, one round trip); a Redis that restarted has
//! forgotten it and answers `NOSCRIPT`, and `redis::Script` then loads it and asks again. Every
//! call is bounded by `--redis-timeout-ms`; a failure is never an error here, only `None`: the
//! caller decides locally.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ::redis::Script;

use super::{Quota, Verdict};
use crate::redis::SharedRedis;
use crate::telemetry::metrics::{Metrics, RateLimitScope};

/// After a failed call, the limits stay local this long before Redis is asked again: a Redis
/// that hangs then costs one `--redis-timeout-ms` wait a second, not one per request.
pub const RETRY_SHARED_AFTER: Duration = Duration::from_secs(1);

/// The shared Redis as the limits' store.
#[derive(Debug)]
pub(super) struct Store {
    redis: SharedRedis,
    script: Script,
    /// Whether the last call failed: the outage is logged when this turns true, and its end
    /// when it turns false again, so an outage is two log lines, however many requests it saw.
    down: AtomicBool,
    /// Milliseconds after `since` before which Redis is not asked (see [`RETRY_SHARED_AFTER`]).
    retry_at_ms: AtomicU64,
    since: Instant,
    /// `--instances-hint`, for the outage's log line.
    instances: NonZeroU32,
    metrics: Arc<Metrics>,
}

/// What the script answers: admitted (1 or 0), remaining, wait and reset in microseconds.
type Reply = (i64, i64, i64, i64);

impl Store {
    pub(super) fn new(redis: SharedRedis, instances: NonZeroU32, metrics: Arc<Metrics>) -> Self {
        Self {
            redis,
            script: Script::new(include_str!("gcra.lua")),
            down: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            since: Instant::now(),
            instances,
            metrics,
        }
    }

    /// One request out of the bucket at `key`, decided by Redis; `None` when Redis did not
    /// answer in time (or is being left alone after a failure).
    pub(super) async fn check(
        &self,
        quota: Quota,
        key: &str,
        scope: RateLimitScope,
    ) -> Option<Verdict> {
        if self.elapsed_ms() < self.retry_at_ms.load(Ordering::Relaxed) {
            return None;
        }
        let interval = u64::try_from(quota.interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut invocation = self.script.key(key);
        invocation.arg(interval).arg(quota.burst.get());
        match self.redis.invoke::<Reply>(&invocation).await {
            Ok(reply) => {
                self.answered();
                Some(verdict(reply))
            }
            Err(failure) => {
                self.retry_at_ms.store(
                    self.elapsed_ms() + RETRY_SHARED_AFTER.as_millis() as u64,
                    Ordering::Relaxed,
                );
                if !self.down.swap(true, Ordering::AcqRel) {
                    self.metrics.rate_limits.shared.set(0);
                    tracing::warn!(
                        "shared rate limits: redis {} failed ({failure}) on a {} check; each \
                         instance now counts its own share of every limit (divided by \
                         --instances-hint {}) until redis answers again",
                        self.redis.shown(),
                        scope.as_str(),
                        self.instances
                    );
                }
                None
            }
        }
    }

    /// A check decided locally instead: counted by scope.
    pub(super) fn fell_back(&self, scope: RateLimitScope) {
        self.metrics.rate_limits.fell_back(scope);
    }

    fn answered(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            self.metrics.rate_limits.shared.set(1);
            tracing::info!(
                "shared rate limits: redis {} answers again; limits are counted across every \
                 instance again",
                self.redis.shown()
            );
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The script's reply as a [`Verdict`]; its numbers are never negative (see `gcra.lua`).
fn verdict((admitted, remaining, wait, reset): Reply) -> Verdict {
    let micros = |us: i64| Duration::from_micros(u64::try_from(us).unwrap_or(0));
    if admitted == 1 {
        Verdict::Admit {
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset: micros(reset),
        }
    } else {
        Verdict::Refuse {
            wait: micros(wait),
            reset: micros(reset),
        }
    }
}

#[cfg(test)]
mod tests {
    use common::services::Redis;

    use super::*;
    use crate::config::RedisUrl;

    fn store(redis: &Redis) -> Store {
        let url: RedisUrl = redis.url().parse().expect("a redis URL");
        let redis = SharedRedis::connect(&url, Duration::from_secs(2)).expect("connect");
        Store::new(redis, NonZeroU32::MIN, Arc::new(Metrics::default()))
    }

    /// A Redis that accepts connections and never answers (a hung server, a black hole): the
    /// first check gives up after the timeout, and the next ones do not ask for a while, so an
    /// outage costs one timeout per [`RETRY_SHARED_AFTER`], not one per request.
    #[tokio::test]
    async fn a_silent_redis_costs_one_timeout_then_is_left_alone() {
        // The kernel completes the handshake from the backlog; nobody ever reads or writes.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url: RedisUrl = format!("redis://{}", silent.local_addr().expect("addr"))
            .parse()
            .expect("a redis URL");
        let metrics = Arc::new(Metrics::default());
        let redis = SharedRedis::connect(&url, Duration::from_millis(500)).expect("connect");
        let store = Store::new(redis, NonZeroU32::MIN, Arc::clone(&metrics));
        metrics.rate_limits.shared.set(1);
        let q = quota(60, 2);
        let started = Instant::now();
        assert_eq!(store.check(q, "k", RateLimitScope::Key).await, None);
        let first = started.elapsed();
        assert!(
            first >= Duration::from_millis(450),
            "waited its timeout: {first:?}"
        );
        assert_eq!(metrics.rate_limits.shared.get(), 0, "the outage is shown");
        let started = Instant::now();
        for _ in 0..10 {
            assert_eq!(store.check(q, "k", RateLimitScope::Key).await, None);
        }
        let next = started.elapsed();
        assert!(
            next < Duration::from_millis(250),
            "not asked again at once: {next:?}"
        );
    }

    fn quota(rpm: u32, burst: u32) -> Quota {
        Quota::per_minute(rpm, Some(burst)).expect("a limit")
    }

    /// `d` is within `[low, high]` ms: the script reads Redis's clock, so a little time passes
    /// between two checks; the margins are wide, the arithmetic is what is tested.
    fn within(d: Duration, low: u64, high: u64) -> bool {
        d >= Duration::from_millis(low) && d <= Duration::from_millis(high)
    }

    /// The script's arithmetic through a real Redis: remaining counts down, the refusal says how
    /// long to wait and when the bucket is full, and the key expires when it is.
    #[tokio::test]
    async fn the_script_counts_down_refuses_and_expires() {
        let Some(redis) = Redis::start_for("the_script_counts_down_refuses_and_expires") else {
            return;
        };
        let store = store(&redis);
        // 60 rpm: one request a second, two back to back.
        let q = quota(60, 2);
        let key = "gateway:ratelimit:v1:test:a";
        let check = || store.check(q, key, RateLimitScope::Key);
        let Some(Verdict::Admit {
            remaining: 1,
            reset,
        }) = check().await
        else {
            panic!("the first of two is admitted, one left");
        };
        assert!(
            within(reset, 900, 1000),
            "full again a second later: {reset:?}"
        );
        let Some(Verdict::Admit {
            remaining: 0,
            reset,
        }) = check().await
        else {
            panic!("the second is admitted, none left");
        };
        assert!(within(reset, 1900, 2000), "{reset:?}");
        let Some(Verdict::Refuse { wait, reset }) = check().await else {
            panic!("the third is refused");
        };
        assert!(within(wait, 900, 1000), "one interval to wait: {wait:?}");
        assert!(within(reset, 1900, 2000), "{reset:?}");
        let pttl: i64 = store
            .redis
            .query(::redis::cmd("PTTL").arg(key))
            .await
            .expect("PTTL");
        assert!(
            (1900..=2000).contains(&pttl),
            "the key lives until the bucket is full: {pttl}"
        );

        // 1200 rpm: an interval of 50 ms. Once the bucket is full again the key is gone.
        let fast = quota(1200, 1);
        let other = "gateway:ratelimit:v1:test:b";
        let Some(Verdict::Admit { remaining: 0, .. }) =
            store.check(fast, other, RateLimitScope::Key).await
        else {
            panic!("admitted");
        };
        assert!(matches!(
            store.check(fast, other, RateLimitScope::Key).await,
            Some(Verdict::Refuse { .. })
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let exists: i64 = store
            .redis
            .query(::redis::cmd("EXISTS").arg(other))
            .await
            .expect("EXISTS");
        assert_eq!(exists, 0, "an idle bucket expires");
        assert!(matches!(
            store.check(fast, other, RateLimitScope::Key).await,
            Some(Verdict::Admit { remaining: 0, .. })
        ));

        // A Redis that forgot the script (restarted, or SCRIPT FLUSH) gets it loaded again.
        let _: () = store
            .redis
            .query(::redis::cmd("SCRIPT").arg("FLUSH"))
            .await
            .expect("SCRIPT FLUSH");
        assert!(matches!(
            store
                .check(q, "gateway:ratelimit:v1:test:c", RateLimitScope::Key)
                .await,
            Some(Verdict::Admit { remaining: 1, .. })
        ));
    }
}
