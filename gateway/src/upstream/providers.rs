//! Providers: several named upstreams, each with its own client pool and its own limits, and the
//! routing of a request to one of them by its `model`.
//!
//! Why one client per provider, not one shared: a client's connection pool, timeouts and
//! credential belong to one upstream. A shared pool lets a slow provider's connections crowd out
//! a fast one's, and a shared timeout is wrong for at least one of them. So each provider gets
//! its own [`Upstream`] (of the gateway's mode), built from its [`ProviderConfig`].
//!
//! Each provider also has two bounds of its own, checked before anything is sent:
//!
//! - **requests per minute** (`requests-per-minute`, `burst`): over it, **429**
//!   `provider_rate_limited` with `Retry-After`, without calling the provider. A provider's quota
//!   is shared by every client of the gateway; spending it on requests the provider would refuse
//!   anyway only earns a ban. With `--redis-url` it is counted across every instance, since the
//!   provider's quota is the fleet's, not one instance's ([`crate::ratelimit`]).
//! - **concurrent upstream requests** (`max-concurrent`): a request waits up to
//!   `pool-timeout-ms` for a slot, then gets **503** `provider_busy`. The slot is held by the
//!   response body until the stream ends (see [`crate::admission::hold`]), so this is also the cap
//!   on the provider's open connections. reqwest's pool has no such cap of its own: it opens a
//!   new connection whenever none is idle.
//!
//! Routing: a provider lists the `model` values it serves; one provider may list `"*"` to take
//! every other model. A model no provider serves is a **404** `model_not_found`, OpenAI's answer.
//! The demo's `/chat/stream`, which has no model, takes the first provider
//! ([`crate::lessons::stream`]).
//!
//! A provider knows only its OpenAI base URL, and the two OpenAI endpoints under it. Nothing
//! here knows the mock's own paths: a gateway configured with real providers has none.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use futures_util::StreamExt as _;
use prometheus_client::metrics::counter::Counter;
use reqwest::Url;

use crate::admission::Admission;
use crate::config::{Config, ProviderConfig};
use crate::error::{ApiError, StartError};
use crate::ratelimit::{LimitStore, Quota, RpmLimit, Verdict};
use crate::telemetry::labels::{OTHER_MODEL, UpstreamErrorKind};
use crate::telemetry::metrics::{AttemptKind, AttemptLabels, Metrics, RateLimitScope, ShedReason};
use crate::telemetry::pool::BlockingPool;
use crate::upstream::budget::Budgets;
use crate::upstream::proxy::Route;
use crate::upstream::{ClientSettings, Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};

/// One upstream: its client, its URLs, its models and its limits.
#[derive(Debug)]
pub struct Provider {
    pub name: String,
    upstream: Upstream,
    /// `base-url`, ending in `/` so that joining a path keeps its last segment.
    base_url: Url,
    /// `v1/chat/completions` under the base URL.
    pub chat_url: Url,
    /// `v1/models` under the base URL.
    pub models_url: Url,
    /// The models named in the config (without `"*"`).
    pub models: Vec<String>,
    /// Direct, or through the environment's proxy: said once at start-up.
    route: Route,
    /// One place per upstream request in flight, waited for up to `pool-timeout-ms`. The wait
    /// queue has no count of its own: the inbound cap already bounds who can be waiting.
    slots: Admission,
    pool_timeout: Duration,
    /// `requests-per-minute`: one bucket (`()`), in Redis under `provider:<name>` when shared.
    rate: Option<RpmLimit<()>>,
    /// This provider's retry and hedge budgets: its outage must not spend the others'.
    budgets: Budgets,
    /// `gateway_upstream_attempts_total{provider=this}` by kind: first, retry, hedge. Looked up
    /// once here, so an attempt costs an atomic add, not a label allocation and a map lookup.
    attempts: [Counter; AttemptKind::ALL.len()],
    /// `gateway_upstream_errors_total{provider=this}` by kind, looked up once like `attempts`.
    errors: [Counter; UpstreamErrorKind::ALL.len()],
    metrics: Arc<Metrics>,
}

