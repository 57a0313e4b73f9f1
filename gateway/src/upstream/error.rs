//! Why an upstream attempt gave no response: one variant per failure, so code that decides what
//! to do next (the retry loop in [`crate::policy::resilience`]) matches on the kind of failure,
//! never on the text or the `code` a client will read.
//!
//! The enum knows its HTTP status ([`UpstreamError::status_code`]), the stable `code` OpenAI's
//! clients branch on and any `Retry-After`; [`ApiError::from`] turns it into OpenAI's error shape
//! at the edge, where a handler answers. The messages are written for the person at the
//! terminal, as before: what failed, where, and what to change.
//!
//! An upstream that *answered*, even with a 429 or a 503, is not an error here: its response is
//! relayed as it is (see [`super::relay`]).

use std::time::Duration;

use axum::http::StatusCode;
use reqwest::Url;

use super::proxy::ProxyName;
use crate::error::ApiError;
use crate::telemetry::labels::UpstreamErrorKind;
use crate::telemetry::metrics::ShedReason;

/// The `code` of an error where the request never reached the upstream (refused, unresolvable,
/// no connection within the connect timeout): always safe to retry.
pub const UNREACHABLE: &str = "upstream_unreachable";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Refused, unresolvable, no route: the request never reached the upstream.
    #[error("upstream {url} unreachable: {detail}")]
    Unreachable { url: Url, detail: String },
    /// The way to the upstream goes through a proxy from the environment, and the proxy could
    /// not be reached or did not open the way: the request never reached the upstream. Named,
    /// because the upstream may be fine; it is the proxy (or `NO_PROXY`) that needs a look.
    #[error(
        "upstream {url} unreachable through proxy {proxy}: {detail}; the proxy comes from the \
         environment: fix or unset {}, or add the upstream's host to NO_PROXY to go direct",
        proxy.variable
    )]
    ProxyUnreachable {
        proxy: ProxyName,
        url: Url,
        detail: String,
    },
    /// No connection within the connect timeout: the request never reached the upstream either.
    #[error("upstream {url} {detail}")]
    ConnectTimeout { url: Url, detail: String },
    /// Connected, then silence longer than the read timeout.
    #[error("upstream {url} {detail}")]
    ReadTimeout { url: Url, detail: String },
    /// Any other failure of the exchange (a reset, a protocol error): the upstream may have seen
    /// the request, so it is not retried.
    #[error("upstream {url} unreachable: {detail}")]
    Failed { url: Url, detail: String },
    /// The body broke off before its first byte, while the attempt was judged by that byte.
    /// Nothing reached the client yet, so it may be retried.
    #[error("upstream of provider {provider} broke off before its first byte: {detail}")]
    BrokeOff { provider: String, detail: String },
    /// Every one of the provider's `max-concurrent` slots stayed taken for `pool-timeout-ms`.
    #[error(
        "provider {provider} has {limit} requests in progress, its max-concurrent, and none \
         finished within {} ms (pool-timeout-ms); retry after a second",
        waited.as_millis()
    )]
    ProviderBusy {
        provider: String,
        limit: usize,
        waited: Duration,
    },
    /// The provider's `requests-per-minute` is spent: refused without calling it.
    #[error(
        "provider {provider} is at its limit of {rpm} requests per minute (its \
         requests-per-minute in the gateway's config); retry in {} ms",
        wait.as_millis()
    )]
    ProviderRateLimited {
        provider: String,
        rpm: u32,
        wait: Duration,
    },
    /// No attempt succeeded within the request's deadline (`x-gateway-deadline-ms`).
    #[error(
        "no upstream attempt succeeded within the deadline of {} ms ({attempts} attempts to \
         provider {provider}); raise it with x-gateway-deadline-ms or --hedge-deadline-ms",
        deadline.as_millis()
    )]
    DeadlineExceeded {
        provider: String,
        deadline: Duration,
        attempts: u32,
    },
    /// The gateway's own machinery failed (a pool thread ended without answering).
    #[error("{0}")]
    Internal(&'static str),
}

