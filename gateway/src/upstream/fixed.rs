//! Lesson 3: the fix. An async client whose body is forwarded as a stream.
//!
//! `reqwest`'s `bytes_stream()` yields each chunk as the socket delivers it; the relay hands that
//! stream straight to axum as the response body. Waiting for the next chunk is a parked future,
//! not a parked thread, so ten thousand open streams cost memory and sockets, not threads, and
//! the blocking pool stays idle for the work that really needs it.
//!
//! Disconnects propagate by ownership: when the client goes away, hyper drops the response body,
//! which drops the reqwest stream, which closes the upstream connection. The upstream sees the
//! cancel within milliseconds, with no code here doing anything special. The same holds before
//! the body: while [`AsyncClient::send`] still waits for the upstream's head (a non-streaming
//! completion arrives whole, at the end), a client hang-up makes hyper drop the handler future
//! (hyper 1.x keeps reading an HTTP/1 connection whose request body it has read, and a read of 0
//! bytes ends it), and with it the in-flight reqwest request, which closes the upstream socket.
//! Measured with `mock-llm`'s `/stats.chat.time_to_cancel_ms`: a few milliseconds in every phase
//! (`tests/openai_cancel.rs`).

use std::time::Duration;

use axum::http::HeaderValue;
use futures_util::TryStreamExt;
use reqwest::Url;

use super::proxy::ProxyName;
use super::silence::Silence;
use super::{ClientSettings, StreamMethod, UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::error::StartError;

/// A pooled async HTTP client.
#[derive(Debug)]
pub struct AsyncClient {
    http: reqwest::Client,
    read_timeout: Duration,
    connect_timeout: Duration,
    /// `Authorization: Bearer <--upstream-api-key>`, added to every request.
    credential: Option<HeaderValue>,
    /// The proxy every connection goes to, if any: a failed connect is the proxy's.
    proxy: Option<ProxyName>,
}

impl AsyncClient {
    /// One client, and so one connection pool, per provider: a slow provider's connections
    /// never crowd out another's.
    pub fn new(settings: &ClientSettings) -> Result<Self, StartError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .pool_max_idle_per_host(settings.max_idle_connections)
            .pool_idle_timeout(settings.idle_timeout)
            // Probes a connection the peer dropped silently (a NAT or load balancer timing it out).
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true);
        // The route is decided once for both clients (see `super::proxy`), not read from the
        // environment by reqwest: a loopback upstream must never go through a proxy.
        let http = settings.route.reqwest(builder)?.build()?;
        Ok(Self {
            http,
            read_timeout: settings.read_timeout,
            connect_timeout: settings.connect_timeout,
            credential: settings.credential.clone(),
            proxy: settings.route.proxy_name().cloned(),
        })
    }

    /// Returns at the upstream's head; the body follows as a stream of chunks.
    pub async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let headers = super::outgoing_headers(&request, self.credential.as_ref());
        let url = request.url;
        let mut builder = self
            .http
            .request(request.method, url.clone())
            .headers(headers);
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        // Per read, like ureq's `timeout_per_read`: a stream may be long, but not silent. Until
        // the head, the whole wait; then between chunks (`Silence`, not reqwest's `read_timeout`,
        // which resets a timer per chunk).
        let response = match tokio::time::timeout(self.read_timeout, builder.send()).await {
            Ok(sent) => sent.map_err(|e| self.map_error(&url, e))?,
            Err(_) => {
                return Err(UpstreamError::ReadTimeout {
                    url,
                    detail: format!("sent nothing for {:?}", self.read_timeout),
                });
            }
        };
        let status = response.status();
        let headers = super::relayed_response_headers(response.headers());
        // The cause of a mid-stream failure (reset, read timeout) is in the source chain; keep it
        // for the log line the relay writes when the stream ends.
        let body = Silence::new(
            response
                .bytes_stream()
                .map_err(|e| std::io::Error::other(error_chain(&e))),
            self.read_timeout,
        );
        Ok(UpstreamResponse {
            status,
            headers,
            body: Box::pin(body),
            method: StreamMethod::Async,
        })
    }

    /// reqwest's error as the gateway's: which failures never reached the upstream decides
    /// retries.
    fn map_error(&self, url: &Url, error: reqwest::Error) -> UpstreamError {
        let url = url.clone();
        if error.is_timeout() && error.is_connect() {
            let within = self.connect_timeout;
            UpstreamError::ConnectTimeout {
                url,
                detail: match &self.proxy {
                    Some(proxy) => format!(
                        "not reached: the proxy {proxy} did not accept a connection within \
                         {within:?}"
                    ),
                    None => format!("did not accept a connection within {within:?}"),
                },
            }
        } else if error.is_connect()
            && let Some(proxy) = &self.proxy
        {
            // Through a proxy the gateway connects only to the proxy: a socket error is the
            // proxy's; anything else is the proxy refusing to open the way (a failed CONNECT).
            let cause = if source_is::<std::io::Error>(&error) {
                "cannot connect to the proxy"
            } else {
                "the proxy did not open the way"
            };
            UpstreamError::ProxyUnreachable {
                proxy: proxy.clone(),
                url,
                detail: format!("{cause}: {}", error_chain(&error)),
            }
        } else if error.is_connect() {
            UpstreamError::Unreachable {
                url,
                detail: error_chain(&error),
            }
        } else {
            UpstreamError::Failed {
                url,
                detail: error_chain(&error),
            }
        }
    }
}

/// Whether an `E` is somewhere in `error`'s source chain.
fn source_is<E: std::error::Error + 'static>(error: &dyn std::error::Error) -> bool {
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<E>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// reqwest's top-level message is "error sending request"; the cause is in the source chain.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
