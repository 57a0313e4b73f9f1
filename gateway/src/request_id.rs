//! The request id: one name for one request, in its response, its upstream request, every log
//! line it writes and every error body it gets.
//!
//! When an LLM feature is slow, the question a support ticket brings is "what happened to *this*
//! request?". A client (or the load balancer in front) may already have named it: an
//! `x-request-id` it sent is kept, so the id in its own logs finds the gateway's lines and the
//! provider's. Otherwise the gateway makes one. Either way it goes back on the response, goes
//! upstream (OpenAI's API logs it), names the request's span (so every log line of the request
//! carries it, see `crate::telemetry::access`) and appears in the gateway's own error bodies as
//! `error.request_id`.
//!
//! A client's value is taken only when it is something worth echoing: 1 to [`MAX_LEN`] visible
//! ASCII characters (no spaces, no control characters). Anything else (a 4 KiB blob, a value
//! with a newline that would forge a log line) is replaced by a fresh id, not refused: a request
//! must not fail because of a label.
//!
//! The id of the request being served is a Tokio task-local, set by the outermost middleware
//! (`crate::http::observe`) around the whole request: every layer below reads it with
//! [`current`] without a parameter threaded through each signature, the way a tracing span is
//! found. A leaf, like `error`: it imports nothing of the crate, so the error shape can use it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};

/// `x-request-id`, in and out.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-chosen id kept (UUIDs are 36, OpenAI's `req_...` 36, a W3C trace id 32).
pub const MAX_LEN: usize = 128;

/// One request's id. Cloning is shallow.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(Arc<str>);

tokio::task_local! {
    static CURRENT: RequestId;
}

impl RequestId {
    /// The client's `x-request-id`, if it is one to keep (see the module docs).
    pub fn from_header(value: &HeaderValue) -> Option<Self> {
        let bytes = value.as_bytes();
        let valid =
            !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(u8::is_ascii_graphic);
        // Visible ASCII is UTF-8, so `to_str` cannot fail here.
        valid
            .then(|| value.to_str().ok())
            .flatten()
            .map(|text| Self(Arc::from(text)))
    }

    /// A fresh id: 128 random bits as 32 hex digits, the shape of a W3C trace id, so an id the
    /// gateway made cannot be told from one a tracing client made, and never collides in
    /// practice.
    pub fn generate() -> Self {
        Self(Arc::from(format!("{:032x}", fastrand::u128(..))))
    }

    /// The client's id when it sent a good one, else a fresh one; and whether it was replaced.
    pub fn resolve(sent: Option<&HeaderValue>) -> (Self, bool) {
        match sent.map(Self::from_header) {
            Some(Some(id)) => (id, false),
            Some(None) => (Self::generate(), true),
            None => (Self::generate(), false),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// As a header value (it was built from visible ASCII, so this cannot fail).
    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// Runs `future` as the request named by this id: [`current`] answers it inside.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }
}

/// The id of the request this task serves, if it serves one (a job worker or a start-up task
/// does not).
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_id_is_kept_and_a_bad_one_replaced() {
        let kept = RequestId::resolve(Some(&HeaderValue::from_static("req-42_a.b:c")));
        assert_eq!((kept.0.as_str(), kept.1), ("req-42_a.b:c", false));
        for bad in ["", "has space", "tab\there"] {
            let value = HeaderValue::from_str(bad).expect("header");
            let (id, replaced) = RequestId::resolve(Some(&value));
            assert!(replaced, "{bad:?}");
            assert_eq!(id.as_str().len(), 32, "{id}");
        }
        let long = HeaderValue::from_str(&"a".repeat(MAX_LEN + 1)).expect("header");
        assert!(RequestId::resolve(Some(&long)).1);
        let longest = HeaderValue::from_str(&"a".repeat(MAX_LEN)).expect("header");
        assert!(!RequestId::resolve(Some(&longest)).1);
        let (made, replaced) = RequestId::resolve(None);
        assert!(!replaced);
        assert!(made.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(made, RequestId::generate());
    }

    #[tokio::test]
    async fn the_current_id_is_the_scope_s() {
        assert!(current().is_none());
        let id = RequestId::generate();
        let seen = id.clone().scope(async { current() }).await;
        assert_eq!(seen, Some(id));
    }
}
