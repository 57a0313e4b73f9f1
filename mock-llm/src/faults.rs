//! Injected faults, and the seeded randomness that decides when they strike.
//!
//! A gateway is judged by what it does when its upstream misbehaves: does it retry a 429 after
//! `Retry-After`, pass a 503 on, notice a connection cut mid-stream, give up on a stream that went
//! silent? Each of those needs an upstream that misbehaves *on purpose*, in a known way, at a
//! known rate. And a failing run is only worth something if it can be run again: with
//! `--seed`, the same sequence of requests meets the same sequence of faults and delays.
//!
//! # Reproducibility
//!
//! Every chat request gets its own small PRNG ([`request_rng`]), seeded from the server's seed and
//! the request's ordinal (0 for the first `POST /v1/chat/completions` since start-up, 1 for the
//! next, ...). Concurrent requests therefore do not share, and cannot reorder, one random stream:
//! request number 7 draws the same numbers whenever it arrives. Sequential requests are exactly
//! reproducible; concurrent ones are reproducible in aggregate (which request got number 7 depends
//! on arrival order). Each request draws in a fixed order whatever the knobs say: one number for
//! the fault roll, then the id, then two per delay (see [`crate::knobs::Spread`]). The sequence
//! for a seed is stable for a given build of the mock (it rests on `fastrand`'s wyrand).

use std::fmt;
use std::str::FromStr;

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// `Retry-After` of the `429` fault, in seconds. Also sent as `retry-after-ms`, which OpenAI's
/// own client libraries read first.
pub const RETRY_AFTER_SECS: u64 = 1;

/// The streaming faults strike after this many content tokens (or after `tokens - 1` when the
/// completion is shorter), so the client has seen a healthy start before things go wrong.
pub const FAULT_AFTER_TOKENS: u32 = 3;

/// Response header naming the fault injected into a response, so a person reading a client's
/// log can tell an injected failure from a real bug.
pub const FAULT_RESPONSE_HEADER: HeaderName = HeaderName::from_static("x-mock-fault");

/// What can go wrong, named as on the command line and in `x-mock-fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `429`: rate limited, with `Retry-After`, before any work.
    RateLimited,
    /// `500`: internal error, before any work.
    Internal,
    /// `503`: overloaded, before any work.
    Overloaded,
    /// `reset`: the connection is cut. Streaming: after [`FAULT_AFTER_TOKENS`] tokens, mid-body.
    /// Non-streaming: when that token would have been generated, before any response byte.
    Reset,
    /// `stall`: streaming: after [`FAULT_AFTER_TOKENS`] tokens, nothing more, ever, until the
    /// client hangs up. Non-streaming: no response, ever, until the client hangs up.
    Stall,
    /// `slow`: the heavy tail on demand: the first token comes [`SLOW_FACTOR`] times later
    /// than the TTFT says; the rest is normal. What a hedged request is for.
    Slow,
}

/// How much later the first token of a `slow` request comes.
pub const SLOW_FACTOR: u32 = 10;

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::RateLimited,
        Fault::Internal,
        Fault::Overloaded,
        Fault::Reset,
        Fault::Stall,
        Fault::Slow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::RateLimited => "429",
            Fault::Internal => "500",
            Fault::Overloaded => "503",
            Fault::Reset => "reset",
            Fault::Stall => "stall",
            Fault::Slow => "slow",
        }
    }

    /// Position in [`Fault::ALL`], for per-fault counters.
    pub fn index(self) -> usize {
        match self {
            Fault::RateLimited => 0,
            Fault::Internal => 1,
            Fault::Overloaded => 2,
            Fault::Reset => 3,
            Fault::Stall => 4,
            Fault::Slow => 5,
        }
    }

    /// The error response of the faults that answer at once instead of generating
    /// (`429`, `500`, `503`); `None` for the faults that happen inside a response.
    pub fn error_response(self) -> Option<Response> {
        let marker = (FAULT_RESPONSE_HEADER, HeaderValue::from_static(self.name()));
        match self {
            Fault::RateLimited => {
                let error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Rate limit reached (injected by mock-llm). \
                         Please try again in {RETRY_AFTER_SECS}s."
                    ),
                )
                .with_kind("requests")
                .with_code("rate_limit_exceeded");
                let retry_after = [
                    (header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()),
                    (
                        HeaderName::from_static("retry-after-ms"),
                        (RETRY_AFTER_SECS * 1000).to_string(),
                    ),
                ];
                Some((retry_after, [marker], error).into_response())
            }
            Fault::Internal => {
                let error = ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The server had an error while processing your request (injected by mock-llm).",
                );
                Some(([marker], error).into_response())
            }
            Fault::Overloaded => {
                let error = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server is overloaded, please try again later (injected by mock-llm).",
                )
                .with_code("overloaded");
                Some(([marker], error).into_response())
            }
            Fault::Reset | Fault::Stall | Fault::Slow => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .into_iter()
            .find(|fault| fault.name() == s)
            .ok_or_else(|| format!("unknown fault {s:?}; expected one of {}", names()))
    }
}

