//! Lesson 6: a blocking client called *inside* the async handler, without `spawn_blocking`.
//!
//! This is the mistake [`super::broken`] was trying to avoid, and it is worse. The handler is a
//! future polled by one of the runtime's *worker* threads (`worker_threads`, one per core by
//! default). [`InlineClient::send`] calls ureq directly: the connect, the request and the wait for
//! the upstream's head all block that worker. The body is no better: it is a stream whose every
//! `poll_next` does a blocking `read()` on the upstream socket, so the worker is held for the
//! whole life of the stream (45 s for the default mock stream), not just for the head.
//!
//! A blocked worker cannot run any other task. Tokio's work stealing moves *queued* tasks to the
//! other workers, but it cannot unblock a thread stuck in `read()`. So with W workers:
//!
//! - up to W - 1 streams: the service looks fine, a little slower;
//! - W streams: every worker is inside `read()`. Nothing else runs: not `/health` (its timeout is
//!   a timer, and timers are driven by the workers too, so it cannot fire), not
//!   `/debug/health-async` (the probe that stays fast in broken mode), not even the accept loop,
//!   so new connections sit in the kernel's backlog. The process looks hung to every probe.
//!
//! And the streams stop being streams. hyper writes a response into its buffer and flushes it
//! when the body has nothing ready, i.e. when `poll_next` returns `Pending`. This body never
//! does: it blocks until the next chunk is there and returns `Ready`. So the status line and
//! every chunk sit in hyper's buffer until the upstream is done, and the client receives the
//! whole response at once: the time to first token becomes the time to the last one.
//!
//! `/health` cannot be bounded here, and that is the lesson: a bound is a timer, and a timer needs
//! a worker. Only something outside the runtime (a load balancer's own timeout, `diag`) can see
//! the stall. That is the reason `spawn_blocking` exists: it moves blocking work off the workers,
//! onto a pool whose starvation ([`super::broken`]) at least leaves the event loop turning. The
//! real fix is [`super::fixed`], which blocks nothing. Make it deterministic with
//! `--worker-threads 2`: two streams and the gateway stops answering.
//!
//! Client disconnects: the worker only learns of one when the stream's next chunk has been read
//! and hyper fails to write it, as in broken mode.

use std::io::Read;

use axum::body::Bytes;
use axum::http::HeaderValue;

use super::proxy::ProxyName;
use super::{
    ClientSettings, StreamMethod, UpstreamError, UpstreamRequest, UpstreamResponse, broken,
};
use crate::error::StartError;

/// The ureq agent, used straight from async code. Do not do this.
#[derive(Debug)]
pub struct InlineClient {
    agent: ureq::Agent,
    /// `Authorization: Bearer <--upstream-api-key>`, added to every request.
    credential: Option<HeaderValue>,
    /// The proxy every connection goes to, if any: a failed connect is the proxy's.
    proxy: Option<ProxyName>,
}

impl InlineClient {
    pub fn new(settings: &ClientSettings) -> Result<Self, StartError> {
        Ok(Self {
            agent: broken::agent(settings)?,
            credential: settings.credential.clone(),
            proxy: settings.route.proxy_name().cloned(),
        })
    }

    /// `async` in name only: every line of it blocks the worker thread polling it.
    pub async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        let headers = super::outgoing_headers(&request, self.credential.as_ref());
        let url = request.url.clone();
        // Blocks the *worker* until the upstream's status and headers arrive.
        let response = broken::call(&self.agent, request, headers)
            .map_err(|e| broken::map_error(&url, self.proxy.as_ref(), e))?;
        let status = response.status();
        let headers = super::relayed_response_headers(response.headers());
        let mut reader = response.into_body().into_reader();
        let mut buf = vec![0u8; broken::READ_BUFFER_BYTES];
        let mut done = false;
        // An iterator turned into a stream: each `poll_next` calls `next`, which blocks the
        // worker in `read()` until the upstream's next chunk arrives. Honest, and terrible.
        let chunks = std::iter::from_fn(move || {
            if done {
                return None;
            }
            match reader.read(&mut buf) {
                Ok(0) => None,
                Ok(n) => Some(Ok(Bytes::copy_from_slice(&buf[..n]))),
                Err(e) => {
                    done = true;
                    Some(Err(e))
                }
            }
        });
        Ok(UpstreamResponse {
            status,
            headers,
            body: Box::pin(futures_util::stream::iter(chunks)),
            method: StreamMethod::Inline,
        })
    }
}
