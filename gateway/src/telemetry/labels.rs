//! The label sets of `/metrics`, and the label values as enums: a misspelt label does not
//! compile.
//!
//! A label set is a struct deriving prometheus-client's `EncodeLabelSet`: its field names are
//! the label names. A label value the gateway chooses (why a request was shed, whose rate limit
//! refused it, which kind of attempt it was) is an enum, so `shed(ShedReason::QueueFull)` is
//! checked by the compiler where `shed("queue_ful")` used to count a new series, and each enum's
//! `ALL` lets [`super::metrics::Metrics`] create every series at 0 up front.
//!
//! The enums implement `EncodeLabelValue` through `label_values!` (below) rather than its derive: the
//! derive writes the variant's Rust name (`QueueFull`), and the values must stay the ones every
//! dashboard already queries (`queue_full`), byte for byte. Each value's text sits beside its
//! variant, once.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::admission::Shed;

/// Declares label-value enums: each variant with its text, `ALL`, `as_str` and the encoding.
macro_rules! label_values {
    ($(
        $(#[$doc:meta])*
        $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }
    )+) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in declaration order (so `value as usize` indexes it).
            pub const ALL: [Self; [$(stringify!($variant)),+].len()] = [$(Self::$variant),+];

            /// The label value, as `/metrics` shows it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    )+};
}

label_values! {
    /// Why the gateway answered 503 itself: `gateway_shed_total{reason}`, and the error's `code`.
    ShedReason {
        /// Every inbound place taken and the wait queue full.
        QueueFull => "queue_full",
        /// Waited `--max-queue-wait-ms` for an inbound place.
        QueueTimeout => "queue_timeout",
        /// A provider's `max-concurrent` slots stayed taken for `pool-timeout-ms`.
        ProviderBusy => "provider_busy",
        /// `/v1/solve`'s bounded queue was full.
        CpuQueueFull => "cpu_queue_full",
        /// A drain's grace was over: new work goes to another instance.
        ShuttingDown => "shutting_down",
    }

    /// Whose rate limit answered 429: `gateway_rate_limited_total{scope}`.
    RateLimitScope {
        /// `--rate-limit-rpm`, per API key (or client IP).
        Key => "key",
        /// A provider's `requests-per-minute`.
        Provider => "provider",
    }

    /// An upstream attempt: `gateway_upstream_attempts_total{provider,kind}`.
    AttemptKind {
        /// The request's first attempt.
        First => "first",
        /// After a failed attempt.
        Retry => "retry",
        /// Beside a slow attempt, after the hedge delay.
        Hedge => "hedge",
    }

    /// A retryable failure not retried: `gateway_retries_given_up_total{reason}`.
    GiveUpReason {
        /// `--retries` (or `--hedge-max-attempts`) used up.
        MaxRetries => "max_retries",
        /// The provider's retry budget had no token.
        Budget => "budget",
        /// The upstream asked to wait longer than `--retry-after-max-ms`.
        RetryAfterTooLong => "retry_after_too_long",
    }

    /// A hedge not sent: `gateway_hedges_skipped_total{reason}`.
    HedgeSkipReason {
        /// The provider's hedge budget had no token.
        Budget => "budget",
    }

    /// A connection the main listener closed as soon as it accepted it:
    /// `gateway_connections_refused_total{reason}`.
    ConnectionRefusal {
        /// `--max-connections` connections were open.
        MaxConnections => "max_connections",
    }

    /// A connection the gateway closed on its own: `gateway_connections_closed_total{reason}`.
    ConnectionClose {
        /// No whole request head within `--header-read-timeout-ms`.
        HeaderTimeout => "header_timeout",
        /// A keep-alive connection without a request for `--idle-timeout-secs`.
        IdleTimeout => "idle_timeout",
        /// Closed by the drain: idle when the gateway began shutting down, or still open at the
        /// drain deadline.
        Shutdown => "shutdown",
    }

    /// Where a cache hit came from: `gateway_cache_hits_total{source}`.
    CacheSource {
        /// The in-process tier (moka).
        Memory => "memory",
        /// The shared tier (Redis), then kept in process too.
        Redis => "redis",
        /// An identical request in flight: this one waited for its answer (single-flight).
        InFlight => "in_flight",
    }

    /// A tier an answer was written to: `gateway_cache_stores_total{tier}`.
    CacheTier {
        Memory => "memory",
        Redis => "redis",
    }

    /// Why a request did not use the cache at all: `gateway_cache_bypasses_total{reason}`.
    CacheBypass {
        /// `--cache-mode deterministic` and neither `temperature` 0 nor a `seed`.
        NotDeterministic => "not_deterministic",
        /// `Cache-Control: no-cache, no-store`: neither read nor write.
        RequestHeaders => "cache_control",
        /// No API key and no client address: nobody to keep the answer for.
        NoCaller => "no_caller",
    }

    /// Why an answer that went upstream was not stored: `gateway_cache_not_stored_total{reason}`.
    CacheSkip {
        /// `Cache-Control: no-store`.
        NoStore => "no_store",
        /// The upstream answered with a status other than 200.
        Status => "status",
        /// A choice ended other than `stop` or `length` (`tool_calls`, `content_filter`, ...).
        FinishReason => "finish_reason",
        /// The answer did not end cleanly: cut, failed, or its client left first.
        Incomplete => "incomplete",
        /// Larger than a quarter of `--cache-max-bytes` (8 MiB without an in-process tier).
        TooLarge => "too_large",
        /// Not a chat completion the cache can replay (not JSON, no choices, logprobs).
        Unreadable => "unreadable",
    }

    /// Why the in-process tier dropped an answer: `gateway_cache_evictions_total{cause}`.
    CacheEviction {
        /// To stay within `--cache-max-bytes`.
        Size => "size",
        /// Older than `--cache-ttl-secs`.
        Expired => "expired",
    }

    /// A Redis call of the cache: `gateway_cache_redis_errors_total{op,kind}`.
    RedisOp {
        Get => "get",
        Set => "set",
    }

    /// How a Redis call failed (see [`crate::redis::RedisFailure`]).
    RedisFailureKind {
        /// No answer within `--redis-timeout-ms`.
        Timeout => "timeout",
        /// An error answer, or a refused or broken connection.
        Error => "error",
    }
}

