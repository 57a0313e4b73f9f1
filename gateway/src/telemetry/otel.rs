//! Traces: the gateway's spans as OpenTelemetry spans, sent over OTLP to a collector
//! (`--otlp-endpoint`), and the W3C `traceparent` read from the client and sent upstream.
//!
//! The gateway already describes a request with tracing spans; tracing-opentelemetry turns them
//! into OpenTelemetry spans, and the SDK's batch processor sends them, from a thread of its own
//! (never the blocking pool, never a runtime worker), as OTLP/HTTP protobuf. One request is one
//! trace:
//!
//! ```text
//! request {request_id, http.request.method, http.route}         the whole request, to its last byte
//! ├── admission                                                   the key's rate, the inbound place
//! ├── upstream_attempt {provider, kind=first|retry|hedge, status} one per attempt, to its head
//! ├── first_byte                                                  first attempt → first content
//! └── stream {bytes}                                              the response's head → its last byte
//! ```
//!
//! A request that arrives with a `traceparent` joins the caller's trace; one without starts a
//! trace of its own (never the gateway's long-lived root span, which is kept out of the export).
//! Every upstream attempt carries its own span's `traceparent`, so the provider's spans (if it
//! traces) hang under the attempt that caused them.
//!
//! Off (no `--otlp-endpoint`), none of this runs: the child spans are `debug` spans nobody
//! enables at `RUST_LOG=info`, so creating one is a check of a cached flag, and [`enabled`] keeps
//! the propagation away. A client's `traceparent` then crosses the gateway untouched, like its
//! `x-request-id`, so a trace that passes through an untraced gateway is not broken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use reqwest::Url;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Whether spans are exported: set once, when the exporter is installed.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// The W3C trace context headers.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Traces are exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The installed exporter. Dropping it flushes the spans still batched (bounded by the
/// exporter's timeout), so a gateway that exits does not lose its last requests' traces.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Drop for Tracing {
    fn drop(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("gateway: traces not all exported at exit: {e}");
        }
    }
}

/// Builds the OTLP exporter for `url` (the full `/v1/traces` URL) and the tracing layer that
/// feeds it; traces count as [`enabled`] from here on.
pub fn install<S>(
    url: &Url,
) -> Result<
    (
        Tracing,
        tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
    ),
    String,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.as_str())
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("--otlp-endpoint {url}: {e}"))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder_empty()
                .with_service_name("gateway")
                .build(),
        )
        .build();
    let tracer = provider.tracer("gateway");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false);
    ENABLED.store(true, Ordering::Relaxed);
    Ok((Tracing { provider }, layer))
}

/// The span of one request, named by its id. With traces on, it continues the client's trace
/// (its `traceparent`) or starts one, and carries the method and route as attributes.
pub fn request_span(id: &str, method: &str, route: &str, headers: &HeaderMap) -> Span {
    let span = tracing::info_span!("request", request_id = id);
    if enabled() {
        let parent = TraceContextPropagator::new().extract(&Headers(headers));
        // Fails only when the span is disabled (a filter): nothing to trace then.
        let _ = span.set_parent(parent);
        span.set_attribute("http.request.method", method.to_owned());
        span.set_attribute("http.route", route.to_owned());
    }
    span
}

/// Puts the current span's `traceparent` (and `tracestate`) into `headers`, for the request
/// going upstream. Nothing when traces are off: the client's own, if any, goes as it came.
pub fn inject(headers: &mut HeaderMap) {
    if !enabled() {
        return;
    }
    let context = Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut HeadersMut(headers));
}

/// Records `value` as the attribute `key` of `span`, when traces are on.
pub fn attribute(span: &Span, key: &'static str, value: i64) {
    if enabled() {
        span.set_attribute(key, value);
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}
