//! Lesson 2: a blocking client inside `spawn_blocking` pins one pool thread per open stream.
//!
//! This is the shape of many real services: a synchronous HTTP client, wrapped in
//! `spawn_blocking` because "blocking calls belong on the blocking pool". That advice is right
//! for short calls. A streaming response is not short: the job below holds its thread for as long
//! as the upstream takes to send the whole body (45 s for the default mock stream). With a pool
//! of N threads, stream N+1 waits in tokio's unbounded queue, and so does everything else that
//! needs the pool, including a health check that uses `spawn_blocking`.
//!
//! Client disconnects make it worse. A `spawn_blocking` job cannot be cancelled, and the thread
//! spends its life inside `read()` on the upstream socket. It learns the client is gone only when
//! it next tries to hand a chunk over and `blocking_send` fails, i.e. at the upstream's next
//! chunk. Until then the thread, and the upstream's work, are wasted.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use reqwest::Url;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::UpstreamResponse;
use crate::config::Config;
use crate::error::ApiError;
use crate::pool::BlockingPool;

/// Chunks buffered between the pool thread and the async response. Small on purpose: when the
/// client reads slowly, the thread blocks in `blocking_send` instead of buffering the stream.
const CHANNEL_CHUNKS: usize = 4;
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// The ureq agent plus the pool it must run on.
#[derive(Debug)]
pub struct BlockingClient {
    agent: ureq::Agent,
    pool: Arc<BlockingPool>,
}

/// What the pool thread reports once the upstream has answered.
type Head = Result<(StatusCode, Option<HeaderValue>), ApiError>;

impl BlockingClient {
    pub fn new(config: &Config, pool: Arc<BlockingPool>) -> Self {
        let agent = ureq::Agent::config_builder()
            // Relay upstream 4xx/5xx bodies as they are instead of turning them into errors.
            .http_status_as_error(false)
            .timeout_connect(Some(config.upstream_connect_timeout()))
            // ureq has no overall stream deadline we want; a silent upstream is the failure.
            .timeout_per_read(Some(config.upstream_read_timeout()))
            .build()
            .new_agent();
        Self { agent, pool }
    }

    pub async fn get(&self, url: Url) -> Result<UpstreamResponse, ApiError> {
        let (head_tx, head_rx) = oneshot::channel::<Head>();
        let (chunk_tx, chunk_rx) = mpsc::channel(CHANNEL_CHUNKS);
        let agent = self.agent.clone();
        // The job is detached: dropping its JoinHandle does not stop it, nothing can.
        drop(
            self.pool
                .spawn(move |_waited| relay(agent, url, head_tx, chunk_tx)),
        );
        let (status, content_type) = head_rx.await.map_err(|_| {
            ApiError::internal("the upstream worker thread ended without answering")
        })??;
        let body = ReceiverStream::new(chunk_rx).map(|chunk| chunk.map_err(std::io::Error::other));
        Ok(UpstreamResponse {
            status,
            content_type,
            body: Box::pin(body),
        })
    }
}

/// Runs on a pool thread for the whole life of the stream.
fn relay(
    agent: ureq::Agent,
    url: Url,
    head_tx: oneshot::Sender<Head>,
    chunk_tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    // The job may have waited in the queue for a long time. If its client gave up meanwhile,
    // do not open an upstream stream nobody will read.
    if head_tx.is_closed() {
        return;
    }
    let response = match agent.get(url.as_str()).call() {
        Ok(response) => response,
        Err(e) => {
            let _ = head_tx.send(Err(map_error(&url, e)));
            return;
        }
    };
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    if head_tx.send(Ok((response.status(), content_type))).is_err() {
        return; // Client gone; dropping `response` closes the upstream connection.
    }
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    loop {
        // Blocks this thread until the upstream sends its next chunk.
        let chunk = match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
            Err(e) => Err(e),
        };
        let failed = chunk.is_err();
        // The only place this thread can learn that the client went away.
        if chunk_tx.blocking_send(chunk).is_err() || failed {
            return;
        }
    }
}

fn map_error(url: &Url, error: ureq::Error) -> ApiError {
    match error {
        ureq::Error::Timeout(what) => {
            ApiError::gateway_timeout(format!("upstream {url} timed out ({what})"))
        }
        other => ApiError::bad_gateway(format!("upstream {url} unreachable: {other}")),
    }
}
