//! `POST /v1/chat/completions` and `GET /v1/models`: OpenAI's API, relayed without buffering.
//!
//! The lesson here is what a relay must *not* do. It must not parse and re-serialise the stream:
//! the upstream's SSE bytes are forwarded as they arrive, each event leaving the gateway as soon
//! as it came in (see [`crate::upstream::relay::Relay::forward`]), in both modes, through the same
//! [`crate::upstream::Upstream`] as `/chat/stream`. It must not swallow the upstream's errors: a
//! 429 reaches the client with its status, body and `Retry-After`, so the client's own retry
//! logic works. And it must not trust the client blindly: the request body is checked *before*
//! any upstream call or pool thread is spent:
//!
//! - `Content-Type` must be `application/json` (415 otherwise);
//! - the body must fit `--max-body-bytes` (413, code `request_too_large`);
//! - it must parse as JSON (400 with serde's message: what, at which line and column), be an
//!   object, and carry a string `model` and an array `messages` (400 naming the `param`).
//!
//! Everything else in the body (`temperature`, `tools`, `response_format`, fields that do not
//! exist yet) is the upstream's business and goes through untouched: the gateway forwards the
//! client's bytes, not a re-encoding of what it understood.
//!
//! The request goes to the provider that serves its `model` ([`crate::upstream::providers`]); a model no
//! provider serves is a 404 `model_not_found`. `GET /v1/models` is the gateway's own answer: the
//! models the providers are configured with, plus, for a provider taking every model (`"*"`),
//! the list its upstream reports.
//!
//! Client disconnects cancel the upstream request by ownership, in every phase, in `fixed` mode;
//! in `broken` mode only at the upstream's next event, or never (see [`crate::upstream::broken`]).
//!
//! With `--cache-mode` on, the response cache is one explicit step of this route: looked up
//! after the checks and before the upstream, handed the answer on the way back
//! ([`crate::cache`]). No other route passes through it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::chat_head::{ChatHead, Kind, Shape};
use crate::cache::{CacheRequest, CacheStatus, Lookup, ResponseCache, Ticket};
use crate::error::ApiError;
use crate::policy::chat;
use crate::policy::limits::ClientId;
use crate::policy::resilience::{Outcome, Resilience, mark};
use crate::telemetry::access::Access;
use crate::telemetry::log::{Route, Waiting, log_rejected};
use crate::upstream::providers::{Provider, Providers};
use crate::upstream::relay::Relay;
use crate::upstream::{UpstreamRequest, UpstreamResponse, forwarded_request_headers};

/// What the OpenAI routes share: the providers to route to, the retries and hedges to send
/// with, the relay back, and the body limit their messages name.
#[derive(Debug)]
pub struct OpenAi {
    providers: Arc<Providers>,
    resilience: Arc<Resilience>,
    relay: Arc<Relay>,
    /// `--max-body-bytes`, named in the 413 (the router's `DefaultBodyLimit` enforces it).
    max_body_bytes: usize,
    /// `/v1/chat/completions`' response cache (a no-op with `--cache-mode off`).
    cache: Arc<ResponseCache>,
}

impl OpenAi {
    pub fn new(
        providers: Arc<Providers>,
        resilience: Arc<Resilience>,
        relay: Arc<Relay>,
        max_body_bytes: usize,
        cache: Arc<ResponseCache>,
    ) -> Self {
        Self {
            providers,
            resilience,
            relay,
            max_body_bytes,
            cache,
        }
    }
}

/// `POST /v1/chat/completions`, for the route table and the request log.
pub const CHAT: Route = Route {
    method: Method::POST,
    path: chat::PATH,
};
/// `GET /v1/models`.
pub const MODELS: Route = Route {
    method: Method::GET,
    path: "/v1/models",
};

/// A chat completion's answer: from the cache, or from upstream with the cache's ticket.
enum Answer {
    Cached(crate::cache::Hit),
    Upstream(Outcome, Ticket),
}