/// `429, 500, 503, reset, stall, slow`, for error messages and help.
pub fn names() -> String {
    Fault::ALL.map(Fault::name).join(", ")
}

/// Which fault, if any, a request gets.
///
/// Draws exactly one number from `rng` in every case, so the draws after it (id, delays) do not
/// depend on whether a fault was configured or forced.
///
/// With `--fault-first N` (`first > 0`), the first N requests get `configured` and the rest
/// none, whatever the rate: a replica that fails and then recovers, the case a retry or a hedge
/// is for.
pub fn decide(
    configured: Option<Fault>,
    rate: f64,
    first: u64,
    ordinal: u64,
    forced: Option<Option<Fault>>,
    rng: &mut fastrand::Rng,
) -> Option<Fault> {
    let roll = rng.f64();
    match forced {
        Some(choice) => choice,
        None if first > 0 => configured.filter(|_| ordinal < first),
        None => configured.filter(|_| roll < rate),
    }
}

/// The PRNG of request number `ordinal` under `seed` (see the module docs).
pub fn request_rng(seed: u64, ordinal: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(splitmix64(seed ^ splitmix64(ordinal)))
}

/// SplitMix64's finaliser: spreads neighbouring seeds (0, 1, 2, ...) over the whole state space,
/// so request 1's numbers look nothing like request 0's.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for fault in Fault::ALL {
            assert_eq!(fault.name().parse::<Fault>(), Ok(fault));
            assert_eq!(Fault::ALL[fault.index()], fault);
        }
        assert!("timeout".parse::<Fault>().is_err());
    }

    #[test]
    fn rate_zero_never_and_one_always() {
        let mut rng = request_rng(1, 0);
        for _ in 0..100 {
            assert_eq!(
                decide(Some(Fault::Internal), 0.0, 0, 5, None, &mut rng),
                None
            );
            assert_eq!(
                decide(Some(Fault::Internal), 1.0, 0, 5, None, &mut rng),
                Some(Fault::Internal)
            );
            assert_eq!(
                decide(Some(Fault::Internal), 1.0, 0, 5, Some(None), &mut rng),
                None
            );
        }
    }

    #[test]
    fn the_first_requests_always_fault() {
        let mut rng = request_rng(1, 0);
        let slow = Some(Fault::Slow);
        assert_eq!(decide(slow, 0.0, 2, 0, None, &mut rng), slow);
        assert_eq!(decide(slow, 0.0, 2, 1, None, &mut rng), slow);
        assert_eq!(decide(slow, 0.0, 2, 2, None, &mut rng), None);
    }

    #[test]
    fn same_seed_and_ordinal_same_numbers() {
        assert_eq!(request_rng(7, 3).u64(..), request_rng(7, 3).u64(..));
        assert_ne!(request_rng(7, 3).u64(..), request_rng(7, 4).u64(..));
        assert_ne!(request_rng(7, 3).u64(..), request_rng(8, 3).u64(..));
    }
}
