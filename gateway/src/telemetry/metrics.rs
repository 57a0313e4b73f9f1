//! `GET /metrics`: every bound of the gateway, and every time one was hit, in Prometheus text.
//!
//! A limit nobody can see is a limit nobody trusts. Each one the gateway enforces has a gauge for
//! how full it is and a counter for how often it said no, so a dashboard answers "are we
//! shedding?" and "which limit?" without reading logs:
//!
//! | family | type | what moves it |
//! |---|---|---|
//! | `gateway_requests_total{route,status}` | counter | every answered request, by the route as written in the router |
//! | `gateway_requests_in_flight` | gauge | requests holding an inbound place (a stream until its last byte) |
//! | `gateway_requests_queued` | gauge | requests waiting for an inbound place |
//! | `gateway_requests_limit` | gauge | `--max-concurrent-requests` |
//! | `gateway_shed_total{reason}` | counter | 503s from the gateway's own limits: `queue_full`, `queue_timeout`, `provider_busy`, `cpu_queue_full`; and `shutting_down` after a drain's grace |
//! | `gateway_rate_limited_total{scope}` | counter | 429s: `key` (per API key) or `provider` (a provider's rpm) |
//! | `gateway_upstream_in_use{provider}` | gauge | upstream requests open per provider, i.e. its connections in use |
//! | `gateway_upstream_limit{provider}` | gauge | the provider's `max-concurrent` |
//! | `gateway_blocking_pool_running` / `_queued` / `_threads` | gauge | the counted blocking pool ([`crate::telemetry::pool`]) |
//! | `gateway_health_probe_seconds` | histogram | how long `/health`'s pool job took: the starvation signal |
//! | `gateway_live_streams` | gauge | response bodies being relayed right now |
//! | `gateway_upstream_attempts_total{provider,kind}` | counter | every upstream attempt: `first`, `retry`, `hedge` |
//! | `gateway_retries_given_up_total{reason}` | counter | a retryable failure not retried: `max_retries`, `budget`, `retry_after_too_long` |
//! | `gateway_hedges_fired_total` / `_won_total` / `_cancelled_total` | counter | hedges sent; requests a hedge answered; losing attempts cancelled |
//! | `gateway_hedges_skipped_total{reason}` | counter | hedges the budget did not allow |
//! | `gateway_deadline_exceeded_total` | counter | hedged requests answered 504 at their deadline |
//! | `gateway_ws_connections` | gauge | live `/v1/chat/ws` connections |
//! | `gateway_ws_rejected_total` | counter | sockets closed with 1013 at `--ws-max-connections` |
//! | `gateway_sse_keepalives_total` | counter | `: keep-alive` comments sent on idle SSE streams |
//! | `gateway_connections_open` | gauge | connections open on the main listener (upgraded WebSockets included) |
//! | `gateway_connections_limit` | gauge | `--max-connections` |
//! | `gateway_connections_refused_total{reason}` | counter | connections closed as soon as accepted: `max_connections` |
//! | `gateway_connections_closed_total{reason}` | counter | connections the gateway closed: `header_timeout`, `idle_timeout`, `shutdown` |
//! | `gateway_accept_errors_total` | counter | `accept` failures other than a client gone (`EMFILE`: out of descriptors) |
//! | `gateway_jobs{status}`, `gateway_jobs_*` | | the job queue (see [`super::jobs`]) |
//! | `gateway_cache_*` | | the response cache: hits, misses, bypasses, stores, evictions, bytes, Redis errors ([`super::cache_metrics`]) |
//! | `gateway_rate_limit_shared`, `gateway_rate_limit_fallback_total{scope}` | gauge, counter | whether rate limits are counted across instances now; checks decided locally during a Redis outage ([`super::ratelimit_metrics`]) |
//! | `gateway_request_duration_seconds`, `gateway_upstream_ttft_seconds`, ... | | request latency, time to first token, tokens, upstream errors by provider and model, readiness ([`super::llm`]) |
//!
//! Gauges that mirror state kept elsewhere (pool counters, semaphores) are read at scrape time,
//! so they cannot drift from the truth; counters are incremented where the event happens.
//! The registry is explicit (no global), so tests can run several gateways in one process.
//!
//! `/metrics` is open like `/health`: a scraper should not need an API key. It names providers
//! and routes, nothing secret; still, expose it to the monitoring network only.

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::jobs::JobMetrics;
pub use super::llm::LlmMetrics;

pub use super::cache_metrics::CacheMetrics;
pub use super::labels::{
    AttemptKind, AttemptLabels, ClosedLabels, ConnectionClose, ConnectionRefusal, GiveUpLabels,
    GiveUpReason, HedgeSkipLabels, HedgeSkipReason, ProviderLabel, RateLimitLabels, RateLimitScope,
    RefusedLabels, RouteStatus, ShedLabels, ShedReason,
};
pub use super::ratelimit_metrics::RateLimitMetrics;

