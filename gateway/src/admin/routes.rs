//! The admin plane's routes: what an orchestrator, a load balancer and an operator ask.
//!
//! | route | answer |
//! |---|---|
//! | `GET /livez` | 200 `{"status":"alive"}` while the process runs: answered by the admin thread alone, touching nothing of the main runtime, so a busy or stalled gateway is never killed for being busy |
//! | `GET /readyz` | 200 `ready`, or 503 `degraded` / `draining` / `starting` (see [`super::readiness`]) |
//! | `GET /health` | the same as `/readyz`, for tools that only know that name |
//! | `GET /metrics` | the main listener's `/metrics`, read without the main runtime |
//! | `GET /debug/pool` | the blocking pool's counters |
//! | `POST /admin/drain` | starts the drain (as SIGTERM does); 202 with the phase; again, harmless |
//!
//! `POST /admin/*` is the one thing here that changes anything, so it is the one thing behind a
//! token: `--admin-token`, presented as `Authorization: Bearer TOKEN`, hashed and compared in
//! constant time like the API keys ([`crate::policy::auth::ApiKeys`]), never logged. Without a
//! token it is open, which the configuration allows only on a loopback address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::readiness::Readiness;
use crate::error::ApiError;
use crate::http::probes::render_metrics;
use crate::http::routes::in_root_span;
use crate::http::shutdown::Drain;
use crate::http::state::AppState;
use crate::lifecycle::Phase;
use crate::policy::auth::ApiKeys;

/// What the handlers read. Cloning is shallow.
#[derive(Debug, Clone)]
pub struct Admin {
    pub state: AppState,
    pub readiness: Arc<Readiness>,
    /// The admin token as a one-key set; empty when none is configured (loopback only).
    pub token: ApiKeys,
    /// The drain's periods, told to whoever starts one.
    pub drain: Drain,
}

/// The admin plane's router.
pub fn router(admin: Admin) -> Router {
    let guarded = Router::new()
        .route("/admin/drain", post(drain))
        .route_layer(middleware::from_fn_with_state(
            admin.token.clone(),
            require_token,
        ));
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/health", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/pool", get(pool))
        .merge(guarded)
        .fallback(not_found)
        // Its lines (a drain requested, a token refused) carry the gateway's mode too.
        .layer(middleware::from_fn_with_state(
            admin.state.span().clone(),
            in_root_span,
        ))
        .with_state(admin)
}

async fn livez() -> Json<Value> {
    Json(json!({"status": "alive"}))
}

async fn readyz(State(admin): State<Admin>) -> (StatusCode, Json<Value>) {
    let (code, body) = admin.readiness.report(&admin.state);
    (code, Json(body))
}

async fn metrics(State(admin): State<Admin>) -> Response {
    // The readiness series as of this instant, not as of the prober's last tick.
    admin.readiness.publish(&admin.state);
    render_metrics(&admin.state)
}

async fn pool(State(admin): State<Admin>) -> Json<common::pool::PoolSnapshot> {
    Json(admin.state.pool().snapshot())
}

/// `POST /admin/drain`: the same drain a SIGTERM starts (`crate::http::shutdown` runs it).
async fn drain(
    State(admin): State<Admin>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> (StatusCode, Json<Value>) {
    let lifecycle = admin.state.lifecycle();
    let started = lifecycle.advance(Phase::Draining);
    if started {
        tracing::info!(%peer, "shutdown requested (POST /admin/drain)");
    }
    let body = json!({
        "phase": lifecycle.phase().as_str(),
        "started": started,
        "drain_grace_secs": admin.drain.grace.as_secs(),
        "drain_secs": admin.drain.deadline.as_secs(),
    });
    (StatusCode::ACCEPTED, Json(body))
}

/// Middleware on `POST /admin/*`: the bearer token, when one is configured.
async fn require_token(State(token): State<ApiKeys>, request: Request, next: Next) -> Response {
    if token.is_empty() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let error = match presented {
        Some(presented) if token.accepts(presented) => return next.run(request).await,
        // Never echo what was presented: logs and terminals keep what they show.
        Some(_) => ApiError::unauthorized("invalid_admin_token", "invalid admin token"),
        None => ApiError::unauthorized(
            "missing_admin_token",
            "missing admin token: send Authorization: Bearer <--admin-token>",
        ),
    };
    tracing::warn!(path = %request.uri().path(), code = error.code.unwrap_or(""), "admin request refused");
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::bad_request(
            None,
            format!(
                "no admin route for {}; try GET /livez, /readyz, /health, /metrics, /debug/pool \
                 or POST /admin/drain",
                uri.path()
            ),
        )
    }
}
