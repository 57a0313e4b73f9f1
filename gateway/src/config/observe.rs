//! Settings of what the gateway tells about itself: the shape of its log lines and where its
//! traces go.
//!
//! Settings types only (the subscriber and the exporter are [`crate::telemetry::subscriber`] and
//! [`crate::telemetry::otel`]). A group of flags of its own, flattened into [`super::Config`], so
//! each has its `GATEWAY_*` variable and its key in the `--config` file like every other flag.

use clap::{Args, ValueEnum};
use reqwest::Url;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event (colored on a terminal unless `NO_COLOR` is set).
    Text,
    /// One JSON object per line, the event's fields at the top level, for a log pipeline.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

/// The observability flags.
#[derive(Debug, Clone, Args)]
pub struct ObserveConfig {
    /// The log lines' shape: `text` (default, on a terminal or not: the demos, the scripts and
    /// people read it) or `json` (one object per line, for a log pipeline). `RUST_LOG` picks the
    /// levels (`info` by default); `NO_COLOR` turns colors off in `text`.
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Export traces over OTLP/HTTP (protobuf) to this collector, e.g. `http://127.0.0.1:4318`
    /// (`/v1/traces` is added unless the URL has a path): a span per request, with its admission,
    /// each upstream attempt, its first byte and its stream; the request id and `traceparent`
    /// go upstream. Off by default, and then it costs nothing.
    #[arg(long, env = "GATEWAY_OTLP_ENDPOINT", value_name = "URL", value_parser = parse_endpoint)]
    pub otlp_endpoint: Option<Url>,
}

impl ObserveConfig {
    /// The URL spans are POSTed to: the endpoint, with `/v1/traces` when it has no path of its
    /// own (what OpenTelemetry's `OTEL_EXPORTER_OTLP_ENDPOINT` means, too).
    pub fn traces_url(&self) -> Option<Url> {
        let mut url = self.otlp_endpoint.clone()?;
        if url.path() == "/" || url.path().is_empty() {
            url.set_path("/v1/traces");
        }
        Some(url)
    }

    /// The limits block's line.
    pub fn describe(&self) -> String {
        format!(
            "{} lines; traces {}",
            self.log_format.as_str(),
            self.traces_url()
                .map_or_else(|| "off".to_owned(), |url| format!("to {url} (OTLP/HTTP)"))
        )
    }
}

fn parse_endpoint(s: &str) -> Result<Url, String> {
    let url =
        Url::parse(s).map_err(|e| format!("not a URL ({e}); example: http://127.0.0.1:4318"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err("the URL has no host".into()),
        other => Err(format!(
            "scheme must be http or https (OTLP over HTTP), not {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_to_a_bare_endpoint() {
        let config = |url: &str| ObserveConfig {
            log_format: LogFormat::Text,
            otlp_endpoint: Some(parse_endpoint(url).expect("url")),
        };
        assert_eq!(
            config("http://127.0.0.1:4318")
                .traces_url()
                .map(String::from),
            Some("http://127.0.0.1:4318/v1/traces".to_owned())
        );
        assert_eq!(
            config("http://collector/otlp/v1/traces")
                .traces_url()
                .map(String::from),
            Some("http://collector/otlp/v1/traces".to_owned())
        );
        assert!(parse_endpoint("grpc://x:4317").is_err());
        assert!(parse_endpoint("not a url").is_err());
    }
}
