//! The steps of `make demo-scale`, each a claim about the fleet and the numbers that prove it:
//!
//! - **a. spread**: `leastconn` spreads streams over every instance.
//! - **b. starve**: an instance whose blocking pool starves answers `/readyz` 503 at once;
//!   HAProxy stops sending it new requests two checks later; the clients see no error.
//! - **c. rolling**: `POST /admin/drain` on each instance in turn, wait for its exit, start it
//!   again, wait until HAProxy routes to it: no stream fails (and, with jobs, none is lost).
//! - **d. jobs**: `SIGKILL` one instance with jobs in progress: they come back after their lease
//!   and finish on another (only with issue 14's `/v1/jobs` on a shared Postgres).
//! - **e. rate**: one key at 60 rpm across three instances is admitted about 60 times, not 180
//!   (only with shared rate limits, issue 16 item 1).
//!
//! A step that cannot run on this gateway says why, in its row, instead of passing.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::watch::{Targets, agent, get};
use super::{DRAIN_EXIT, Fleet, How};
use crate::bench::reports::{LlmReport, LoadReport, read};

/// A step's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Skipped,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "SKIPPED",
        }
    }

    fn of(ok: bool) -> Self {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }
}

/// What a step found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `a.spread`, ...: also the step's name on each per-second line.
    pub step: &'static str,
    /// The claim.
    pub claim: &'static str,
    pub verdict: Verdict,
    /// The numbers, as a sentence for the table.
    pub measured: String,
    /// The same numbers for the JSON.
    pub numbers: Value,
    /// When it ran, in seconds since the demo started.
    pub from_s: f64,
    pub to_s: f64,
}

/// What every step works on: the fleet, the clock of the per-second lines, where diag is and
/// where its reports go, and how many streams the load starts a second.
pub struct Stage<'a> {
    pub fleet: &'a mut Fleet,
    pub targets: Targets,
    pub origin: Instant,
    pub diag: std::path::PathBuf,
    pub dir: std::path::PathBuf,
    pub rate: u32,
}

impl Stage<'_> {
    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn outcome(
        &self,
        step: &'static str,
        claim: &'static str,
        verdict: Verdict,
        measured: String,
        numbers: Value,
        from_s: f64,
    ) -> Outcome {
        Outcome {
            step,
            claim,
            verdict,
            measured,
            numbers,
            from_s,
            to_s: self.now(),
        }
    }

    /// Starts `diag llm` through HAProxy for `seconds`, [`Stage::rate`] new streams a second on
    /// schedule (open loop: a steady arrival of users, not waves of a closed loop).
    fn load(&self, step: &str, seconds: u64) -> Result<Load> {
        let report = self.dir.join(format!("scale-{step}.json"));
        let log = std::fs::File::create(self.dir.join(format!("diag-{step}.log")))?;
        let child = Command::new(&self.diag)
            .arg("llm")
            .args(["--base-url", &self.fleet.url()])
            .args(["-q", &self.rate.to_string()])
            .args(["-z", &format!("{seconds}s")])
            .args(["--timeout", "30s", "--no-progress", "--json"])
            .arg(&report)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start diag llm")?;
        Ok(Load {
            child,
            report,
            ends: Instant::now() + Duration::from_secs(seconds),
        })
    }
}

/// A `diag llm` running in the background.
struct Load {
    child: Child,
    report: std::path::PathBuf,
    ends: Instant,
}