label_values! {
    /// A job's status: `gateway_jobs{status}`, `gateway_jobs_finished_total{status}`, and the
    /// `status` field of every `/v1/jobs` answer (OpenAI's names).
    JobStatus {
        /// Waiting for a worker.
        Queued => "queued",
        /// A worker holds it under a lease.
        InProgress => "in_progress",
        /// The upstream answered; `result` holds its body.
        Completed => "completed",
        /// The upstream refused it, or its lease expired `--job-max-attempts` times.
        Failed => "failed",
        /// Cancelled by its owner.
        Cancelled => "cancelled",
        /// Still queued `--job-ttl-secs` after it was submitted.
        Expired => "expired",
    }

    /// Why `POST /v1/jobs` was refused with 503: `gateway_jobs_refused_total{reason}`.
    JobRefusal {
        /// `--max-queued-jobs` jobs were waiting.
        QueueFull => "queue_full",
        /// The store could not commit the job (so it was not accepted).
        StoreUnavailable => "store_unavailable",
    }
}

label_values! {
    /// Why an upstream attempt failed: `gateway_upstream_errors_total{provider,kind}`. The
    /// gateway's own refusals (`provider_busy`, `provider_rate_limited`, `deadline_exceeded`)
    /// are not upstream errors: they have series of their own.
    UpstreamErrorKind {
        /// Refused, unresolvable, or its proxy could not be reached: never reached it.
        Unreachable => "unreachable",
        /// No connection within the connect timeout.
        ConnectTimeout => "connect_timeout",
        /// Connected, then silent past the read timeout.
        ReadTimeout => "read_timeout",
        /// Reset or broken after the request was sent, before an answer.
        Failed => "failed",
        /// The body broke off: before its first byte (a hedged attempt) or mid-stream.
        BrokeOff => "broke_off",
        /// Answered 429.
        Status429 => "status_429",
        /// Answered 500, 502, 503 or 504 (what a retry may cure).
        Status5xx => "status_5xx",
    }

    /// A readiness check of the admin plane: `gateway_readiness_delay_seconds{check}`.
    ReadinessCheck {
        /// A task spawned on the main runtime, until a worker polls it.
        Runtime => "runtime",
        /// A job on the counted blocking pool, until a thread starts it.
        BlockingPool => "blocking_pool",
    }
}

/// The `model` label of a model the config does not name: whatever a client sends to a
/// catch-all provider lands here, so a client cannot add series by inventing model names.
pub const OTHER_MODEL: &str = "other";