impl Provider {
    fn new(
        provider: &ProviderConfig,
        config: &Config,
        pool: &Arc<BlockingPool>,
        metrics: &Arc<Metrics>,
        limits: &LimitStore,
    ) -> Result<Self, StartError> {
        let settings = ClientSettings::new(provider, config)?;
        // `https://host/llm` must keep its `/llm`: `Url::join` replaces a last segment that
        // does not end in a slash.
        let mut base = Url::parse(&provider.base_url)
            .map_err(|e| StartError::Url(format!("provider {}: {e}", provider.name)))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let join = |path: &str| {
            base.join(path)
                .map_err(|e| StartError::Url(format!("provider {}: {e}", provider.name)))
        };
        let limit = provider.max_concurrent_or_default(config);
        let pool_timeout = Duration::from_millis(provider.pool_timeout_ms);
        let rate = Quota::per_minute(provider.requests_per_minute.unwrap_or(0), provider.burst)
            .map(|quota| {
                let namespace = format!("provider:{}", provider.name);
                RpmLimit::new(quota, RateLimitScope::Provider, &namespace, limits)
            });
        Ok(Self {
            name: provider.name.clone(),
            upstream: Upstream::new(config, &settings, Arc::clone(pool))?,
            chat_url: join("v1/chat/completions")?,
            models_url: join("v1/models")?,
            base_url: base.clone(),
            models: provider
                .models
                .iter()
                .filter(|m| *m != "*")
                .cloned()
                .collect(),
            route: settings.route.clone(),
            slots: Admission::new(limit, usize::MAX, pool_timeout),
            pool_timeout,
            rate,
            budgets: Budgets::new(config),
            attempts: AttemptKind::ALL.map(|kind| {
                metrics
                    .attempts
                    .get_or_create(&AttemptLabels {
                        provider: provider.name.clone(),
                        kind,
                    })
                    .clone()
            }),
            errors: metrics.llm.error_counters(&provider.name),
            metrics: Arc::clone(metrics),
        })
    }

    /// Sends `request` within this provider's limits. The slot goes with the response body and
    /// is given back when the body ends or is dropped.
    pub async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        // The slot first: a request shed as busy must not spend a token of the provider's rate.
        let Ok(slot) = self.slots.admit().await else {
            self.metrics.shed(ShedReason::ProviderBusy);
            return Err(UpstreamError::ProviderBusy {
                provider: self.name.clone(),
                limit: self.slots.limit(),
                waited: self.pool_timeout,
            });
        };
        if let Some(rate) = &self.rate
            && let Verdict::Refuse { wait, .. } = rate.check(&()).await
        {
            self.metrics.rate_limited(RateLimitScope::Provider);
            return Err(UpstreamError::ProviderRateLimited {
                provider: self.name.clone(),
                rpm: rate.quota().rpm.get(),
                wait,
            });
        }
        let mut response = self.upstream.send(request).await?;
        response.body = Box::pin(response.body.map(move |chunk| {
            let _slot = &slot;
            chunk
        }));
        Ok(response)
    }

    /// Counts one upstream attempt of `kind`.
    pub fn count_attempt(&self, kind: AttemptKind) {
        // One counter per kind, in `AttemptKind::ALL`'s order: every kind has its index.
        self.attempts[kind as usize].inc();
    }

    /// Counts one failed attempt (or broken stream) of `kind`.
    pub fn count_error(&self, kind: UpstreamErrorKind) {
        self.errors[kind as usize].inc();
    }

    /// The `model` label of `model` on this provider's series: the model itself when the config
    /// names it, else `other`, so the label's values stay the config's, whatever clients send.
    pub fn model_label(&self, model: &str) -> &str {
        self.models
            .iter()
            .find(|m| *m == model)
            .map_or(OTHER_MODEL, String::as_str)
    }

    /// Its base URL (ending in `/`): where its OpenAI API lives.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// Its retry and hedge budgets, spent by `crate::policy::resilience`.
    pub fn budgets(&self) -> &Budgets {
        &self.budgets
    }

    /// Upstream requests open now: its connections in use.
    pub fn in_use(&self) -> usize {
        self.slots.in_use()
    }

    pub fn limit(&self) -> usize {
        self.slots.limit()
    }
}