/// The registry and every family in it. Later features register their families here too.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteStatus, Counter>,
    pub in_flight: Gauge<i64, AtomicI64>,
    pub queued: Gauge<i64, AtomicI64>,
    pub limit: Gauge<i64, AtomicI64>,
    pub shed: Family<ShedLabels, Counter>,
    pub rate_limited: Family<RateLimitLabels, Counter>,
    pub upstream_in_use: Family<ProviderLabel, Gauge<i64, AtomicI64>>,
    pub upstream_limit: Family<ProviderLabel, Gauge<i64, AtomicI64>>,
    pub pool_running: Gauge<i64, AtomicI64>,
    pub pool_queued: Gauge<i64, AtomicI64>,
    pub pool_threads: Gauge<i64, AtomicI64>,
    pub health_probe: Histogram,
    pub live_streams: Gauge<i64, AtomicI64>,
    pub attempts: Family<AttemptLabels, Counter>,
    pub retries_given_up: Family<GiveUpLabels, Counter>,
    pub hedges_fired: Counter,
    pub hedges_won: Counter,
    pub hedges_cancelled: Counter,
    pub hedges_skipped: Family<HedgeSkipLabels, Counter>,
    pub deadline_exceeded: Counter,
    pub ws_connections: Gauge<i64, AtomicI64>,
    pub ws_rejected: Counter,
    pub sse_keepalives: Counter,
    pub connections_open: Gauge<i64, AtomicI64>,
    pub connections_limit: Gauge<i64, AtomicI64>,
    pub connections_refused: Family<RefusedLabels, Counter>,
    pub connections_closed: Family<ClosedLabels, Counter>,
    pub accept_errors: Counter,
    /// The job queue's families (`gateway_jobs*`, see [`super::jobs`]).
    pub jobs: JobMetrics,
    /// The response cache's families (`gateway_cache_*`).
    pub cache: CacheMetrics,
    /// The shared rate limits' families (`gateway_rate_limit_*`).
    pub rate_limits: RateLimitMetrics,
    /// Latency, first token, tokens, upstream errors, readiness ([`super::llm`]).
    pub llm: LlmMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RouteStatus, Counter>::default();
        registry.register(
            "gateway_requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::<i64, AtomicI64>::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let in_flight = gauge(
            &mut registry,
            "gateway_requests_in_flight",
            "Requests holding an inbound place (a stream until its last byte)",
        );
        let queued = gauge(
            &mut registry,
            "gateway_requests_queued",
            "Requests waiting for an inbound place",
        );
        let limit = gauge(
            &mut registry,
            "gateway_requests_limit",
            "Inbound places (--max-concurrent-requests)",
        );
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "gateway_shed",
            "Requests refused with 503 by the gateway's own limits, by reason",
            shed.clone(),
        );
        let rate_limited = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "gateway_rate_limited",
            "Requests refused with 429, by whose limit (key or provider)",
            rate_limited.clone(),
        );
        let upstream_in_use = Family::<ProviderLabel, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "gateway_upstream_in_use",
            "Upstream requests open per provider (over HTTP/1.1, connections in use)",
            upstream_in_use.clone(),
        );
        let upstream_limit = Family::<ProviderLabel, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "gateway_upstream_limit",
            "A provider's max-concurrent",
            upstream_limit.clone(),
        );
        let pool_running = gauge(
            &mut registry,
            "gateway_blocking_pool_running",
            "Blocking-pool jobs running",
        );
        let pool_queued = gauge(
            &mut registry,
            "gateway_blocking_pool_queued",
            "Blocking-pool jobs waiting for a thread",
        );
        let pool_threads = gauge(
            &mut registry,
            "gateway_blocking_pool_threads",
            "Blocking-pool size (--blocking-threads)",
        );
        // 0.5 ms .. ~4 s: a healthy probe is well under a millisecond, a starved one seconds.
        let health_probe = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        registry.register(
            "gateway_health_probe_seconds",
            "Time /health waited for its blocking-pool job",
            health_probe.clone(),
        );
        let live_streams = gauge(
            &mut registry,
            "gateway_live_streams",
            "Response bodies being relayed",
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "gateway_upstream_attempts",
            "Upstream attempts by provider and kind (first, retry, hedge)",
            attempts.clone(),
        );
        let retries_given_up = Family::<GiveUpLabels, Counter>::default();
        registry.register(
            "gateway_retries_given_up",
            "Failed attempts not retried, by reason (max_retries, budget, retry_after_too_long)",
            retries_given_up.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let hedges_fired = counter(
            &mut registry,
            "gateway_hedges_fired",
            "Hedge attempts sent because an attempt had not succeeded within the hedge delay",
        );
        let hedges_won = counter(
            &mut registry,
            "gateway_hedges_won",
            "Hedged requests answered by a hedge rather than the first attempt",
        );
        let hedges_cancelled = counter(
            &mut registry,
            "gateway_hedges_cancelled",
            "Attempts cancelled because another attempt of the same request won",
        );
        let hedges_skipped = Family::<HedgeSkipLabels, Counter>::default();
        registry.register(
            "gateway_hedges_skipped",
            "Hedges not sent, by reason (budget)",
            hedges_skipped.clone(),
        );
        let deadline_exceeded = counter(
            &mut registry,
            "gateway_deadline_exceeded",
            "Requests answered 504 because no attempt succeeded within the deadline",
        );
        let ws_connections = gauge(
            &mut registry,
            "gateway_ws_connections",
            "Live /v1/chat/ws connections",
        );
        let ws_rejected = counter(
            &mut registry,
            "gateway_ws_rejected",
            "WebSocket connections closed with 1013 because --ws-max-connections were live",
        );
        let sse_keepalives = counter(
            &mut registry,
            "gateway_sse_keepalives",
            "Keep-alive comments sent on idle SSE streams",
        );
        let connections_open = gauge(
            &mut registry,
            "gateway_connections_open",
            "Connections open on the main listener, upgraded WebSockets included",
        );
        let connections_limit = gauge(
            &mut registry,
            "gateway_connections_limit",
            "Connections the main listener keeps open at once (--max-connections)",
        );
        let connections_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "gateway_connections_refused",
            "Connections closed as soon as they were accepted, by reason (max_connections)",
            connections_refused.clone(),
        );
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "gateway_connections_closed",
            "Connections the gateway closed, by reason (header_timeout, idle_timeout, shutdown)",
            connections_closed.clone(),
        );
        let accept_errors = counter(
            &mut registry,
            "gateway_accept_errors",
            "accept() failures other than a client that left (EMFILE: out of descriptors)",
        );
        let jobs = JobMetrics::register(&mut registry);
        let cache = CacheMetrics::register(&mut registry);
        let rate_limits = RateLimitMetrics::register(&mut registry);
        let llm = LlmMetrics::register(&mut registry);
        // Every known label value starts at 0, so a dashboard's `rate()` sees the first event
        // as an increase instead of a series appearing from nowhere.
        for reason in ShedReason::ALL {
            let _ = shed.get_or_create(&ShedLabels { reason });
        }
        for scope in RateLimitScope::ALL {
            let _ = rate_limited.get_or_create(&RateLimitLabels { scope });
        }
        for reason in GiveUpReason::ALL {
            let _ = retries_given_up.get_or_create(&GiveUpLabels { reason });
        }
        for reason in HedgeSkipReason::ALL {
            let _ = hedges_skipped.get_or_create(&HedgeSkipLabels { reason });
        }
        for reason in ConnectionRefusal::ALL {
            let _ = connections_refused.get_or_create(&RefusedLabels { reason });
        }
        for reason in ConnectionClose::ALL {
            let _ = connections_closed.get_or_create(&ClosedLabels { reason });
        }
        Self {
            registry,
            requests,
            in_flight,
            queued,
            limit,
            shed,
            rate_limited,
            upstream_in_use,
            upstream_limit,
            pool_running,
            pool_queued,
            pool_threads,
            health_probe,
            live_streams,
            attempts,
            retries_given_up,
            hedges_fired,
            hedges_won,
            hedges_cancelled,
            hedges_skipped,
            deadline_exceeded,
            ws_connections,
            ws_rejected,
            sse_keepalives,
            connections_open,
            connections_limit,
            connections_refused,
            connections_closed,
            accept_errors,
            jobs,
            cache,
            rate_limits,
            llm,
        }
    }
}

impl Metrics {
    pub fn shed(&self, reason: ShedReason) {
        self.shed.get_or_create(&ShedLabels { reason }).inc();
    }

    pub fn rate_limited(&self, scope: RateLimitScope) {
        self.rate_limited
            .get_or_create(&RateLimitLabels { scope })
            .inc();
    }

    pub fn connection_refused(&self, reason: ConnectionRefusal) {
        self.connections_refused
            .get_or_create(&RefusedLabels { reason })
            .inc();
    }

    pub fn connection_closed(&self, reason: ConnectionClose) {
        self.connections_closed
            .get_or_create(&ClosedLabels { reason })
            .inc();
    }

    /// The registry in Prometheus text (OpenMetrics).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::prometheus::sample;

    #[test]
    fn families_are_named_and_sampled() {
        let metrics = Metrics::default();
        metrics.shed(ShedReason::QueueFull);
        metrics.rate_limited(RateLimitScope::Key);
        metrics.health_probe.observe(0.001);
        let text = metrics.encode().expect("encode");
        assert_eq!(
            sample(&text, "gateway_shed_total{reason=\"queue_full\"}"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "gateway_rate_limited_total{scope=\"key\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "gateway_health_probe_seconds_count"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "gateway_nothing"), None);
    }
}
