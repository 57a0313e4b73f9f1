//! `diag load`'s flags: hey's and oha's names and defaults (`-n 200 -c 50`), `DIAG_LOAD_*`
//! environment overrides, and parsers that refuse what cannot be meant (`-n 0`, `-q -5`,
//! `-H novalue`, a URL that is not http) with exit code 2, like every other bad flag.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use reqwest::header::HeaderValue;
use reqwest::{Method, Url};

use super::access::{Header, parse_header, parse_header_value};
use super::parse_duration;

/// Requests when neither `-n` nor `-z` is given (hey's default).
pub const DEFAULT_REQUESTS: u64 = 200;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// URL to send the requests to (http:// or https://; an IP literal spares a DNS lookup).
    #[arg(env = "DIAG_LOAD_URL", value_parser = parse_url)]
    pub url: Url,

    /// Number of requests to send [default: 200, unless -z is given].
    #[arg(short = 'n', long = "requests", env = "DIAG_LOAD_REQUESTS",
          conflicts_with = "duration", value_parser = parse_count)]
    pub requests: Option<u64>,

    /// Send requests for this long instead (e.g. 10s, 1m); requests in flight at the end are
    /// dropped and counted as aborted.
    #[arg(short = 'z', long = "duration", env = "DIAG_LOAD_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Requests in flight at once: the number of workers, and of pooled connections.
    #[arg(short = 'c', long = "concurrency", env = "DIAG_LOAD_CONCURRENCY", default_value_t = 50,
          value_parser = parse_concurrency)]
    pub concurrency: u32,

    /// Total rate in requests per second, open loop: requests get fixed intended start times
    /// and latency counts from those (no coordinated omission) [default: as fast as -c allows].
    #[arg(short = 'q', long = "rate", env = "DIAG_LOAD_RATE", allow_negative_numbers = true,
          value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// HTTP method.
    #[arg(short = 'm', long = "method", env = "DIAG_LOAD_METHOD", default_value = "GET",
          value_parser = parse_method)]
    pub method: Method,

    /// A request header, `Name: value`; repeat for more.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<Header>,

    /// Request body.
    #[arg(short = 'd', long = "body", env = "DIAG_LOAD_BODY", conflicts_with = "body_file",
          value_parser = parse_body)]
    pub body: Option<Body>,

    /// Request body, read from this file (once, before the run).
    #[arg(short = 'D', long = "body-file", env = "DIAG_LOAD_BODY_FILE", value_name = "FILE",
          value_parser = parse_body_file)]
    pub body_file: Option<Body>,

    /// Content-Type header of the request [default: none].
    #[arg(short = 'T', long = "content-type", env = "DIAG_LOAD_CONTENT_TYPE",
          value_parser = parse_header_value)]
    pub content_type: Option<HeaderValue>,

    /// Give up on a request (response and whole body) after this long; it counts as a timeout.
    #[arg(long, env = "DIAG_LOAD_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// A new connection for every request (no connection pool).
    #[arg(long, env = "DIAG_LOAD_DISABLE_KEEPALIVE")]
    pub disable_keepalive: bool,

    /// Also write the report as JSON to this file.
    #[arg(long, env = "DIAG_LOAD_JSON", value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// No live progress line (it is shown only when stderr is a terminal anyway).
    #[arg(long, env = "DIAG_LOAD_NO_PROGRESS")]
    pub no_progress: bool,
}

/// When a load run stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Until {
    /// After this many requests have finished.
    Requests(u64),
    /// When this much time has passed since the first request.
    Elapsed(Duration),
}

impl LoadArgs {
    /// `-n`, `-z`, or hey's default of 200 requests.
    pub fn until(&self) -> Until {
        match (self.requests, self.duration) {
            (Some(n), _) => Until::Requests(n),
            (None, Some(duration)) => Until::Elapsed(duration),
            (None, None) => Until::Requests(DEFAULT_REQUESTS),
        }
    }

    /// The body from `-d` or `-D`, if any.
    pub fn body(&self) -> Option<&Body> {
        self.body.as_ref().or(self.body_file.as_ref())
    }
}

/// A request body, read once and shared by every request without a copy.
#[derive(Clone)]
pub struct Body(pub Bytes);

impl std::fmt::Debug for Body {
    /// The length only: a body can be megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.0.len())
    }
}

fn parse_url(text: &str) -> Result<Url, String> {
    let example = "write e.g. http://127.0.0.1:8001/health";
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e}): {example}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "`{text}` must be an http:// or https:// URL with a host: {example}"
        ));
    }
    Ok(url)
}

/// A number of requests or streams: a whole number, at least 1.
pub(super) fn parse_count(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{text}` must be a whole number, at least 1")),
    }
}

/// The most workers diag starts: each holds a connection, and `ulimit -n` is finite.
pub const MAX_CONCURRENCY: u32 = 100_000;

/// Requests or streams at once: a whole number from 1 to [`MAX_CONCURRENCY`].
pub(super) fn parse_concurrency(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}` must be a whole number from 1 to {MAX_CONCURRENCY}"
        )),
    }
}

/// A rate in events per second: a positive, finite number, at most one per nanosecond.
pub(super) fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e9 => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate: write a positive number per second, e.g. 50 or 0.5"
        )),
    }
}

pub(super) fn parse_method(text: &str) -> Result<Method, String> {
    Method::from_bytes(text.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{text}` is not an HTTP method: write e.g. GET or POST"))
}

/// `Name: value` (the space is optional), as curl and hey take it.
fn parse_body(text: &str) -> Result<Body, String> {
    Ok(Body(Bytes::copy_from_slice(text.as_bytes())))
}

fn parse_body_file(path: &str) -> Result<Body, String> {
    std::fs::read(path)
        .map(|bytes| Body(Bytes::from(bytes)))
        .map_err(|e| format!("cannot read `{path}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_start_at_one() {
        assert_eq!(parse_count("200"), Ok(200));
        assert_eq!(parse_concurrency("50"), Ok(50));
        for bad in ["0", "-1", "1.5", "many"] {
            assert!(parse_count(bad).is_err(), "{bad:?} was accepted");
            assert!(parse_concurrency(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_concurrency("100001").is_err());
    }

    #[test]
    fn rates_are_positive_and_finite() {
        assert_eq!(parse_rate("50"), Ok(50.0));
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        for bad in ["0", "-5", "fast", "inf", "NaN", ""] {
            assert!(parse_rate(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn urls_must_be_http() {
        assert!(parse_url("http://127.0.0.1:8001/health?x=1").is_ok());
        assert!(parse_url("ftp://127.0.0.1/").is_err());
        assert!(parse_url("127.0.0.1:8001").is_err());
    }

    #[test]
    fn methods_are_case_insensitive_tokens() {
        assert_eq!(parse_method("post"), Ok(Method::POST));
        assert!(parse_method("GE T").is_err());
    }
}
