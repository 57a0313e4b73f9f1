//! `GET /chat/stream`: the demo's plain stream, relayed chunk by chunk.
//!
//! The route every lesson about the blocking pool is shown with: a stream of `chunks` lines, one
//! every `interval_ms`, from the mock's `/slow_stream`, relayed through the mode's upstream
//! client. It goes to the first provider, with the same retries, hedging and logs as any other
//! route; nothing else about it is special, which is the point: the handler cannot tell the modes
//! apart, only the pool counters and the health probes can.
//!
//! `/slow_stream` is the mock's path, not OpenAI's, so it is found here, from the lesson's
//! upstream (the first provider's base URL), and nowhere in the gateway's providers: a gateway
//! in front of real providers simply has a demo route whose upstream answers 404.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::{IntoResponse as _, Response};
use reqwest::Url;
use serde::Deserialize;

use crate::error::{ApiError, StartError};
use crate::policy::resilience::{Resilience, mark};
use crate::telemetry::log::{Route, Waiting};
use crate::upstream::UpstreamRequest;
use crate::upstream::providers::{Provider, Providers};
use crate::upstream::relay::Relay;

/// The mock's plain stream, relative to the upstream's base URL.
const SLOW_STREAM: &str = "slow_stream";

/// What `/chat/stream` needs: its upstream and the URL of its stream there, and the gateway's
/// retries and relay.
#[derive(Debug)]
pub struct PlainStream {
    /// The first provider: the demo has one upstream, the mock.
    provider: Arc<Provider>,
    /// `/slow_stream` under that provider's base URL.
    url: Url,
    resilience: Arc<Resilience>,
    relay: Arc<Relay>,
}

impl PlainStream {
    pub fn new(
        providers: &Providers,
        resilience: Arc<Resilience>,
        relay: Arc<Relay>,
    ) -> Result<Self, StartError> {
        let provider = Arc::clone(providers.first());
        let url = provider
            .base_url()
            .join(SLOW_STREAM)
            .map_err(|e| StartError::Url(format!("provider {}: {e}", provider.name)))?;
        Ok(Self {
            provider,
            url,
            resilience,
            relay,
        })
    }
}

/// Query parameters passed through to the upstream's `/slow_stream`. Types are checked here,
/// ranges by the upstream (whose 400 is relayed as is). Unknown names are rejected: a typo such
/// as `chunk=5` would otherwise silently run a 45 s default stream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    chunks: Option<u32>,
    interval_ms: Option<u64>,
}

pub async fn chat_stream(
    State(stream): State<Arc<PlainStream>>,
    headers: axum::http::HeaderMap,
    params: Result<Query<StreamParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let Query(params) = params?;
    let provider = &stream.provider;
    let mut url = stream.url.clone();
    {
        let mut query = url.query_pairs_mut();
        if let Some(chunks) = params.chunks {
            query.append_pair("chunks", &chunks.to_string());
        }
        if let Some(interval_ms) = params.interval_ms {
            query.append_pair("interval_ms", &interval_ms.to_string());
        }
    }
    let plan = stream.resilience.plan(ROUTE.path, &headers)?;
    let waiting = Waiting::new(ROUTE, received);
    let outcome = stream
        .resilience
        .send(provider, UpstreamRequest::get(url), plan)
        .await;
    waiting.answered();
    let response = match outcome.result {
        Ok(upstream) => stream.relay.forward(upstream, ROUTE, received),
        Err(error) => ApiError::from(error).into_response(),
    };
    Ok(mark(response, outcome.attempts))
}

/// `GET /chat/stream`, for the route table and the request log.
pub const ROUTE: Route = Route {
    method: Method::GET,
    path: "/chat/stream",
};

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::config::Config;
    use crate::telemetry::log::LiveStreams;
    use crate::telemetry::metrics::Metrics;
    use crate::telemetry::pool::BlockingPool;

    #[test]
    fn the_lesson_finds_the_mocks_stream_under_its_upstream() {
        let config =
            Config::try_parse_from(["gateway", "--upstream", "http://127.0.0.1:8001/mock"])
                .expect("flags");
        let metrics = Arc::new(Metrics::default());
        let pool = Arc::new(BlockingPool::new(1));
        let limits = crate::ratelimit::LimitStore::local();
        let providers = Providers::new(&config, &pool, &metrics, &limits).expect("providers");
        let resilience = Arc::new(Resilience::new(&config, Arc::clone(&metrics)));
        let relay = Arc::new(Relay::new(
            None,
            metrics,
            LiveStreams::default(),
            crate::lifecycle::Lifecycle::default(),
        ));
        let stream = PlainStream::new(&providers, resilience, relay).expect("stream");
        assert_eq!(
            stream.url.as_str(),
            "http://127.0.0.1:8001/mock/slow_stream"
        );
    }
}
