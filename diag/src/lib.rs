//! # diag: measure a gateway from the outside, and say whether its blocking pool is starving
//!
//! A gateway whose blocking pool is exhausted does not crash and does not look busy: its async
//! health check stays green, its CPU is idle, and yet streams queue and every request that needs
//! a pool thread waits for seconds. `diag` makes that visible with numbers a person can check:
//!
//! - `diag demo` opens N streams through the gateway, probes its health endpoints on the side,
//!   samples `/debug/pool` and (optionally) the gateway process, prints a live line per second,
//!   then a table and a verdict (`EXHAUSTED` or `HEALTHY`, or `FAILED` when the target died,
//!   refused the streams or cut them off), and can write it all as JSON.
//! - `diag watch` prints one line of probe latencies and pool occupancy per interval, for a
//!   service that someone else is loading; with `--probe`, of any service's URLs, with
//!   sliding-window percentiles, the starved-pool verdict of a `--pair`, alerts with an exit
//!   code and JSON lines.
//! - `diag load` is an HTTP load generator in the manner of hey and oha (`-n`/`-z`, `-c`, `-q`
//!   with latency measured from the intended start), with hey's report and a JSON one.
//! - `diag llm` runs streaming chat completions at a concurrency or a rate, reports TTFT,
//!   inter-token latency and tokens/s, and says whether the server `SUSTAINED` the load.
//! - `diag jobs` submits N jobs to the gateway's `/v1/jobs`, polls them to their end, and
//!   reports jobs accepted per second (each a durable commit) and end-to-end times.
//!
//! # Layout
//!
//! One folder (or file) per subcommand, the pieces they share beside them, and imports that
//! point one way: a subcommand uses the shared pieces, a shared piece uses none of the
//! subcommands, and no module imports one that imports it back.
//!
//! The subcommands:
//!
//! - [`demo`]: `diag demo`: reachability check, load, side measurements, report, exit status.
//!   - [`demo::streams`]: the N streams, what each one saw, and how many were *flowing* at once.
//!   - [`demo::report`]: the demo's result: the JSON shape and the table (also at [`report`],
//!     its older path).
//!   - [`demo::verdict`]: the verdict rules, in two steps: did the target fail (`FAILED`), and
//!     if not, was its pool starved (`EXHAUSTED`) or not (`HEALTHY`).
//!   - [`demo::timeline`]: the demo's time series (each probe, pool sample and flowing count).
//!   - [`demo::plot`]: `--plot`: the timeline as an SVG picture, and how to read it.
//! - [`watch`]: `diag watch`: the gateway's view or (`--probe`) any service's.
//!   - [`watch::gateway`]: without `--probe`: the three endpoints, the pool, `/readyz`.
//!   - [`watch::probes`]: with `--probe`: the lines, the summary, the end.
//!   - [`watch::window`]: one probe's last `--window` (p50/p99/max, failures, waiting).
//!   - [`watch::pair`]: `--pair FAST=SLOW`: starved, both slow, or ok.
//!   - [`watch::alert`]: `--fail-over`, `--fail-on-errors`, and the exit code's rules.
//!   - [`watch::jsonl`]: `--jsonl`: the schema and the writer.
//!   - [`watch::clock`], [`watch::downtime`]: the lines' time, and "it stopped answering".
//! - [`load`]: `diag load`: workers, tickets, intended start times.
//!   - [`load::tally`]: what the workers count, one tally per shard.
//!   - [`load::report`]: hey's report and the JSON one.
//! - [`llm`]: `diag llm`: set-up and printing.
//!   - [`llm::schedule`]: closed loop (`-c`) or open loop (`-q`), and the end of the run.
//!   - [`llm::stream`]: one stream's state (TTFT, gaps, tokens) and the tally of all streams.
//!   - [`llm::sse`]: the wire: the request, the server-sent events, how a stream fails.
//!   - [`llm::report`]: the result, the sustained rule, the JSON and the human report.
//! - [`jobs`]: `diag jobs`: submit, then poll in order; [`jobs::report`]: its result.
//!
//! - [`fleet_plot`]: the picture of `make demo-scale` (a fleet behind HAProxy over time), drawn
//!   for xtask, which runs that demo and records its timeline.
//!
//! What they share:
//!
//! - [`cli`]: every flag, its default, its environment override and its validation (and
//!   which `--probe` each of `diag watch`'s per-probe options belongs to).
//! - [`admin`]: where the gateway's admin plane is (`--admin`, or the guess), found once (demo,
//!   watch).
//! - [`probe`]: the one prober: health probes, open loop, on their own OS thread and runtime
//!   (the demo's three endpoints and `/readyz`, `diag llm --health`'s one URL, `diag watch
//!   --probe`'s URLs; the gateway view of `diag watch` sends single probes).
//! - [`statuses`]: which statuses answer a probe (`--expect-status 200,204`, `2xx`).
//! - [`readiness`]: the admin plane's `/readyz` as diag reads it (its checks, a run's statuses).
//! - [`pool`]: samples the gateway's `/debug/pool` counters (demo, watch).
//! - [`process`]: samples the gateway process (threads, memory, CPU) with sysinfo (demo).
//! - [`live`]: the one-line view (`sync … | async … | health … | pool …`) of demo and watch.
//! - [`histogram`]: latency histograms (HDR, percentiles, hey's bars) of the prober, load, llm.
//! - [`progress`]: the live progress line of load and llm (stderr, terminals only).
//! - [`reachable`]: the TCP check `diag load` and `diag llm` make before measuring.
//! - this root: [`Error`] and its exit codes, and the helpers every module may use
//!   (`write_json`, `root_cause`, `lock`).
//!
//! `main.rs` only parses the command line, calls [`run`] and turns an [`Error`] into an exit code.

