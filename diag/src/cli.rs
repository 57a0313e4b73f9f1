//! The command line: every flag, its default, its `DIAG_*` environment override and its parser.
//!
//! All validation happens here, inside clap, so that every bad input (a malformed duration, a
//! query with a non-numeric `interval_ms`, an unreadable pid file) is reported the same way as an
//! unknown flag: a message on stderr and exit code 2. The rest of the crate only ever sees values
//! that make sense.
//!
//! The flags of `diag load`, `diag llm` and `diag watch` live in the submodules [`load`],
//! [`llm`] and [`watch`], with the parsers only they use; they share [`parse_duration`] and the
//! URL checks with the rest. `--api-key` and `-H`, which `demo`, `watch` and `llm` all take,
//! are [`access`]'s (`watch` also takes them per `--probe`).

pub mod access;
pub mod jobs;
pub mod llm;
pub mod load;
pub mod watch;

pub use access::{Access, ApiKey, Header};
pub use llm::{Arrivals, LlmArgs, StreamsUntil};
pub use load::{Body, LoadArgs, Until};
pub use watch::{Jsonl, Pair, Probe, WatchArgs};

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load a gateway and tell whether its blocking pool is starving.
#[derive(Debug, Parser)]
#[command(name = "diag", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open N streams through the gateway, probe its health on the side, print a verdict.
    Demo(DemoArgs),
    /// Print health-probe latency and pool occupancy once per interval, until Ctrl-C; or
    /// probe any service's URLs (--probe), alert (--fail-over) and stream JSON lines (--jsonl).
    Watch(WatchArgs),
    /// Send HTTP requests as fast as -c allows (or at -q per second) and report latency (like hey).
    Load(LoadArgs),
    /// Run streaming chat completions and report TTFT, inter-token latency, and if they sustained.
    Llm(LlmArgs),
    /// Submit N jobs to /v1/jobs, poll them to their end, report accepted/s and end-to-end times.
    Jobs(jobs::JobsArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Base URL of the gateway (use an IP literal: resolving a name costs a blocking-pool thread).
    #[arg(long, env = "DIAG_GATEWAY", default_value = "http://127.0.0.1:8000", value_parser = parse_gateway)]
    pub gateway: String,

    /// Number of concurrent streams to open.
    #[arg(long, env = "DIAG_STREAMS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub streams: u32,

    /// How long to keep the streams open (e.g. 20s, 500ms, 1m).
    #[arg(long, env = "DIAG_DURATION", default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Path of the streaming endpoint, on the gateway: each stream is `GET <gateway><path>?<query>`.
    #[arg(long, env = "DIAG_STREAM_PATH", default_value = DEFAULT_STREAM_PATH, value_parser = parse_stream_path)]
    pub stream_path: String,

    /// Query string for the streams; its `interval_ms` (default 500) sets the pace diag expects.
    #[arg(long, env = "DIAG_STREAM_QUERY", default_value = "chunks=20&interval_ms=500", value_parser = parse_stream_query)]
    pub stream_query: StreamQuery,

    /// Write the report as JSON to this file.
    #[arg(long, env = "DIAG_JSON", value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Draw the run as an SVG picture here: probe latency over time, pool occupancy, streams.
    #[arg(long, env = "DIAG_PLOT", value_name = "PATH")]
    pub plot: Option<PathBuf>,

    /// Exit with code 1 unless the verdict is this one.
    #[arg(long, env = "DIAG_EXPECT", value_enum)]
    pub expect: Option<Expect>,

    /// Process id of the gateway, to sample its threads, memory and CPU.
    #[arg(long, env = "DIAG_PID", conflicts_with = "pid_file")]
    pub pid: Option<u32>,

    /// File holding the gateway's process id (as written by `cargo xtask`).
    #[arg(long, env = "DIAG_PID_FILE", value_name = "PATH", value_parser = parse_pid_file)]
    pub pid_file: Option<u32>,

    /// How often to fire each health probe (open loop: a slow probe does not delay the next).
    #[arg(long, env = "DIAG_PROBE_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub probe_interval: Duration,

    /// Give up on a probe after this long; it is then counted as a timeout.
    #[arg(long, env = "DIAG_PROBE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub probe_timeout: Duration,

    /// /debug/health-sync p99 above this means the blocking pool made it wait.
    #[arg(long, env = "DIAG_SYNC_BUDGET", default_value = "100ms", value_parser = parse_duration)]
    pub sync_budget: Duration,

    /// The gateway's admin plane, whose /readyz is probed beside the rest; `off` for none
    /// [default: the gateway's host, port 8002, if it answers there].
    #[arg(long, env = "DIAG_ADMIN", value_name = "URL", value_parser = parse_admin)]
    pub admin: Option<AdminUrl>,

    #[command(flatten)]
    pub access: Access,
}

