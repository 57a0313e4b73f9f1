//! Lesson 9: retries and hedged requests, and the budgets that keep them from causing outages.
//!
//! Upstreams fail and stall: a 429 storm, a 503 while a replica restarts, one slow replica in
//! three. Sending the request again turns many of those into a fast answer. Sent without
//! bounds, the same extra requests turn a slow provider into a dead one: every client retries,
//! the load doubles, the provider slows further. So every extra attempt here is bounded three
//! ways: a count, a time, and a budget shared by all requests to the same provider.
//!
//! # Retries
//!
//! A failed attempt is retried when the request never reached the upstream (connect refused,
//! unresolvable, connect timeout: [`UpstreamError::never_reached`]) or the upstream answered
//! 429, 500, 502, 503 or 504, and **only before the first byte has gone to the client**: once a
//! `200` and part of a stream are out, a retry would send the client a second, different answer
//! glued to the first. Mid-stream failures are therefore never retried; the stream is cut.
//!
//! - at most `--retries` retries (and, for a hedged request, `--hedge-max-attempts` attempts
//!   in all, hedges included);
//! - the wait is exponential backoff with *full jitter*: a random time below
//!   `--retry-backoff-ms` x 2^n (capped at `--retry-backoff-max-ms`), so clients that failed
//!   together do not come back together;
//! - an upstream's `Retry-After` (or `retry-after-ms`) is honoured instead, up to
//!   `--retry-after-max-ms`; asking for longer, its answer goes to the client as it is;
//! - the **retry budget** (`--retry-budget-percent`, 20 % by default): retries may add at most
//!   that share of extra upstream requests, across all requests to a provider. When it is down for
//!   everyone, the budget runs out after a handful of retries and the gateway answers at once
//!   with the upstream's error instead of tripling its load.
//!
//! Refusals by the gateway's own limits (`provider_busy`, `provider_rate_limited`) are not
//! retried: they are the bounds working.
//!
//! # Hedged requests
//!
//! A hedge is a second copy of a request sent *before* the first has failed, because it is
//! taking too long: the tail of a latency distribution is usually one slow replica or one
//! unlucky queue, and a second try usually lands elsewhere. On a hedged route (`--hedge-routes`)
//! or a request asking for it (`x-gateway-hedge-delay-ms`):
//!
//! - the first attempt goes out; if it has not succeeded within the hedge delay (default
//!   300 ms), a second goes out, then a third, `--hedge-max-attempts` in all;
//! - "succeeded" means the first byte of the body arrived (for a stream: the first token), so a
//!   stream is hedged up to its first token and never after;
//! - the first success wins; the other attempts are dropped, which closes their upstream
//!   connections (the mock's `cancelled` counter sees it; in broken mode only at their next
//!   chunk, see [`crate::upstream::broken`]);
//! - an overall deadline (`--hedge-deadline-ms`, or `x-gateway-deadline-ms`) bounds the wait
//!   for a success: past it, **504** `deadline_exceeded`;
//! - the **hedge budget** (`--hedge-budget-percent`, 10 %): hedges may add at most that share
//!   of extra requests. An overloaded upstream is slow for everyone, so every request wants a
//!   hedge at once; the budget lets a few through and then none, so hedging can never double
//!   the load on a provider that is already struggling.
//!
//! A budget is a token bucket: every request deposits `percent / 100` of a token, every extra
//! attempt takes a whole one. It starts with one token and holds at most ten, so a quiet hour
//! does not bank a burst of hedges. Each provider owns its pair of budgets ([`Budgets`]): an
//! outage at one provider must not use up the retries of the others.
//!
//! Every response says how many upstream attempts it took in `x-gateway-attempts`; the metrics
//! count attempts by kind, hedges fired, won and cancelled, retries given up and deadlines, and
//! failed attempts by kind (`gateway_upstream_errors_total`). Each attempt runs in a span of its
//! own (`upstream_attempt{provider,kind}`) whose `traceparent` goes upstream with it, so a trace
//! shows a retry or a hedge as the separate request it is (see [`crate::telemetry::otel`]).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use futures_util::stream::{self, FuturesUnordered};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::config::Config;
use crate::error::ApiError;
use crate::telemetry::access::Access;
use crate::telemetry::labels::UpstreamErrorKind;
use crate::telemetry::metrics::{
    AttemptKind, GiveUpLabels, GiveUpReason, HedgeSkipLabels, HedgeSkipReason, Metrics,
};
use crate::telemetry::otel;
use crate::upstream::budget::Budgets;
use crate::upstream::providers::Provider;
use crate::upstream::{UpstreamError, UpstreamRequest, UpstreamResponse};

