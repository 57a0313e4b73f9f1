//! The shared rate limits' families of `/metrics` (see [`crate::ratelimit`]): whether the limits
//! are counted across every instance right now, and how many checks were decided locally instead.
//!
//! | family | type | what moves it |
//! |---|---|---|
//! | `gateway_rate_limit_shared` | gauge | 1 while the rate limits are counted in the shared Redis; 0 without `--redis-url`, and during an outage |
//! | `gateway_rate_limit_fallback_total{scope}` | counter | rate-limit checks decided by this instance's local limiter (at the rate divided by `--instances-hint`) because Redis did not answer in time: `key` or `provider` |
//!
//! An alert on `gateway_rate_limit_shared == 0` (with `--redis-url` set) says the fleet is
//! enforcing each limit only approximately; the counter says how much traffic that concerned.
//! A family of its own so the limits add one field to [`super::metrics::Metrics`].

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::labels::{RateLimitLabels, RateLimitScope};

#[derive(Debug)]
pub struct RateLimitMetrics {
    /// `gateway_rate_limit_shared`: set by [`crate::ratelimit`] when an outage starts and ends.
    pub shared: Gauge<i64, AtomicI64>,
    fallback: Family<RateLimitLabels, Counter>,
}

impl RateLimitMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            shared: Gauge::default(),
            fallback: Family::default(),
        };
        registry.register(
            "gateway_rate_limit_shared",
            "1 while rate limits are counted in the shared Redis, across every instance; else 0",
            metrics.shared.clone(),
        );
        registry.register(
            "gateway_rate_limit_fallback",
            "Rate-limit checks decided locally (rate / --instances-hint) because Redis did not \
             answer, by scope",
            metrics.fallback.clone(),
        );
        for scope in RateLimitScope::ALL {
            let _ = metrics.fallback.get_or_create(&RateLimitLabels { scope });
        }
        metrics
    }

    /// One check decided locally because the shared Redis did not answer.
    pub fn fell_back(&self, scope: RateLimitScope) {
        self.fallback
            .get_or_create(&RateLimitLabels { scope })
            .inc();
    }
}
