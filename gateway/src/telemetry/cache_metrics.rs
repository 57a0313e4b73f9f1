//! The response cache's families of `/metrics` (see [`crate::cache`]): whether it answers, what
//! it keeps, what it drops, and how its Redis is doing.
//!
//! | family | type | what moves it |
//! |---|---|---|
//! | `gateway_cache_hits_total{source}` | counter | answered from the cache: `memory`, `redis`, or `in_flight` (waited for an identical request) |
//! | `gateway_cache_misses_total` | counter | looked up, not found (or too old for `max-age`): went upstream |
//! | `gateway_cache_bypasses_total{reason}` | counter | not looked up: `not_deterministic`, `cache_control`, `no_caller` |
//! | `gateway_cache_stores_total{tier}` | counter | answers written: `memory`, `redis` |
//! | `gateway_cache_not_stored_total{reason}` | counter | answers that went upstream and were not kept, and why |
//! | `gateway_cache_evictions_total{cause}` | counter | answers the in-process tier dropped: `size`, `expired` |
//! | `gateway_cache_bytes` / `_entries` | gauge | the in-process tier's weighed size and entries, read at scrape time |
//! | `gateway_cache_max_bytes` | gauge | `--cache-max-bytes` (0 when the cache is off) |
//! | `gateway_cache_redis_errors_total{op,kind}` | counter | Redis calls that failed (`get`/`set`, `timeout`/`error`): each one a miss or a lost write, never an error response |
//!
//! A family of its own so the cache adds one field to [`super::metrics::Metrics`], and its
//! series all start at 0 (a first hit is a `rate()` increase, not a series appearing).

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::labels::{
    CacheBypass, CacheBypassLabels, CacheEviction, CacheEvictionLabels, CacheSkip, CacheSkipLabels,
    CacheSource, CacheSourceLabels, CacheTier, CacheTierLabels, RedisErrorLabels, RedisFailureKind,
    RedisOp,
};

#[derive(Debug)]
pub struct CacheMetrics {
    hits: Family<CacheSourceLabels, Counter>,
    misses: Counter,
    bypasses: Family<CacheBypassLabels, Counter>,
    stores: Family<CacheTierLabels, Counter>,
    not_stored: Family<CacheSkipLabels, Counter>,
    evictions: Family<CacheEvictionLabels, Counter>,
    redis_errors: Family<RedisErrorLabels, Counter>,
    pub bytes: Gauge<i64, AtomicI64>,
    pub entries: Gauge<i64, AtomicI64>,
    pub max_bytes: Gauge<i64, AtomicI64>,
}

impl CacheMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            hits: Family::default(),
            misses: Counter::default(),
            bypasses: Family::default(),
            stores: Family::default(),
            not_stored: Family::default(),
            evictions: Family::default(),
            redis_errors: Family::default(),
            bytes: Gauge::default(),
            entries: Gauge::default(),
            max_bytes: Gauge::default(),
        };
        let m = &metrics;
        registry.register(
            "gateway_cache_hits",
            "Chat completions answered from the response cache, by source",
            m.hits.clone(),
        );
        registry.register(
            "gateway_cache_misses",
            "Cacheable chat completions not found in the cache (sent upstream)",
            m.misses.clone(),
        );
        registry.register(
            "gateway_cache_bypasses",
            "Chat completions that did not use the cache, by reason",
            m.bypasses.clone(),
        );
        registry.register(
            "gateway_cache_stores",
            "Answers written to the cache, by tier",
            m.stores.clone(),
        );
        registry.register(
            "gateway_cache_not_stored",
            "Answers from upstream that were not cached, by reason",
            m.not_stored.clone(),
        );
        registry.register(
            "gateway_cache_evictions",
            "Answers dropped by the in-process cache, by cause (size, expired)",
            m.evictions.clone(),
        );
        registry.register(
            "gateway_cache_redis_errors",
            "Redis calls of the cache that failed (a miss or a lost write, never an error)",
            m.redis_errors.clone(),
        );
        registry.register(
            "gateway_cache_bytes",
            "Weighed size of the in-process cache (answers and keys)",
            m.bytes.clone(),
        );
        registry.register(
            "gateway_cache_entries",
            "Answers held by the in-process cache",
            m.entries.clone(),
        );
        registry.register(
            "gateway_cache_max_bytes",
            "The in-process cache's bound (--cache-max-bytes; 0 when off)",
            m.max_bytes.clone(),
        );
        for source in CacheSource::ALL {
            let _ = m.hits.get_or_create(&CacheSourceLabels { source });
        }
        for reason in CacheBypass::ALL {
            let _ = m.bypasses.get_or_create(&CacheBypassLabels { reason });
        }
        for tier in CacheTier::ALL {
            let _ = m.stores.get_or_create(&CacheTierLabels { tier });
        }
        for reason in CacheSkip::ALL {
            let _ = m.not_stored.get_or_create(&CacheSkipLabels { reason });
        }
        for cause in CacheEviction::ALL {
            let _ = m.evictions.get_or_create(&CacheEvictionLabels { cause });
        }
        for op in RedisOp::ALL {
            for kind in RedisFailureKind::ALL {
                let _ = m.redis_errors.get_or_create(&RedisErrorLabels { op, kind });
            }
        }
        metrics
    }

    pub fn hit(&self, source: CacheSource) {
        self.hits.get_or_create(&CacheSourceLabels { source }).inc();
    }

    pub fn miss(&self) {
        self.misses.inc();
    }

    pub fn bypass(&self, reason: CacheBypass) {
        self.bypasses
            .get_or_create(&CacheBypassLabels { reason })
            .inc();
    }

    pub fn stored(&self, tier: CacheTier) {
        self.stores.get_or_create(&CacheTierLabels { tier }).inc();
    }

    pub fn not_stored(&self, reason: CacheSkip) {
        self.not_stored
            .get_or_create(&CacheSkipLabels { reason })
            .inc();
    }

    pub fn evicted(&self, cause: CacheEviction) {
        self.evictions
            .get_or_create(&CacheEvictionLabels { cause })
            .inc();
    }

    pub fn redis_error(&self, op: RedisOp, kind: RedisFailureKind) {
        self.redis_errors
            .get_or_create(&RedisErrorLabels { op, kind })
            .inc();
    }
}
