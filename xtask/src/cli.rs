//! The subcommands and their flags. `cargo xtask --help` prints this.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, run and check the demo (see the Makefile)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, start mock-llm and the gateway, run `diag demo` against them, stop them.
    Demo(DemoArgs),
    /// Build and start mock-llm and the gateway in the background, then return (stop with `stop`).
    Up(ServiceArgs),
    /// Stop the services named by the pid files under target/demo/, and nothing else.
    Stop,
    /// End-to-end check: a short demo of each mode with --check, then `stop`, then no leftovers.
    E2e,
    /// OpenAI's Python client (pinned, in target/compat-venv) against the gateway in both modes.
    Compat,
    /// Check that the declared rust-version covers every locked package (part of `make lint`).
    Msrv,
    /// List the tests that skipped for a missing service, with the apt-get line (end of `make test`).
    Skipped {
        /// Clear the record instead (the start of `make test`).
        #[arg(long)]
        reset: bool,
    },
    /// Three `demo broken` runs in a row, with `--rollout` 0, 50 and 100, then their verdicts.
    Rollout(RolloutArgs),
    /// Benchmarks (release build), results under bench/results/: `ramp` (the default: stream
    /// capacity per mode, overhead, memory), `shed`, `hedge`, `cpu`, `conns`, `jobs`, `cache`, `fleet`, `ratelimit`, `observe`, `instructions`.
    Bench(BenchArgs),
    /// Several gateways behind HAProxy, with Redis and Postgres: `up`, `down`, `demo`
    /// (`make demo-scale`). Ports 8080 (HAProxy), 8081 (its stats), 8090 (mock), 8100+/8200+.
    Fleet(FleetArgs),
}

/// `cargo xtask fleet`.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum FleetCommand {
    /// Build, start the mock, N gateways, Redis, Postgres and HAProxy in the background, return.
    Up {
        /// How many gateways.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50).map(usize::from))]
        instances: usize,
        /// Use debug builds instead of release builds.
        #[arg(long)]
        debug: bool,
    },
    /// Stop what `fleet up` started (by the pid files in target/fleet/), and nothing else.
    Down,
    /// `make demo-scale`: a fleet of 3 under load, step by step: spread, starve one, rolling
    /// restart, kill one with jobs, one key's rate across the fleet; a verdict table, JSON, SVG.
    Demo(ScaleArgs),
}

/// `cargo xtask fleet demo`.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// Streams started per second through HAProxy, open loop (diag llm -q): at about 3.2 s
    /// each, 8 a second keeps about 26 open, spread in time rather than in waves.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub rate: u32,

    /// Use debug builds instead of release builds.
    #[arg(long)]
    pub debug: bool,
}

/// The gateway's upstream client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Broken,
    Fixed,
    /// The blocking client on the async workers: the whole runtime stalls.
    Inline,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Broken => "broken",
            Mode::Fixed => "fixed",
            Mode::Inline => "inline",
        }
    }

    /// The verdict `diag` must reach for the demo to be telling the truth.
    pub fn expected_verdict(self) -> &'static str {
        match self {
            Mode::Broken | Mode::Inline => "exhausted",
            Mode::Fixed => "healthy",
        }
    }
}

/// How to start the two services.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// The gateway's upstream client.
    #[arg(value_enum)]
    pub mode: Mode,

    /// The gateway's blocking pool size (`--blocking-threads`).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub blocking_threads: u16,

    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub gateway_listen: SocketAddr,

    /// Where mock-llm listens.
    #[arg(long, default_value = "127.0.0.1:8001")]
    pub mock_listen: SocketAddr,

    /// Where the gateway's admin plane listens (`/livez`, `/readyz`, `POST /admin/drain`).
    #[arg(long, default_value = "127.0.0.1:8002")]
    pub admin_listen: SocketAddr,

    /// Use debug builds (faster to build, slower to run) instead of release builds.
    #[arg(long)]
    pub debug: bool,

    /// The gateway's async worker threads (`--worker-threads`); default: one per core.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    /// Broken mode only: percentage of streams sent through the async client
    /// (the gateway's `--async-rollout-percent`).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rollout: Option<u8>,

    /// Where pid files, logs, reports and pictures go: `target/demo/` from the command line;
    /// `make test`'s check uses its own, so it never overwrites a user's demo output.
    #[arg(skip = crate::services::demo_dir())]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub services: ServiceArgs,

    /// Concurrent streams diag opens.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub streams: u32,

    /// How long diag keeps the streams open (e.g. 20s, 500ms).
    #[arg(long, default_value = "20s")]
    pub duration: String,

    /// Chunks per upstream stream.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunks: u32,

    /// Milliseconds between upstream chunks.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub interval_ms: u32,

    /// Fail unless diag's verdict is the one this mode should produce (exhausted / healthy).
    #[arg(long)]
    pub check: bool,
}

