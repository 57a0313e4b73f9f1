//! The subcommands and their flags. `cargo xtask --help` prints this.

use std::net::SocketAddr;

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
    /// Three `demo broken` runs in a row, with `--rollout` 0, 50 and 100, then their verdicts.
    Rollout(RolloutArgs),
    /// Benchmarks (release build), results under bench/results/: `ramp` (the default: stream
    /// capacity per mode, overhead, memory), `shed`, `hedge`, `cpu`.
    Bench(crate::bench::BenchArgs),
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