impl DemoArgs {
    /// The gateway's pid, from whichever of `--pid` and `--pid-file` was given.
    pub fn gateway_pid(&self) -> Option<u32> {
        self.pid.or(self.pid_file)
    }
}

/// `--admin`: where the gateway's admin plane is, or `off`. Not given, diag tries the gateway's
/// host on port 8002 (see [`crate::admin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminUrl {
    Off,
    /// A base URL, without a trailing `/`: `/readyz` is appended.
    At(String),
}

/// The verdict a caller (a make target, CI) insists on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Expect {
    Exhausted,
    Healthy,
}

/// The `/chat/stream` query, kept verbatim, plus the chunk pace it asks for.
#[derive(Debug, Clone)]
pub struct StreamQuery {
    pub raw: String,
    /// A stream counts as flowing while chunks arrive at roughly this pace.
    pub interval: Duration,
}

/// The mock's pace when the query does not name one.
const DEFAULT_CHUNK_INTERVAL: Duration = Duration::from_millis(500);

/// The gateway's streaming endpoint, the demo's default `--stream-path`.
pub const DEFAULT_STREAM_PATH: &str = "/chat/stream";

/// Parses `20s`, `500ms`, `1m`, `1.5s`. A bare number is refused: `--duration 20` reads as
/// seconds to one person and milliseconds to the next. Zero is refused too, because every
/// duration here is a period or a deadline, and a zero period makes tokio's `interval` panic.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 500ms, 20s or 1m"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write e.g. 500ms, 20s or 1m"))?;
    let nanos_per_unit = match unit {
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`: use ms, s or m")),
    };
    // Rounded in nanoseconds so that `0.1s` is exactly 100ms, not 99.999999ms.
    let nanos = (number * nanos_per_unit).round();
    if nanos >= u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    let duration = Duration::from_nanos(nanos as u64);
    if duration.is_zero() {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(duration)
}

/// A duration as [`parse_duration`] reads it: `500ms`, `5s`, `1.5s`; for echoing a setting
/// back in the words it was given.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_secs_f64() * 1e3;
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if ms >= 1000.0 {
        format!("{}s", ms / 1e3)
    } else {
        format!("{}ms", (ms * 1e3).round() / 1e3)
    }
}

fn parse_gateway(text: &str) -> Result<String, String> {
    http_url(text, "http://127.0.0.1:8000")?;
    // Kept as the user wrote it (minus a trailing slash) so paths append predictably.
    Ok(text.trim_end_matches('/').to_owned())
}

fn parse_admin(text: &str) -> Result<AdminUrl, String> {
    if text == "off" {
        return Ok(AdminUrl::Off);
    }
    http_url(text, "http://127.0.0.1:8002, or off")?;
    Ok(AdminUrl::At(text.trim_end_matches('/').to_owned()))
}

/// The admin plane's base URL for `diag llm --admin` (no `off`: there it is off unless given).
fn parse_admin_base(text: &str) -> Result<String, String> {
    http_url(text, "http://127.0.0.1:8002")?;
    Ok(text.trim_end_matches('/').to_owned())
}

/// A whole URL to request as it is (`diag llm --health-url`): its path, query and any trailing
/// slash are kept.
fn parse_url(text: &str) -> Result<String, String> {
    http_url(text, "http://127.0.0.1:8002/readyz")?;
    Ok(text.to_owned())
}

/// `text` as an http(s) URL with a host, or why not (ending with `write e.g. <example>`).
fn http_url(text: &str, example: &str) -> Result<reqwest::Url, String> {
    let example = format!("write e.g. {example}");
    let url =
        reqwest::Url::parse(text).map_err(|e| format!("`{text}` is not a URL ({e}): {example}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!(
            "`{text}` must be an http:// or https:// URL with a host: {example}"
        ));
    }
    Ok(url)
}

fn parse_stream_query(text: &str) -> Result<StreamQuery, String> {
    let raw = text.trim_start_matches('?').to_owned();
    let interval = match raw
        .split('&')
        .find_map(|pair| pair.strip_prefix("interval_ms="))
    {
        None => DEFAULT_CHUNK_INTERVAL,
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Duration::from_millis(ms),
            _ => {
                return Err(format!(
                    "interval_ms=`{ms}` must be a positive whole number"
                ));
            }
        },
    };
    Ok(StreamQuery { raw, interval })
}

/// A path to append to `--gateway`: from `/`, without a query (that is `--stream-query`'s, so
/// that its pace is read in one place) and without what a URL path cannot hold.
fn parse_stream_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "`{text}` must start with /: write e.g. /chat/stream"
        ));
    }
    if text.contains(['?', '#']) {
        return Err(format!(
            "`{text}`: give the path alone, and its query with --stream-query"
        ));
    }
    if text.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{text}` is not a URL path"));
    }
    Ok(text.to_owned())
}

