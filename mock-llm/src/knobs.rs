//! Pacing knobs of a chat completion: start-up defaults, per-request header overrides, and the
//! jitter / heavy-tail model that makes delays vary the way real ones do.
//!
//! A gateway's timeouts, buffering and health checks all hinge on *when* bytes arrive. The slow
//! first token (TTFT: prompt processing, queueing at the provider) is when a gateway holds a
//! connection with nothing to show for it; the inter-token latency (ITL) is the pace at which a
//! stream trickles afterwards. Both are set per server (`--ttft-ms`, `--itl-ms`, `--tokens`) and
//! can be overridden per request with headers, so one mock serves fast tests and slow demos at
//! once:
//!
//! | header | value | default |
//! |---|---|---|
//! | `x-mock-ttft-ms` | 0..=60000 | `--ttft-ms` |
//! | `x-mock-itl-ms` | 0..=60000 | `--itl-ms` |
//! | `x-mock-tokens` | 1..=100000 | `--tokens` |
//! | `x-mock-fault` | a fault name, or `none` | roll against `--fault-rate` |
//!
//! A header with a bad value is a 400 whose `param` is the header's name: a typo in a test must
//! not silently fall back to the default.
//!
//! # The delay model ([`Spread`])
//!
//! Every delay (the TTFT, and each ITL separately) starts from its base value `d` and becomes
//! `d × (1 + jitter × u)` with `u` uniform in `[-1, 1)`; then, with probability `heavy_tail`, that
//! is multiplied by [`HEAVY_TAIL_FACTOR`] (10). Jitter is the everyday wobble; the heavy tail is
//! the occasional request that is ten times slower than the rest, which is what p99 latencies and
//! idle timeouts are made of. Both default to 0 (exact delays).

use std::time::Duration;

use axum::http::HeaderMap;

use crate::Config;
use crate::error::ApiError;
use crate::faults::{self, Fault};

/// Upper bound of one base delay, so one request cannot hold a connection for days.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Upper bound of output tokens per completion.
pub const MAX_TOKENS: u32 = 100_000;
/// How much slower a delay is when the heavy tail strikes.
pub const HEAVY_TAIL_FACTOR: u32 = 10;

pub const TTFT_HEADER: &str = "x-mock-ttft-ms";
pub const ITL_HEADER: &str = "x-mock-itl-ms";
pub const TOKENS_HEADER: &str = "x-mock-tokens";
pub const FAULT_HEADER: &str = "x-mock-fault";

/// The pacing and fault choice of one request, after header overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Knobs {
    /// Base time to first token, before jitter.
    pub ttft: Duration,
    /// Base time between tokens, before jitter.
    pub itl: Duration,
    /// Tokens to generate, before `max_tokens` caps it.
    pub tokens: u32,
    /// `Some` when `x-mock-fault` forced the choice: `Some(None)` is `x-mock-fault: none`.
    pub forced_fault: Option<Option<Fault>>,
}

impl Knobs {
    /// The server defaults, overridden by the request's `x-mock-*` headers.
    pub fn from_headers(config: &Config, headers: &HeaderMap) -> Result<Self, ApiError> {
        let ttft_ms = number(headers, TTFT_HEADER, 0, MAX_DELAY_MS)?.unwrap_or(config.ttft_ms);
        let itl_ms = number(headers, ITL_HEADER, 0, MAX_DELAY_MS)?.unwrap_or(config.itl_ms);
        let tokens = number(headers, TOKENS_HEADER, 1, u64::from(MAX_TOKENS))?
            .map_or(config.tokens, |n| u32::try_from(n).unwrap_or(MAX_TOKENS));
        let forced_fault = match text(headers, FAULT_HEADER)? {
            None => None,
            Some("none") => Some(None),
            Some(name) => Some(Some(name.parse::<Fault>().map_err(|_| {
                header_error(
                    FAULT_HEADER,
                    format!(
                        "header {FAULT_HEADER} must be one of {}, or none; got {name:?}",
                        faults::names()
                    ),
                )
            })?)),
        };
        Ok(Self {
            ttft: Duration::from_millis(ttft_ms),
            itl: Duration::from_millis(itl_ms),
            tokens,
            forced_fault,
        })
    }
}

/// How delays vary around their base value (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Fraction in `0..=1`: the delay is uniform within `±jitter × base`.
    pub jitter: f64,
    /// Probability in `0..=1` that a delay is [`HEAVY_TAIL_FACTOR`] times longer.
    pub heavy_tail: f64,
}

impl Spread {
    pub fn from_config(config: &Config) -> Self {
        Self {
            jitter: config.jitter,
            heavy_tail: config.heavy_tail,
        }
    }

    /// One delay drawn around `base`. Always draws two numbers, so later draws stay aligned
    /// whatever the knobs are.
    pub fn apply(&self, base: Duration, rng: &mut fastrand::Rng) -> Duration {
        let u = rng.f64() * 2.0 - 1.0;
        let tail = rng.f64() < self.heavy_tail;
        let factor = (1.0 + self.jitter * u).max(0.0);
        let delay = base.mul_f64(factor);
        if tail {
            delay * HEAVY_TAIL_FACTOR
        } else {
            delay
        }
    }
}

/// Parses a fraction in `0..=1` for `--jitter`, `--heavy-tail` and `--fault-rate`.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let value: f64 = s
        .parse()
        .map_err(|_| format!("expected a number between 0 and 1, got {s:?}"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("expected a number between 0 and 1, got {value}"))
    }
}

fn text<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .map(str::trim)
                .map_err(|_| header_error(name, format!("header {name} is not visible ASCII")))
        })
        .transpose()
}

fn number(
    headers: &HeaderMap,
    name: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    let Some(raw) = text(headers, name)? else {
        return Ok(None);
    };
    match raw.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(header_error(
            name,
            format!("header {name} must be an integer between {min} and {max}, got {raw:?}"),
        )),
    }
}

fn header_error(name: &'static str, message: String) -> ApiError {
    ApiError::invalid(name, "invalid_header", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_spread_is_exact() {
        let spread = Spread {
            jitter: 0.0,
            heavy_tail: 0.0,
        };
        let mut rng = fastrand::Rng::with_seed(1);
        let base = Duration::from_millis(100);
        assert!((0..100).all(|_| spread.apply(base, &mut rng) == base));
    }

    #[test]
    fn jitter_stays_in_band_and_tail_multiplies() {
        let mut rng = fastrand::Rng::with_seed(2);
        let base = Duration::from_millis(100);
        let jitter = Spread {
            jitter: 0.5,
            heavy_tail: 0.0,
        };
        let delays: Vec<_> = (0..200).map(|_| jitter.apply(base, &mut rng)).collect();
        assert!(delays.iter().all(|d| (50..=150).contains(&d.as_millis())));
        assert!(delays.iter().any(|d| *d != base));
        let tail = Spread {
            jitter: 0.0,
            heavy_tail: 1.0,
        };
        assert_eq!(tail.apply(base, &mut rng), base * HEAVY_TAIL_FACTOR);
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("0.25"), Ok(0.25));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("-0.1").is_err());
        assert!(parse_fraction("NaN").is_err());
        assert!(parse_fraction("lots").is_err());
    }
}
