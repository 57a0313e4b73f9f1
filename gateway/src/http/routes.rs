//! The router: the one table of routes, which path goes to which handler behind which
//! policies, and the JSON answers for a path or a method the table does not hold.
//!
//! [`ROUTES`] is the only list of what the gateway serves: [`app`] builds the router from it,
//! and the 404 and 405 messages are written from it, so a new route cannot be served without
//! being named there too. Each row gives its method and path once; its handler is told that
//! method rather than choosing one itself.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter, on};
use tracing::{Instrument as _, Span};

use super::closing::Closing;
use super::guard::{self, Guard};
use super::observe::Observe;
use super::state::AppState;
use super::{jobs, observe, openai, probes, ws};
use crate::error::ApiError;
use crate::lessons::{health, solve, stream};
use crate::telemetry::log::Route;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The routes that spend upstream capacity (or CPU): behind the API key, the per-key rate
    /// and the inbound cap.
    Guarded,
    /// The probes: open, and outside every limit, so they answer when the gateway is full (see
    /// [`crate::policy::auth`] for why).
    Open,
}

/// One row of the route table.
#[derive(Debug)]
pub struct Endpoint {
    pub route: Route,
    /// Said after the route in the 404, e.g. `(WebSocket)`.
    pub note: &'static str,
    pub access: Access,
    /// The handler, on the row's method.
    handler: fn(&AppState, MethodFilter) -> MethodRouter<AppState>,
}

const fn get(path: &'static str) -> Route {
    Route {
        method: Method::GET,
        path,
    }
}

/// Everything the gateway serves, in the order the 404 names it.
pub static ROUTES: [Endpoint; 15] = [
    Endpoint {
        route: openai::CHAT,
        note: "",
        access: Access::Guarded,
        handler: |state, method| {
            on(method, openai::chat_completions)
                .layer(DefaultBodyLimit::max(state.max_body_bytes()))
        },
    },
    // Bounded by `--ws-max-connections`, not by the inbound cap: `admit` holds its place only
    // until the 101's empty body ends (see `super::ws`).
    Endpoint {
        route: ws::ROUTE,
        note: " (WebSocket)",
        access: Access::Guarded,
        handler: |_, method| on(method, ws::chat_ws),
    },
    Endpoint {
        route: openai::MODELS,
        note: "",
        access: Access::Guarded,
        handler: |_, method| on(method, openai::models),
    },
    Endpoint {
        route: Route {
            method: Method::POST,
            path: "/v1/solve",
        },
        note: "",
        access: Access::Guarded,
        handler: |_, method| on(method, solve::solve),
    },
    // The job queue (`crate::jobs`): short requests, behind the same key check and limits.
    Endpoint {
        route: jobs::SUBMIT,
        note: "",
        access: Access::Guarded,
        handler: |state, method| {
            on(method, jobs::submit).layer(DefaultBodyLimit::max(state.max_body_bytes()))
        },
    },
    Endpoint {
        route: jobs::LIST,
        note: "",
        access: Access::Guarded,
        handler: |_, method| on(method, jobs::list),
    },
    Endpoint {
        route: jobs::STATS,
        note: "",
        access: Access::Guarded,
        handler: |_, method| on(method, jobs::stats),
    },
    Endpoint {
        route: jobs::ONE,
        note: "",
        access: Access::Guarded,
        handler: |_, method| on(method, jobs::get),
    },
    Endpoint {
        route: jobs::CANCEL,
        note: "",
        access: Access::Guarded,
        handler: |_, method| on(method, jobs::cancel),
    },
    Endpoint {
        route: stream::ROUTE,
        note: "",
        access: Access::Guarded,
        handler: |_, method| on(method, stream::chat_stream),
    },
    Endpoint {
        route: get("/health"),
        note: "",
        access: Access::Open,
        handler: |_, method| on(method, probes::health),
    },
    Endpoint {
        route: get("/metrics"),
        note: "",
        access: Access::Open,
        handler: |_, method| on(method, probes::metrics),
    },
    Endpoint {
        route: get("/debug/pool"),
        note: "",
        access: Access::Open,
        handler: |_, method| on(method, health::pool),
    },
    Endpoint {
        route: get("/debug/health-sync"),
        note: "",
        access: Access::Open,
        handler: |_, method| on(method, health::health_sync),
    },
    Endpoint {
        route: get("/debug/health-async"),
        note: "",
        access: Access::Open,
        handler: |_, method| on(method, health::health_async),
    },
];

