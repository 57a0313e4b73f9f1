//! `GET /slow_stream?chunks=N&interval_ms=M`: the slow upstream of the original reproduction.
//!
//! N text chunks, one every M ms, sent as HTTP/1.1 chunks the moment they are due. Pacing uses
//! `sleep_until` against the stream's start rather than `sleep(M)` per chunk, so a busy runtime
//! cannot make the stream drift longer than N x M: the length of a stream is part of what the
//! demo measures.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;

/// Upper bounds keep one request from holding a connection for days.
pub const MAX_CHUNKS: u32 = 100_000;
pub const MAX_INTERVAL_MS: u64 = 60_000;

/// Query parameters; unknown ones are rejected so a typo does not silently use the default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    chunks: Option<u32>,
    interval_ms: Option<u64>,
}

pub async fn handler(
    State(state): State<AppState>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (chunks, interval_ms) =
        checked(&state, params).inspect_err(|_| state.stats.bad_request())?;
    let interval = Duration::from_millis(interval_ms);
    let start = Instant::now();
    let guard = state.stats.stream_started();
    let stream = futures_util::stream::unfold((1u32, guard), move |(n, mut guard)| async move {
        if n > chunks {
            guard.finish();
            return None;
        }
        tokio::time::sleep_until(start + interval * n).await;
        let chunk = Bytes::from(format!("chunk {n}/{chunks}\n"));
        Some((Ok::<_, Infallible>(chunk), (n + 1, guard)))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The stream's chunks and interval, or the 400 naming the parameter at fault.
fn checked(
    state: &AppState,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<(u32, u64), ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(None, e.body_text()))?;
    let chunks = params.chunks.unwrap_or(state.config.chunks);
    let interval_ms = params.interval_ms.unwrap_or(state.config.interval_ms);
    if !(1..=MAX_CHUNKS).contains(&chunks) {
        return Err(ApiError::bad_request(
            Some("chunks"),
            format!("chunks must be between 1 and {MAX_CHUNKS}, got {chunks}"),
        ));
    }
    if interval_ms > MAX_INTERVAL_MS {
        return Err(ApiError::bad_request(
            Some("interval_ms"),
            format!("interval_ms must be between 0 and {MAX_INTERVAL_MS}, got {interval_ms}"),
        ));
    }
    Ok((chunks, interval_ms))
}
