//! The upstream client, as a strategy: one interface, a broken and a fixed implementation.
//!
//! Both take an [`UpstreamRequest`] (method, URL, headers, body) and return the upstream's status
//! line and a body stream the relay can forward chunk by chunk, so the handlers cannot tell them
//! apart; only the pool counters and the health probes can. That is the point: the bug is
//! invisible in the handler's code.
//!
//! This module also decides which headers cross the gateway, in each direction. Both lists are
//! allow-lists: a header not named here stays where it was. Requests carry the client's
//! end-to-end headers that describe the request (`Content-Type`, `Accept`, `X-Request-Id`, the
//! W3C `traceparent` and `tracestate` (replaced by the attempt's own when the gateway traces), the
//! mock's `x-mock-*` knobs) and never its credentials (`Authorization`, `X-API-Key`, cookies): those
//! are keys to the *gateway*. The gateway adds its own upstream credential (`--upstream-api-key`).
//! Responses carry what a client needs to read the body and to behave (`Content-Type`,
//! `Retry-After`, rate-limit headers, the request id). Hop-by-hop headers (`Connection`,
//! `Transfer-Encoding`, ...) never cross: each side of the gateway is its own HTTP connection.

pub mod broken;
pub mod budget;
pub mod cutoff;
pub mod error;
pub mod fixed;
pub mod idle;
pub mod inline;
pub mod keepalive;
pub mod providers;
pub mod proxy;
pub mod relay;
pub mod silence;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use futures_util::stream::BoxStream;
use reqwest::Url;

use crate::config::{Config, Mode, ProviderConfig};
use crate::error::StartError;
use crate::telemetry::pool::BlockingPool;
pub use error::UpstreamError;

/// Request headers copied from the client to the upstream, by exact name.
const FORWARDED_REQUEST_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// Response headers copied from the upstream to the client, by exact name.
const RELAYED_RESPONSE_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::RETRY_AFTER,
    HeaderName::from_static("retry-after-ms"),
    HeaderName::from_static("x-request-id"),
];

/// Header name prefixes relayed in either direction: the mock's knobs and reports, and the
/// provider's rate-limit state (`x-ratelimit-remaining-requests`, ...).
const RELAYED_PREFIXES: [&str; 2] = ["x-mock-", "x-ratelimit-"];

/// How one provider's client connects: its timeouts, its keep-alive pool and its credential.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// The longest silence while reading; a stream may be long, but not silent.
    pub read_timeout: Duration,
    /// Idle keep-alive connections kept per host.
    pub max_idle_connections: usize,
    /// An idle connection is closed after this long.
    pub idle_timeout: Duration,
    /// `Authorization: Bearer <provider key>`, added to every request.
    pub credential: Option<HeaderValue>,
    /// Direct, or through the environment's proxy (see [`proxy`]).
    pub route: proxy::Route,
}

impl ClientSettings {
    /// `provider`'s settings, defaults filled in from the flags.
    pub fn new(provider: &ProviderConfig, config: &Config) -> Result<Self, StartError> {
        let key = match &provider.api_key_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                StartError::ApiKeys(format!(
                    "provider {}: {var} is not set or not UTF-8",
                    provider.name
                ))
            })?),
            None if provider.name == "default" && config.providers.is_empty() => config
                .upstream_api_key
                .as_ref()
                .map(|key| key.expose().to_owned()),
            None => None,
        };
        let base_url = Url::parse(&provider.base_url)
            .map_err(|e| StartError::Url(format!("provider {}: {e}", provider.name)))?;
        Ok(Self {
            connect_timeout: provider.connect_timeout(config),
            read_timeout: provider.read_timeout(config),
            max_idle_connections: provider.max_idle_connections,
            idle_timeout: Duration::from_secs(provider.idle_timeout_secs),
            credential: key.map(|key| bearer(&key, &provider.name)).transpose()?,
            route: proxy::Route::from_env(&base_url),
        })
    }
}

/// One request to the upstream, built by a handler and sent by either client.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: Method,
    pub url: Url,
    /// Already filtered (see [`forwarded_request_headers`]); the client adds the upstream key.
    pub headers: HeaderMap,
    /// The validated client body, forwarded byte for byte (unknown fields included).
    pub body: Option<Bytes>,
}

impl UpstreamRequest {
    pub fn get(url: Url) -> Self {
        Self {
            method: Method::GET,
            url,
            headers: HeaderMap::new(),
            body: None,
        }
    }
}

/// The client's request headers that may go upstream (see the module docs).
pub fn forwarded_request_headers(client: &HeaderMap) -> HeaderMap {
    filter(client, &FORWARDED_REQUEST_HEADERS)
}

/// The upstream's response headers that may go back to the client.
pub fn relayed_response_headers(upstream: &HeaderMap) -> HeaderMap {
    filter(upstream, &RELAYED_RESPONSE_HEADERS)
}

