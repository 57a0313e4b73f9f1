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
//!
//! # When the upstream sees a client disconnect, phase by phase
//!
//! Measured against `mock-llm` (`/stats.chat.cancelled`), and checked by `tests/openai_cancel.rs`:
//!
//! | the client leaves while ... | the pool thread is ... | the upstream sees ... |
//! |---|---|---|
//! | the job waits in the pool queue | not started | nothing: the job sees `head_tx` closed and never connects |
//! | the upstream has not sent its head (non-streaming: a real provider sends status and body together, at the end) | inside ureq's `run()`, waiting for the head | **no cancel at all**: the thread cannot notice until `run()` returns, the upstream finishes the whole generation (counted `completed`), then `head_tx.send` fails and the response is dropped unread |
//! | a stream waits for its first token (headers already in) | inside `read()` | the cancel at the first token: `blocking_send` fails, the reader is dropped, the connection closes |
//! | a stream is mid-way | inside `read()` | the cancel at the next token, the same way |
//!
//! So in the best case the upstream keeps generating for one more event (TTFT or ITL) after the
//! client left, and for a non-streaming request it generates everything for nobody, while the
//! thread stays pinned. Compare [`super::fixed`], where the upstream sees every one of these within
//! milliseconds.

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use reqwest::Url;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::proxy::ProxyName;
use super::{ClientSettings, StreamMethod, UpstreamError, UpstreamRequest, UpstreamResponse};
use crate::error::StartError;
use crate::telemetry::pool::BlockingPool;

/// Chunks buffered between the pool thread and the async response. Small on purpose: when the
/// client reads slowly, the thread blocks in `blocking_send` instead of buffering the stream.
const CHANNEL_CHUNKS: usize = 4;
pub(super) const READ_BUFFER_BYTES: usize = 16 * 1024;

/// The ureq agent plus the pool it must run on.
#[derive(Debug)]
pub struct BlockingClient {
    agent: ureq::Agent,
    pool: Arc<BlockingPool>,
    /// `Authorization: Bearer <--upstream-api-key>`, added to every request.
    credential: Option<HeaderValue>,
    /// The proxy every connection goes to, if any: a failed connect is the proxy's.
    proxy: Option<ProxyName>,
}

/// What the pool thread reports once the upstream has answered.
type Head = Result<(StatusCode, HeaderMap), UpstreamError>;

impl BlockingClient {
    pub fn new(settings: &ClientSettings, pool: Arc<BlockingPool>) -> Result<Self, StartError> {
        Ok(Self {
            agent: agent(settings)?,
            pool,
            credential: settings.credential.clone(),
            proxy: settings.route.proxy_name().cloned(),
        })
    }

    /// Any method, any body: the head comes back through a oneshot, the body through a small
    /// channel fed by the pool thread.
    pub async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let (head_tx, head_rx) = oneshot::channel::<Head>();
        let (chunk_tx, chunk_rx) = mpsc::channel(CHANNEL_CHUNKS);
        let agent = self.agent.clone();
        let headers = super::outgoing_headers(&request, self.credential.as_ref());
        let proxy = self.proxy.clone();
        // The job is detached: dropping its JoinHandle does not stop it, nothing can.
        drop(self.pool.spawn(move |_waited| {
            relay(agent, proxy, request, headers, head_tx, chunk_tx);
        }));
        // If the client hangs up here, hyper drops this future and `head_rx` with it; the pool
        // thread only finds out when it next touches `head_tx` (see the module docs).
        let (status, headers) = head_rx.await.map_err(|_| {
            UpstreamError::Internal("the upstream worker thread ended without answering")
        })??;
        let body = ReceiverStream::new(chunk_rx).map(|chunk| chunk.map_err(std::io::Error::other));
        Ok(UpstreamResponse {
            status,
            headers,
            body: Box::pin(body),
            method: StreamMethod::Blocking,
        })
    }
}