/// `cargo xtask rollout`: the migration in three steps.
#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    /// How long each of the three demos runs.
    #[arg(long, default_value = "12s")]
    pub duration: String,

    /// Use debug builds instead of release builds.
    #[arg(long)]
    pub debug: bool,
}

/// `cargo xtask bench`: which benchmark, and where its results go.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Which benchmark. A positional with a default, so `cargo xtask bench [--quick]` (what
    /// `make bench`, `make bench-quick` and CI run) still means the capacity ramp.
    #[arg(value_enum, default_value_t = What::Ramp)]
    pub what: What,

    /// Short levels and durations; results get a `-quick` suffix. For the ramp it is what CI
    /// runs (under two minutes with a warm build); for the others, a check that they still run.
    #[arg(long)]
    pub quick: bool,

    /// Where the results go instead of bench/results/, e.g. a scratch directory for a trial run:
    /// results are named by date, and those committed for today carry hand-written prose.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// `bench instructions` only: the gateway binary to measure instead of
    /// target/release/gateway, e.g. a copy saved before a change.
    #[arg(long, value_name = "PATH")]
    pub gateway_bin: Option<PathBuf>,
}

impl BenchArgs {
    /// `--out`, else the committed `bench/results/`.
    pub fn results_dir(&self) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| crate::project_root().join("bench").join("results"))
    }
}

/// The benchmarks `cargo xtask bench` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// Stream capacity per mode, overhead, memory: `<date>-bench[-quick].{json,md}`.
    Ramp,
    /// Load shedding at 5x the configured concurrency (lesson 8): `<date>-shed.md` + JSON per run.
    Shed,
    /// Hedged requests against a heavy-tailed upstream (lesson 9): `<date>-hedge.md` + JSON per run.
    Hedge,
    /// CPU-bound work per `--cpu-mode` while `/health` is probed: `<date>-cpu.md` + JSON per run.
    Cpu,
    /// 21,000 half-sent request heads against the connection bounds: `<date>-conns.{json,md}`.
    Conns,
    /// The job queue on SQLite and Postgres: accepted/s, end to end at 1,000 queued, a dead
    /// worker's jobs taken back: `<date>-jobs.md` + JSON per run.
    Jobs,
    /// The response cache: a hit's latency and throughput against a miss's, in process and
    /// through Redis, and the upstream requests saved at a 50 % repeat rate: `<date>-cache.{md,json}`.
    Cache,
    /// Streams held and req/s through HAProxy with 1, 2, 3 gateways; HAProxy's CPU per
    /// request; how fast it stops sending to a starved one: `<date>-fleet.{json,md}`.
    Fleet,
    /// Shared rate limits: the Redis check's latency (the GCRA script alone, and what a request
    /// pays through the gateway against the in-process limit): `<date>-ratelimit.{md,json}`.
    Ratelimit,
    /// What observability costs: the gateway's CPU per non-streamed request with logs off, text
    /// and JSON, and traces off and on, side by side: `<date>-observe.{md,json}`.
    Observe,
    /// The gateway's instructions per request and per relayed token under callgrind, for a
    /// noise-free before/after (needs valgrind): `<date>-instructions.{md,json}`.
    Instructions,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_without_a_name_is_still_the_ramp() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(args).map(|cli| match cli.command {
                Command::Bench(b) => Some((b.what, b.quick)),
                _ => None,
            })
        };
        // What `make bench`, `make bench-quick` and CI run must keep meaning the ramp.
        assert_eq!(
            parse(&["xtask", "bench"]).ok(),
            Some(Some((What::Ramp, false)))
        );
        assert_eq!(
            parse(&["xtask", "bench", "--quick"]).ok(),
            Some(Some((What::Ramp, true)))
        );
        assert_eq!(
            parse(&["xtask", "bench", "shed"]).ok(),
            Some(Some((What::Shed, false)))
        );
        assert_eq!(
            parse(&["xtask", "bench", "hedge", "--quick"]).ok(),
            Some(Some((What::Hedge, true)))
        );
        assert!(parse(&["xtask", "bench", "nope"]).is_err());
    }
}
