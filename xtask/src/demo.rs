//! `cargo xtask demo broken|fixed` and `cargo xtask up`.
//!
//! The demo is the project's one-minute argument: the same gateway, the same load, the same
//! probe, and only the upstream client differs. xtask builds (release by default: the numbers
//! should be those of a real build), starts mock-llm and the gateway, runs `diag demo` against
//! them with the gateway's pid so diag can sample its threads and memory, and stops both, whether
//! diag passed, failed or was interrupted.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use anyhow::{Result, bail};

use crate::cli::{DemoArgs, ServiceArgs};
use crate::services::{self, INTERRUPTED, Service};

/// Starts the mock, then the gateway in front of it.
fn start_both(bin_dir: &Path, args: &ServiceArgs) -> Result<(Service, Service)> {
    let mock_listen = args.mock_listen;
    let mock = services::start(
        bin_dir,
        "mock-llm",
        mock_listen,
        &["--listen".into(), mock_listen.to_string()],
        &format!("http://{mock_listen}/health"),
    )?;
    let listen = args.gateway_listen;
    let gateway = services::start(
        bin_dir,
        "gateway",
        listen,
        &[
            "--mode".into(),
            args.mode.as_str().into(),
            "--blocking-threads".into(),
            args.blocking_threads.to_string(),
            "--listen".into(),
            listen.to_string(),
            "--upstream".into(),
            format!("http://{mock_listen}"),
            // diag has closed its streams by the time we stop the gateway: nothing to wait for.
            "--drain-secs".into(),
            "2".into(),
        ],
        // The async health probe: it answers even when the pool is starved, so "up" means up.
        &format!("http://{listen}/debug/health-async"),
    )?;
    Ok((mock, gateway))
}

/// `cargo xtask demo`.
pub fn demo(args: &DemoArgs) -> Result<()> {
    services::catch_ctrl_c();
    let service_args = &args.services;
    let mode = service_args.mode;
    let bin_dir = services::build(service_args.debug)?;
    let (mock, gateway) = start_both(&bin_dir, service_args)?;

    let report = services::demo_dir().join(format!("report-{}.json", mode.as_str()));
    let plot = services::demo_dir().join(format!("{}.svg", mode.as_str()));
    println!(
        "xtask: {} streams of {} chunks x {} ms through the {} gateway (blocking pool {}), for {}\n",
        args.streams,
        args.chunks,
        args.interval_ms,
        mode.as_str(),
        service_args.blocking_threads,
        args.duration
    );
    let mut diag = Command::new(bin_dir.join("diag"));
    diag.arg("demo")
        .args([
            "--gateway",
            &format!("http://{}", service_args.gateway_listen),
        ])
        .args(["--streams", &args.streams.to_string()])
        .args(["--duration", &args.duration])
        .arg("--stream-query")
        .arg(format!(
            "chunks={}&interval_ms={}",
            args.chunks, args.interval_ms
        ))
        .args(["--pid", &gateway.pid().to_string()])
        .arg("--json")
        .arg(&report)
        .arg("--plot")
        .arg(&plot);
    if args.check {
        diag.args(["--expect", mode.expected_verdict()]);
    }
    let status = diag.status()?;
    // Stop before reporting, so what is printed last is the truth about what is still running.
    drop(gateway);
    drop(mock);
    println!("xtask: stopped mock-llm and gateway");
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    match status.code() {
        Some(0) => {}
        Some(1) if args.check => bail!(
            "diag's verdict on the {} gateway was not `{}`: see {}",
            mode.as_str(),
            mode.expected_verdict(),
            report.display()
        ),
        _ => bail!("diag failed: {status}"),
    }
    println!(
        "xtask: JSON report in {}, picture in {}, service logs in {}",
        report.display(),
        plot.display(),
        services::demo_dir().display()
    );
    Ok(())
}

/// `cargo xtask up`: the services without the load, for poking at them by hand.
pub fn up(args: &ServiceArgs) -> Result<()> {
    services::catch_ctrl_c();
    let bin_dir = services::build(args.debug)?;
    let (mock, gateway) = start_both(&bin_dir, args)?;
    mock.detach();
    gateway.detach();
    let gateway_url = format!("http://{}", args.gateway_listen);
    println!(
        "xtask: try  curl -N '{gateway_url}/chat/stream?chunks=5&interval_ms=500'\n\
         xtask: or   {} watch --gateway {gateway_url}\n\
         xtask: stop with `make stop`",
        bin_dir.join("diag").display()
    );
    Ok(())
}