pub mod admin;
pub mod cli;
pub mod demo;
pub mod fleet_plot;
pub mod histogram;
pub mod jobs;
pub mod live;
pub mod llm;
pub mod load;
pub mod pool;
pub mod probe;
pub mod process;
pub mod progress;
pub mod reachable;
pub mod readiness;
pub mod statuses;
pub mod watch;

/// The demo's report keeps its path, `diag::report`.
pub use demo::report;

// The three reports, under the names a reader of diag's JSON (xtask's benchmarks) uses: each
// derives `Deserialize` as well as `Serialize`, so a schema change fails to compile there.
pub use demo::report::Report as DemoReport;
pub use jobs::report::JobsReport;
pub use llm::report::LlmReport;
pub use load::report::LoadReport;

use std::path::Path;

use anyhow::Context as _;

use cli::{Cli, Command};
use report::Verdict;

/// Why `diag` did not finish normally. Each kind has its own exit code (see [`Error::exit_code`]),
/// so that scripts can tell "the gateway is not running" from "the gateway is not what you said".
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway did not answer the first probe: nothing was measured. The hint names a
    /// command that leaves the services running for the next try (`make demo-broken` would
    /// stop its gateway when its own demo ends).
    #[error(
        "cannot reach the gateway at {url} ({reason}).\n\
         Start it first, e.g. `cargo xtask up broken` (`make stop` stops it) or \
         `cargo run -p gateway`, or point --gateway at where it runs."
    )]
    Unreachable { url: String, reason: String },

    /// `--admin` named an admin plane and its `/readyz` did not answer: nothing was measured.
    #[error(
        "cannot reach the gateway's admin plane at {url} ({reason}).\n\
         It listens where the gateway's --admin-listen says (default 127.0.0.1:8002): point \
         --admin there, or pass --admin off to measure without /readyz."
    )]
    AdminUnreachable { url: String, reason: String },

    /// `diag load`'s URL or `diag llm`'s base URL accepted no connection, or nothing answered
    /// any of `diag watch --probe`'s probes: nothing was measured.
    #[error(
        "cannot reach {url} ({reason}): nothing was measured.\n\
         Start the service first, or check the URL and port."
    )]
    TargetUnreachable { url: String, reason: String },

    /// The target failed during the run (`diag demo`'s `FAILED` verdict), or stopped answering
    /// during a `diag watch`: what was measured says nothing about its pool.
    #[error("FAILED: {reason}")]
    Failed { reason: String },

    /// `diag watch --probe` crossed `--fail-over` or `--fail-on-errors`, or one of its probes
    /// never got an answer it expects (see [`watch::alert`]).
    #[error("ALERT: {reason}")]
    Alert { reason: String },

    /// `--expect` named a verdict and the measurement gave the other one.
    #[error("expected the verdict `{expected}`, but the gateway is {got}: {reason}")]
    UnexpectedVerdict {
        expected: Verdict,
        got: Verdict,
        reason: String,
    },

    /// Anything else: a runtime that cannot start, a JSON file that cannot be written.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl Error {
    /// 3 for an unreachable gateway (or admin plane, or nothing answering a watch's probes), 4
    /// for one that failed during the run, 1 for the rest (an alert among them). (2, bad
    /// flags, is clap's.)
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Unreachable { .. }
            | Error::AdminUnreachable { .. }
            | Error::TargetUnreachable { .. } => 3,
            Error::Failed { .. } => 4,
            Error::Alert { .. } | Error::UnexpectedVerdict { .. } | Error::Other(_) => 1,
        }
    }
}

/// Runs the parsed command line to completion.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Watch(args) => watch::run(&args),
        Command::Load(args) => load::run(&args),
        Command::Llm(args) => llm::run(&args),
        Command::Jobs(args) => jobs::run(&args),
    }
}

/// The end every load tool shares (`diag load`, `diag llm`): measure on a multi-thread runtime
/// (the workers use every core, as hey's goroutines do), print the report, and write it where
/// `--json` says. `written` starts the line that names the file (load's table wants a blank line
/// before it, llm's report ends with one).
pub(crate) fn measure_and_report<R>(
    measure: impl std::future::Future<Output = Result<R, Error>>,
    json: Option<&Path>,
    written: &str,
) -> Result<(), Error>
where
    R: std::fmt::Display + serde::Serialize,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    let report = runtime.block_on(measure)?;
    print!("{report}");
    if let Some(path) = json {
        write_json(path, &report)?;
        println!("{written} {}", path.display());
    }
    Ok(())
}

/// Writes any report (demo, load, llm) as pretty JSON, creating the file's directory if needed.
pub(crate) fn write_json(path: &Path, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut json = serde_json::to_string_pretty(report).context("cannot encode the report")?;
    json.push('\n');
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes `report` as `--json` does and reads it back: the text, and the report read. Asserts
/// that the report read writes the same JSON again, i.e. that nothing was lost on the way.
#[cfg(test)]
pub(crate) fn read_back<T>(report: &T) -> (String, T)
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let json = serde_json::to_string_pretty(report).expect("serialisable");
    let back: T = serde_json::from_str(&json).expect("reads back");
    assert_eq!(
        serde_json::to_value(&back).expect("serialisable"),
        serde_json::to_value(report).expect("serialisable"),
        "{json}"
    );
    (json, back)
}

/// The innermost cause of an error. reqwest's own message ("error sending request for url
/// (…)") repeats the URL and hides the part a person needs, e.g. "Connection refused".
pub(crate) fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A lock that survives a panicked holder: these mutexes guard plain counters, which stay
/// meaningful even if a thread died half-way through an update.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
