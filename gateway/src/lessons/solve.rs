//! Lesson 7: CPU-bound work in an async service. `POST /v1/solve` with `{"work": N}` hashes a
//! 1 KiB buffer N times with SHA-256, chaining each digest into the next round: real CPU, no I/O,
//! roughly proportional to N. Where that work runs is `--cpu-mode`:
//!
//! - `inline`: on the async worker that polls the handler. Fine for microseconds of work. For
//!   milliseconds it blocks the worker exactly as a blocking read does ([`crate::upstream::inline`]):
//!   every other task on it waits, and with `--worker-threads 1` even `/debug/health-async` waits
//!   for the whole computation. Choose it only when the work is tiny and bounded.
//! - `blocking`: `spawn_blocking` through the counted [`crate::telemetry::pool::BlockingPool`]. The workers
//!   stay free, but the pool queues without bound and is shared with everything else that needs
//!   it (the health check, DNS, broken-mode streams): 100 concurrent requests mean 100 queued
//!   jobs, latency grows for everyone, and nothing says no. Choose it for occasional work.
//! - `bounded` (the default): a semaphore with `--cpu-workers` permits (default: one per core)
//!   in front of `spawn_blocking`, so at most that many computations run at once and the pool
//!   keeps threads for the rest; plus an admission limit: at most `--cpu-queue` requests may
//!   wait for a permit. Past it the answer is an immediate **503** with `Retry-After: 1` (code
//!   `cpu_queue_full`), which a client or load balancer can act on, instead of a queue that hides
//!   overload until every request times out. Choose it for anything a client can trigger at will.
//!
//! Every answer says where the time went: `queued_ms` (waiting for a thread or a permit) and
//! `compute_ms` (hashing). Drive it with `diag load` while `diag watch` runs (see README.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::admission::Admission;
use crate::config::{Config, CpuMode};
use crate::error::ApiError;
use crate::telemetry::metrics::{Metrics, ShedReason};
use crate::telemetry::pool::BlockingPool;

/// The largest `work` accepted: about a second of one core in a release build.
pub const MAX_WORK: u64 = 2_000_000;
const BUFFER_BYTES: usize = 1024;

/// The CPU endpoint's state: its mode, and in bounded mode its workers and their queue; the
/// pool it computes on and the counter of its refusals.
#[derive(Debug)]
pub struct Cpu {
    mode: CpuMode,
    pool: Arc<BlockingPool>,
    metrics: Arc<Metrics>,
    /// `--cpu-workers` places, `--cpu-queue` waiting, for as long as it takes: a request in the
    /// queue will be served, so it need not give up; one past it is refused at once.
    bounded: Admission,
    workers: usize,
    queue_limit: usize,
}

impl Cpu {
    /// `--cpu-mode`, `--cpu-workers` and `--cpu-queue`.
    pub fn new(config: &Config, pool: Arc<BlockingPool>, metrics: Arc<Metrics>) -> Self {
        let queue_limit = config.cpu_queue;
        let workers = config.cpu_workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        Self {
            mode: config.cpu_mode,
            pool,
            metrics,
            bounded: Admission::new(workers, queue_limit, Duration::MAX),
            workers,
            queue_limit,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolveRequest {
    work: u64,
}

/// `work` rounds of SHA-256 over a 1 KiB buffer, each round's digest feeding the next.
pub fn compute(work: u64) -> [u8; 32] {
    let mut buffer = [0u8; BUFFER_BYTES];
    for (i, byte) in buffer.iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let mut digest = [0u8; 32];
    for round in 0..work {
        let mut hasher = Sha256::new();
        hasher.update(round.to_le_bytes());
        hasher.update(digest);
        hasher.update(buffer);
        digest = hasher.finalize().into();
        buffer[..32].copy_from_slice(&digest);
    }
    digest
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub async fn solve(
    State(cpu): State<Arc<Cpu>>,
    body: Result<Json<SolveRequest>, JsonRejection>,
) -> Response {
    match run(&cpu, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn run(
    cpu: &Cpu,
    body: Result<Json<SolveRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    // Not JSON at all is a 415, as on /v1/chat/completions; anything else wrong is a 400
    // (axum would say 422 for a well-formed body of the wrong shape).
    let Json(request) = body.map_err(|rejection| match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::unsupported_media_type(format!(
            "{}: send `Content-Type: application/json` and a body like {{\"work\": 1000}}",
            rejection.body_text()
        )),
        _ => ApiError::bad_request(
            Some("work"),
            format!(
                "{}; expected a body like {{\"work\": 1000}}",
                rejection.body_text()
            ),
        ),
    })?;
    let work = request.work;
    if !(1..=MAX_WORK).contains(&work) {
        return Err(ApiError::bad_request(
            Some("work"),
            format!("`work` must be between 1 and {MAX_WORK}, got {work}"),
        )
        .with_code("invalid_value"));
    }
    let received = Instant::now();
    let (digest, queued, computed) = match cpu.mode {
        CpuMode::Inline => {
            // Blocks this worker for the whole computation. That is the point of the mode.
            let digest = compute(work);
            (digest, Duration::ZERO, received.elapsed())
        }
        CpuMode::Blocking => cpu
            .pool
            .spawn(move |waited| {
                let started = Instant::now();
                (compute(work), waited, started.elapsed())
            })
            .await
            .map_err(|e| ApiError::internal(format!("the CPU job failed: {e}")))?,
        CpuMode::Bounded => {
            // The only refusal: the queue is full (the wait itself has no limit).
            let Ok(permit) = cpu.bounded.admit().await else {
                cpu.metrics.shed(ShedReason::CpuQueueFull);
                return Ok(queue_full(cpu));
            };
            let (digest, waited, computed) = cpu
                .pool
                .spawn(move |waited| {
                    let _permit = permit;
                    let started = Instant::now();
                    (compute(work), waited, started.elapsed())
                })
                .await
                .map_err(|e| ApiError::internal(format!("the CPU job failed: {e}")))?;
            // Time for a permit plus time for a pool thread.
            let queued = received.elapsed().saturating_sub(computed).max(waited);
            (digest, queued, computed)
        }
    };
    Ok(Json(json!({
        "digest": hex(&digest),
        "work": work,
        "cpu_mode": cpu.mode.as_str(),
        "queued_ms": queued.as_secs_f64() * 1e3,
        "compute_ms": computed.as_secs_f64() * 1e3,
    }))
    .into_response())
}

/// 503 in OpenAI's error shape, with `Retry-After`: the bounded queue is full, try again soon.
fn queue_full(cpu: &Cpu) -> Response {
    ApiError::overloaded(
        ShedReason::CpuQueueFull.as_str(),
        format!(
            "the gateway is busy: {} computations running and {} waiting (--cpu-workers, \
             --cpu-queue); retry after a second",
            cpu.workers, cpu.queue_limit
        ),
    )
    .retry_after(std::time::Duration::from_secs(1))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_is_deterministic_and_depends_on_work() {
        assert_eq!(compute(3), compute(3));
        assert_ne!(compute(3), compute(4));
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
    }
}