impl Load {
    /// Waits for it and reads its report; also says whether the step outlasted it.
    fn finish(mut self) -> Result<(LlmReport, bool)> {
        let outlasted = Instant::now() > self.ends;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("diag llm failed ({status}); see {}", self.report.display());
        }
        Ok((read(&self.report)?, outlasted))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // Only if the step failed half way: a finished load has been waited for already.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Requests each instance answered so far (the sum of its `gateway_requests_total`).
fn answered(stage: &Stage<'_>) -> Vec<f64> {
    let sample = stage.targets.sample(&agent(), 0.0, "");
    sample
        .instances
        .iter()
        .map(|i| i.requests.unwrap_or(0.0))
        .collect()
}

/// a. The load spread by `leastconn`: each instance's share of the requests answered.
pub fn spread(stage: &mut Stage<'_>) -> Result<Outcome> {
    let from = stage.now();
    let before = answered(stage);
    let load = stage.load("a", 12)?;
    let (report, _) = load.finish()?;
    let after = answered(stage);
    let served: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let total: f64 = served.iter().sum::<f64>().max(1.0);
    let shares: Vec<f64> = served.iter().map(|s| 100.0 * s / total).collect();
    let fair = 100.0 / served.len() as f64;
    let even = shares.iter().all(|&s| s >= fair / 2.0);
    let failed = report.streams.failed;
    let measured = format!(
        "{} of {} streams failed; shares {}",
        failed,
        report.streams.started,
        shares
            .iter()
            .enumerate()
            .map(|(i, s)| format!("gw{} {s:.0}%", i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let numbers = json!({"served": served, "shares_percent": shares, "streams": report.streams});
    Ok(stage.outcome(
        "a.spread",
        "leastconn spreads the streams over every instance (each at least half its fair share)",
        Verdict::of(even && failed == 0),
        measured,
        numbers,
        from,
    ))
}

/// HAProxy's total sessions sent to server `name` so far (`stot`).
fn sessions_sent(fleet: &Fleet, name: &str) -> u64 {
    fleet
        .haproxy
        .show_stat()
        .unwrap_or_default()
        .iter()
        .find(|r| r.proxy == common::services::haproxy::BACKEND && r.server == name)
        .map_or(0, |r| r.number("stot"))
}

/// How long after its pool was taken an instance said so, and HAProxy believed it.
#[derive(Debug, Clone, Copy)]
pub struct Starvation {
    /// Until its `/readyz` first answered 503.
    pub readyz_503: Option<Duration>,
    /// Until HAProxy's status for it turned `DOWN`.
    pub down: Option<Duration>,
}

/// Polls gateway `victim`'s `/readyz` and HAProxy's view of it every 50 ms from now, until
/// HAProxy marks it down or `limit` passes.
pub fn starvation(fleet: &Fleet, victim: usize, limit: Duration) -> Starvation {
    let started = Instant::now();
    let admin = fleet.gateways.list[victim].admin;
    let server = &fleet.gateways.list[victim].server;
    let agent = agent();
    let mut found = Starvation {
        readyz_503: None,
        down: None,
    };
    while found.down.is_none() && started.elapsed() < limit {
        if found.readyz_503.is_none()
            && get(&agent, &format!("http://{admin}/readyz")).is_some_and(|(c, _)| c == 503)
        {
            found.readyz_503 = Some(started.elapsed());
        }
        let status = fleet.haproxy.server_status(server).unwrap_or_default();
        if status.starts_with("DOWN") {
            found.down = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    found
}

/// Long streams straight to one instance's own port, bypassing HAProxy: they hold its (tiny)
/// blocking pool, as a burst of slow requests would.
pub fn saturate(
    main: SocketAddr,
    streams: usize,
    seconds: u64,
) -> Vec<std::thread::JoinHandle<()>> {
    let interval_ms = 250;
    let chunks = seconds * 1000 / interval_ms;
    (0..streams)
        .map(|_| {
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(seconds * 4)))
                    .build()
                    .into();
                let url =
                    format!("http://{main}/chat/stream?chunks={chunks}&interval_ms={interval_ms}");
                if let Ok(mut response) = agent.get(&url).call() {
                    let _ =
                        std::io::copy(&mut response.body_mut().as_reader(), &mut std::io::sink());
                }
            })
        })
        .collect()
}

/// b. Starve one instance: restart it in broken mode with a pool of 2 and hold the pool with
/// streams sent to it directly. Its `/readyz` says 503 within a probe interval; HAProxy takes
/// it out two checks later; the load through HAProxy sees no error. Once its pool frees it is
/// back; then it is restarted in fixed mode, as an operator would fix it.
pub fn starve(stage: &mut Stage<'_>) -> Result<Outcome> {
    let from = stage.now();
    let victim = stage.fleet.gateways.list.len() - 1;
    let server = stage.fleet.gateways.list[victim].server.clone();
    let main = stage.fleet.gateways.list[victim].main;
    let load = stage.load("b", 45)?;
    std::thread::sleep(Duration::from_secs(2));
    println!("xtask: b. {server} restarts in broken mode with a blocking pool of 2");
    restart(stage.fleet, victim, How::broken(2))?;
    println!("xtask: b. 3 streams of 8 s straight to {server}'s own port: 2 hold its pool");
    let holders = saturate(main, 3, 8);
    let Starvation { readyz_503, down } = starvation(stage.fleet, victim, Duration::from_secs(10));
    let sent_at_down = sessions_sent(stage.fleet, &server);
    // While it is down, HAProxy must send it nothing new.
    std::thread::sleep(Duration::from_secs(4));
    let sent_while_down = sessions_sent(stage.fleet, &server) - sent_at_down;
    let still_down = !stage
        .fleet
        .haproxy
        .server_status(&server)
        .unwrap_or_default()
        .starts_with("UP");
    for holder in holders {
        let _ = holder.join();
    }
    let back = stage
        .fleet
        .wait_haproxy(victim, true, Duration::from_secs(20));
    // Back, but still broken with a pool of 2: its share of the streams starves it again and
    // it would flap in and out. Fixed, it holds its share.
    println!("xtask: b. {server} back in rotation; restarted in fixed mode");
    restart(stage.fleet, victim, How::default())?;
    let (report, _) = load.finish()?;
    let failed = report.streams.failed;
    let secs =
        |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()));
    let marked_after_503 = match (readyz_503, down) {
        (Some(r), Some(d)) => Some(d.saturating_sub(r)),
        _ => None,
    };
    let measured = format!(
        "/readyz 503 after {}, HAProxy DOWN after {} ({} after the 503), {} new sessions to it \
         while down, {}; {} of {} streams failed",
        secs(readyz_503),
        secs(down),
        secs(marked_after_503),
        sent_while_down,
        if back.is_ok() {
            "back UP once its pool freed, then restarted fixed"
        } else {
            "not back UP"
        },
        failed,
        report.streams.started
    );
    let ok = readyz_503.is_some()
        && marked_after_503.is_some_and(|d| d < Duration::from_secs(4))
        && sent_while_down == 0
        && still_down
        && back.is_ok()
        && failed == 0;
    let numbers = json!({
        "readyz_503_s": readyz_503.map(|d| d.as_secs_f64()),
        "haproxy_down_s": down.map(|d| d.as_secs_f64()),
        "marked_down_after_503_s": marked_after_503.map(|d| d.as_secs_f64()),
        "sessions_sent_while_down": sent_while_down,
        "streams": report.streams,
    });
    Ok(stage.outcome(
        "b.starve",
        "a starved instance says 503, HAProxy stops sending to it within ~2 s, no client error",
        Verdict::of(ok),
        measured,
        numbers,
        from,
    ))
}

