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

use std::sync::Arc;

use super::resilience::{Outcome, Plan, Resilience};
use crate::error::ApiError;
use crate::upstream::providers::{Provider, Providers};
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

/// A chat completion routed to its provider and planned (retries, hedges, deadline), not yet
/// sent: what the response cache needs to know (the provider's name, the deadline) before it
/// decides whether to send at all.
#[derive(Debug)]
pub struct Routed<'a> {
    pub provider: &'a Arc<Provider>,
    pub plan: Plan,
    resilience: &'a Resilience,
}

/// Routes `model` and plans the request from its `headers`. An `Err` is the gateway's own
/// refusal: an unknown model, a bad `x-gateway-*` header.
pub fn route<'a>(
    providers: &'a Providers,
    resilience: &'a Resilience,
    model: &str,
    headers: &HeaderMap,
) -> Result<Routed<'a>, ApiError> {
    Ok(Routed {
        provider: providers.route(model)?,
        plan: resilience.plan(PATH, headers)?,
        resilience,
    })
}

impl Routed<'_> {
    /// Sends a validated chat `body` with the client's `headers` (only the ones that may cross,
    /// see [`forwarded_request_headers`]). The [`Outcome`] is the upstream's answer or why there
    /// is none, and how many attempts it took.
    pub async fn send(self, headers: &HeaderMap, body: Bytes) -> Outcome {
        let request = UpstreamRequest {
            method: Method::POST,
            url: self.provider.chat_url.clone(),
            headers: forwarded_request_headers(headers),
            body: Some(body),
        };
        self.resilience
            .send(self.provider, request, self.plan)
            .await
    }
}

/// [`route`], then [`Routed::send`]: the whole way, for a caller with nothing to do in between
/// (a job worker).
pub async fn send(
    providers: &Providers,
    resilience: &Resilience,
    model: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Outcome, ApiError> {
    Ok(route(providers, resilience, model, headers)?
        .send(headers, body)
        .await)
}
