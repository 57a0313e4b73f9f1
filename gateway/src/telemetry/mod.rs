//! Telemetry: what the gateway tells about itself, in logs, in `/metrics` and in the pool's
//! counters.
//!
//! - [`log`]: the request log, one line per request however it ends; [`access`]: the record a
//!   request fills in as it runs (model, provider, attempts, cache) and the line's shape;
//!   [`meter`]: a relayed body read as it passes (first content, token gaps, tokens).
//! - [`llm`]: request latency, time to first token, token gaps and counts, upstream errors by
//!   provider and model, and the admin plane's readiness, in `/metrics`.
//! - [`otel`]: OpenTelemetry traces over OTLP (`--otlp-endpoint`), `traceparent` in and out;
//!   [`subscriber`]: the process's one subscriber: text or JSON lines, and the traces;
//!   [`fields`]: the text lines' fields, written as `tracing-subscriber` would, for less.
//! - [`labels`]: the label sets of `/metrics`, and their values as enums.
//! - [`jobs`]: the job queue's series (by status, waits, refusals).
//! - [`metrics`]: every bound of the gateway and every time one was hit, for `GET /metrics`;
//!   [`cache_metrics`]: the response cache's families; [`ratelimit_metrics`]: whether the rate
//!   limits are shared right now.
//! - [`pool`]: lesson 1, *seeing* the blocking pool: a counting wrapper around `spawn_blocking`.
//!
//! The bottom of the stack apart from the settings and the error shape: every other layer
//! writes here, and nothing here calls back.

pub mod access;
pub mod cache_metrics;
pub mod fields;
pub mod jobs;
pub mod labels;
pub mod llm;
pub mod log;
pub mod meter;
pub mod metrics;
pub mod otel;
pub mod pool;
pub mod ratelimit_metrics;
pub mod subscriber;