impl UpstreamError {
    /// The request never reached the upstream: sending it again cannot do anything twice.
    pub fn never_reached(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::ProxyUnreachable { .. } | Self::ConnectTimeout { .. }
        )
    }

    /// The kind it counts as in `gateway_upstream_errors_total`; `None` for the gateway's own
    /// refusals and failures, which are not the upstream's.
    pub fn error_kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            Self::Unreachable { .. } | Self::ProxyUnreachable { .. } => {
                Some(UpstreamErrorKind::Unreachable)
            }
            Self::ConnectTimeout { .. } => Some(UpstreamErrorKind::ConnectTimeout),
            Self::ReadTimeout { .. } => Some(UpstreamErrorKind::ReadTimeout),
            Self::Failed { .. } => Some(UpstreamErrorKind::Failed),
            Self::BrokeOff { .. } => Some(UpstreamErrorKind::BrokeOff),
            Self::ProviderBusy { .. }
            | Self::ProviderRateLimited { .. }
            | Self::DeadlineExceeded { .. }
            | Self::Internal(_) => None,
        }
    }

    /// The status the client gets.
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::Unreachable { .. }
            | Self::ProxyUnreachable { .. }
            | Self::Failed { .. }
            | Self::BrokeOff { .. } => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout { .. }
            | Self::ReadTimeout { .. }
            | Self::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::ProviderBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::ProviderRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `code`: a stable reason a program can match on.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Unreachable { .. }
            | Self::ProxyUnreachable { .. }
            | Self::ConnectTimeout { .. } => Some(UNREACHABLE),
            Self::BrokeOff { .. } => Some("upstream_broke_off"),
            Self::ProviderBusy { .. } => Some(ShedReason::ProviderBusy.as_str()),
            Self::ProviderRateLimited { .. } => Some("provider_rate_limited"),
            Self::DeadlineExceeded { .. } => Some("deadline_exceeded"),
            Self::ReadTimeout { .. } | Self::Failed { .. } | Self::Internal(_) => None,
        }
    }

    /// OpenAI's `type`: the upstream's failures, the gateway's own, or a rate limit (the one
    /// OpenAI's SDKs recognise and retry).
    fn kind(&self) -> &'static str {
        match self.status_code() {
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => "upstream_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_exceeded",
            _ => "server_error",
        }
    }

    /// When the client may try again, for the limits that know.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::ProviderBusy { .. } => Some(Duration::from_secs(1)),
            Self::ProviderRateLimited { wait, .. } => Some(*wait),
            _ => None,
        }
    }
}

/// The edge: the failure as OpenAI's error shape, with its status, code and `Retry-After`.
impl From<UpstreamError> for ApiError {
    fn from(error: UpstreamError) -> Self {
        let api = ApiError {
            status: error.status_code(),
            message: error.to_string(),
            kind: error.kind(),
            param: None,
            code: error.code(),
            headers: Box::default(),
        };
        match error.retry_after() {
            Some(wait) => api.retry_after(wait),
            None => api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_that_never_left_is_retried_by_kind() {
        let url = Url::parse("http://127.0.0.1:1/v1/chat/completions").expect("url");
        let detail = String::new;
        let unreachable = UpstreamError::Unreachable {
            url: url.clone(),
            detail: detail(),
        };
        let connect = UpstreamError::ConnectTimeout {
            url: url.clone(),
            detail: detail(),
        };
        let read = UpstreamError::ReadTimeout {
            url,
            detail: detail(),
        };
        assert!(unreachable.never_reached() && connect.never_reached());
        assert!(!read.never_reached());
        let api = ApiError::from(connect);
        assert_eq!(
            (api.status, api.code, api.kind),
            (
                StatusCode::GATEWAY_TIMEOUT,
                Some(UNREACHABLE),
                "upstream_error"
            )
        );
    }

    #[test]
    fn a_busy_provider_is_a_503_with_retry_after() {
        let busy = UpstreamError::ProviderBusy {
            provider: "p".into(),
            limit: 2,
            waited: Duration::from_millis(1000),
        };
        let api = ApiError::from(busy);
        assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.code, Some("provider_busy"));
        assert_eq!(api.headers["retry-after"], "1");
        assert!(api.message.contains("within 1000 ms"), "{}", api.message);
    }

    /// The gateway's own bug (a pool thread that ended without answering) cannot be provoked
    /// from outside without one; its documented answer is checked here: 500, `server_error`,
    /// no code, and a message rather than an empty body.
    #[test]
    fn a_bug_in_the_gateway_is_a_500_server_error_with_no_code() {
        let api = ApiError::from(UpstreamError::Internal("a worker ended without answering"));
        assert_eq!(
            (api.status, api.kind, api.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None)
        );
        assert_eq!(
            api.body()["error"]["message"],
            "a worker ended without answering"
        );
    }
}
