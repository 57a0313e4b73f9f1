//! Lesson 8: bound everything, and make the bounds visible.
//!
//! The demo's outage came from an unbounded queue: tokio queues `spawn_blocking` jobs without
//! limit, so a full pool turned into ever-growing latency instead of an error. The cure is not a
//! bigger pool, it is a bound in front of it, chosen on purpose, with a clear answer past it.
//! This file holds the gateway's inbound bounds:
//!
//! - **Concurrency** ([`Admission`]): at most `--max-concurrent-requests` requests are served at
//!   once, and a streaming response keeps its place until its *last* byte. That detail is the
//!   whole difference: tower's `ConcurrencyLimitLayer` releases its permit when the response's
//!   headers are ready, i.e. at the first byte of a 45 s stream, so it bounds nothing that
//!   matters here. [`hold`] moves the permit into the response body, which is dropped when the
//!   stream ends or the client leaves.
//! - **A bounded wait** : past the cap, up to `--max-queued-requests` requests wait, each at most
//!   `--max-queue-wait-ms`. A short queue absorbs a burst; a long one only turns overload into
//!   latency (the demo's failure, again). Past it the answer is immediate: **503** with
//!   `Retry-After`, code `queue_full` or `queue_timeout`, counted in `gateway_shed_total`. A
//!   fast "no" lets the client retry elsewhere while the instance keeps serving what it took;
//!   memory stays bounded by the cap, and `/health`, outside these limits, keeps answering.
//! - **Rate per API key** ([`KeyLimits`]): `--rate-limit-rpm` with `--rate-limit-burst`, one
//!   GCRA bucket per key (per client IP when authentication is off), in process via `governor`,
//!   or with `--redis-url` in the shared Redis, so a fleet admits a key's limit once and not
//!   once per instance ([`crate::ratelimit`]). Over it:
//!   **429** with `Retry-After` and OpenAI's `x-ratelimit-limit-requests`,
//!   `x-ratelimit-remaining-requests` and `x-ratelimit-reset-requests`, which also come with
//!   every admitted response so a client can slow down before it is refused. The gateway's
//!   headers replace the provider's: the client's limit is the gateway's.
//!
//! The rate check runs first (it costs nothing in process, one bounded round trip with Redis, and
//! it takes no place), then the concurrency wait. The per-provider
//! bounds (concurrent upstream requests, requests per minute) are in [`crate::upstream::providers`].

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use sha2::{Digest as _, Sha256};
use tokio::sync::OwnedSemaphorePermit;

use crate::admission::{Admission, Shed, hold};
use crate::config::Config;
use crate::error::ApiError;
use crate::ratelimit::{Bucket, LimitStore, Quota, RpmLimit, Verdict};
use crate::telemetry::log::refuse;
use crate::telemetry::metrics::{Metrics, RateLimitScope, ShedReason};

/// The inbound limit's 503, naming its flags.
fn shed_error(inbound: &Admission, shed: Shed) -> ApiError {
    let why = match shed {
        Shed::QueueFull => format!(
            "the gateway is at its limit: {} requests in progress and {} waiting \
             (--max-concurrent-requests, --max-queued-requests)",
            inbound.limit(),
            inbound.max_queued()
        ),
        Shed::QueueTimeout => format!(
            "the gateway is at its limit of {} requests in progress and no place came free \
             within {} ms (--max-queue-wait-ms)",
            inbound.limit(),
            inbound.max_wait().as_millis()
        ),
    };
    ApiError::overloaded(
        ShedReason::from(shed).as_str(),
        format!("{why}; retry after a second"),
    )
    .retry_after(Duration::from_secs(1))
}

/// Who a rate limit counts against: the API key (by digest, never the key itself) or, with
/// authentication off, the client's IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientId {
    Key([u8; 32]),
    Ip(IpAddr),
    /// No key and no peer address (a test calling the router without a socket).
    Unknown,
}

impl ClientId {
    /// The client as a name a shared store may keep (the cache's keys, the rate limits' Redis
    /// keys): SHA-256 under `label` of the key's digest or of the address, 16 bytes in hex;
    /// `None` for [`ClientId::Unknown`]. Each user has its own label, so no two stores name a
    /// caller alike, and none holds a value that stands for the API key elsewhere.
    pub fn labelled_digest(&self, label: &[u8]) -> Option<String> {
        let mut hasher = Sha256::new();
        hasher.update(label);
        match self {
            ClientId::Key(digest) => {
                hasher.update(b"key\0");
                hasher.update(digest);
            }
            ClientId::Ip(ip) => {
                hasher.update(b"ip\0");
                hasher.update(ip.to_string().as_bytes());
            }
            ClientId::Unknown => return None,
        }
        let digest = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Some(format!("{:032x}", u128::from_be_bytes(first)))
    }
}

impl Bucket for ClientId {
    fn shared_name(&self) -> Cow<'static, str> {
        Cow::Owned(
            self.labelled_digest(b"gateway-ratelimit-caller\0")
                .unwrap_or_else(|| "unknown".to_owned()),
        )
    }
}

/// `--rate-limit-rpm` per client, or nothing when it is 0; counted across instances with
/// `--redis-url` (see [`crate::ratelimit`]).
#[derive(Debug)]
pub struct KeyLimits {
    limit: Option<RpmLimit<ClientId>>,
}

impl KeyLimits {
    pub fn new(rpm: u32, burst: Option<u32>, store: &LimitStore) -> Self {
        Self {
            limit: Quota::per_minute(rpm, burst)
                .map(|quota| RpmLimit::new(quota, RateLimitScope::Key, "key", store)),
        }
    }