/// Turns hedging on for one request with this delay (10..=60000 ms), or off with 0.
pub const HEDGE_DELAY_HEADER: &str = "x-gateway-hedge-delay-ms";
/// The longest one request may wait for a successful attempt (100..=600000 ms), hedged or
/// not; unhedged, success is the response's head.
pub const DEADLINE_HEADER: &str = "x-gateway-deadline-ms";
/// On every response that reached the upstream (or tried to): the attempts made for it.
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-gateway-attempts");

/// The retry and hedging settings (the budgets are each provider's, see [`Budgets`]).
#[derive(Debug)]
pub struct Resilience {
    retries: u32,
    backoff: Duration,
    backoff_max: Duration,
    retry_after_max: Duration,
    hedge_routes: Vec<String>,
    hedge_delay: Duration,
    hedge_max_attempts: u32,
    hedge_deadline: Duration,
    /// Attempts by kind, hedges, retries given up, deadlines.
    metrics: Arc<Metrics>,
}

/// What one request may do: decided by its route and its headers.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Hedge after this long without success; `None`: no hedging.
    hedge_delay: Option<Duration>,
    /// Give up (504) when nothing succeeded by then.
    deadline: Option<Duration>,
}

impl Plan {
    /// The longest the request may wait for a successful attempt, if it has a deadline.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }
}

/// The answer to a request, and how many upstream attempts it took.
#[derive(Debug)]
pub struct Outcome {
    /// The upstream's response, or why there is none; the handler turns the failure into
    /// OpenAI's error shape (`ApiError::from`).
    pub result: Result<UpstreamResponse, UpstreamError>,
    pub attempts: u32,
}

/// Adds `x-gateway-attempts` to the response built from an [`Outcome`].
pub fn mark(mut response: Response, attempts: u32) -> Response {
    response
        .headers_mut()
        .insert(ATTEMPTS_HEADER, HeaderValue::from(attempts));
    response
}

/// What one attempt's end means.
enum Verdict {
    Success(UpstreamResponse),
    /// Worth another attempt: why (the metric's reason) and any wait the upstream asked for.
    Retry(Failure, Option<Duration>),
    Fail(Failure),
}

/// A failed attempt: the upstream's error response (relayed if it is the last word) or why
/// there was none.
type Failure = Result<UpstreamResponse, UpstreamError>;