fn filter(headers: &HeaderMap, names: &[HeaderName]) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for (name, value) in headers {
        let prefixed = RELAYED_PREFIXES
            .iter()
            .any(|prefix| name.as_str().starts_with(prefix));
        if prefixed || names.contains(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// An upstream response whose head has arrived and whose body is still streaming.
pub struct UpstreamResponse {
    pub status: StatusCode,
    /// Already filtered (see [`relayed_response_headers`]).
    pub headers: HeaderMap,
    /// Chunks as the upstream sends them; an `Err` means the upstream broke off mid-stream.
    pub body: BoxStream<'static, io::Result<Bytes>>,
    /// Which client carried it, sent to the client as `X-Stream-Method` (see [`StreamMethod`]).
    pub method: StreamMethod,
}

/// The client strategy that carried one response: `X-Stream-Method: async|blocking|inline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamMethod {
    /// The async client ([`fixed`]).
    Async,
    /// The blocking client on the blocking pool ([`broken`]).
    Blocking,
    /// The blocking client on an async worker ([`inline`]).
    Inline,
    /// No client: the answer came from the response cache (`crate::cache`).
    Cache,
}

impl StreamMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMethod::Async => "async",
            StreamMethod::Blocking => "blocking",
            StreamMethod::Inline => "inline",
            StreamMethod::Cache => "cache",
        }
    }
}

/// `--async-rollout-percent` in broken mode: both clients, and a counter that sends exactly
/// `percent` of every 100 consecutive requests to the async one, evenly spread.
#[derive(Debug)]
pub struct Rollout {
    percent: u64,
    next: AtomicU64,
    blocking: broken::BlockingClient,
    async_client: fixed::AsyncClient,
}

impl Rollout {
    /// Request number `n` (0, 1, 2, ...) goes async when `floor((n+1)P/100) > floor(nP/100)`:
    /// no randomness, so P = 0 is never, P = 100 always, and P = 50 every other request.
    pub fn goes_async(percent: u64, n: u64) -> bool {
        let n = n % 100;
        (n + 1) * percent / 100 > n * percent / 100
    }

    async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if Self::goes_async(self.percent, n) {
            self.async_client.send(request).await
        } else {
            self.blocking.send(request).await
        }
    }
}

impl std::fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The configured client. An enum rather than a trait object: known strategies, no boxing.
#[derive(Debug)]
pub enum Upstream {
    Broken(broken::BlockingClient),
    Fixed(fixed::AsyncClient),
    Inline(inline::InlineClient),
    /// Broken mode with `--async-rollout-percent`: both clients, split by a counter.
    Rollout(Box<Rollout>),
}

impl Upstream {
    /// The client of `config.mode` (both, with a rollout), for one provider.
    pub fn new(
        config: &Config,
        settings: &ClientSettings,
        pool: Arc<BlockingPool>,
    ) -> Result<Self, StartError> {
        Ok(match (config.mode, config.async_rollout_percent) {
            (Mode::Broken, Some(percent)) => Upstream::Rollout(Box::new(Rollout {
                percent: u64::from(percent),
                next: AtomicU64::new(0),
                async_client: fixed::AsyncClient::new(settings)?,
                blocking: broken::BlockingClient::new(settings, pool)?,
            })),
            (Mode::Broken, None) => Upstream::Broken(broken::BlockingClient::new(settings, pool)?),
            (Mode::Fixed, _) => Upstream::Fixed(fixed::AsyncClient::new(settings)?),
            (Mode::Inline, _) => Upstream::Inline(inline::InlineClient::new(settings)?),
        })
    }

    /// Sends `request` and returns once the upstream's status and headers are in.
    pub async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        match self {
            Upstream::Broken(client) => client.send(request).await,
            Upstream::Fixed(client) => client.send(request).await,
            Upstream::Inline(client) => client.send(request).await,
            Upstream::Rollout(rollout) => rollout.send(request).await,
        }
    }
}

/// `Authorization: Bearer <key>`, marked sensitive so that no HTTP library's debug output
/// prints it.
fn bearer(key: &str, provider: &str) -> Result<HeaderValue, StartError> {
    let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
        StartError::ApiKeys(format!(
            "provider {provider}: the API key is not a valid header value"
        ))
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The headers of `request` plus the gateway's upstream credential, if any.
fn outgoing_headers(request: &UpstreamRequest, credential: Option<&HeaderValue>) -> HeaderMap {
    let mut headers = request.headers.clone();
    if let Some(credential) = credential {
        headers.insert(header::AUTHORIZATION, credential.clone());
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_split_is_exact() {
        let count = |p| (0..100).filter(|&n| Rollout::goes_async(p, n)).count();
        assert_eq!(count(0), 0);
        assert_eq!(count(100), 100);
        assert_eq!(count(50), 50);
        assert_eq!(count(7), 7);
        let first: Vec<_> = (0..4).map(|n| Rollout::goes_async(50, n)).collect();
        assert_eq!(first, [false, true, false, true]);
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_behind() {
        let mut client = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer client-key"),
            ("x-api-key", "client-key"),
            ("cookie", "session=1"),
            ("connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("host", "gateway"),
            ("content-length", "12"),
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
            ("x-request-id", "abc"),
            ("x-mock-tokens", "3"),
        ] {
            client.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let kept = forwarded_request_headers(&client);
        let mut names: Vec<_> = kept.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["accept", "content-type", "x-mock-tokens", "x-request-id"]
        );
    }

    #[test]
    fn retry_after_and_rate_limits_come_back() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("retry-after", "1"),
            ("retry-after-ms", "1000"),
            ("x-ratelimit-remaining-requests", "0"),
            ("content-type", "application/json"),
            ("content-length", "99"),
            ("connection", "close"),
            ("set-cookie", "a=b"),
        ] {
            upstream.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let kept = relayed_response_headers(&upstream);
        assert_eq!(kept.len(), 4, "{kept:?}");
        assert!(kept.contains_key("retry-after") && kept.contains_key("retry-after-ms"));
        assert!(!kept.contains_key("content-length") && !kept.contains_key("set-cookie"));
    }
}