    /// The `x-ratelimit-*` headers for an admitted request, or the 429 for a refused one.
    async fn check(&self, client: &ClientId) -> Result<HeaderMap, ApiError> {
        let Some(limit) = &self.limit else {
            return Ok(HeaderMap::new());
        };
        let Quota { rpm, burst } = limit.quota();
        match limit.check(client).await {
            Verdict::Admit { remaining, reset } => Ok(headers(rpm.get(), remaining, reset)),
            Verdict::Refuse { wait, reset } => {
                let mut error = ApiError::rate_limited(
                    "rate_limit_exceeded",
                    format!(
                        "rate limit reached for this API key: {rpm} requests per minute, burst \
                         {burst} (--rate-limit-rpm, --rate-limit-burst); retry in {}",
                        duration_text(wait)
                    ),
                )
                .retry_after(wait);
                error.headers.extend(headers(rpm.get(), 0, reset));
                Err(error)
            }
        }
    }

    /// Forgets clients whose local buckets are full again, so one bucket per IP ever seen cannot
    /// grow without bound. [`crate::serve`] calls it once a minute (through
    /// [`Inbound::forget_idle`]).
    pub fn forget_idle(&self) {
        if let Some(limit) = &self.limit {
            limit.forget_idle();
        }
    }
}

/// OpenAI's `x-ratelimit-*-requests` headers.
fn headers(rpm: u32, remaining: u32, reset: Duration) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-ratelimit-limit-requests", rpm.to_string()),
        ("x-ratelimit-remaining-requests", remaining.to_string()),
        ("x-ratelimit-reset-requests", duration_text(reset)),
    ] {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    headers
}

/// OpenAI's duration format in `x-ratelimit-reset-*`: `120ms`, `1.5s`, `6m0s`.
fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}s", trim(d.as_secs_f64()))
    } else {
        let secs = d.as_secs_f64();
        format!("{}m{}s", (secs / 60.0).floor(), trim(secs % 60.0))
    }
}

fn trim(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The inbound bounds: `--rate-limit-rpm` per client, then `--max-concurrent-requests` with its
/// bounded wait queue. What [`admit`] reads, and nothing else.
#[derive(Debug)]
pub struct Inbound {
    keys: KeyLimits,
    places: Admission,
    metrics: Arc<Metrics>,
}

impl Inbound {
    pub fn new(config: &Config, limits: &LimitStore, metrics: Arc<Metrics>) -> Self {
        Self {
            keys: KeyLimits::new(config.rate_limit_rpm, config.rate_limit_burst, limits),
            places: Admission::new(
                config.max_concurrent_requests,
                config.max_queued_requests,
                config.max_queue_wait(),
            ),
            metrics,
        }
    }

    /// The inbound places: in use, queued and the limit, for `/metrics`.
    pub fn places(&self) -> &Admission {
        &self.places
    }

    /// See [`KeyLimits::forget_idle`].
    pub fn forget_idle(&self) {
        self.keys.forget_idle();
    }
}

/// A request past the inbound bounds: the rate headers its response carries and the place it
/// holds until its body ends.
#[derive(Debug)]
#[must_use = "the place is held until `respond` hands it to the response body"]
pub struct Admitted {
    rate_headers: HeaderMap,
    permit: OwnedSemaphorePermit,
}

impl Admitted {
    /// The response, with the rate headers, holding the place until its last byte.
    pub fn respond(self, mut response: Response) -> Response {
        response.headers_mut().extend(self.rate_headers);
        hold(response, self.permit)
    }
}

/// On the relaying routes, after the API-key check: the per-key rate, then a place within the
/// concurrency cap; or the 429 / 503 to answer instead.
pub async fn admit(inbound: &Inbound, request: &mut Request) -> Result<Admitted, Response> {
    let received = Instant::now();
    let client = request
        .extensions()
        .get::<ClientId>()
        .cloned()
        .unwrap_or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(ClientId::Unknown, |info| ClientId::Ip(info.0.ip()))
        });
    let rate_headers = match inbound.keys.check(&client).await {
        Ok(headers) => headers,
        Err(error) => {
            inbound.metrics.rate_limited(RateLimitScope::Key);
            return Err(refuse(request, error, received));
        }
    };
    // The handlers that key anything by client (the response cache) read it from here.
    request.extensions_mut().insert(client);
    match inbound.places.admit().await {
        Ok(permit) => Ok(Admitted {
            rate_headers,
            permit,
        }),
        Err(shed) => {
            inbound.metrics.shed(ShedReason::from(shed));
            Err(refuse(request, shed_error(&inbound.places, shed), received))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_limit_counts_down_then_refuses() {
        let limits = KeyLimits::new(60, Some(2), &LimitStore::local());
        let client = ClientId::Ip(IpAddr::from([127, 0, 0, 1]));
        let remaining = |h: &HeaderMap| h["x-ratelimit-remaining-requests"].clone();
        assert_eq!(remaining(&limits.check(&client).await.expect("1st")), "1");
        assert_eq!(remaining(&limits.check(&client).await.expect("2nd")), "0");
        let refused = limits.check(&client).await.expect_err("3rd");
        assert_eq!(refused.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers["retry-after"], "1");
        assert_eq!(refused.headers["x-ratelimit-limit-requests"], "60");
        let other = ClientId::Ip(IpAddr::from([127, 0, 0, 2]));
        assert!(
            limits.check(&other).await.is_ok(),
            "each client has its own bucket"
        );
        assert!(
            KeyLimits::new(0, None, &LimitStore::local())
                .check(&client)
                .await
                .expect("off")
                .is_empty()
        );
    }

    #[test]
    fn durations_read_like_openai() {
        assert_eq!(duration_text(Duration::from_millis(120)), "120ms");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_text(Duration::from_secs(360)), "6m0s");
    }
}