/// The gateway's routes. Kept apart from [`crate::serve`] so tests can drive it without a socket.
///
/// Two groups: the guarded routes, behind the drain's refusal, the API-key check and the
/// limits, and the probes, open. `route_layer` runs the check only on a matched route, so an unknown path is still a
/// 404, not a 401.
pub fn app(state: AppState) -> Router {
    let mut guarded = Router::new();
    let mut open = Router::new();
    for endpoint in &ROUTES {
        let method = MethodFilter::try_from(endpoint.route.method.clone())
            .expect("the route table holds only methods axum can route");
        let handler = (endpoint.handler)(&state, method);
        match endpoint.access {
            Access::Guarded => guarded = guarded.route(endpoint.route.path, handler),
            Access::Open => open = open.route(endpoint.route.path, handler),
        }
    }
    // One middleware each, not one per check: a `from_fn` layer costs a boxed future and a
    // service clone per request (see `guard`). The guard only on a matched route (`route_layer`),
    // so an unknown path is still a 404, not a 401.
    let guarded = guarded.route_layer(middleware::from_fn_with_state(
        Guard {
            closing: Closing {
                lifecycle: state.lifecycle().clone(),
                metrics: Arc::clone(state.metrics()),
            },
            keys: state.api_keys().clone(),
            inbound: Arc::clone(state.inbound()),
        },
        guard::guard,
    ));
    guarded
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Around everything: the root span, the request's id, span, count and access record;
        // its duration when the response's body ends (see `observe`).
        .layer(middleware::from_fn_with_state(
            Observe {
                metrics: Arc::clone(state.metrics()),
                root: state.span().clone(),
            },
            observe::observe,
        ))
        .with_state(state)
}

/// Runs the request in the gateway's root span, so every line it logs names the mode (the admin
/// plane's requests too).
pub async fn in_root_span(State(span): State<Span>, request: Request, next: Next) -> Response {
    next.run(request).instrument(span).await
}

/// Fallback route: unknown paths get a JSON 404 naming the routes that exist.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::bad_request(None, format!("no route for {}; try {}", uri.path(), menu()))
    }
}

/// A known path with the wrong method (e.g. `GET /v1/chat/completions`): a JSON 405, not
/// axum's empty one.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        ..ApiError::bad_request(
            None,
            format!("{method} is not allowed on {}; {}", uri.path(), methods()),
        )
    }
}

/// `POST /v1/chat/completions, GET /v1/chat/ws (WebSocket), ... or GET /debug/health-async`.
fn menu() -> String {
    let names: Vec<String> = ROUTES
        .iter()
        .map(|e| format!("{} {}{}", e.route.method, e.route.path, e.note))
        .collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// `/v1/chat/completions and /v1/solve take POST, the others GET`.
fn methods() -> String {
    let mut groups: Vec<(&Method, Vec<&str>)> = Vec::new();
    for endpoint in ROUTES.iter().filter(|e| e.route.method != Method::GET) {
        let method = &endpoint.route.method;
        match groups.iter_mut().find(|(m, _)| *m == method) {
            Some((_, paths)) => paths.push(endpoint.route.path),
            None => groups.push((method, vec![endpoint.route.path])),
        }
    }
    let mut parts: Vec<String> = groups
        .iter()
        .map(|(method, paths)| format!("{} take {method}", and_list(paths)))
        .collect();
    parts.push("the others GET".to_owned());
    parts.join(", ")
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_messages_name_every_route_in_the_table() {
        let menu = menu();
        for endpoint in &ROUTES {
            let name = format!("{} {}", endpoint.route.method, endpoint.route.path);
            assert!(menu.contains(&name), "{name} missing from {menu}");
            assert!(MethodFilter::try_from(endpoint.route.method.clone()).is_ok());
        }
        assert!(
            menu.starts_with("POST /v1/chat/completions, GET /v1/chat/ws (WebSocket), "),
            "{menu}"
        );
        assert!(menu.ends_with(" or GET /debug/health-async"), "{menu}");
        assert_eq!(
            methods(),
            "/v1/chat/completions, /v1/solve, /v1/jobs and /v1/jobs/{id}/cancel take POST, the \
             others GET"
        );
    }
}
