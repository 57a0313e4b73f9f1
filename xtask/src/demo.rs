//! `cargo xtask demo broken|fixed|inline`, `cargo xtask rollout` and `cargo xtask up`.
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

use crate::cli::{DemoArgs, Mode, RolloutArgs, ServiceArgs};
use crate::services::{self, INTERRUPTED, Service};

/// Starts the mock, then the gateway in front of it.
fn start_both(bin_dir: &Path, args: &ServiceArgs) -> Result<(Service, Service)> {
    let mock_listen = args.mock_listen;
    let mock = services::start(
        &args.dir,
        bin_dir,
        "mock-llm",
        mock_listen,
        &["--listen".into(), mock_listen.to_string()],
        &format!("http://{mock_listen}/health"),
    )?;
    let listen = args.gateway_listen;
    let mut extra = Vec::new();
    if let Some(workers) = args.worker_threads {
        extra.extend(["--worker-threads".to_owned(), workers.to_string()]);
    }
    if let Some(percent) = args.rollout {
        extra.extend(["--async-rollout-percent".to_owned(), percent.to_string()]);
    }
    let gateway = services::start(
        &args.dir,
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
            // diag has closed its streams by the time we stop the gateway: nothing to wait for,
            // and no load balancer to tell first (no grace).
            "--drain-secs".into(),
            "2".into(),
            "--drain-grace-secs".into(),
            "0".into(),
            "--admin-listen".into(),
            args.admin_listen.to_string(),
        ]
        .into_iter()
        .chain(extra)
        .collect::<Vec<String>>(),
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

    let name = match service_args.rollout {
        Some(percent) => format!("{}-rollout{percent}", mode.as_str()),
        None => mode.as_str().to_owned(),
    };
    let report = service_args.dir.join(format!("report-{name}.json"));
    let plot = service_args.dir.join(format!("{name}.svg"));
    println!(
        "xtask: {} streams of {} chunks x {} ms through the {} gateway (blocking pool {}), for {}\n",
        args.streams,
        args.chunks,
        args.interval_ms,
        name,
        service_args.blocking_threads,
        args.duration
    );
    let mut diag = Command::new(bin_dir.join("diag"));
    diag.arg("demo")
        .args([
            "--gateway",
            &format!("http://{}", service_args.gateway_listen),
        ])
        .args(["--admin", &format!("http://{}", service_args.admin_listen)])
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
        // diag's FAILED verdict: the target died, refused or cut the streams (diag/README.md).
        Some(4) => bail!(
            "the {} gateway failed during the run (diag's verdict: FAILED): see {} and the logs in {}",
            mode.as_str(),
            report.display(),
            service_args.dir.display()
        ),
        _ => bail!("diag failed: {status}"),
    }
    println!(
        "xtask: JSON report in {}, picture in {}, service logs in {}",
        report.display(),
        plot.display(),
        service_args.dir.display()
    );
    Ok(())
}

/// `cargo xtask rollout`: `demo broken --rollout P` for P = 0, 50, 100, then the three verdict
/// lines and `X-Stream-Method` splits together, read back from the JSON reports.
pub fn rollout(args: &RolloutArgs) -> Result<()> {
    let mut lines = Vec::new();
    for percent in [0u8, 50, 100] {
        let demo_args = DemoArgs {
            services: ServiceArgs {
                mode: Mode::Broken,
                blocking_threads: 4,
                gateway_listen: "127.0.0.1:8000".parse()?,
                mock_listen: "127.0.0.1:8001".parse()?,
                admin_listen: "127.0.0.1:8002".parse()?,
                debug: args.debug,
                worker_threads: None,
                rollout: Some(percent),
                dir: services::demo_dir(),
            },
            streams: 8,
            duration: args.duration.clone(),
            chunks: 20,
            interval_ms: 500,
            check: false,
        };
        demo(&demo_args)?;
        let path = demo_args
            .services
            .dir
            .join(format!("report-broken-rollout{percent}.json"));
        let text = std::fs::read_to_string(&path)?;
        let report: serde_json::Value = serde_json::from_str(&text)?;
        let verdict = report["verdict"].as_str().unwrap_or("?").to_uppercase();
        lines.push(format!(
            "rollout {percent:>3}%: X-Stream-Method {} | {verdict}: {}",
            report["streams"]["methods"],
            report["verdict_reason"].as_str().unwrap_or("?")
        ));
    }
    println!("\nxtask: the async client rolled out in three steps");
    for line in lines {
        println!("  {line}");
    }
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
