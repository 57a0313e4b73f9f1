//! The upstream client, as a strategy: one interface, a broken and a fixed implementation.
//!
//! Both return the upstream's status line and a body stream the relay can forward chunk by
//! chunk, so the handler cannot tell them apart; only the pool counters and the health probes
//! can. That is the point: the bug is invisible in the handler's code.

pub mod broken;
pub mod fixed;

use std::io;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use futures_util::stream::BoxStream;
use reqwest::Url;

use crate::config::{Config, Mode};
use crate::error::{ApiError, StartError};
use crate::pool::BlockingPool;

/// An upstream response whose head has arrived and whose body is still streaming.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    /// Chunks as the upstream sends them; an `Err` means the upstream broke off mid-stream.
    pub body: BoxStream<'static, io::Result<Bytes>>,
}

impl std::fmt::Debug for UpstreamResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// The configured client. An enum rather than a trait object: two known strategies, no boxing.
#[derive(Debug)]
pub enum Upstream {
    Broken(broken::BlockingClient),
    Fixed(fixed::AsyncClient),
}

impl Upstream {
    pub fn new(config: &Config, pool: Arc<BlockingPool>) -> Result<Self, StartError> {
        Ok(match config.mode {
            Mode::Broken => Upstream::Broken(broken::BlockingClient::new(config, pool)),
            Mode::Fixed => Upstream::Fixed(fixed::AsyncClient::new(config)?),
        })
    }

    /// Sends `GET url` and returns once the upstream's status and headers are in.
    pub async fn get(&self, url: Url) -> Result<UpstreamResponse, ApiError> {
        match self {
            Upstream::Broken(client) => client.get(url).await,
            Upstream::Fixed(client) => client.get(url).await,
        }
    }
}
