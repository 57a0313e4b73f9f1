//! Lesson 3: the fix. An async client whose body is forwarded as a stream.
//!
//! `reqwest`'s `bytes_stream()` yields each chunk as the socket delivers it; the relay hands that
//! stream straight to axum as the response body. Waiting for the next chunk is a parked future,
//! not a parked thread, so ten thousand open streams cost memory and sockets, not threads, and
//! the blocking pool stays idle for the work that really needs it.
//!
//! Disconnects propagate by ownership: when the client goes away, hyper drops the response body,
//! which drops the reqwest stream, which closes the upstream connection. The upstream sees the
//! cancel within milliseconds, with no code here doing anything special.

use std::time::Duration;

use axum::http::header;
use futures_util::TryStreamExt;
use reqwest::Url;

use super::UpstreamResponse;
use crate::config::Config;
use crate::error::{ApiError, StartError};

/// A pooled async HTTP client.
#[derive(Debug)]
pub struct AsyncClient {
    http: reqwest::Client,
    read_timeout: Duration,
}

impl AsyncClient {
    pub fn new(config: &Config) -> Result<Self, StartError> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.upstream_connect_timeout())
            // Per read, like ureq's `timeout_per_read`: a stream may be long, but not silent.
            .read_timeout(config.upstream_read_timeout())
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            read_timeout: config.upstream_read_timeout(),
        })
    }

    pub async fn get(&self, url: Url) -> Result<UpstreamResponse, ApiError> {
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| self.map_error(&url, e))?;
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = response.bytes_stream().map_err(std::io::Error::other);
        Ok(UpstreamResponse {
            status,
            content_type,
            body: Box::pin(body),
        })
    }

    fn map_error(&self, url: &Url, error: reqwest::Error) -> ApiError {
        if error.is_timeout() {
            ApiError::gateway_timeout(format!(
                "upstream {url} sent nothing for {:?}",
                self.read_timeout
            ))
        } else {
            ApiError::bad_gateway(format!(
                "upstream {url} unreachable: {}",
                error_chain(&error)
            ))
        }
    }
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