impl Resilience {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            retries: config.retries,
            backoff: Duration::from_millis(config.retry_backoff_ms),
            backoff_max: Duration::from_millis(config.retry_backoff_max_ms),
            retry_after_max: Duration::from_millis(config.retry_after_max_ms),
            hedge_routes: config.hedge_routes.clone(),
            hedge_delay: Duration::from_millis(config.hedge_delay_ms),
            hedge_max_attempts: config.hedge_max_attempts,
            hedge_deadline: Duration::from_millis(config.hedge_deadline_ms),
        }
    }

    /// The plan for a request to `route`: the route's defaults, overridden by its headers.
    /// An invalid header value is a 400 naming the valid range.
    pub fn plan(&self, route: &str, headers: &HeaderMap) -> Result<Plan, ApiError> {
        let hedged = self.hedge_routes.iter().any(|r| r == route);
        let mut plan = Plan {
            hedge_delay: hedged.then_some(self.hedge_delay),
            deadline: hedged.then_some(self.hedge_deadline),
        };
        if let Some(ms) = header_ms(headers, HEDGE_DELAY_HEADER, |ms| {
            ms == 0 || (10..=60_000).contains(&ms)
        })? {
            plan.hedge_delay = (ms > 0).then(|| Duration::from_millis(ms));
            if ms > 0 && plan.deadline.is_none() {
                plan.deadline = Some(self.hedge_deadline);
            }
        }
        if let Some(ms) = header_ms(headers, DEADLINE_HEADER, |ms| (100..=600_000).contains(&ms))? {
            plan.deadline = Some(Duration::from_millis(ms));
        }
        Ok(plan)
    }

    /// Sends `request` to `provider` with the retries and hedges `plan` allows. The request's
    /// access record learns the provider, when the first attempt went and how many were made.
    pub async fn send(&self, provider: &Provider, request: UpstreamRequest, plan: Plan) -> Outcome {
        let access = Access::current();
        if let Some(access) = &access {
            access.set_provider(&provider.name);
            access.upstream_started();
        }
        let outcome = self.attempts(provider, request, plan).await;
        if let Some(access) = &access {
            access.set_attempts(outcome.attempts);
        }
        outcome
    }

    /// The attempts loop of [`Resilience::send`].
    async fn attempts(&self, provider: &Provider, request: UpstreamRequest, plan: Plan) -> Outcome {
        let metrics = &*self.metrics;
        let budgets = provider.budgets();
        budgets.retry().deposit();
        let hedging = plan.hedge_delay.is_some();
        if hedging {
            budgets.hedge().deposit();
        }
        let max_attempts = if hedging {
            self.hedge_max_attempts
        } else {
            1 + self.retries
        };
        let started = Instant::now();
        let deadline = plan.deadline.map(|d| started + d);
        let attempt = |kind: AttemptKind| {
            provider.count_attempt(kind);
            let request = request.clone();
            let span = tracing::debug_span!(
                "upstream_attempt",
                provider = %provider.name,
                kind = kind.as_str(),
                status = tracing::field::Empty,
            );
            async move { (kind, attempt(provider, request, hedging).await) }
                .instrument(span)
                .boxed()
        };
        let mut in_flight = FuturesUnordered::new();
        in_flight.push(attempt(AttemptKind::First));
        let mut fired = 1;
        let mut retries = 0;
        let mut hedge_at = plan.hedge_delay.map(|d| started + d);
        let mut retry_at: Option<Instant> = None;
        let mut last: Option<Failure> = None;
        loop {
            if in_flight.is_empty() && retry_at.is_none() {
                let result = last.unwrap_or(Err(UpstreamError::Internal("no attempt was made")));
                return Outcome {
                    result,
                    attempts: fired,
                };
            }
            // A hedge fires only beside a running attempt, never while a retry is pending.
            let hedge_due = hedge_at
                .filter(|_| fired < max_attempts && !in_flight.is_empty() && retry_at.is_none());
            tokio::select! {
                Some((kind, verdict)) = in_flight.next(), if !in_flight.is_empty() => match verdict {
                    Verdict::Success(response) => {
                        if hedging {
                            metrics.hedges_cancelled.inc_by(in_flight.len() as u64);
                            if kind == AttemptKind::Hedge {
                                metrics.hedges_won.inc();
                            }
                        }
                        return Outcome { result: Ok(response), attempts: fired };
                    }
                    Verdict::Retry(failure, asked) => {
                        last = Some(failure);
                        // With other attempts running, wait for them; the hedge timer goes on.
                        if in_flight.is_empty() {
                            retry_at = self.schedule_retry(budgets, fired, max_attempts, asked, retries);
                            retries += u32::from(retry_at.is_some());
                        }
                    }
                    Verdict::Fail(failure) => last = Some(failure),
                },
                () = sleep_until(hedge_due), if hedge_due.is_some() => {
                    if budgets.hedge().withdraw() {
                        metrics.hedges_fired.inc();
                        in_flight.push(attempt(AttemptKind::Hedge));
                        fired += 1;
                        hedge_at = plan.hedge_delay.map(|d| Instant::now() + d);
                    } else {
                        metrics.hedges_skipped.get_or_create(&HedgeSkipLabels { reason: HedgeSkipReason::Budget }).inc();
                        hedge_at = None;
                    }
                },
                () = sleep_until(retry_at), if retry_at.is_some() => {
                    retry_at = None;
                    in_flight.push(attempt(AttemptKind::Retry));
                    fired += 1;
                    hedge_at = plan.hedge_delay.map(|d| Instant::now() + d);
                },
                () = sleep_until(deadline), if deadline.is_some() => {
                    metrics.deadline_exceeded.inc();
                    if hedging {
                        metrics.hedges_cancelled.inc_by(in_flight.len() as u64);
                    }
                    let error = UpstreamError::DeadlineExceeded {
                        provider: provider.name.clone(),
                        deadline: plan.deadline.unwrap_or_default(),
                        attempts: fired,
                    };
                    return Outcome { result: Err(error), attempts: fired };
                },
            }
        }
    }

    /// When the next retry may go, or `None` (counted) when it may not.
    fn schedule_retry(
        &self,
        budgets: &Budgets,
        fired: u32,
        max_attempts: u32,
        asked: Option<Duration>,
        retries: u32,
    ) -> Option<Instant> {
        let give_up = |reason| {
            self.metrics
                .retries_given_up
                .get_or_create(&GiveUpLabels { reason })
                .inc();
            None
        };
        if fired >= max_attempts || retries >= self.retries {
            return give_up(GiveUpReason::MaxRetries);
        }
        if asked.is_some_and(|wait| wait > self.retry_after_max) {
            return give_up(GiveUpReason::RetryAfterTooLong);
        }
        if !budgets.retry().withdraw() {
            return give_up(GiveUpReason::Budget);
        }
        let wait = asked.unwrap_or_else(|| self.backoff(retries));
        Some(Instant::now() + wait)
    }

    /// Full jitter: uniform in `[0, min(max, base * 2^n)]`.
    fn backoff(&self, n: u32) -> Duration {
        let ceiling = self
            .backoff
            .saturating_mul(2u32.saturating_pow(n.min(20)))
            .min(self.backoff_max);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(0..=ms))
    }
}

