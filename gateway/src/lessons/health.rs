//! Lesson 4: a health check is only as honest as the resources it touches.
//!
//! Three probes, one question each:
//!
//! - `GET /debug/health-async` answers on an async worker: "is the event loop turning?" It stays
//!   fast in broken mode, which is why a liveness probe like it never notices the outage.
//! - `GET /debug/health-sync` answers from inside a `spawn_blocking` job, the way a synchronous
//!   endpoint in a thread-pool framework answers. In broken mode it waits behind every stream
//!   holding a pool thread: it shows what any pool-bound request of the service experiences.
//! - `GET /health` (the gateway's own readiness check, served by [`crate::http::probes`]) times
//!   a trivial pool job against a threshold, bounded so the check itself never hangs, and
//!   reports the pool's counters. Status codes: **200** with `"status":"ok"`
//!   when the pool answered within the threshold; **503** with `"status":"degraded"` when it
//!   answered late or not within the bound. 503 makes a load balancer or readiness probe stop
//!   sending new work to an instance whose pool is saturated; the JSON says why.
//!
//! `GET /debug/pool` serves the counters of [`crate::telemetry::pool`] on the async worker.
//!
//! In `inline` mode none of the three can be trusted to answer: they all need an async worker,
//! and the workers are blocked in upstream reads ([`crate::upstream::inline`]). Even `/health`'s
//! bound is a tokio timer, which only a running worker can fire. A stalled runtime can only be
//! seen from outside it: a load balancer's own timeout, `diag`, or the admin plane.
//!
//! # The last word: a check must not run inside what it measures
//!
//! These probes, and the main listener's `/health`, share the runtime they judge. Their request
//! is one more task in its queue, so under load the answer measures the queue *and* the probe
//! (at 4,000 relayed streams on 2 cores, `/health`'s p99 was 776 ms while every stream kept
//! pace: a balancer with a 500 ms check timeout would have taken a healthy instance out), and
//! with the workers blocked there is no answer at all. That is the failure this project is about
//! (liveness probes killed under load), reproduced by our own health check; it stays here as the
//! lesson.
//!
//! The fix is [`crate::admin`]: a thread and a runtime of their own, on their own port
//! (`--admin-listen`). `/livez` there touches nothing of the gateway, so it answers while the
//! process runs; `/readyz` times the main runtime *from outside*: a task spawned on its handle
//! (how long until a worker polls it) and a job on its blocking pool (how long until a thread
//! starts it), each bounded by the admin runtime's own timer, and answers at once from the latest
//! result ([`crate::admin::readiness`]). In `inline` mode with every worker blocked it reads
//! `degraded` within its threshold, while `/debug/health-async` here gets no answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::telemetry::pool::{BlockingPool, PoolSnapshot};

pub async fn health_async() -> Json<Value> {
    Json(json!({"status": "ok", "answered_on": "async_worker"}))
}

/// No timeout here on purpose: this endpoint exists to show how long the pool makes it wait.
pub async fn health_sync(State(pool): State<Arc<BlockingPool>>) -> Result<Json<Value>, ApiError> {
    let waited = pool
        .spawn(|waited| waited)
        .await
        .map_err(|e| ApiError::internal(format!("health job failed: {e}")))?;
    Ok(Json(json!({
        "status": "ok",
        "answered_on": "blocking_pool",
        "waited_for_thread_ms": waited.as_secs_f64() * 1e3,
    })))
}

pub async fn pool(State(pool): State<Arc<BlockingPool>>) -> Json<PoolSnapshot> {
    Json(pool.snapshot())
}