/// Every provider, and which one serves which model.
#[derive(Debug)]
pub struct Providers {
    list: Vec<Arc<Provider>>,
    by_model: HashMap<String, usize>,
    catch_all: Option<usize>,
}

impl Providers {
    pub fn new(
        config: &Config,
        pool: &Arc<BlockingPool>,
        metrics: &Arc<Metrics>,
        limits: &LimitStore,
    ) -> Result<Self, StartError> {
        let configs = config.providers();
        let mut list = Vec::with_capacity(configs.len());
        let mut by_model = HashMap::new();
        let mut catch_all = None;
        for (index, provider) in configs.iter().enumerate() {
            list.push(Arc::new(Provider::new(
                provider, config, pool, metrics, limits,
            )?));
            for model in &provider.models {
                if model == "*" {
                    catch_all = Some(index);
                } else {
                    by_model.insert(model.clone(), index);
                }
            }
        }
        Ok(Self {
            list,
            by_model,
            catch_all,
        })
    }

    /// The provider serving `model`, or OpenAI's 404.
    pub fn route(&self, model: &str) -> Result<&Arc<Provider>, ApiError> {
        self.by_model
            .get(model)
            .or(self.catch_all.as_ref())
            .and_then(|&index| self.list.get(index))
            .ok_or_else(|| {
                let mut known: Vec<&str> = self.by_model.keys().map(String::as_str).collect();
                known.sort_unstable();
                ApiError {
                    status: StatusCode::NOT_FOUND,
                    ..ApiError::bad_request(
                        Some("model"),
                        format!(
                            "The model `{model}` does not exist or you do not have access to it. \
                             This gateway serves: {}",
                            known.join(", ")
                        ),
                    )
                    .with_code("model_not_found")
                }
            })
    }

    /// The start-up log's word on each provider's way out: direct, or which proxy. (The limits
    /// block, logged just before, has the rest.)
    pub fn log_startup(&self) {
        for provider in &self.list {
            tracing::info!(
                "provider {} upstream {}: {}",
                provider.name,
                provider.base_url,
                provider.route
            );
        }
    }

    /// The first provider: `/chat/stream`'s upstream.
    pub fn first(&self) -> &Arc<Provider> {
        &self.list[0]
    }

    /// The provider taking every model no other one names, if any.
    pub fn catch_all(&self) -> Option<&Arc<Provider>> {
        self.catch_all.and_then(|index| self.list.get(index))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.list.iter()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    /// The providers of `--upstream URL`: the default one, in fixed mode.
    fn providers(url: &str) -> Providers {
        let config = Config::try_parse_from(["gateway", "--upstream", url]).expect("flags");
        let pool = Arc::new(BlockingPool::new(1));
        let metrics = Arc::new(Metrics::default());
        Providers::new(&config, &pool, &metrics, &LimitStore::local()).expect("providers")
    }

    #[test]
    fn a_provider_knows_only_its_openai_urls() {
        let providers = providers("https://api.example.com/llm");
        let provider = providers.first();
        assert_eq!(provider.base_url().as_str(), "https://api.example.com/llm/");
        assert_eq!(
            provider.chat_url.as_str(),
            "https://api.example.com/llm/v1/chat/completions"
        );
        assert_eq!(
            provider.models_url.as_str(),
            "https://api.example.com/llm/v1/models"
        );
        let all = format!("{providers:?}");
        assert!(!all.contains("slow_stream"), "a mock path leaked: {all}");
    }
}
