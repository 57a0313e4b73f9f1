//! The series an operator of an LLM gateway asks for first: how long requests take, how long to
//! the first token, how fast the tokens come, how many, and which provider fails; plus the
//! admin plane's readiness, so an alert can see what `/readyz` sees.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `gateway_request_duration_seconds` | histogram | `route`, `status`: from arrival to the response's last byte (a stream's whole life) |
//! | `gateway_upstream_ttft_seconds` | histogram | `provider`, `model`: from the first upstream attempt to the first byte of content |
//! | `gateway_upstream_inter_token_seconds` | histogram | `provider`, `model`: between two SSE events that carry data |
//! | `gateway_upstream_stream_duration_seconds` | histogram | `provider`, `model`: from the first attempt to the last byte, completed answers only |
//! | `gateway_upstream_output_tokens` | histogram | `provider`, `model`: tokens per answer, from `usage` when the upstream sent it, else one per content event |
//! | `gateway_upstream_errors_total` | counter | `provider`, `kind`: failed attempts and broken streams (see [`UpstreamErrorKind`]) |
//! | `gateway_readiness_ready` | gauge | 1 when `/readyz` would answer 200, else 0 |
//! | `gateway_readiness_delay_seconds` / `_threshold_seconds` | gauge | `check` (`runtime`, `blocking_pool`): the latest delay, and the threshold it is judged by |
//!
//! Why these buckets: an LLM request lives between tens of milliseconds (a cached or tiny answer)
//! and minutes (a long generation), so the latency histograms run from 10 ms to 120 s, denser where
//! a first token usually lands (0.1 to 5 s). The gap between tokens is another scale (a few to a
//! few hundred milliseconds), so it gets buckets from 1 ms to 10 s. Fixed buckets cost one atomic
//! add per observation and aggregate across instances, which a summary's quantiles do not.
//!
//! Label values stay bounded: `route` is the router's pattern, `provider` a configured name,
//! `model` a configured model or `other` ([`OTHER_MODEL`]); a client cannot mint series.
//!
//! [`OTHER_MODEL`]: super::labels::OTHER_MODEL

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::labels::{
    ProviderModelLabels, ReadinessCheck, ReadinessLabels, RouteStatus, UpstreamErrorKind,
    UpstreamErrorLabels,
};

/// 10 ms to 120 s, for a request, a first token, a stream.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];
/// 1 ms to 10 s, for the gap between two tokens.
pub const GAP_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// 1 to 32768 tokens, doubling.
pub const TOKEN_BUCKETS: [f64; 16] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0,
    16384.0, 32768.0,
];

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn gap() -> Histogram {
    Histogram::new(GAP_BUCKETS)
}

fn tokens() -> Histogram {
    Histogram::new(TOKEN_BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The families above, registered in the gateway's one registry.
#[derive(Debug)]
pub struct LlmMetrics {
    pub request_duration: Histograms<RouteStatus>,
    pub ttft: Histograms<ProviderModelLabels>,
    pub inter_token: Histograms<ProviderModelLabels>,
    pub stream_duration: Histograms<ProviderModelLabels>,
    pub output_tokens: Histograms<ProviderModelLabels>,
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    pub readiness_ready: Gauge<i64, AtomicI64>,
    pub readiness_delay: Family<ReadinessLabels, FloatGauge>,
    pub readiness_threshold: Family<ReadinessLabels, FloatGauge>,
}

/// A histogram family with `make`'s buckets, registered as `name`.
fn histograms<L>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    make: fn() -> Histogram,
) -> Histograms<L>
where
    L: prometheus_client::encoding::EncodeLabelSet
        + Clone
        + std::hash::Hash
        + Eq
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let family = Family::new_with_constructor(make);
    registry.register(name, help, family.clone());
    family
}

impl LlmMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let request_duration = histograms(
            registry,
            "gateway_request_duration_seconds",
            "From a request's arrival to its response's last byte, by route and status",
            latency,
        );
        let ttft = histograms(
            registry,
            "gateway_upstream_ttft_seconds",
            "From the first upstream attempt to the first byte of content, by provider and model",
            latency,
        );
        let inter_token = histograms(
            registry,
            "gateway_upstream_inter_token_seconds",
            "Between two SSE events carrying data on a relayed stream, by provider and model",
            gap,
        );
        let stream_duration = histograms(
            registry,
            "gateway_upstream_stream_duration_seconds",
            "From the first upstream attempt to the last byte of a completed answer",
            latency,
        );
        let output_tokens = histograms(
            registry,
            "gateway_upstream_output_tokens",
            "Tokens per answer: usage.completion_tokens when sent, else content events counted",
            tokens,
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "gateway_upstream_errors",
            "Failed upstream attempts and broken streams, by provider and kind",
            upstream_errors.clone(),
        );
        let readiness_ready = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "gateway_readiness_ready",
            "1 when the admin plane's /readyz answers 200 (ready), else 0",
            readiness_ready.clone(),
        );
        let readiness_delay = Family::<ReadinessLabels, FloatGauge>::default();
        registry.register(
            "gateway_readiness_delay_seconds",
            "The latest delay of a readiness probe (an outstanding probe counts its age)",
            readiness_delay.clone(),
        );
        let readiness_threshold = Family::<ReadinessLabels, FloatGauge>::default();
        registry.register(
            "gateway_readiness_threshold_seconds",
            "The delay past which a readiness check fails",
            readiness_threshold.clone(),
        );
        Self {
            request_duration,
            ttft,
            inter_token,
            stream_duration,
            output_tokens,
            upstream_errors,
            readiness_ready,
            readiness_delay,
            readiness_threshold,
        }
    }

    /// The counters of one provider's errors, every kind at 0 from the start, in
    /// `UpstreamErrorKind::ALL`'s order: looked up once, an error then costs an atomic add.
    pub fn error_counters(&self, provider: &str) -> [Counter; UpstreamErrorKind::ALL.len()] {
        UpstreamErrorKind::ALL.map(|kind| {
            self.upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    provider: provider.to_owned(),
                    kind,
                })
                .clone()
        })
    }

    /// The admin plane's latest readiness: the verdict, and each check's delay and threshold.
    pub fn set_readiness(&self, ready: bool, checks: &[(ReadinessCheck, f64, f64)]) {
        self.readiness_ready.set(i64::from(ready));
        for &(check, delay, threshold) in checks {
            let labels = ReadinessLabels { check };
            self.readiness_delay.get_or_create(&labels).set(delay);
            self.readiness_threshold
                .get_or_create(&labels)
                .set(threshold);
        }
    }
}
