//! `diag llm`'s flags, with `DIAG_LLM_*` environment overrides (and `DIAG_API_KEY`, with `-H`,
//! from [`super::access`]). As for every diag command, each bad value is refused here with exit
//! code 2.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::access::Access;
use super::load::{parse_concurrency, parse_count, parse_rate};
use super::{parse_admin_base, parse_duration, parse_gateway, parse_url};

/// Streams when neither `-n` nor `-z` is given.
pub const DEFAULT_STREAMS: u64 = 50;
/// Streams at once when `-q` is not given.
pub const DEFAULT_CONCURRENCY: u32 = 10;

#[derive(Debug, Args)]
pub struct LlmArgs {
    /// Base URL of the OpenAI-compatible API; streams go to `{base}/v1/chat/completions`.
    #[arg(long, env = "DIAG_LLM_BASE_URL", default_value = "http://127.0.0.1:8000",
          value_parser = parse_gateway)]
    pub base_url: String,

    /// Number of streams to run [default: 50, unless -z is given].
    #[arg(short = 'n', long = "streams", env = "DIAG_LLM_STREAMS", conflicts_with = "duration",
          value_parser = parse_count)]
    pub streams: Option<u64>,

    /// Start streams for this long instead (e.g. 30s); streams still open then are cancelled.
    #[arg(short = 'z', long = "duration", env = "DIAG_LLM_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Streams open at once, closed loop: each worker starts a new stream when its last one
    /// ends [default: 10].
    #[arg(short = 'c', long = "concurrency", env = "DIAG_LLM_CONCURRENCY", conflicts_with = "rate",
          value_parser = parse_concurrency)]
    pub concurrency: Option<u32>,

    /// Streams started per second, open loop: on schedule, however many are still open.
    #[arg(short = 'q', long = "rate", env = "DIAG_LLM_RATE", allow_negative_numbers = true,
          value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// The `model` of each request.
    #[arg(long, env = "DIAG_LLM_MODEL", default_value = "mock-1")]
    pub model: String,

    /// The `max_tokens` of each request [default: not sent].
    #[arg(long, env = "DIAG_LLM_MAX_TOKENS", value_parser = parse_max_tokens)]
    pub max_tokens: Option<u32>,

    /// The user message of each request.
    #[arg(
        long,
        env = "DIAG_LLM_PROMPT",
        default_value = "Tell me a short story."
    )]
    pub prompt: String,

    #[command(flatten)]
    pub access: Access,

    /// Give up on a stream when nothing arrives for this long (response headers, or the next
    /// event); it counts as a timeout.
    #[arg(long, env = "DIAG_LLM_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Also poll `{base}/health` every 250 ms from its own thread, and report its latency.
    #[arg(long, env = "DIAG_LLM_HEALTH")]
    pub health: bool,

    /// Poll this URL instead of `{base}/health` (e.g. the gateway's admin plane,
    /// `http://127.0.0.1:8002/readyz`); implies --health.
    #[arg(long, env = "DIAG_LLM_HEALTH_URL", value_name = "URL", value_parser = parse_url)]
    pub health_url: Option<String>,

    /// The gateway's admin plane (e.g. `http://127.0.0.1:8002`): also poll its `/readyz` beside
    /// the streams, and report its latency and what it read (ready, degraded, which check).
    #[arg(long, env = "DIAG_LLM_ADMIN", value_name = "URL", value_parser = parse_admin_base)]
    pub admin: Option<String>,

    /// The expected token pace in ms, for the sustained rule [default: the median ITL seen].
    #[arg(long, env = "DIAG_LLM_PACING_MS", allow_negative_numbers = true, value_parser = parse_pacing)]
    pub pacing_ms: Option<f64>,

    /// Also write the report as JSON to this file.
    #[arg(long, env = "DIAG_LLM_JSON", value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// No live progress line (it is shown only when stderr is a terminal anyway).
    #[arg(long, env = "DIAG_LLM_NO_PROGRESS")]
    pub no_progress: bool,
}

/// How streams are started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrivals {
    /// `-c`: this many workers, each starting a stream when its previous one ends.
    Closed(u32),
    /// `-q`: this many streams per second, on schedule.
    Open(f64),
}

/// When a run stops starting streams.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StreamsUntil {
    /// After this many streams were started (the run then waits for them to end).
    Count(u64),
    /// When this much time has passed (streams still open are then cancelled).
    Elapsed(Duration),
}

impl LlmArgs {
    pub fn arrivals(&self) -> Arrivals {
        match (self.rate, self.concurrency) {
            (Some(rate), _) => Arrivals::Open(rate),
            (None, concurrency) => Arrivals::Closed(concurrency.unwrap_or(DEFAULT_CONCURRENCY)),
        }
    }

    /// The URL `--health` polls: `--health-url`, else `{base}/health`; `None` without either.
    pub fn health_url(&self) -> Option<String> {
        match &self.health_url {
            Some(url) => Some(url.clone()),
            None => self.health.then(|| format!("{}/health", self.base_url)),
        }
    }

    pub fn until(&self) -> StreamsUntil {
        match (self.streams, self.duration) {
            (Some(n), _) => StreamsUntil::Count(n),
            (None, Some(duration)) => StreamsUntil::Elapsed(duration),
            (None, None) => StreamsUntil::Count(DEFAULT_STREAMS),
        }
    }
}

fn parse_max_tokens(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "`{text}` must be a whole number of tokens, at least 1"
        )),
    }
}

fn parse_pacing(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(ms),
        _ => Err(format!(
            "`{text}` is not a pace: write a positive number of milliseconds, e.g. 20"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_url_is_health_on_the_base_unless_given() {
        let health_url = |argv: &[&str]| match crate::cli::parse(argv) {
            crate::cli::Command::Llm(args) => args.health_url(),
            other => panic!("not diag llm: {other:?}"),
        };
        assert_eq!(health_url(&["llm"]), None);
        assert_eq!(
            health_url(&["llm", "--base-url", "http://10.0.0.5:8000/", "--health"]).as_deref(),
            Some("http://10.0.0.5:8000/health")
        );
        // Given, it is polled as written, and it implies --health.
        assert_eq!(
            health_url(&["llm", "--health-url", "http://127.0.0.1:8002/readyz"]).as_deref(),
            Some("http://127.0.0.1:8002/readyz")
        );
    }

    #[test]
    fn pacing_is_positive() {
        assert_eq!(parse_pacing("20"), Ok(20.0));
        assert!(parse_pacing("0").is_err());
        assert!(parse_pacing("-1").is_err());
    }
}
