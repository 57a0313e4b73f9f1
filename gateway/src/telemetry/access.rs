//! The access line: one log line per relayed (or refused) request, with what an operator asks
//! of it: which request, which route, model and provider, how it ended, how many attempts, how
//! long to the first byte and in all, how many bytes and tokens, and what the cache did.
//!
//! What it says is gathered while the request runs, by layers that do not know each other: the
//! handler knows the model, the retries the attempts, the cache its outcome, the relayed body the
//! first byte and the tokens. Each writes into the request's [`Access`] record, found through a
//! task-local (like the request id, see [`crate::request_id`]), and the line is written once, by
//! whichever of the three writers of [`super::log`] sees the request end.
//!
//! Never in it: a header value (keys), a body (prompts, answers), the raw URI (its query may carry
//! anything). The model is the client's own word, cut to [`MODEL_MAX`] characters.
//!
//! Fields, in `--log-format json` at the top level of each line (`text` prints them as
//! `name=value`): `request_id`, `method`, `path` and `route` (the router's pattern; `path` is the
//! older name, kept for existing readers), `model`, `provider`, `status`, `attempts`, `outcome`
//! (`completed`, `client_gone`, `upstream_failed`, `drain_cut`, `shed`, `rejected`), `code` (a
//! refusal's), `cache` (`hit`, `miss`, `bypass`), `ttft_ms`, `duration_ms`, `bytes`, `tokens`
//! and `tokens_source` (`usage` or `events`), `error` (why a stream broke off).
//!
//! The line is written in the gateway's root span (`gateway{mode=...}`), not in the request's
//! own span: its fields already name the request, and a text line should not say it twice. Every
//! other line a request writes is inside `request{request_id=...}`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::Method;
use tracing::Span;

use crate::request_id::RequestId;

/// A model name longer than this is cut in the log (it is the client's text).
pub const MODEL_MAX: usize = 128;

tokio::task_local! {
    static CURRENT: Arc<Access>;
}

/// One request's record, filled in as it runs. Shared: the body that writes the line outlives
/// the handler.
#[derive(Debug)]
pub struct Access {
    pub id: RequestId,
    /// Where the access line goes: the span that was current when the request arrived (the
    /// gateway's root span).
    log_parent: Span,
    fields: Mutex<Fields>,
}

#[derive(Debug, Default)]
struct Fields {
    model: Option<String>,
    /// The `model` label: a configured model, or `other`.
    model_label: Option<String>,
    provider: Option<String>,
    attempts: u32,
    cache: Option<&'static str>,
    /// When the first upstream attempt went out.
    upstream_started: Option<Instant>,
    /// The `first_byte` span, open from the first attempt to the first content.
    first_byte: Option<Span>,
}

/// What the record holds when the line is written.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub model: Option<String>,
    pub model_label: Option<String>,
    pub provider: Option<String>,
    pub attempts: u32,
    pub cache: Option<&'static str>,
    pub upstream_started: Option<Instant>,
}

impl Access {
    /// A record for the request `id`, whose line goes to the span current now.
    pub fn new(id: RequestId) -> Arc<Self> {
        Arc::new(Self {
            id,
            log_parent: Span::current(),
            fields: Mutex::new(Fields::default()),
        })
    }

    /// Runs `future` as this request: [`Access::current`] answers this record inside.
    pub fn scope<F: Future>(self: Arc<Self>, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    /// The record of the request this task serves, if any.
    pub fn current() -> Option<Arc<Self>> {
        CURRENT.try_with(Arc::clone).ok()
    }

    fn fields(&self) -> MutexGuard<'_, Fields> {
        self.fields
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The client's `model` and its label (a configured model, or `other`).
    pub fn set_model(&self, model: &str, label: &str) {
        let cut = model
            .char_indices()
            .nth(MODEL_MAX)
            .map_or(model, |(at, _)| &model[..at]);
        let mut fields = self.fields();
        fields.model = Some(cut.to_owned());
        fields.model_label = Some(label.to_owned());
    }

    pub fn set_provider(&self, provider: &str) {
        let mut fields = self.fields();
        if fields.provider.as_deref() != Some(provider) {
            fields.provider = Some(provider.to_owned());
        }
    }

    pub fn set_attempts(&self, attempts: u32) {
        self.fields().attempts = attempts;
    }

    /// `hit`, `miss` or `bypass`.
    pub fn set_cache(&self, outcome: &'static str) {
        self.fields().cache = Some(outcome);
    }

    /// The first upstream attempt goes out now (later calls, for retries and hedges, change
    /// nothing): the start of the time to first token, and of the `first_byte` span.
    pub fn upstream_started(&self) {
        let mut fields = self.fields();
        if fields.upstream_started.is_none() {
            fields.upstream_started = Some(Instant::now());
            fields.first_byte = Some(tracing::debug_span!("first_byte"));
        }
    }

    /// The first content arrived: the `first_byte` span ends.
    pub fn first_byte(&self) {
        self.fields().first_byte = None;
    }

    pub fn snapshot(&self) -> Snapshot {
        let fields = self.fields();
        Snapshot {
            model: fields.model.clone(),
            model_label: fields.model_label.clone(),
            provider: fields.provider.clone(),
            attempts: fields.attempts,
            cache: fields.cache,
            upstream_started: fields.upstream_started,
        }
    }
}

/// One access line's own facts (the record adds the rest).
#[derive(Debug)]
pub struct Line<'a> {
    pub message: &'static str,
    pub method: &'a Method,
    pub path: &'a str,
    pub status: Option<u16>,
    pub outcome: &'static str,
    pub code: Option<&'a str>,
    pub bytes: u64,
    pub duration: Duration,
    pub ttft: Option<Duration>,
    pub tokens: Option<(u64, &'static str)>,
    /// Why it failed, when it did: the line is then a warning.
    pub error: Option<&'a str>,
}

/// Writes the line, with `access`'s fields when the request has a record.
pub fn write(line: &Line<'_>, access: Option<&Access>) {
    let record = access.map(Access::snapshot).unwrap_or_default();
    let parent = access.map_or_else(Span::current, |a| a.log_parent.clone());
    let request_id = access.map(|a| a.id.as_str());
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let attempts = (record.attempts > 0).then_some(record.attempts);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                parent: &parent,
                request_id,
                method = %line.method,
                path = line.path,
                route = line.path,
                model = record.model.as_deref(),
                provider = record.provider.as_deref(),
                status = line.status,
                attempts,
                outcome = line.outcome,
                code = line.code,
                cache = record.cache,
                ttft_ms = line.ttft.map(ms),
                duration_ms = ms(line.duration),
                bytes = line.bytes,
                tokens = line.tokens.map(|(n, _)| n),
                tokens_source = line.tokens.map(|(_, source)| source),
                error = line.error,
                "{}",
                line.message
            )
        };
    }
    if line.error.is_some() {
        line!(warn);
    } else {
        line!(info);
    }
}