/// The LLM series' labels: `gateway_upstream_ttft_seconds{provider,model}`, ...
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderModelLabels {
    pub provider: String,
    /// A model named in the config, or [`OTHER_MODEL`].
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    pub provider: String,
    pub kind: UpstreamErrorKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadinessLabels {
    pub check: ReadinessCheck,
}

impl JobStatus {
    /// The status named `text` (as stored, as a `?status=` filter), if there is one.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Completed, failed, cancelled or expired: it will not change again.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::InProgress)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobStatusLabels {
    pub status: JobStatus,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobRefusalLabels {
    pub reason: JobRefusal,
}

/// A limit the admission refused at is shed with the reason of the same name.
impl From<Shed> for ShedReason {
    fn from(shed: Shed) -> Self {
        match shed {
            Shed::QueueFull => ShedReason::QueueFull,
            Shed::QueueTimeout => ShedReason::QueueTimeout,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    pub reason: ShedReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub scope: RateLimitScope,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub provider: String,
    pub kind: AttemptKind,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GiveUpLabels {
    pub reason: GiveUpReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HedgeSkipLabels {
    pub reason: HedgeSkipReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub reason: ConnectionRefusal,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub reason: ConnectionClose,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheSourceLabels {
    pub source: CacheSource,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheTierLabels {
    pub tier: CacheTier,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheBypassLabels {
    pub reason: CacheBypass,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheSkipLabels {
    pub reason: CacheSkip,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheEvictionLabels {
    pub cause: CacheEviction,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisErrorLabels {
    pub op: RedisOp,
    pub kind: RedisFailureKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values dashboards and alerts already query: renaming a variant must not change them.
    #[test]
    fn values_are_the_published_ones() {
        let texts = |values: Vec<&'static str>| values.join(",");
        assert_eq!(
            texts(ShedReason::ALL.iter().map(|r| r.as_str()).collect()),
            "queue_full,queue_timeout,provider_busy,cpu_queue_full,shutting_down"
        );
        assert_eq!(
            texts(RateLimitScope::ALL.iter().map(|s| s.as_str()).collect()),
            "key,provider"
        );
        assert_eq!(
            texts(AttemptKind::ALL.iter().map(|k| k.as_str()).collect()),
            "first,retry,hedge"
        );
        assert_eq!(
            texts(GiveUpReason::ALL.iter().map(|r| r.as_str()).collect()),
            "max_retries,budget,retry_after_too_long"
        );
        assert_eq!(
            texts(HedgeSkipReason::ALL.iter().map(|r| r.as_str()).collect()),
            "budget"
        );
        assert_eq!(
            texts(ConnectionRefusal::ALL.iter().map(|r| r.as_str()).collect()),
            "max_connections"
        );
        assert_eq!(
            texts(ConnectionClose::ALL.iter().map(|r| r.as_str()).collect()),
            "header_timeout,idle_timeout,shutdown"
        );
        assert_eq!(
            texts(JobStatus::ALL.iter().map(|s| s.as_str()).collect()),
            "queued,in_progress,completed,failed,cancelled,expired"
        );
        assert_eq!(JobStatus::parse("in_progress"), Some(JobStatus::InProgress));
        assert_eq!(JobStatus::parse("done"), None);
        assert_eq!(
            texts(CacheSource::ALL.iter().map(|r| r.as_str()).collect()),
            "memory,redis,in_flight"
        );
        assert_eq!(
            texts(CacheBypass::ALL.iter().map(|r| r.as_str()).collect()),
            "not_deterministic,cache_control,no_caller"
        );
        assert_eq!(
            texts(CacheSkip::ALL.iter().map(|r| r.as_str()).collect()),
            "no_store,status,finish_reason,incomplete,too_large,unreadable"
        );
        assert_eq!(
            texts(CacheEviction::ALL.iter().map(|r| r.as_str()).collect()),
            "size,expired"
        );
        assert_eq!(
            texts(UpstreamErrorKind::ALL.iter().map(|r| r.as_str()).collect()),
            "unreachable,connect_timeout,read_timeout,failed,broke_off,status_429,status_5xx"
        );
        assert_eq!(
            texts(ReadinessCheck::ALL.iter().map(|r| r.as_str()).collect()),
            "runtime,blocking_pool"
        );
        for (index, kind) in AttemptKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index, "ALL is in declaration order");
        }
    }
}
