//! `cargo xtask bench jobs`: the job queue (lesson 10), on SQLite and on Postgres.
//!
//! Three numbers per store, each from a fresh store and a fresh gateway:
//!
//! - **accepted per second**, every 202 a durable commit: `diag jobs -n 1000 -c 16` against a
//!   gateway with `--job-workers 0`, so the queue only grows (to 1,000) and nothing else writes.
//!   Then the same against 8 workers draining the queue while it fills, as in real use, where
//!   commits of new jobs and claims and results of running ones share the store.
//! - **end to end at 1,000 queued**: in that second run, each job's time from its submit to the
//!   poll that saw it completed, against a mock answering in about 30 ms; the last jobs wait
//!   behind the whole queue, so p99 is about the time to drain it.
//! - **the time to take back a dead worker's jobs**: 8 long jobs running under leases of 2 s,
//!   the gateway SIGKILLed, a new one started on the same store; how long until its housekeeper
//!   has taken the 8 jobs back (`gateway_jobs_lease_expired_total`), and until they run again.
//!
//! Postgres is a throwaway cluster (`common::services::Postgres`); without the package the
//! Postgres row says so. Results: `bench/results/<date>-jobs.md` and diag's reports.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::services::Postgres;
use serde_json::Value;

use crate::bench::observe::http_get;
use crate::bench::reports::{self, JobsReport};
use crate::bench::results::{Results, opt_ms};
use crate::bench::session::{Gateway, Runner, Session, strings};
use crate::cli::BenchArgs;

/// Lease of the reclaim run: a dead worker's jobs come back after it, plus the sweep's period.
const LEASE_SECS: u64 = 2;
const WORKERS: &str = "8";

pub fn run(args: &BenchArgs) -> Result<()> {
    let jobs = if args.quick { "200" } else { "1000" };
    let mut session = Session::begin("-jobs")?;
    let mut results = Results::new(args, &session.clock, "jobs");
    let postgres = Postgres::start_for("cargo xtask bench jobs");
    let runner = &mut session.runner;
    let (_mock, mock) = runner.start_mock(&strings(&[
        "--ttft-ms",
        "20",
        "--itl-ms",
        "2",
        "--tokens",
        "4",
        "--seed",
        "1",
    ]))?;

    let mut rows = Vec::new();
    for kind in ["sqlite", "postgres"] {
        let fresh = |name: &str| -> Result<Option<String>> {
            Ok(match kind {
                "sqlite" => Some(format!(
                    "sqlite://{}",
                    runner.work_dir.join(format!("{name}.db")).display()
                )),
                _ => match &postgres {
                    Some(pg) => Some(pg.create_database(name).map_err(anyhow::Error::msg)?),
                    None => None,
                },
            })
        };
        let (Some(only), Some(busy), Some(dead)) =
            (fresh("accept")?, fresh("drain")?, fresh("reclaim")?)
        else {
            rows.push(format!(
                "| {kind} | skipped: postgres is not installed (`sudo apt-get install -y postgresql`) | | | | | |"
            ));
            continue;
        };
        println!("\n=== bench jobs: {kind}");
        let accepted = submit(
            runner,
            mock,
            &only,
            "0",
            jobs,
            &format!("{kind}-accept"),
            &mut results,
        )?;
        let drained = submit(
            runner,
            mock,
            &busy,
            WORKERS,
            jobs,
            &format!("{kind}-drain"),
            &mut results,
        )?;
        let (taken_back, running) = reclaim(runner, mock, &dead)?;
        let e2e = &drained.end_to_end_ms;
        rows.push(format!(
            "| {kind} | {:.0} | {:.0} | {} | {} / {} | {:.1} s | {} | {:.1} s / {:.1} s |",
            accepted.accepted_per_s,
            drained.accepted_per_s,
            drained.max_queue_position,
            opt_ms(e2e.p50),
            opt_ms(e2e.p99),
            drained.total_seconds,
            drained.lost + accepted.lost,
            taken_back.as_secs_f64(),
            running.as_secs_f64(),
        ));
    }

    results.table(
        "The job queue: durable submits, the queue drained, a dead worker's jobs taken back",
        &format!(
            "`diag jobs -n {jobs} -c 16` against a gateway with `--job-workers 0` (accepted/s, \
             the queue only grows), then against one with `--job-workers {WORKERS}` and a mock \
             answering in ~30 ms (accepted/s while workers drain, end to end, the whole run). \
             Reclaim: {WORKERS} jobs of 30 s running under `--job-lease-secs {LEASE_SECS}`, the \
             gateway SIGKILLed, a new one started on the same store: seconds from the kill until \
             its housekeeper took the {WORKERS} jobs back, and until they ran again. Each store \
             fresh; Postgres a throwaway local cluster, default settings."
        ),
        "\n| store | accepted/s, no workers | accepted/s, 8 workers | deepest position | \
         end to end p50 / p99 | all done in | lost | dead worker's jobs: taken back / running |\n\
         |---|---|---|---|---|---|---|---|\n",
        &rows,
        &session.runner.commands,
    );
    results.write("bench jobs done")
}

