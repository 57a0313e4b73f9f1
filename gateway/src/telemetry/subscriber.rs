//! The process's one tracing subscriber: log lines as text or JSON, and, with `--otlp-endpoint`,
//! the same spans exported as traces.
//!
//! The log layer takes `RUST_LOG` (`info` when unset). Without traces it is the only layer, and
//! `RUST_LOG` is the whole subscriber's filter. With traces there are two layers, each with its
//! own filter, so the lines are what they always were: the trace layer takes the gateway's own
//! spans down to `debug` (the request's children: admission, attempts, first byte, stream)
//! whatever `RUST_LOG` says, and leaves out the root span `gateway{mode=...}`, which lives as
//! long as the process and would make every request one trace. A span only the trace layer
//! wants is never seen by the log layer, so turning traces on does not change a single log line.
//!
//! `--log-format json` writes one object per line: `timestamp`, `level`, `target`, the event's
//! fields at the top level (`message`, and for an access line `request_id`, `route`, `status`,
//! ...), and `spans`, the spans it was written in with their fields (`gateway` with `mode`,
//! `request` with `request_id`). Colors only in text, on a terminal, without `NO_COLOR`
//! (`common::logging::use_color`).

use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer, fmt};

use super::fields::TextFields;
use super::otel::{self, Tracing};
use crate::config::{LogFormat, ObserveConfig};

/// Installs the subscriber for `config`; the returned [`Tracing`] (with traces on) must live as
/// long as the process serves, and flushes the last spans when dropped.
pub fn init(config: &ObserveConfig) -> Result<Option<Tracing>, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(url) = config.traces_url() else {
        // One layer: its filter is the subscriber's own. As a per-layer filter it would cost a
        // lookup of the span in the registry at every enter and exit of a span, to read which
        // layers it is enabled for; the request span is entered at every poll of the request
        // (3,500 instructions per request, `make bench-instructions`).
        return tracing_subscriber::registry()
            .with(filter)
            .with(lines(config.log_format))
            .try_init()
            .map(|()| None)
            .map_err(|e| e.to_string());
    };
    let (tracing, layer) = otel::install(&url)?;
    let spans = filter_fn(|meta| {
        meta.target().starts_with("gateway")
            && meta.name() != "gateway"
            && *meta.level() <= Level::DEBUG
    });
    tracing_subscriber::registry()
        .with(lines(config.log_format).with_filter(filter))
        .with(layer.with_filter(spans))
        .try_init()
        .map_err(|e| e.to_string())?;
    Ok(Some(tracing))
}

/// The log lines' layer, text or JSON.
fn lines<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    match format {
        LogFormat::Text => fmt::layer()
            .fmt_fields(TextFields)
            .with_ansi(common::logging::use_color())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
    }
}
