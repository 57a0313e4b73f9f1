//! `cargo xtask bench cpu`: CPU-bound work under each `--cpu-mode` (inline, blocking, bounded).
//!
//! 400 `POST /v1/solve {"work":20000}` at c = 100 against a fixed gateway with its default CPU
//! pool, while a second diag probes `/health` 4 times a second, open loop (latency counted from
//! each probe's intended start, so a stalled gateway cannot hide behind a stalled client). The
//! probe starts a second before the work and outlives it, so it sees the whole episode. Where
//! the modes differ is not throughput (2 cores of SHA-256 are 2 cores) but who waits: everyone
//! (inline), every user of the blocking pool (blocking), or only the excess work, told at once
//! to come back (bounded).
//!
//! `/v1/solve` never calls the upstream, so no mock runs: the gateway is pointed at a free port.
//! Results: `bench/results/<date>-cpu.md` and diag's reports as `<date>-cpu-<mode>-solve.json`
//! and `<date>-cpu-<mode>-health.json`. The committed numbers of 2026-11-23 are older than this
//! benchmark: `bench/results/2026-11-23-modes.md` holds them, from the script it replaced (same
//! load, no `/health answers` column), so no `2026-11-23-cpu.md` exists.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::bench::reports::{self, LoadReport};
use crate::bench::results::{Results, secs_or_ms};
use crate::bench::session::{Gateway, Session, run_diag, strings};
use crate::cli::BenchArgs;
use crate::services;

const MODES: [&str; 3] = ["inline", "blocking", "bounded"];
/// What the probe's head start is for: the work begins on a gateway whose `/health` is known to
/// answer, so a slow probe is the work's doing.
const HEAD_START: Duration = Duration::from_secs(1);

pub fn run(args: &BenchArgs) -> Result<()> {
    // The probe must outlast the work: 400 requests take ~3.5 s on 2 cores, 100 take ~1 s.
    let (requests, probe) = if args.quick {
        ("100", "5s")
    } else {
        ("400", "12s")
    };
    let mut session = Session::begin("-cpu")?;
    let mut results = Results::new(args, &session.clock, "cpu");
    let runner = &mut session.runner;

    let mut rows = Vec::new();
    for mode in MODES {
        println!("\n=== bench cpu: {mode}");
        // Nothing listens here: /v1/solve and /health never reach the upstream.
        let upstream = services::free_addr()?;
        let Gateway {
            service: gateway,
            listen,
            ..
        } = runner.start_gateway(upstream, &strings(&["--mode", "fixed", "--cpu-mode", mode]))?;
        let health_path = runner.work_dir.join(format!("cpu-health-{mode}.json"));
        let solve_path = runner.work_dir.join(format!("cpu-solve-{mode}.json"));
        let health_args = strings(&[
            "load",
            "-q",
            "4",
            "-c",
            "4",
            "-z",
            probe,
            "--timeout",
            "10s",
            "--no-progress",
            "--json",
            &health_path.to_string_lossy(),
            &format!("http://{listen}/health"),
        ]);
        let solve_args = strings(&[
            "load",
            "-m",
            "POST",
            "-T",
            "application/json",
            "-d",
            r#"{"work":20000}"#,
            "-c",
            "100",
            "-n",
            requests,
            "--timeout",
            "30s",
            "--no-progress",
            "--json",
            &solve_path.to_string_lossy(),
            &format!("http://{listen}/v1/solve"),
        ]);
        let health_program = runner.note_diag(&health_args, " &");
        let solve_program = runner.note_diag(&solve_args, "");
        std::thread::scope(|scope| -> Result<()> {
            let probe = scope.spawn(|| run_diag(&health_program, &health_args));
            std::thread::sleep(HEAD_START);
            let solved = run_diag(&solve_program, &solve_args);
            let probed = probe
                .join()
                .map_err(|_| anyhow!("the /health probe's thread panicked"))?;
            // Both must have run; the work's failure is the one to report first.
            solved.and(probed)
        })?;
        drop(gateway);

        let line = row(
            mode,
            &reports::read(&solve_path)?,
            &reports::read(&health_path)?,
        )?;
        println!("xtask: {mode} done: {line}");
        results.diag_report(&format!("{mode}-solve"), &solve_path)?;
        results.diag_report(&format!("{mode}-health"), &health_path)?;
        rows.push(line);
    }

    results.table(
        "CPU-bound work per --cpu-mode",
        &format!(
            "Load: {requests} `POST /v1/solve {{\"work\":20000}}` at c = 100 (`diag load -c 100 -n {requests}`) \
             against a fixed gateway with its default CPU pool, while `diag load -q 4 -c 4 -z {probe}` \
             probes `/health`, open loop, from {} s before.",
            HEAD_START.as_secs()
        ),
        "\n| --cpu-mode | solve req/s | solve p50 / p99 | answers | /health p99 | /health answers |\n\
         |---|---|---|---|---|---|\n",
        &rows,
        &session.runner.commands,
    );
    results.write("bench cpu done")
}

/// One mode's table row.
fn row(mode: &str, solve: &LoadReport, health: &LoadReport) -> Result<String> {
    let (solve_p50, solve_p99) = reports::p50_p99_ms(solve)?;
    let (_, health_p99) = reports::p50_p99_ms(health)?;
    let mut line = String::new();
    let _ = write!(
        line,
        "| {mode} | {:.1} | {solve_p50:.0} / {solve_p99:.0} ms | {} | {} | {} |",
        solve.rps,
        answers(solve),
        secs_or_ms(Some(health_p99), 1),
        answers(health),
    );
    Ok(line)
}

/// "400 × 200" or "67 × 200, 333 × 503", then the transport errors if there were any.
fn answers(report: &LoadReport) -> String {
    let mut parts: Vec<String> = report
        .status_codes
        .iter()
        .map(|(status, count)| format!("{count} × {status}"))
        .collect();
    let errors = report.requests.errors;
    if errors > 0 {
        parts.push(format!("{errors} errors"));
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    }
}