pub async fn chat_completions(
    State(api): State<Arc<OpenAi>>,
    client: Option<Extension<ClientId>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let received = Instant::now();
    let waiting = Waiting::new(CHAT, received);
    let result = async {
        require_json(&headers)?;
        let body = body.map_err(|rejection| body_error(&rejection, api.max_body_bytes))?;
        let model = validate(&body)?;
        let routed = chat::route(&api.providers, &api.resilience, &model, &headers)?;
        if let Some(access) = Access::current() {
            access.set_model(&model, routed.provider.model_label(&model));
        }
        let cached = CacheRequest {
            client: client.as_ref().map(|Extension(client)| client),
            provider: &routed.provider.name,
            headers: &headers,
            body: &body,
            deadline: routed.plan.deadline(),
        };
        let ticket = match api.cache.lookup(cached).await? {
            Lookup::Hit(hit) => return Ok(Answer::Cached(hit)),
            Lookup::Upstream(ticket) => ticket,
        };
        Ok(Answer::Upstream(routed.send(&headers, body).await, ticket))
    }
    .await;
    waiting.answered();
    let cache = match &result {
        Ok(Answer::Cached(hit)) => hit.status(),
        Ok(Answer::Upstream(_, ticket)) => ticket.status(),
        Err(_) => CacheStatus::Off,
    };
    if let (Some(access), Some(outcome)) = (Access::current(), cache.as_str()) {
        access.set_cache(outcome);
    }
    match result {
        Ok(Answer::Cached(hit)) => {
            hit.status()
                .mark(respond(&api, CHAT, received, Ok(hit.response)))
        }
        Ok(Answer::Upstream(outcome, ticket)) => {
            let status = ticket.status();
            let result = outcome.result.map(|upstream| ticket.tee(upstream));
            let response = respond(&api, CHAT, received, result.map_err(ApiError::from));
            status.mark(mark(response, outcome.attempts))
        }
        Err(error) => respond(&api, CHAT, received, Err(error)),
    }
}

pub async fn models(State(api): State<Arc<OpenAi>>, headers: HeaderMap) -> Response {
    let received = Instant::now();
    let mut data: Vec<Value> = Vec::new();
    for provider in api.providers.iter() {
        data.extend(provider.models.iter().map(
            |id| json!({"id": id, "object": "model", "created": 0, "owned_by": provider.name}),
        ));
    }
    let Some(provider) = api.providers.catch_all() else {
        return Json(json!({"object": "list", "data": data})).into_response();
    };
    match listed_by(&api, provider, &headers, received).await {
        Ok((listed, attempts)) => {
            let named: HashSet<Value> = data.iter().map(|m| m["id"].clone()).collect();
            data.extend(listed.into_iter().filter(|m| !named.contains(&m["id"])));
            mark(
                Json(json!({"object": "list", "data": data})).into_response(),
                attempts,
            )
        }
        Err(response) => response,
    }
}

/// The models a catch-all provider's upstream lists, and the attempts it took; or the response
/// to send instead: the upstream's own error, as it sent it, or the gateway's.
async fn listed_by(
    api: &OpenAi,
    provider: &Provider,
    headers: &HeaderMap,
    received: Instant,
) -> Result<(Vec<Value>, u32), Response> {
    let plan = api
        .resilience
        .plan(MODELS.path, headers)
        .map_err(|error| respond(api, MODELS, received, Err(error)))?;
    let request = UpstreamRequest {
        headers: forwarded_request_headers(headers),
        ..UpstreamRequest::get(provider.models_url.clone())
    };
    let waiting = Waiting::new(MODELS, received);
    let outcome = api.resilience.send(provider, request, plan).await;
    waiting.answered();
    let attempts = outcome.attempts;
    let listed = match outcome.result {
        Ok(upstream) if !upstream.status.is_success() => {
            return Err(mark(
                api.relay.forward(upstream, MODELS, received),
                attempts,
            ));
        }
        Ok(upstream) => upstream_models(upstream).await,
        Err(error) => Err(ApiError::from(error)),
    };
    listed
        .map(|listed| (listed, attempts))
        .map_err(|error| mark(respond(api, MODELS, received, Err(error)), attempts))
}

/// The `data` array of an upstream's `/v1/models`, read whole (it is small; 4 MiB at most).
async fn upstream_models(upstream: UpstreamResponse) -> Result<Vec<Value>, ApiError> {
    const LIMIT: usize = 4 * 1024 * 1024;
    let mut body = Vec::new();
    let mut chunks = upstream.body;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_gateway(format!("reading /v1/models: {e}")))?;
        if body.len() + chunk.len() > LIMIT {
            return Err(ApiError::bad_gateway(
                "the upstream's /v1/models is larger than 4 MiB",
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let mut list: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_gateway(format!("the upstream's /v1/models is not JSON: {e}"))
    })?;
    match list.get_mut("data").map(Value::take) {
        Some(Value::Array(models)) => Ok(models),
        _ => Err(ApiError::bad_gateway(
            "the upstream's /v1/models has no `data` array",
        )),
    }
}