fn parse_pid_file(path: &str) -> Result<u32, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    text.trim().parse().map_err(|_| {
        format!(
            "`{path}` does not hold a process id (found `{}`)",
            text.trim()
        )
    })
}

/// The command `diag <argv>` runs, for tests that need real arguments (a report's, say).
#[cfg(test)]
pub(crate) fn parse(argv: &[&str]) -> Command {
    Cli::try_parse_from(std::iter::once("diag").chain(argv.iter().copied()))
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"))
        .command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 250ms "), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn durations_print_as_they_are_written() {
        for text in ["500ms", "5s", "60s", "1.5s", "0.5ms", "90s"] {
            let duration = parse_duration(text).expect("valid");
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
    }

    #[test]
    fn durations_refuse_what_is_ambiguous_or_useless() {
        for bad in [
            "20", "5parsecs", "s", "", "ms", "0s", "1.2.3s", "-1s", "1 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_stream_query_sets_the_expected_pace() {
        let query = parse_stream_query("chunks=8&interval_ms=200").expect("valid query");
        assert_eq!(query.interval, Duration::from_millis(200));
        assert_eq!(query.raw, "chunks=8&interval_ms=200");
        let query = parse_stream_query("?chunks=8").expect("valid query");
        assert_eq!(query.interval, DEFAULT_CHUNK_INTERVAL);
        assert_eq!(query.raw, "chunks=8");
        assert!(parse_stream_query("interval_ms=fast").is_err());
        assert!(parse_stream_query("interval_ms=0").is_err());
    }

    #[test]
    fn stream_paths_are_paths_alone() {
        assert_eq!(
            parse_stream_path("/slow_stream"),
            Ok("/slow_stream".to_owned())
        );
        for bad in ["chat/stream", "", "/chat?chunks=2", "/a b", "/a#b"] {
            assert!(parse_stream_path(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn gateways_must_be_http_urls() {
        assert_eq!(
            parse_gateway("http://127.0.0.1:8000/"),
            Ok("http://127.0.0.1:8000".to_owned())
        );
        assert!(parse_gateway("127.0.0.1:8000").is_err());
        assert!(parse_gateway("ftp://127.0.0.1").is_err());
    }

    #[test]
    fn admin_is_a_base_url_or_off() {
        assert_eq!(parse_admin("off"), Ok(AdminUrl::Off));
        assert_eq!(
            parse_admin("http://127.0.0.1:8002/"),
            Ok(AdminUrl::At("http://127.0.0.1:8002".to_owned()))
        );
        assert!(parse_admin("127.0.0.1:8002").is_err());
        assert!(parse_admin("none").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
