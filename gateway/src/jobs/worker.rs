//! A job worker: claim the next job under a lease, run it through the chat path every request
//! takes ([`crate::policy::chat`]), keep the lease alive while it runs, record how it ended.
//!
//! A running job can stop four ways, and the worker races them in one `select!`:
//!
//! - **it ends**: the upstream answered (or refused, or could not be reached after the retries);
//!   the worker writes `completed` or `failed`, if it still holds the lease.
//! - **its heartbeat finds the lease gone**: someone cancelled it (possibly through another
//!   instance), or the lease expired during a stall and another worker took the job back. The
//!   worker drops the request (which closes the upstream connection) and writes nothing.
//! - **it is cancelled here**: `POST /v1/jobs/{id}/cancel` on this instance signals the worker
//!   directly, so the upstream sees the cancel at once instead of at the next heartbeat.
//! - **the drain's deadline**: the worker drops the request and gives the lease back (the job is
//!   `queued` again, in its old place, its attempt not counted), so another instance, or this
//!   one after its restart, runs it.
//!
//! Dropping the request future is the cancellation: in `fixed` mode that closes the upstream
//! connection at once (see [`crate::upstream::fixed`]), and the provider stops generating.
//!
//! A job's run is a relayed request like any other to the operator: it has the access line of
//! one (route `/v1/jobs`, the id of the request that submitted it, kept with its headers), its
//! span and trace (continuing the submitter's `traceparent`), and its first byte, tokens and
//! errors in the LLM series of `/metrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use futures_util::StreamExt as _;
use serde_json::Value;
use tokio::sync::oneshot;

use super::Shared;
use super::store::{Claimed, Finish};
use crate::error::ApiError;
use crate::lifecycle::Phase;
use crate::policy::chat;
use crate::request_id::{self, RequestId};
use crate::telemetry::access::Access;
use crate::telemetry::labels::JobStatus;
use crate::telemetry::log::{LiveStreams, LoggedStream, Route, log_rejected};
use crate::telemetry::otel;
use crate::upstream::UpstreamResponse;
use tracing::Instrument as _;

/// A job's run, in the access log and the traces.
const ROUTE: Route = Route {
    method: Method::POST,
    path: "/v1/jobs",
};

/// How often an idle worker looks for jobs another instance queued or a sweep put back (a
/// submit on this instance wakes one at once).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// A result larger than this is a failed job, not a row that size.
const MAX_RESULT_BYTES: usize = 16 * 1024 * 1024;

/// The jobs this instance's workers are running, by id: how a cancel reaches its worker.
#[derive(Debug, Default)]
pub struct Running {
    jobs: Mutex<HashMap<String, oneshot::Sender<()>>>,
    /// Lease tokens: `<instance>:<n>`, unique per claim.
    claims: AtomicU64,
}

impl Running {
    /// Jobs running now.
    pub fn count(&self) -> usize {
        self.jobs.lock().map_or(0, |jobs| jobs.len())
    }

    /// Tells the worker running `id` here, if any, to drop it.
    pub fn cancel(&self, id: &str) -> bool {
        let sender = self.jobs.lock().ok().and_then(|mut jobs| jobs.remove(id));
        sender.is_some_and(|sender| sender.send(()).is_ok())
    }

    fn start(&self, id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(id.to_owned(), tx);
        }
        rx
    }

    fn end(&self, id: &str) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(id);
        }
    }
}

/// One worker's life: claim and run jobs while the gateway is serving.
pub(super) async fn work(shared: Arc<Shared>) {
    let Some(store) = shared.opened().await else {
        return;
    };
    let mut phase = shared.lifecycle.subscribe();
    loop {
        // Claim only while serving: not before the first readiness measurement, never once a
        // drain has begun (the jobs left are for another instance, or for after the restart).
        let now = *phase.borrow_and_update();
        match now {
            Phase::Starting => {
                if phase.changed().await.is_err() {
                    return;
                }
                continue;
            }
            Phase::Serving => {}
            _ => return,
        }
        if shared.stopping() {
            return;
        }
        let token = format!(
            "{}:{}",
            shared.instance,
            shared.running.claims.fetch_add(1, Ordering::Relaxed)
        );
        let now = super::now_ms();
        let lease_until = now + millis(shared.settings.lease());
        match store.claim(&token, now, lease_until).await {
            Ok(Some(claimed)) => run(&shared, claimed).await,
            Ok(None) => {
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    _ = phase.changed() => {}
                }
            }
            Err(error) => {
                tracing::warn!("job worker: cannot claim a job: {error}");
                tokio::time::sleep(IDLE_POLL).await;
            }
        }
    }
}

/// How a run stopped, before anything is written.
enum Stop {
    Ended(Finish),
    /// The lease is not ours any more: write nothing.
    LeaseLost,
    CancelledHere,
    /// The drain's deadline: give the lease back.
    Draining,
}

