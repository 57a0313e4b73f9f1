//! The gateway's own probes: `GET /health` for load balancers, `GET /metrics` for Prometheus.
//!
//! `/health` is lesson 4 put to work (see [`crate::lessons::health`] for the two probes that
//! show the lesson): it times a trivial pool job against a threshold, bounded so the check
//! itself never hangs, and reports the pool's counters. Status codes: **200** with
//! `"status":"ok"` when the pool answered within the threshold; **503** with
//! `"status":"degraded"` when it answered late or not within the bound. 503 makes a load
//! balancer or readiness probe stop sending new work to an instance whose pool is saturated; the
//! JSON says why.
//!
//! This `/health` shares the runtime it judges: its request waits in the same queue as the
//! streams, so under load it reports late, and with every worker blocked (`--mode inline`) it
//! does not report at all (see [`crate::lessons::health`]). It stays as it is, because the
//! lessons and `diag` measure exactly that. What a load balancer or an orchestrator should ask
//! is the admin plane's `/readyz` and `/livez` ([`crate::admin`]), answered from a thread of
//! their own.
//!
//! `/metrics` serves [`crate::telemetry::metrics`]: gauges that mirror state kept elsewhere
//! (pool counters, semaphores) are read here at scrape time, so they cannot drift from the
//! truth. Both are open, like `/debug/*`: a probe must not need an API key.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::state::AppState;
use crate::error::ApiError;
use crate::telemetry::metrics::ProviderLabel;

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (threshold, timeout) = state.health_limits();
    let started = Instant::now();
    // The job is trivial; all the time measured is time spent waiting for a pool thread.
    let answered = tokio::time::timeout(timeout, state.pool().spawn(|_| ())).await;
    let elapsed = started.elapsed();
    state.metrics().health_probe.observe(elapsed.as_secs_f64());
    let timed_out = !matches!(answered, Ok(Ok(())));
    let degraded = timed_out || elapsed > threshold;
    let status = if degraded { "degraded" } else { "ok" };
    let code = if degraded {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "status": status,
        "mode": state.mode().to_string(),
        "checks": {
            "blocking_pool_response_ms": elapsed.as_secs_f64() * 1e3,
            "blocking_pool_timed_out": timed_out,
            "threshold_ms": threshold.as_secs_f64() * 1e3,
        },
        "pool": state.pool().snapshot(),
        "live_streams": state.live_streams().get(),
    });
    (code, Json(body))
}

fn as_gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `GET /metrics`: reads the mirrored gauges, then encodes the registry.
pub async fn metrics(State(state): State<AppState>) -> Response {
    render_metrics(&state)
}

/// The `/metrics` answer, on the main listener and on the admin plane alike: reading the
/// gauges touches only counters, never the main runtime.
pub fn render_metrics(state: &AppState) -> Response {
    let m = state.metrics();
    let pool = state.pool().snapshot();
    m.pool_running.set(as_gauge(pool.running));
    m.pool_queued.set(as_gauge(pool.queued));
    m.pool_threads.set(as_gauge(pool.max_threads));
    let inbound = state.inbound().places();
    m.in_flight.set(as_gauge(inbound.in_use()));
    m.queued.set(as_gauge(inbound.queued()));
    m.limit.set(as_gauge(inbound.limit()));
    m.live_streams.set(as_gauge(state.live_streams().get()));
    m.ws_connections.set(as_gauge(state.sockets().in_use()));
    m.connections_open.set(as_gauge(state.connections().open()));
    m.connections_limit
        .set(as_gauge(state.connections().limit()));
    state.cache().observe(&m.cache);
    for provider in state.providers().iter() {
        let label = ProviderLabel {
            provider: provider.name.clone(),
        };
        m.upstream_in_use
            .get_or_create(&label)
            .set(as_gauge(provider.in_use()));
        m.upstream_limit
            .get_or_create(&label)
            .set(as_gauge(provider.limit()));
    }
    match m.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("cannot encode the metrics: {e}")).into_response(),
    }
}
