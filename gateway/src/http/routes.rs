//! The router: which path goes to which handler, behind which policies, and the JSON answers
//! for a path or a method it does not serve.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tracing::{Instrument as _, Span};

use super::state::AppState;
use crate::error::ApiError;

/// The gateway's routes. Kept apart from [`crate::serve`] so tests can drive it without a socket.
///
/// Two groups: the relaying routes, behind the API-key check, and the probes, open (see
/// [`crate::policy::auth`] for why). `route_layer` runs the check only on a matched route, so an unknown path
/// is still a 404, not a 401.
pub fn app(state: AppState) -> Router {
    let relaying = Router::new()
        .route("/chat/stream", get(crate::lessons::stream::chat_stream))
        .route(
            "/v1/chat/completions",
            post(super::openai::chat_completions)
                .layer(DefaultBodyLimit::max(state.max_body_bytes())),
        )
        .route("/v1/models", get(super::openai::models))
        .route("/v1/solve", post(crate::lessons::solve::solve))
        // Bounded by `--ws-max-connections`, not by the inbound cap: `admit` holds its place only
        // until the 101's empty body ends (see `super::ws`).
        .route("/v1/chat/ws", get(super::ws::chat_ws))
        // Layers run bottom-up: the key check first, then the rate and concurrency limits.
        // Each middleware gets only its part of the state.
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(state.inbound()),
            crate::policy::limits::admit,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.api_keys().clone(),
            crate::policy::auth::require_api_key,
        ));
    let probes = Router::new()
        .route("/health", get(super::probes::health))
        .route(
            "/debug/health-sync",
            get(crate::lessons::health::health_sync),
        )
        .route(
            "/debug/health-async",
            get(crate::lessons::health::health_async),
        )
        .route("/debug/pool", get(crate::lessons::health::pool))
        .route("/metrics", get(super::probes::metrics));
    relaying
        .merge(probes)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(state.metrics()),
            super::probes::count_requests,
        ))
        // Outermost: everything a request does, down to its last log line, is in the span.
        .layer(middleware::from_fn_with_state(
            state.span().clone(),
            in_root_span,
        ))
        .with_state(state)
}

/// Runs the request in the gateway's root span, so every line it logs names the mode.
async fn in_root_span(State(span): State<Span>, request: Request, next: Next) -> Response {
    next.run(request).instrument(span).await
}

/// Fallback route: unknown paths get a JSON 404 naming the routes that exist.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::bad_request(
            None,
            format!(
                "no route for {}; try POST /v1/chat/completions, GET /v1/chat/ws (WebSocket), \
                 GET /v1/models, POST /v1/solve, \
                 /chat/stream, /health, /metrics, /debug/pool, /debug/health-sync or \
                 /debug/health-async",
                uri.path()
            ),
        )
    }
}

/// A known path with the wrong method (e.g. `GET /v1/chat/completions`): a JSON 405, not
/// axum's empty one.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::bad_request(
            None,
            format!(
                "{method} is not allowed on {}; /v1/chat/completions and /v1/solve take POST, \
                 the others GET",
                uri.path()
            ),
        )
    }
}