/// One attempt, judged. With `first_byte`, success waits for the body's first chunk (a hedged
/// stream is hedged up to its first token); the chunk is put back in front of the body.
async fn attempt(provider: &Provider, mut request: UpstreamRequest, first_byte: bool) -> Verdict {
    // This attempt's span is the upstream's parent in the trace.
    otel::inject(&mut request.headers);
    let mut response = match provider.send(request).await {
        Ok(response) => response,
        Err(error) => {
            if let Some(kind) = error.error_kind() {
                provider.count_error(kind);
            }
            return if error.never_reached() {
                Verdict::Retry(Err(error), None)
            } else {
                Verdict::Fail(Err(error))
            };
        }
    };
    let status = response.status;
    tracing::Span::current().record("status", status.as_u16());
    match status.as_u16() {
        429 => provider.count_error(UpstreamErrorKind::Status429),
        500 | 502 | 503 | 504 => provider.count_error(UpstreamErrorKind::Status5xx),
        _ => {}
    }
    if matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504) {
        let asked = retry_after(&response.headers);
        return Verdict::Retry(Ok(response), asked);
    }
    if !status.is_success() {
        return Verdict::Fail(Ok(response));
    }
    if first_byte {
        match response.body.next().await {
            Some(Ok(chunk)) => {
                let rest = std::mem::replace(&mut response.body, Box::pin(stream::empty()));
                response.body = Box::pin(stream::once(async { Ok(chunk) }).chain(rest));
            }
            Some(Err(e)) => {
                provider.count_error(UpstreamErrorKind::BrokeOff);
                // Nothing reached the client yet, so this one may be retried too.
                let error = UpstreamError::BrokeOff {
                    provider: provider.name.clone(),
                    detail: e.to_string(),
                };
                return Verdict::Retry(Err(error), None);
            }
            None => {}
        }
    }
    Verdict::Success(response)
}

/// `retry-after-ms` (OpenAI's, exact), else `Retry-After` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let ms = number("retry-after-ms").or_else(|| number("retry-after").map(|s| s * 1000.0))?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_millis(ms as u64))
}

/// A numeric header in ms, checked by `valid`; `None` when absent.
fn header_ms(
    headers: &HeaderMap,
    name: &'static str,
    valid: impl Fn(u64) -> bool,
) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let range = if name == HEDGE_DELAY_HEADER {
        "0 (no hedging) or 10..=60000"
    } else {
        "100..=600000"
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&ms| valid(ms))
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                None,
                format!("{name} must be a whole number of milliseconds in {range}, got {value:?}"),
            )
            .with_param(name)
            .with_code("invalid_header")
        })
}

/// Sleeps until `at`; never completes for `None` (its branch is disabled anyway).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_error_names_the_header_that_raises_it() {
        let error = UpstreamError::DeadlineExceeded {
            provider: "p".into(),
            deadline: Duration::from_millis(400),
            attempts: 2,
        };
        let message = error.to_string();
        assert!(message.contains(DEADLINE_HEADER), "{message}");
        assert!(
            message.contains("400 ms (2 attempts to provider p)"),
            "{message}"
        );
    }

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
