//! `cargo xtask`: the project's automation, in Rust rather than shell.
//!
//! The Makefile is the front door; every target is a thin call into a subcommand here. Keeping the
//! orchestration in Rust means one language to read, real error handling (every child's exit
//! status is checked) and the same behaviour on every machine that has cargo.
//!
//! # Layout
//!
//! - [`cli`]: the subcommands and their flags.
//! - [`services`]: start mock-llm and the gateway in the background (pid files, logs, readiness
//!   polling) and stop them again; the only place that sends signals.
//! - [`demo`]: `demo broken|fixed|inline`, `rollout` and `up`: build, start, run `diag demo`,
//!   stop.
//! - [`e2e`]: the end-to-end check `make test` runs after `cargo test`.
//! - [`msrv`]: `msrv` (in `make lint`): the declared minimum Rust can build every locked package.
//! - [`skipped`]: `skipped` (the first and last steps of `make test`): the tests that skipped for
//!   a missing service, in one loud box with the `apt-get` line.
//! - [`compat`]: `compat`: OpenAI's Python client against the gateway (`make test-compat`).
//! - [`fleet`]: `fleet up|down|demo`: several gateways behind HAProxy with Redis and Postgres,
//!   and `make demo-scale` (a folder of its own: the fleet, its per-second view, the demo's
//!   steps).
//! - [`bench`](mod@bench): `bench [ramp|shed|hedge|cpu|conns|fleet] [--quick]`: stream
//!   capacity, overhead and memory (`make bench`, `make bench-quick`), load shedding (`make
//!   bench-shed`), hedged requests (`make bench-hedge`), CPU-bound work per `--cpu-mode` (`make
//!   bench-cpu`), the connection bounds (`make bench-conns`) and the fleet (`make bench-fleet`),
//!   written to `bench/results/`. A folder of its own: one file per benchmark, the shared
//!   session, the one results writer, and the one reader of diag's JSON reports (its layers in
//!   `bench/mod.rs`).
//!
//! Layers point one way: `services` needs nothing but the workspace root; `cli` (the flags) uses
//! it for the default demo directory; `demo`, `compat`, `fleet` and `bench` use both; `fleet`
//! reads diag's reports through `bench`'s one reader, and `bench fleet` runs a [`fleet::Fleet`]
//! (file by file, neither imports one that imports it back); `e2e` uses `demo`; this file only
//! dispatches.

mod bench;
mod cli;
mod compat;
mod demo;
mod e2e;
mod fleet;
mod msrv;
mod services;
mod skipped;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Demo(args) => demo::demo(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Up(args) => demo::up(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Rollout(args) => demo::rollout(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Stop => services::stop_all(&services::demo_dir()).map(|()| ExitCode::SUCCESS),
        cli::Command::E2e => e2e::run(),
        cli::Command::Msrv => msrv::run().map(|()| ExitCode::SUCCESS),
        cli::Command::Skipped { reset } => skipped::run(reset),
        cli::Command::Compat => compat::run(),
        cli::Command::Bench(args) => bench::run(&args),
        cli::Command::Fleet(args) => fleet::run(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("xtask: {e:#}");
        ExitCode::FAILURE
    })
}

/// The workspace root, found from this crate's manifest so xtask works from any directory.
fn project_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
