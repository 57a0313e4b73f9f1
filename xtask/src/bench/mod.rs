//! `cargo xtask bench [ramp|shed|hedge|cpu|conns|jobs|cache|fleet|ratelimit|observe|instructions] [--quick]`: the project's benchmarks, one way to run
//! them all.
//!
//! One lesson each: [`ramp`] (the default, so `cargo xtask bench [--quick]` is what it always
//! was: stream capacity per mode, overhead, memory, and nginx beside the gateway in the same run), [`shed`] (load shedding at 5x the cap),
//! [`hedge`] (hedged requests against a heavy-tailed upstream), [`cpu`] (CPU-bound work per
//! `--cpu-mode`), [`conns`] (21,000 half-sent request heads against the connection bounds),
//! [`jobs`] (the durable job queue on SQLite and Postgres: accepted/s, end to end at 1,000
//! queued, a dead worker's jobs taken back), [`cache`] (the response cache: a hit against a miss, in
//! process and through Redis, and the upstream requests saved at a 50 % repeat rate),
//! [`fleet`] (1, 2 and 3 gateways behind HAProxy), [`ratelimit`] (the shared rate limits: a check in
//! Redis, alone and as a request pays it), [`telemetry`] (`bench observe`:
//! CPU per request with logs off, text, JSON, and traces on or off), [`instructions`] (callgrind's
//! instruction counts per request and per relayed token, for a before/after without noise). They were shell scripts; in Rust they get the same exit-status checks, free
//! ports and stop-on-drop services as everything else here.
//!
//! # Layers
//!
//! Each module uses only those listed after it, so a change to how results are written never
//! reaches into how a benchmark is run, and the reading of diag's JSON is one file to swap:
//!
//! - this file: picks the benchmark from the flags ([`crate::cli::BenchArgs`]).
//! - [`ramp`] (its rule and tables in [`ramp_results`], the side-by-side with nginx and the
//!   goals of issue 17 in [`versus`], which knows nothing of the ramp), [`shed`], [`hedge`],
//!   [`cpu`], [`conns`], [`jobs`], [`cache`], [`ratelimit`], [`telemetry`], [`instructions`],
//!   [`fleet`] (which starts a [`crate::fleet::Fleet`] rather than single
//!   services): one
//!   benchmark each: what it starts, what it asks diag for, the row it makes of each run.
//! - [`session`]: what every run starts with: the release build, a work directory, and a
//!   runner that starts the services (nginx too) on free ports and records every command.
//! - [`results`]: writing `bench/results/`: names, the machine, the commit, the commands
//!   section, number formatting.
//! - [`reports`]: every read of diag's JSON reports.
//! - [`observe`]: what the benchmarks read from `/proc`, `PATH` and the gateway's `/metrics`.

mod cache;
mod conns;
mod cpu;
mod fleet;
mod hedge;
mod instructions;
mod jobs;
pub(crate) mod observe;
mod ramp;
mod ramp_results;
mod ratelimit;
pub(crate) mod reports;
pub(crate) mod results;
mod session;
mod shed;
mod telemetry;
mod versus;

use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{BenchArgs, What};

/// `cargo xtask bench [WHAT]`.
pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if args.gateway_bin.is_some() && args.what != What::Instructions {
        anyhow::bail!("--gateway-bin is for `bench instructions` only");
    }
    let done = match args.what {
        What::Ramp => ramp::run(args),
        What::Shed => shed::run(args),
        What::Hedge => hedge::run(args),
        What::Cpu => cpu::run(args),
        What::Conns => conns::run(args),
        What::Jobs => jobs::run(args),
        What::Cache => cache::run(args),
        What::Observe => telemetry::run(args),
        What::Ratelimit => ratelimit::run(args),
        What::Instructions => instructions::run(args),
        What::Fleet => return fleet::run(args),
    };
    done.map(|()| ExitCode::SUCCESS)
}