/// The ureq agent both blocking strategies use (this one and [`super::inline`]).
pub(super) fn agent(settings: &ClientSettings) -> Result<ureq::Agent, StartError> {
    Ok(ureq::Agent::config_builder()
        // The route decided for both clients (see `super::proxy`), not ureq's own reading of
        // the environment: a loopback upstream must never go through a proxy.
        .proxy(settings.route.ureq()?)
        // Relay upstream 4xx/5xx bodies as they are instead of turning them into errors.
        .http_status_as_error(false)
        .timeout_connect(Some(settings.connect_timeout))
        // ureq has no overall stream deadline we want; a silent upstream is the failure.
        .timeout_per_read(Some(settings.read_timeout))
        .max_idle_connections_per_host(settings.max_idle_connections)
        .max_idle_connections(settings.max_idle_connections)
        .max_idle_age(settings.idle_timeout)
        .build()
        .new_agent())
}

/// Runs on a pool thread for the whole life of the stream.
fn relay(
    agent: ureq::Agent,
    proxy: Option<ProxyName>,
    request: UpstreamRequest,
    headers: HeaderMap,
    head_tx: oneshot::Sender<Head>,
    chunk_tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    // The job may have waited in the queue for a long time. If its client gave up meanwhile,
    // do not open an upstream stream nobody will read.
    if head_tx.is_closed() {
        return;
    }
    let url = request.url.clone();
    // Blocks this thread until the upstream's status and headers arrive: for a non-streaming
    // completion, that is when the whole answer is ready. Nothing can interrupt it.
    let response = match call(&agent, request, headers) {
        Ok(response) => response,
        Err(e) => {
            let _ = head_tx.send(Err(map_error(&url, proxy.as_ref(), e)));
            return;
        }
    };
    let relayed = super::relayed_response_headers(response.headers());
    if head_tx.send(Ok((response.status(), relayed))).is_err() {
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

/// `request` as an `http::Request` for ureq: the body, if any, as a byte slice; no body at all
/// for a GET (ureq would otherwise send `Content-Length: 0`).
pub(super) fn call(
    agent: &ureq::Agent,
    request: UpstreamRequest,
    headers: HeaderMap,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let mut builder = ureq::http::Request::builder()
        .method(request.method)
        .uri(request.url.as_str());
    if let Some(map) = builder.headers_mut() {
        *map = headers;
    }
    match &request.body {
        Some(body) => agent.run(builder.body(body.as_ref())?),
        None => agent.run(builder.body(())?),
    }
}

/// ureq's error as the gateway's: which failures never reached the upstream decides retries.
/// Through a proxy, a failed connect is the proxy's, and the error names it.
pub(super) fn map_error(url: &Url, proxy: Option<&ProxyName>, error: ureq::Error) -> UpstreamError {
    use ureq::Timeout;
    let url = url.clone();
    let detail = error.to_string();
    let connect_failed = matches!(
        &error,
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed
    ) || matches!(&error, ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
    match (error, proxy) {
        (ureq::Error::Timeout(what @ (Timeout::Resolve | Timeout::Connect)), proxy) => {
            UpstreamError::ConnectTimeout {
                url,
                detail: match proxy {
                    Some(proxy) => format!("not reached: the proxy {proxy} timed out ({what})"),
                    None => format!("timed out ({what})"),
                },
            }
        }
        (ureq::Error::Timeout(what), _) => UpstreamError::ReadTimeout {
            url,
            detail: format!("timed out ({what})"),
        },
        (ureq::Error::ConnectProxyFailed(answer), Some(proxy)) => UpstreamError::ProxyUnreachable {
            proxy: proxy.clone(),
            url,
            detail: format!("the proxy did not open the way: {answer}"),
        },
        (_, Some(proxy)) if connect_failed => UpstreamError::ProxyUnreachable {
            proxy: proxy.clone(),
            url,
            detail: format!("cannot connect to the proxy: {detail}"),
        },
        _ if connect_failed => UpstreamError::Unreachable { url, detail },
        _ => UpstreamError::Failed { url, detail },
    }
}
