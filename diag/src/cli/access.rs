//! How diag gets through a service's door: `--api-key` and `-H`, one way for every subcommand
//! that talks to a service it does not own (`demo`, `watch`, `llm`; `diag load` has `-H` alone,
//! as hey does). They go on *every* request diag sends to it, probes included: a keyed gateway
//! or a staging proxy that wants a header would otherwise refuse part of the measurement, and
//! the report would blame the pool for a closed door.
//!
//! The key is kept out of `Debug` and marked sensitive in its header, so it cannot leak into a
//! log or an error message by accident.

use anyhow::Context as _;
use clap::Args;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

/// `--api-key` and `-H`, flattened into each subcommand's flags.
#[derive(Debug, Clone, Default, Args)]
pub struct Access {
    /// An extra header on every request, `Name: value` (e.g. `X-API-Key: k1`, or
    /// `x-mock-itl-ms: 20` to pace the mock); repeat for more.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<Header>,

    /// API key, sent on every request as `Authorization: Bearer <key>`.
    #[arg(long, env = "DIAG_API_KEY", hide_env_values = true, value_parser = parse_api_key)]
    pub api_key: Option<ApiKey>,
}

impl Access {
    /// The headers to put on every request (a client's `default_headers`): the key first, then
    /// each `-H` in order, appended (a repeated name is sent repeated, as given).
    pub fn header_map(&self) -> anyhow::Result<HeaderMap> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &self.api_key {
            let mut bearer = HeaderValue::from_str(&format!("Bearer {}", key.0))
                .context("the API key cannot go into a header")?;
            bearer.set_sensitive(true);
            headers.insert(AUTHORIZATION, bearer);
        }
        for header in &self.headers {
            headers.append(header.name.clone(), header.value.clone());
        }
        Ok(headers)
    }
}

/// One `-H Name: value`.
#[derive(Debug, Clone)]
pub struct Header {
    pub name: HeaderName,
    pub value: HeaderValue,
}

/// An API key. Its `Debug` does not show it, so it cannot leak into a log by accident.
#[derive(Clone)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

pub(super) fn parse_header(text: &str) -> Result<Header, String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not a header: write it as `Name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("`{}` is not a valid header name", name.trim()))?;
    let value = parse_header_value(value.trim())?;
    Ok(Header { name, value })
}

pub(super) fn parse_header_value(text: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(text).map_err(|_| format!("`{text}` is not a valid header value"))
}

pub(super) fn parse_api_key(text: &str) -> Result<ApiKey, String> {
    // It goes into a header: refuse what a header cannot carry now, not at the first request.
    if text.is_empty() || reqwest::header::HeaderValue::from_str(text).is_err() {
        return Err("the API key must be non-empty printable text".to_owned());
    }
    Ok(ApiKey(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_colon_value() {
        let header = parse_header("x-mock-itl-ms: 20").expect("valid header");
        assert_eq!(header.name, "x-mock-itl-ms");
        assert_eq!(header.value, "20");
        let header = parse_header("Accept:text/plain").expect("valid header");
        assert_eq!(header.value, "text/plain");
        for bad in ["novalue", ": 20", "bad name: 1", "x: a\nb"] {
            assert!(parse_header(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn an_api_key_does_not_show_in_debug() {
        let key = parse_api_key("sk-secret").expect("valid key");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert!(parse_api_key("").is_err());
        assert!(parse_api_key("a\nb").is_err());
    }

    #[test]
    fn the_key_and_the_headers_go_together() {
        let access = Access {
            headers: vec![
                parse_header("X-Diag: 1").expect("valid"),
                parse_header("x-diag: 2").expect("valid"),
            ],
            api_key: Some(ApiKey("k1".into())),
        };
        let headers = access.header_map().expect("valid headers");
        assert_eq!(headers[AUTHORIZATION], "Bearer k1");
        assert!(headers[AUTHORIZATION].is_sensitive());
        let values: Vec<_> = headers.get_all("x-diag").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(Access::default().header_map().expect("empty").is_empty());
    }
}