async fn run(shared: &Shared, claimed: Claimed) {
    let Some(store) = shared.store.get() else {
        return;
    };
    let Claimed {
        job,
        request,
        headers,
        token,
    } = claimed;
    let metrics = &shared.metrics.jobs;
    let started = super::now_ms();
    metrics
        .wait
        .observe(seconds(started.saturating_sub(job.created_at)));
    metrics.running.inc();
    let mut cancelled = shared.running.start(&job.id);
    tracing::debug!(job = %job.id, attempt = job.attempts, "job started");

    // Boxed, so that dropping it below really ends it (and with it the upstream request).
    let mut complete = Box::pin(complete(shared, &job.model, headers, request));
    let renew_every = shared.settings.lease() / 3;
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    let stop = loop {
        tokio::select! {
            finish = &mut complete => break Stop::Ended(finish),
            _ = heartbeat.tick() => {
                let until = super::now_ms() + millis(shared.settings.lease());
                match store.renew(&job.id, &token, until).await {
                    Ok(true) => {}
                    Ok(false) => break Stop::LeaseLost,
                    // The database is away: keep running; if it stays away, the lease expires
                    // and the job runs again elsewhere (at least once, never lost).
                    Err(error) => tracing::warn!(job = %job.id, "cannot renew the lease: {error}"),
                }
            }
            _ = &mut cancelled => break Stop::CancelledHere,
            () = shared.lifecycle.reached(Phase::Stopped) => break Stop::Draining,
            () = shared.stop.cancelled() => break Stop::Draining,
        }
    };
    // Dropping the request here, before any write, is what cancels it upstream.
    drop(complete);
    shared.running.end(&job.id);
    metrics.running.dec();
    let ended = super::now_ms();
    match stop {
        Stop::Ended(finish) => {
            let status = match finish {
                Finish::Completed { .. } => JobStatus::Completed,
                Finish::Failed { .. } => JobStatus::Failed,
            };
            match store.finish(&job.id, &token, &finish, ended).await {
                Ok(true) => {
                    metrics.finished(status);
                    metrics
                        .processing
                        .observe(seconds(ended.saturating_sub(started)));
                }
                Ok(false) => {
                    tracing::info!(job = %job.id, "job ended after its lease was lost; not recorded")
                }
                Err(error) => tracing::warn!(
                    job = %job.id,
                    "cannot record the job's end ({error}); it runs again when its lease expires"
                ),
            }
        }
        Stop::LeaseLost => {
            tracing::info!(job = %job.id, "lease lost (cancelled or taken back): upstream request dropped")
        }
        Stop::CancelledHere => tracing::info!(job = %job.id, "cancelled: upstream request dropped"),
        Stop::Draining => match store.release(&job.id, &token).await {
            Ok(_) => {
                tracing::info!(job = %job.id, "drain deadline: lease given back, the job is queued again")
            }
            Err(error) => tracing::warn!(
                job = %job.id,
                "cannot give the lease back ({error}); the job runs again when it expires"
            ),
        },
    }
}

/// The request, sent and read to its end: what the worker records. Run as a request of its
/// own: the submitter's request id (a fresh one if it was not kept), an access record, a span.
async fn complete(shared: &Shared, model: &str, headers: String, request: Vec<u8>) -> Finish {
    let headers = stored_headers(&headers);
    let id = headers
        .get(request_id::HEADER)
        .and_then(RequestId::from_header)
        .unwrap_or_else(RequestId::generate);
    let span = otel::request_span(id.as_str(), ROUTE.method.as_str(), ROUTE.path, &headers);
    let access = Access::new(id.clone());
    let run = access.scope(send(shared, model, headers, request));
    id.scope(run).instrument(span).await
}

async fn send(shared: &Shared, model: &str, headers: HeaderMap, request: Vec<u8>) -> Finish {
    let received = Instant::now();
    if let (Some(access), Ok(provider)) = (Access::current(), shared.providers.route(model)) {
        access.set_model(model, provider.model_label(model));
    }
    let outcome = chat::send(
        &shared.providers,
        &shared.resilience,
        model,
        &headers,
        Bytes::from(request),
    )
    .await;
    let mut upstream = match outcome.and_then(|outcome| outcome.result.map_err(ApiError::from)) {
        Ok(upstream) => upstream,
        Err(error) => {
            log_rejected(&ROUTE.method, ROUTE.path, &error, received);
            return failed(&error);
        }
    };
    let status = upstream.status;
    // Read through the relay's own logging body: one access line, the first byte, the tokens.
    let body = std::mem::replace(&mut upstream.body, Box::pin(futures_util::stream::empty()));
    let mut logged = LoggedStream::new(body, &LiveStreams::default(), ROUTE, status, received);
    logged.observe(&shared.metrics, false, true);
    upstream.body = Box::pin(logged);
    let body = match read_body(upstream).await {
        Ok(body) => body,
        Err(error) => return failed(&error),
    };
    if !status.is_success() {
        return upstream_refused(status, &body);
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        Ok(_) => Finish::Completed { result: body },
        Err(e) => Finish::Failed {
            code: "invalid_upstream_response".into(),
            message: format!("the upstream answered {status} with a body that is not JSON: {e}"),
        },
    }
}

async fn read_body(upstream: UpstreamResponse) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    let mut chunks = upstream.body;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_gateway(format!("reading the upstream's answer: {e}")))?;
        if body.len() + chunk.len() > MAX_RESULT_BYTES {
            return Err(ApiError::bad_gateway(format!(
                "the upstream's answer is larger than {MAX_RESULT_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn failed(error: &ApiError) -> Finish {
    Finish::Failed {
        code: error.code.unwrap_or("upstream_error").to_owned(),
        message: error.message.clone(),
    }
}

/// The upstream's own error (OpenAI's shape, if it used it), kept as the job's error.
fn upstream_refused(status: axum::http::StatusCode, body: &[u8]) -> Finish {
    let error = serde_json::from_slice::<Value>(body).ok();
    let error = error.as_ref().and_then(|value| value.get("error"));
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Finish::Failed {
        code: field("code").unwrap_or_else(|| "upstream_error".to_owned()),
        message: format!(
            "the upstream answered {status}: {}",
            field("message").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
        ),
    }
}

/// The headers kept with a job (`[[name, value], ...]`), back as a map.
fn stored_headers(text: &str) -> HeaderMap {
    let pairs: Vec<(String, String)> = serde_json::from_str(text).unwrap_or_default();
    pairs
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::try_from(name).ok()?,
                HeaderValue::try_from(value).ok()?,
            ))
        })
        .collect()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[allow(clippy::cast_precision_loss)]
fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}