/// How one restart went.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Restart {
    /// From `POST /admin/drain` to HAProxy marking it DOWN.
    down_s: f64,
    /// From the drain to the process's exit.
    exit_s: f64,
    /// From the exit to HAProxy routing to the new process again.
    back_s: f64,
}

/// Drain gateway `i`, wait for its exit, start it `how`, wait until HAProxy routes to it.
pub fn restart(fleet: &mut Fleet, i: usize, how: How) -> Result<Restart> {
    let started = Instant::now();
    fleet.gateways.drain(i)?;
    let down = fleet.wait_haproxy(i, false, Duration::from_secs(10))?;
    fleet.gateways.wait_exit(i, DRAIN_EXIT)?;
    let exit = started.elapsed();
    fleet.gateways.start(i, how)?;
    fleet.wait_haproxy(i, true, Duration::from_secs(15))?;
    Ok(Restart {
        down_s: down.as_secs_f64(),
        exit_s: exit.as_secs_f64(),
        back_s: (started.elapsed() - exit).as_secs_f64(),
    })
}

/// c. Rolling restart under load: every instance drained, stopped and started again in turn.
pub fn rolling(stage: &mut Stage<'_>) -> Result<Outcome> {
    let from = stage.now();
    let jobs = jobs_available(stage.fleet);
    let submitted = match jobs {
        true => submit_jobs(&stage.fleet.url(), 30)?,
        false => Vec::new(),
    };
    let load = stage.load("c", 45)?;
    std::thread::sleep(Duration::from_secs(2));
    let mut restarts = Vec::new();
    for i in 0..stage.fleet.gateways.list.len() {
        let server = stage.fleet.gateways.list[i].server.clone();
        println!("xtask: c. POST /admin/drain on {server}, then start it again");
        restarts.push(restart(stage.fleet, i, How::default())?);
    }
    let (report, outlasted) = load.finish()?;
    let jobs_outcome = match jobs {
        true => Some(wait_jobs(
            &stage.fleet.url(),
            &submitted,
            Duration::from_secs(90),
        )?),
        false => None,
    };
    let failed = report.streams.failed;
    let lost = jobs_outcome.as_ref().map_or(0, |j| j.not_completed);
    let mut measured = format!(
        "{} restarts, each DOWN in HAProxy {:.1}-{:.1} s after its drain, back {:.1}-{:.1} s after \
         its exit; {} of {} streams failed",
        restarts.len(),
        min_max(restarts.iter().map(|r| r.down_s)).0,
        min_max(restarts.iter().map(|r| r.down_s)).1,
        min_max(restarts.iter().map(|r| r.back_s)).0,
        min_max(restarts.iter().map(|r| r.back_s)).1,
        failed,
        report.streams.started
    );
    match &jobs_outcome {
        Some(j) => measured.push_str(&format!(
            "; jobs: {} submitted, {} completed, {lost} lost",
            submitted.len(),
            j.completed
        )),
        None => measured.push_str("; jobs not checked (the gateway has no /v1/jobs yet)"),
    }
    if outlasted {
        measured.push_str(" (the restarts outlasted the load)");
    }
    let numbers = json!({
        "restarts": restarts,
        "streams": report.streams,
        "jobs": jobs_outcome,
    });
    Ok(stage.outcome(
        "c.rolling",
        "drain, exit, start, ready on each instance in turn: 0 failed streams, 0 lost jobs",
        Verdict::of(failed == 0 && lost == 0 && !outlasted),
        measured,
        numbers,
        from,
    ))
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Whether the fleet serves issue 14's jobs on a shared store: the flag is there and
/// `GET /v1/jobs/stats` answers 200 through HAProxy.
pub fn jobs_available(fleet: &Fleet) -> bool {
    fleet.features().jobs_store
        && get(&agent(), &format!("{}/v1/jobs/stats", fleet.url())).is_some_and(|(c, _)| c == 200)
}

/// Submits `n` chat jobs through HAProxy; their ids.
fn submit_jobs(base: &str, n: usize) -> Result<Vec<String>> {
    let agent = agent();
    let body = json!({"model": "mock-1", "messages": [{"role": "user", "content": "a job"}]});
    (0..n)
        .map(|_| {
            let mut response = agent
                .post(&format!("{base}/v1/jobs"))
                .header("content-type", "application/json")
                .send(body.to_string())
                .context("POST /v1/jobs")?;
            let text = response.body_mut().read_to_string().unwrap_or_default();
            let job: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            match (response.status().as_u16(), job["id"].as_str()) {
                (202, Some(id)) => Ok(id.to_owned()),
                (status, _) => bail!("POST /v1/jobs answered {status}: {text:.200}"),
            }
        })
        .collect()
}

/// Where a set of jobs ended.
#[derive(Debug, Clone, Serialize)]
struct JobsOutcome {
    completed: usize,
    not_completed: usize,
    /// Jobs that ran more than once (`attempts` > 1): the ones that came back after a lease.
    retried: usize,
}

/// Polls every job until all are finished or `limit` passes.
fn wait_jobs(base: &str, ids: &[String], limit: Duration) -> Result<JobsOutcome> {
    let agent = agent();
    let deadline = Instant::now() + limit;
    loop {
        let jobs: Vec<Value> = ids
            .iter()
            .map(|id| {
                get(&agent, &format!("{base}/v1/jobs/{id}"))
                    .and_then(|(_, text)| serde_json::from_str(&text).ok())
                    .unwrap_or(Value::Null)
            })
            .collect();
        let status = |job: &Value| job["status"].as_str().unwrap_or("").to_owned();
        let finished = jobs.iter().all(|job| {
            matches!(
                status(job).as_str(),
                "completed" | "failed" | "cancelled" | "expired"
            )
        });
        if finished || Instant::now() > deadline {
            let completed = jobs.iter().filter(|j| status(j) == "completed").count();
            return Ok(JobsOutcome {
                completed,
                not_completed: ids.len() - completed,
                retried: jobs
                    .iter()
                    .filter(|j| j["attempts"].as_u64().is_some_and(|a| a > 1))
                    .count(),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// d. `SIGKILL` an instance while jobs are in progress: after their lease they run elsewhere.
pub fn kill_with_jobs(stage: &mut Stage<'_>) -> Result<Outcome> {
    let from = stage.now();
    let claim = "SIGKILL one instance with jobs in progress: its jobs finish on another";
    if !jobs_available(stage.fleet) {
        return Ok(stage.outcome(
            "d.jobs",
            claim,
            Verdict::Skipped,
            "the gateway has no /v1/jobs on a shared store yet (issue 14, --jobs-store \
             postgres://...): this step runs once it is merged"
                .into(),
            Value::Null,
            from,
        ));
    }
    let base = stage.fleet.url();
    let ids = submit_jobs(&base, 30)?;
    // Until some are running, so the killed instance is likely to hold a few.
    let agent = agent();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let stats = get(&agent, &format!("{base}/v1/jobs/stats"))
            .and_then(|(_, text)| serde_json::from_str::<Value>(&text).ok())
            .unwrap_or(Value::Null);
        if stats["in_progress"].as_u64().is_some_and(|n| n >= 3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("xtask: d. SIGKILL gw1 with jobs in progress");
    stage.fleet.gateways.kill(0);
    let outcome = wait_jobs(&base, &ids, Duration::from_secs(90))?;
    stage.fleet.gateways.start(0, How::default())?;
    stage.fleet.wait_haproxy(0, true, Duration::from_secs(15))?;
    let measured = format!(
        "{} jobs: {} completed, {} not, {} ran again after the kill",
        ids.len(),
        outcome.completed,
        outcome.not_completed,
        outcome.retried
    );
    Ok(stage.outcome(
        "d.jobs",
        claim,
        Verdict::of(outcome.not_completed == 0),
        measured,
        json!(outcome),
        from,
    ))
}

/// The key of step e, and its limit.
const RATE_KEY: &str = "fleet-demo";
const RATE_RPM: u64 = 60;

/// e. One key at 60 rpm across the fleet: about 60 admitted, not 60 per instance.
pub fn rate(stage: &mut Stage<'_>) -> Result<Outcome> {
    let from = stage.now();
    let claim = "one key at 60 rpm across 3 instances: ~60 admitted, not 180";
    let features = stage.fleet.features();
    if !(features.instances_hint && features.redis_url) {
        return Ok(stage.outcome(
            "e.rate",
            claim,
            Verdict::Skipped,
            "no shared rate limits yet (issue 16 item 1: --redis-url with --instances-hint): \
             each instance would admit 60, 180 in all; this step runs once it is merged"
                .into(),
            Value::Null,
            from,
        ));
    }
    let limited = How {
        extra: [
            "--api-key",
            RATE_KEY,
            "--rate-limit-rpm",
            &RATE_RPM.to_string(),
        ]
        .map(str::to_owned)
        .to_vec(),
        ..How::default()
    };
    for i in 0..stage.fleet.gateways.list.len() {
        restart(stage.fleet, i, limited.clone())?;
    }
    let report_path = stage.dir.join("scale-e.json");
    let body = json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]});
    let started = Instant::now();
    let status = Command::new(&stage.diag)
        .arg("load")
        .arg(format!("{}/v1/chat/completions", stage.fleet.url()))
        .args(["-n", "180", "-c", "30", "-m", "POST", "--no-progress"])
        .args(["-T", "application/json", "-d", &body.to_string()])
        .args(["-H", &format!("Authorization: Bearer {RATE_KEY}")])
        .arg("--json")
        .arg(&report_path)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("diag load failed ({status})");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let report: LoadReport = read(&report_path)?;
    let count = |code: u16| report.status_codes.get(&code).copied().unwrap_or(0);
    let (admitted, limited_429) = (count(200), count(429));
    // The bucket holds a minute's worth; it refills at one a second while the burst runs.
    let allowed = RATE_RPM as f64 * (1.0 + elapsed / 60.0) + 3.0;
    let measured = format!(
        "180 requests in {elapsed:.1} s: {admitted} admitted, {limited_429} refused with 429 \
         (shared limit allows about {allowed:.0}; per-instance limits would admit 180)"
    );
    Ok(stage.outcome(
        "e.rate",
        claim,
        Verdict::of((admitted as f64) <= allowed && admitted >= RATE_RPM / 2),
        measured,
        json!({"admitted": admitted, "refused_429": limited_429, "elapsed_s": elapsed}),
        from,
    ))
}