/// `diag jobs` against a new gateway on `store` with `workers`; its report.
fn submit(
    runner: &mut Runner,
    mock: SocketAddr,
    store: &str,
    workers: &str,
    jobs: &str,
    run: &str,
    results: &mut Results,
) -> Result<JobsReport> {
    let Gateway {
        service: gateway,
        listen,
        ..
    } = runner.start_gateway(
        mock,
        &strings(&["--jobs-store", store, "--job-workers", workers]),
    )?;
    let path = runner.work_dir.join(format!("jobs-{run}.json"));
    let mut args = strings(&["jobs", "-n", jobs, "-c", "16", "--poll-interval", "50ms"]);
    if workers == "0" {
        args.push("--no-wait".into());
    }
    args.extend(strings(&[
        "--json",
        &path.to_string_lossy(),
        "--base-url",
        &format!("http://{listen}"),
    ]));
    runner.diag(&args)?;
    drop(gateway);
    results.diag_report(run, &path)?;
    reports::read(&path)
}

/// Kills a gateway with `WORKERS` jobs running and starts another on the same store: the time
/// from the kill until the new one took them back, and until they all ran again.
fn reclaim(runner: &mut Runner, mock: SocketAddr, store: &str) -> Result<(Duration, Duration)> {
    let lease = LEASE_SECS.to_string();
    let flags = strings(&[
        "--jobs-store",
        store,
        "--job-workers",
        WORKERS,
        "--job-lease-secs",
        &lease,
    ]);
    let Gateway {
        service: gateway,
        listen,
        ..
    } = runner.start_gateway(mock, &flags)?;
    let base = format!("http://{listen}");
    let count: usize = WORKERS.parse()?;
    for _ in 0..count {
        submit_one(&base)?;
    }
    wait_for(
        &format!("{base}/v1/jobs/stats"),
        Duration::from_secs(30),
        |stats| stats["in_progress"].as_u64() == Some(count as u64),
    )?;
    gateway.kill();
    let killed = Instant::now();
    println!("xtask: gateway SIGKILLed with {count} jobs running");
    let Gateway {
        service: _restarted,
        listen,
        ..
    } = runner.start_gateway(mock, &flags)?;
    let metrics = format!("http://{listen}/metrics");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = http_get(&metrics)?;
        let taken = common::prometheus::sample(&text, "gateway_jobs_lease_expired_total");
        if taken.unwrap_or(0.0) >= count as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the jobs were not taken back within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let taken_back = killed.elapsed();
    wait_for(
        &format!("http://{listen}/v1/jobs/stats"),
        Duration::from_secs(30),
        |stats| stats["in_progress"].as_u64() == Some(count as u64),
    )?;
    Ok((taken_back, killed.elapsed()))
}

fn submit_one(base: &str) -> Result<()> {
    let body = r#"{"model":"mock-1","messages":[{"role":"user","content":"a long job"}]}"#;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .post(&format!("{base}/v1/jobs"))
        .header("content-type", "application/json")
        // The mock's knob travels with the job: a first token 30 s away keeps it running
        // (one mock for the whole bench: its pid file is per program).
        .header("x-mock-ttft-ms", "30000")
        .send(body)
        .with_context(|| format!("POST {base}/v1/jobs"))?;
    Ok(())
}

/// Polls the JSON at `url` every 20 ms until `done` holds.
fn wait_for(url: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let value: Value = serde_json::from_str(&http_get(url)?)?;
        if done(&value) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url}: not there after {limit:?}: {value}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
