//! `cargo xtask e2e`: the demo, checked end to end, as the last step of `make test`.
//!
//! Unit and integration tests prove the parts; this proves the thing a new user runs: the
//! binaries built by cargo, started as processes, measured by `diag` over real sockets, and
//! stopped again with nothing left behind. It uses free ports and short streams so it runs in
//! seconds and never collides with a demo someone left running on 8000/8001.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail, ensure};

use crate::cli::{DemoArgs, Mode, ServiceArgs};
use crate::{demo, services};

/// The check's own pid files, logs, reports and pictures: a user's `target/demo/` stays theirs.
fn e2e_dir() -> PathBuf {
    services::target_dir().join("e2e")
}

fn service_args(mode: Mode) -> Result<ServiceArgs> {
    Ok(ServiceArgs {
        mode,
        blocking_threads: 2,
        gateway_listen: services::free_addr()?,
        mock_listen: services::free_addr()?,
        admin_listen: services::free_addr()?,
        // `cargo test` has just built these; a release build would double CI time.
        debug: true,
        worker_threads: None,
        rollout: None,
        dir: e2e_dir(),
    })
}

/// Four 2-second streams against a pool of two: broken must starve, fixed must not.
fn short_demo(mode: Mode) -> Result<()> {
    demo::demo(&DemoArgs {
        services: service_args(mode)?,
        streams: 4,
        duration: "3s".into(),
        chunks: 8,
        interval_ms: 250,
        check: true,
    })
}

/// `up` leaves the services running; `stop` must find them by pid file and end them.
fn up_then_stop() -> Result<()> {
    demo::up(&service_args(Mode::Fixed)?)?;
    let running = services::leftover_processes();
    ensure!(
        running.len() == 2,
        "after `up`, expected mock-llm and gateway running, found {running:?}"
    );
    services::stop_all(&e2e_dir())?;
    Ok(())
}

fn nothing_left() -> Result<()> {
    let left = services::leftover_processes();
    if !left.is_empty() {
        bail!("processes of ours are still running: {left:?}");
    }
    let pid_files: Vec<_> = std::fs::read_dir(e2e_dir())?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "pid"))
        .collect();
    ensure!(pid_files.is_empty(), "stale pid files: {pid_files:?}");
    Ok(())
}

/// One named end-to-end check.
type Check = (&'static str, fn() -> Result<()>);

pub fn run() -> Result<ExitCode> {
    let checks: [Check; 4] = [
        ("demo broken: diag says exhausted", || {
            short_demo(Mode::Broken)
        }),
        ("demo fixed: diag says healthy", || short_demo(Mode::Fixed)),
        ("up, then stop by pid file", up_then_stop),
        ("no process or pid file of ours is left", nothing_left),
    ];
    let mut failed = Vec::new();
    for (name, check) in checks {
        println!("\n=== e2e: {name}");
        match check() {
            Ok(()) => println!("=== e2e: ok: {name}"),
            Err(e) => {
                println!("=== e2e: FAILED: {name}: {e:#}");
                failed.push(name);
            }
        }
    }
    let passed = checks.len() - failed.len();
    println!("\ne2e: {passed} passed, {} failed", failed.len());
    for name in &failed {
        println!("e2e: failed: {name}");
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
