//! `/v1/jobs`: submit a chat request, poll it, cancel it, list them, count them. The handlers
//! only read the request and name its owner; the queue is [`crate::jobs`].
//!
//! A job belongs to the API key that submitted it (its SHA-256, the identity the key check put
//! on the request): another key gets 404 for it, as if it did not exist. Without keys, every
//! client is the same nobody. `POST /v1/jobs` checks its body exactly as `/v1/chat/completions`
//! does (same 415, 413 and 400s), and refuses `"stream": true`: a job's answer is kept whole.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::openai::{body_error, require_json, validate};
use crate::error::ApiError;
use crate::jobs::{Jobs, LIST_LIMIT};
use crate::policy::limits::ClientId;
use crate::telemetry::labels::JobStatus;
use crate::telemetry::log::Route;

pub const SUBMIT: Route = Route {
    method: Method::POST,
    path: "/v1/jobs",
};
pub const LIST: Route = Route {
    method: Method::GET,
    path: "/v1/jobs",
};
pub const STATS: Route = Route {
    method: Method::GET,
    path: "/v1/jobs/stats",
};
pub const ONE: Route = Route {
    method: Method::GET,
    path: "/v1/jobs/{id}",
};
pub const CANCEL: Route = Route {
    method: Method::POST,
    path: "/v1/jobs/{id}/cancel",
};

/// The key check's identity, if keys are on.
type Owner = Option<Extension<ClientId>>;

/// `POST /v1/jobs`: 202 with `Location`, once the job is committed.
pub async fn submit(
    State(jobs): State<Arc<Jobs>>,
    State(max_body): State<MaxBody>,
    owner: Owner,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = body.map_err(|rejection| body_error(&rejection, max_body.0))?;
    let model = validate(&body)?;
    refuse_streaming(&body)?;
    let job = jobs.submit(&owner_of(owner), model, body, &headers).await?;
    let location = HeaderValue::try_from(format!("/v1/jobs/{}", job.id))
        .map_err(|_| ApiError::internal("a job id that is not a header value"))?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(job),
    )
        .into_response())
}

/// `GET /v1/jobs/{id}`.
pub async fn get(
    State(jobs): State<Arc<Jobs>>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(jobs.get(&owner_of(owner), &id).await?).into_response())
}

/// `POST /v1/jobs/{id}/cancel`.
pub async fn cancel(
    State(jobs): State<Arc<Jobs>>,
    owner: Owner,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(jobs.cancel(&owner_of(owner), &id).await?).into_response())
}

/// `GET /v1/jobs?status=&limit=&after=`'s query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
    after: Option<String>,
}

/// `GET /v1/jobs`: the caller's jobs, newest first.
pub async fn list(
    State(jobs): State<Arc<Jobs>>,
    owner: Owner,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(JobStatus::parse(text).ok_or_else(|| {
            let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                Some("status"),
                format!("unknown status {text:?}; one of {}", known.join(", ")),
            )
            .with_code("invalid_value")
        })?),
    };
    let (default, max) = LIST_LIMIT;
    let limit = query.limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::bad_request(
            Some("limit"),
            format!("`limit` must be 1 to {max}, got {limit}"),
        )
        .with_code("invalid_value"));
    }
    let owner = owner_of(owner);
    let list = jobs
        .list(&owner, status, query.after.as_deref(), limit)
        .await?;
    Ok(Json(list).into_response())
}

/// `GET /v1/jobs/stats`.
pub async fn stats(State(jobs): State<Arc<Jobs>>) -> Result<Response, ApiError> {
    Ok(Json(jobs.stats().await?).into_response())
}

/// `--max-body-bytes`, named in a 413 (the router's `DefaultBodyLimit` enforces it).
#[derive(Debug, Clone, Copy)]
pub struct MaxBody(pub usize);

/// The owner a job is stored under: the key's digest in hex, or `""` without keys.
fn owner_of(owner: Owner) -> String {
    match owner {
        Some(Extension(ClientId::Key(digest))) => {
            digest
                .iter()
                .fold(String::with_capacity(64), |mut hex, byte| {
                    let _ = write!(hex, "{byte:02x}");
                    hex
                })
        }
        _ => String::new(),
    }
}

/// A job's answer is read whole and kept, so there is nothing to stream.
fn refuse_streaming(body: &[u8]) -> Result<(), ApiError> {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if value.get("stream") == Some(&Value::Bool(true)) {
        return Err(ApiError::bad_request(
            Some("stream"),
            "`stream: true` cannot be a job: its answer is kept whole and read with GET \
             /v1/jobs/{id}; send it to POST /v1/chat/completions to stream it",
        )
        .with_code("invalid_value"));
    }
    Ok(())
}
