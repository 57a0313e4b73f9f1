//! After a drain's grace: new work is refused with 503 `shutting_down`, and the connection closed.
//!
//! A drain first only turns readiness to 503 `draining` and keeps serving, for
//! `--drain-grace-secs`, so that load balancers stop sending before anything is refused (see
//! [`crate::lifecycle`]). Once the grace is over ([`Phase::ShuttingDown`]), whatever still
//! arrives came from a client or a balancer that has not noticed; it gets an answer it can act on
//! rather than a refused connection:
//!
//! - **503** in OpenAI's shape, code `shutting_down`: the SDKs retry a 503, and a retry through
//!   the load balancer lands on another instance;
//! - **`Retry-After: 1`** (and `retry-after-ms`): soon, somewhere else;
//! - **`Connection: close`**: hyper closes the connection after this answer, so a client holding
//!   a keep-alive connection to this instance opens its next one elsewhere.
//!
//! It guards the routes that start work (`/v1/*`, `/chat/stream`), in front of the API-key check
//! and the limits, so a refused request takes no place. The probes (`/health`, `/metrics`,
//! `/debug/*`) keep answering: they start nothing, and they are how an operator watches the drain
//! finish. Each refusal counts in `gateway_shed_total{reason="shutting_down"}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::error::ApiError;
use crate::lifecycle::{Lifecycle, Phase};
use crate::telemetry::labels::ShedReason;
use crate::telemetry::metrics::{Metrics, ShedLabels};

/// What the check needs: the phase to read and the counter to move.
#[derive(Debug, Clone)]
pub struct Closing {
    pub lifecycle: Lifecycle,
    pub metrics: Arc<Metrics>,
}

/// How soon a refused client should retry (through the balancer, on another instance).
const RETRY_AFTER: Duration = Duration::from_secs(1);

impl Closing {
    /// `None` until the grace is over; then the refusal to send instead of serving `request`.
    pub fn refusal(&self, request: &Request) -> Option<Response> {
        if self.lifecycle.phase() < Phase::ShuttingDown {
            return None;
        }
        let received = Instant::now();
        self.metrics
            .shed
            .get_or_create(&ShedLabels {
                reason: ShedReason::ShuttingDown,
            })
            .inc();
        let error = ApiError::shutting_down(
            "this gateway instance is shutting down and takes no new requests; retry, and the \
             load balancer will send you to another instance",
        )
        .retry_after(RETRY_AFTER);
        let mut response = crate::telemetry::log::refuse(request, error, received);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        Some(response)
    }
}
