//! One chat completion's way to a provider: routed by `model`, planned (retries, hedges,
//! deadline), sent through the provider's slots and rate. The one path every chat request takes,
//! whoever asks: `POST /v1/chat/completions` ([`crate::http::openai`]) for a client that waits,
//! and a job worker ([`crate::jobs`]) for a client that comes back later.
//!
//! Sharing it is the point: a job is not a second-class request with limits of its own. It meets
//! the same provider `max-concurrent`, the same rpm, the same retry budget and the same deadline
//! as the chat request it stands for, so moving work into the queue cannot get around a limit.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method};

use super::resilience::{Outcome, Resilience};
use crate::error::ApiError;
use crate::upstream::providers::Providers;
use crate::upstream::{UpstreamRequest, forwarded_request_headers};

/// The route whose retry and hedging settings a chat completion gets (`--hedge-routes`).
pub const PATH: &str = "/v1/chat/completions";

/// Checks that `model` is served and that the request's own `x-gateway-*` headers are valid:
/// what [`send`] would refuse at once, asked before a job is accepted rather than when it runs.
pub fn check(
    providers: &Providers,
    resilience: &Resilience,
    model: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    providers.route(model)?;
    resilience.plan(PATH, headers)?;
    Ok(())
}

/// Sends a validated chat `body` for `model` to its provider, with the client's `headers` (only
/// the ones that may cross, see [`forwarded_request_headers`]). An `Err` is the gateway's own
/// refusal (an unknown model, a bad `x-gateway-*` header); the [`Outcome`] is the upstream's
/// answer or why there is none, and how many attempts it took.
pub async fn send(
    providers: &Providers,
    resilience: &Resilience,
    model: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Outcome, ApiError> {
    let provider = providers.route(model)?;
    let plan = resilience.plan(PATH, headers)?;
    let request = UpstreamRequest {
        method: Method::POST,
        url: provider.chat_url.clone(),
        headers: forwarded_request_headers(headers),
        body: Some(body),
    };
    Ok(resilience.send(provider, request, plan).await)
}