/// The relayed response, or the gateway's own error; either way one log line.
fn respond(
    api: &OpenAi,
    route: Route,
    received: Instant,
    result: Result<UpstreamResponse, ApiError>,
) -> Response {
    match result {
        Ok(upstream) => api.relay.forward(upstream, route, received),
        Err(error) => {
            log_rejected(&route.method, route.path, &error, received);
            error.into_response()
        }
    }
}

/// Only JSON bodies: a form-encoded body (what `curl -d` sends without `-H`) would reach the
/// upstream as nonsense, so it is refused here with the fix in the message.
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(ApiError::unsupported_media_type(
            "missing Content-Type: send the body as JSON with `Content-Type: application/json`",
        ));
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|text| text.split(';').next())
        .map(str::trim);
    match essence {
        Some(essence) if essence.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(ApiError::unsupported_media_type(format!(
            "Content-Type must be application/json, got {value:?}"
        ))),
    }
}

pub(crate) fn body_error(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(limit)
    } else {
        ApiError::bad_request(
            None,
            format!("cannot read the request body: {}", rejection.body_text()),
        )
    }
}

/// The gateway's own checks: enough to know the request is a chat completion. The upstream
/// checks the rest (roles, ranges) and its 400 is relayed as it is.
/// Returns the `model`, which picks the provider. `/v1/chat/ws` checks its frames with it too.
///
/// Only `model` and the kind of `messages` are read ([`ChatHead`]): the rest of the body is
/// checked to be JSON and skipped, not built into a `serde_json::Value` that would copy every
/// message only to be thrown away (the client's bytes are what goes upstream).
pub(crate) fn validate(body: &[u8]) -> Result<String, ApiError> {
    let head: ChatHead<'_> = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(None, format!("the request body is not valid JSON: {e}"))
            .with_code("invalid_json")
    })?;
    let (model, messages) = match head {
        ChatHead::Object { model, messages } => (model, messages),
        ChatHead::Other(kind) => {
            return Err(ApiError::bad_request(
                None,
                format!(
                    "the request body must be a JSON object with `model` and `messages`, got {}",
                    kind.article()
                ),
            )
            .with_code("invalid_type"));
        }
    };
    let model = match model {
        Some(Shape::Str(model)) if !model.is_empty() => model.into_owned(),
        Some(Shape::Str(_)) => return Err(invalid("model", "`model` must not be empty")),
        None | Some(Shape::Other(Kind::Null)) => return Err(missing("model")),
        Some(Shape::Other(other)) => return Err(wrong_type("model", "a string", other)),
    };
    match messages {
        Some(Kind::Array) => {}
        None | Some(Kind::Null) => return Err(missing("messages")),
        Some(other) => return Err(wrong_type("messages", "an array", other)),
    }
    Ok(model)
}

fn missing(param: &'static str) -> ApiError {
    ApiError::bad_request(
        Some(param),
        format!("missing required parameter: `{param}`"),
    )
    .with_code("missing_required_parameter")
}

fn wrong_type(param: &'static str, expected: &str, got: Kind) -> ApiError {
    invalid(
        param,
        format!("`{param}` must be {expected}, got {}", got.article()),
    )
    .with_code("invalid_type")
}

fn invalid(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::bad_request(Some(param), message).with_code("invalid_value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &str) -> ApiError {
        validate(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn accepts_unknown_fields() {
        let body =
            r#"{"model":"m","messages":[],"temperature":0.2,"tools":[],"future_field":{"x":1}}"#;
        assert!(validate(body.as_bytes()).is_ok());
    }

    #[test]
    fn names_the_problem() {
        let bad_json = error(r#"{"model":"m","#);
        assert!(bad_json.message.contains("not valid JSON"), "{bad_json:?}");
        assert!(bad_json.message.contains("line 1"), "{bad_json:?}");
        assert_eq!(bad_json.code, Some("invalid_json"));
        assert!(error("[1]").message.contains("got an array"));
        assert_eq!(error(r#"{"model":"m"}"#).param.as_deref(), Some("messages"));
        assert_eq!(
            error(r#"{"model":"m","messages":"hi"}"#).code,
            Some("invalid_type")
        );
        assert_eq!(error(r#"{"messages":[]}"#).param.as_deref(), Some("model"));
        assert_eq!(
            error(r#"{"model":"","messages":[]}"#).param.as_deref(),
            Some("model")
        );
    }

    #[test]
    fn content_type_must_be_json() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header"));
            require_json(&headers)
        };
        assert!(with("application/json").is_ok());
        assert!(with("Application/JSON; charset=utf-8").is_ok());
        let form = with("application/x-www-form-urlencoded").expect_err("form");
        assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(require_json(&HeaderMap::new()).is_err());
    }
}
