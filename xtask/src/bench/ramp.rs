//! `cargo xtask bench [--quick]` (`ramp`, the default): the capacity ramp. How much the gateway
//! carries, what it costs, what it holds.
//!
//! Release build only: a debug build's numbers say nothing about the gateway. xtask builds the
//! binaries, starts `mock-llm` and the gateway on free ports, drives them with the `diag` binary
//! (`diag llm` and `diag load`, each with `--json` into `target/bench/<run>/`), reads the JSON
//! back, and writes `bench/results/<date>-bench[-quick].json` and `.md`. The Markdown is printed
//! at the end. The run fails only when a step fails, a report lacks a field it needs or (in
//! `--quick`) the side-by-side lacks a CPU column, never on a number: speed is measured here, not asserted (ARCHITECTURE.md, "Testing": tests assert
//! structure, speed is for benchmarks), so `make bench-quick` can run in CI on any machine.
//!
//! # The steps
//!
//! 1. **Stream capacity.** The mock paces every chat stream at 60 tokens, one every 200 ms after a
//!    200 ms TTFT, like a real model, so a stream is mostly *waiting*: what limits a relay is how
//!    many open, slow streams it can keep moving, not bytes per second. For each mode the
//!    concurrency is **ramped** (`diag llm -c LEVEL -z D --health --pacing-ms 200`), because a
//!    single number of streams either sits below the limit (and shows nothing) or far above it
//!    (and shows only collapse); the ramp finds the knee. A level is **held** when
//!    - diag calls it sustained (no gap between two tokens above 10 × the 200 ms pacing, fewer
//!      than 0.1% of streams failed),
//!    - the tokens relayed reach 75% of what that many streams paced at 200 ms deliver in the
//!      run's time (a stream queued behind a starved pool gets no token at all, so it has no gap
//!      and does not fail, and only this count sees it), and
//!    - the gateway's `/health` p99 stays within 10 ms.
//!
//!    `/health` is the stop signal because it is what an orchestrator acts on, and because it
//!    runs a job on the blocking pool: when the gateway is starved or saturated, new requests
//!    wait and `/health` shows it first, while the streams already open still flow. The
//!    capacity reported is the **highest level held** (the last of the unbroken run of held
//!    levels from the bottom). The ramp itself goes on past a `/health`-only miss and stops when
//!    the streams are no longer sustained, so the table shows both limits: where the gateway
//!    stops answering its health check in time, and where it stops relaying. The broken mode
//!    (`--blocking-threads 4`) is ramped from 2 (2, 4, 8): it can only carry its pool size; at 4
//!    its pool is full, so `/health` waits for a thread, and at 8 four streams queue for one and
//!    get no token at all.
//! 2. **Overhead.** Small non-streaming completions (`max_tokens: 1`, no delay in the mock) at
//!    `-c 50` with `diag load`, straight to the mock, through nginx when installed, and through
//!    the gateway (fixed), in turns (3 rounds in the full run, 1 in `--quick`; medians
//!    reported), each with the proxy's CPU time over the run from `/proc`, so the table has a
//!    *CPU per request* beside req/s and latency. nginx is the reference: a mature C proxy doing
//!    the same relay, so the gateway's cost can be read against what relaying costs at all on
//!    this machine. nginx is looked up on `PATH` and never installed; without it the step says
//!    so and prints the `apt-get` line, and the gateway's columns stay.
//! 3. **nginx beside the gateway** ([`crate::bench::versus`]): nginx (one worker) relays the
//!    same `diag llm` streams at the comparison levels (1,000, 4,000 and 8,000; the top quick
//!    level in `--quick`), and each level of either proxy records tokens/s, TTFT, ITL, the
//!    proxy's CPU per relayed token and its RSS per held stream; the results end with the
//!    ratios against issue 17's goals and the limits each proxy ran under.
//! 4. **Memory.** The gateway's resident memory (`VmRSS` of its pid): idle, the peak at 1,000
//!    streams (the highest level in `--quick`), the peak at the highest level held, and 10 s
//!    after the load is gone (does it give memory back?).
//!
//! Open files: each stream costs the gateway two sockets (client and upstream) and diag and the
//! mock one each. Children inherit xtask's `RLIMIT_NOFILE`; xtask does not raise it, it caps the
//! ramp at what the soft limit allows the gateway and says so in the results.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::bench::observe::{
    children, cpu_split, cpu_time, find_on_path, open_files_limit, rss_kib,
};
use crate::bench::ramp_results::{
    AFTER_LOAD, FULL, HEALTH_P99_MAX_MS, ITL_MS, Level, MIN_TOKEN_RATIO, QUICK, Ramp, RampResults,
    Readiness, TOKENS, TTFT_MS,
};
use crate::bench::reports::{self, LlmReport, LoadReport};
use crate::bench::results::{Results, commit, machine, opt_ms};
use crate::bench::session::{NGINX_LIMITS, Runner, Session, strings};
use crate::bench::versus::{Limits, LoadRun, NGINX_MISSING};
use crate::cli::BenchArgs;
use crate::services::Service;

/// The broken gateway's pool size.
const BROKEN_POOL: u16 = 4;
/// File descriptors kept aside for everything that is not a stream.
const FD_RESERVE: u64 = 256;
/// How long the broken gateway's memory is given to settle after its ramp (not a goal there).
const BROKEN_AFTER: Duration = Duration::from_secs(3);

/// `cargo xtask bench [--quick]`: the capacity ramp, overhead and memory.
pub fn run(args: &BenchArgs) -> Result<()> {
    let plan = if args.quick { &QUICK } else { &FULL };
    let Session { clock, mut runner } = Session::begin(if args.quick { "-quick" } else { "" })?;

    let nofile = open_files_limit();
    // The gateway holds two sockets per stream; diag and the mock one each.
    let max_streams = nofile.map(|n| n.saturating_sub(FD_RESERVE) / 2);
    let nginx = find_on_path("nginx");

    let (_mock, mock_listen) = runner.start_mock(&strings(&[
        "--ttft-ms",
        &TTFT_MS.to_string(),
        "--itl-ms",
        &ITL_MS.to_string(),
        "--tokens",
        &TOKENS.to_string(),
        "--seed",
        "1",
    ]))?;

    // nginx runs for the whole side-by-side (idle while the gateway is measured): one worker,
    // whose CPU time and memory are what it spends relaying.
    let nginx = match &nginx {
        Some(path) => {
            let (service, url) = runner.start_nginx(path, mock_listen)?;
            let worker = nginx_worker(service.pid());
            println!(
                "xtask: nginx {} as the reference proxy, worker pid {}",
                path.display(),
                worker.map_or("not found".into(), |pid| pid.to_string())
            );
            Some(Nginx {
                _service: service,
                url,
                worker,
                path: path.clone(),
            })
        }
        None => {
            println!("xtask: {NGINX_MISSING}");
            None
        }
    };

    // Fixed gateway: idle memory, overhead, ramp, memory after.
    let (fixed_ramp, overhead, gateway_limits) = {
        let (gateway, target) = ramp_gateway(&mut runner, "fixed", 4, mock_listen)?;
        let gateway_limits = gateway_limits(
            &std::fs::read_to_string(runner.work_dir.join("gateway.log")).unwrap_or_default(),
        );
        std::thread::sleep(Duration::from_millis(500));
        let idle = rss_kib(gateway.pid());

        println!(
            "\n=== bench: overhead (non-streaming, -c 50, {} x {} rounds)",
            plan.overhead_duration, plan.overhead_rounds
        );
        let mut overhead = Vec::new();
        for round in 1..=plan.overhead_rounds {
            let mut turns = vec![("mock-llm (direct)", format!("http://{mock_listen}"), None)];
            if let Some(n) = &nginx {
                turns.push(("nginx (reference proxy)", n.url.clone(), n.worker));
            }
            turns.push(("gateway (fixed)", target.url.clone(), Some(gateway.pid())));
            for (label, url, pid) in turns {
                overhead.push(load_run(
                    &mut runner,
                    label,
                    &url,
                    pid,
                    round,
                    plan.overhead_duration,
                )?);
            }
        }

        println!("\n=== bench: stream capacity, fixed gateway");
        let mut ramp = ramp(
            &mut runner,
            &gateway,
            &target,
            4,
            plan.fixed_levels,
            plan.nginx_levels,
            plan.level_duration,
            max_streams,
            AFTER_LOAD,
        )?;
        ramp.idle_rss_kib = idle;
        (ramp, overhead, gateway_limits)
    };

    // nginx relaying the same streams: the side-by-side's other column, and its own `/health`
    // under that load against the gateway's.
    let nginx_streams = match &nginx {
        Some(n) => {
            println!("\n=== bench: the same streams through nginx (reference)");
            let target = Target {
                label: "nginx",
                pid: n.worker,
                url: n.url.clone(),
                admin: None,
            };
            let mut levels = Vec::new();
            for &streams in plan.nginx_levels {
                if max_streams.is_some_and(|max| u64::from(streams) > max) {
                    continue;
                }
                let level = stream_level(&mut runner, &target, streams, plan.level_duration)?;
                print_level(&target, &level);
                levels.push(level);
                std::thread::sleep(Duration::from_secs(1));
            }
            levels
        }
        None => Vec::new(),
    };
    let nginx_note = match &nginx {
        Some(n) => format!(
            "nginx {} as the reference proxy; its CPU time and memory are its one worker's",
            n.path.display()
        ),
        None => NGINX_MISSING.to_string(),
    };
    let limits = Limits {
        gateway: format!(
            "`{}`; {gateway_limits}",
            gateway_flags("fixed", 4).join(" ")
        ),
        nginx: nginx.as_ref().map(|_| NGINX_LIMITS.describe()),
    };
    drop(nginx);

    println!("\n=== bench: stream capacity, broken gateway");
    let broken_ramp = {
        let (gateway, target) = ramp_gateway(&mut runner, "broken", BROKEN_POOL, mock_listen)?;
        std::thread::sleep(Duration::from_millis(500));
        let idle = rss_kib(gateway.pid());
        let mut ramp = ramp(
            &mut runner,
            &gateway,
            &target,
            BROKEN_POOL,
            plan.broken_levels,
            &[],
            plan.level_duration,
            max_streams,
            BROKEN_AFTER,
        )?;
        ramp.idle_rss_kib = idle;
        ramp
    };

    let elapsed = clock.elapsed();
    let found = RampResults {
        quick: args.quick,
        date: clock.date(),
        machine: machine(),
        commit: commit(),
        nofile,
        max_streams,
        plan,
        nginx_note,
        limits,
        ramps: vec![fixed_ramp, broken_ramp],
        nginx_streams,
        overhead,
        commands: runner.commands,
        elapsed,
        build_time: clock.build_time,
    };
    if args.quick {
        // Structure, not speed: the side-by-side must have its CPU columns.
        found
            .versus()
            .check_structure()
            .map_err(|e| anyhow::anyhow!("bench-quick: the side-by-side is incomplete: {e}"))?;
    }
    let mut results = Results::new(args, &clock, "bench");
    results.json(&found.to_json())?;
    results.markdown(found.markdown());
    results.write(&format!("bench done in {:.0} s", elapsed.as_secs_f64()))
}

/// A ramp gateway: `mode` with a pool of `blocking_threads`; its process, base URL and admin
/// plane's base URL.
fn ramp_gateway(
    runner: &mut Runner,
    mode: &'static str,
    blocking_threads: u16,
    mock_listen: SocketAddr,
) -> Result<(Service, Target)> {
    let gateway = runner.start_gateway(mock_listen, &gateway_flags(mode, blocking_threads))?;
    let target = Target {
        label: mode,
        pid: Some(gateway.service.pid()),
        url: format!("http://{}", gateway.listen),
        admin: Some(format!("http://{}", gateway.admin)),
    };
    Ok((gateway.service, target))
}

/// A ramp gateway's flags besides its ports, which the results' limits line repeats.
fn gateway_flags(mode: &str, blocking_threads: u16) -> Vec<String> {
    strings(&[
        "--mode",
        mode,
        "--blocking-threads",
        &blocking_threads.to_string(),
        // The ramp measures the gateway's own capacity (up to 8,000 streams), so the
        // inbound cap, 1,024 by default, must not shed first.
        "--max-concurrent-requests",
        "100000",
    ])
}

/// The limits the gateway reported in force at startup (its log's `limits in force:` block):
/// the accept queue, the async workers, the inbound cap and the connection cap with how it was
/// derived.
fn gateway_limits(log: &str) -> String {
    let wanted = [
        "listen",
        "blocking pool",
        "async workers",
        "inbound",
        "connections",
    ];
    let lines: Vec<String> = log
        .lines()
        .skip_while(|l| !l.starts_with("limits in force"))
        .map(str::trim)
        .filter(|l| wanted.iter().any(|w| l.starts_with(w)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        // `listen ADDR, accept queue N`: the port changes every run, the queue is the limit.
        .map(|l| match l.split_once(", accept queue") {
            Some((_, queue)) => format!("accept queue{queue}"),
            None => l,
        })
        .collect();
    if lines.is_empty() {
        return "its log has no `limits in force` block".into();
    }
    lines.join("; ")
}

/// nginx's worker: the master's child. Ready means a worker answered, so it exists; a few
/// tries cover a slow `/proc`.
fn nginx_worker(master: u32) -> Option<u32> {
    for _ in 0..10 {
        if let Some(&worker) = children(master).first() {
            return Some(worker);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The nginx of a run: stopped when dropped; its worker is what is measured.
struct Nginx {
    _service: Service,
    url: String,
    worker: Option<u32>,
    path: std::path::PathBuf,
}

/// What a stream level drives: a gateway (with its admin plane) or nginx.
struct Target {
    label: &'static str,
    /// Whose CPU time and memory to read: the gateway, or nginx's worker.
    pid: Option<u32>,
    url: String,
    admin: Option<String>,
}

/// The overhead step against one target: small completions, no mock delay, `-c 50`, with the CPU
/// time `pid` (the proxy) spent over it.
fn load_run(
    runner: &mut Runner,
    target: &str,
    base: &str,
    pid: Option<u32>,
    round: u32,
    duration: &str,
) -> Result<LoadRun> {
    let slug: String = target
        .chars()
        .take_while(|c| *c != ' ')
        .collect::<String>()
        .replace('-', "_");
    let report = runner.work_dir.join(format!("load-{slug}-{round}.json"));
    let before = pid.and_then(cpu_time);
    runner.diag(&strings(&[
        "load",
        &format!("{base}/v1/chat/completions"),
        "-m",
        "POST",
        "-T",
        "application/json",
        "-d",
        r#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}],"max_tokens":1}"#,
        "-H",
        "x-mock-ttft-ms: 0",
        "-H",
        "x-mock-itl-ms: 0",
        "-c",
        "50",
        "-z",
        duration,
        "--no-progress",
        "--json",
        &report.to_string_lossy(),
    ]))?;
    let cpu = pid
        .and_then(cpu_time)
        .zip(before)
        .map(|(after, before)| after.saturating_sub(before));
    let r: LoadReport = reports::read(&report)?;
    if r.requests.ok == 0 {
        bail!("no response at all from {target}: see {}", report.display());
    }
    let (p50_ms, p99_ms) = reports::p50_p99_ms(&r)?;
    Ok(LoadRun {
        target: target.to_string(),
        round,
        rps: r.rps,
        p50_ms,
        p99_ms,
        ok: r.requests.ok,
        errors: r.requests.errors,
        non_200: reports::non_200(&r),
        cpu,
        report,
    })
}

/// One mode's ramp: `levels` up to the first whose streams are not sustained (or past what the
/// open files limit allows), then the gateway's memory `after` the last. Past that first
/// failure only the levels in `compare` still run: the ones nginx runs too, so the health
/// table has the gateway's side of every row.
#[allow(clippy::too_many_arguments)]
fn ramp(
    runner: &mut Runner,
    gateway: &Service,
    target: &Target,
    blocking_threads: u16,
    levels: &[u32],
    compare: &[u32],
    duration: &str,
    max_streams: Option<u64>,
    after: Duration,
) -> Result<Ramp> {
    let mut ramp = Ramp {
        mode: target.label,
        blocking_threads,
        levels: Vec::new(),
        skipped_levels: Vec::new(),
        idle_rss_kib: None,
        after_rss_kib: None,
    };
    for &streams in levels {
        if max_streams.is_some_and(|max| u64::from(streams) > max) {
            ramp.skipped_levels.push(streams);
            continue;
        }
        if ramp.levels.last().is_some_and(|l| !l.streams_ok) && !compare.contains(&streams) {
            continue;
        }
        let level = stream_level(runner, target, streams, duration)?;
        print_level(target, &level);
        ramp.levels.push(level);
        if ramp.levels.last().is_some_and(|l| !l.streams_ok)
            && !compare.iter().any(|&c| c > streams)
        {
            break;
        }
        // Let the cancelled streams' sockets close before the next level opens more.
        std::thread::sleep(Duration::from_secs(1));
    }
    // Does the gateway give memory back once the load is gone?
    std::thread::sleep(after);
    ramp.after_rss_kib = rss_kib(gateway.pid());
    Ok(ramp)
}

fn print_level(target: &Target, level: &Level) {
    let readiness = match (&level.readiness, level.readyz_p99_ms) {
        (Some(r), p99) => format!(", /readyz p99 {} ({})", opt_ms(p99), r.verdict()),
        (None, _) => String::new(),
    };
    println!(
        "xtask: {} {} streams: {:.0} events/s, /health p99 {}{readiness}, {}",
        target.label,
        level.streams,
        level.events_per_s,
        opt_ms(level.health_p99_ms),
        level
            .not_held
            .as_ref()
            .map_or("held".to_string(), |why| format!("not held: {why}"))
    );
}

fn stream_level(
    runner: &mut Runner,
    target: &Target,
    streams: u32,
    duration: &str,
) -> Result<Level> {
    let report = runner
        .work_dir
        .join(format!("llm-{}-{streams}.json", target.label));
    let mut args = strings(&[
        "llm",
        "--base-url",
        &target.url,
        "-c",
        &streams.to_string(),
        "-z",
        duration,
        "--health",
        "--pacing-ms",
        &ITL_MS.to_string(),
        "--no-progress",
        "--json",
        &report.to_string_lossy(),
    ]);
    if let Some(admin) = &target.admin {
        args.extend(strings(&["--admin", admin]));
    }
    let rss_before_kib = target.pid.and_then(rss_kib);
    let cpu_before = target.pid.and_then(cpu_split);
    let stop = AtomicBool::new(false);
    let (result, rss_max_kib) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut max = None;
            while let Some(pid) = target.pid.filter(|_| !stop.load(Ordering::SeqCst)) {
                max = max.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(200));
            }
            max
        });
        let result = runner.diag(&args);
        stop.store(true, Ordering::SeqCst);
        (result, sampler.join().ok().flatten())
    });
    // Read before the result is checked: CPU spent over the run, connections made and closed.
    let cpu = target
        .pid
        .and_then(cpu_split)
        .zip(cpu_before)
        .map(|(after, before)| after.since(before));
    result?;

    let r: LlmReport = reports::read(&report)?;
    let tokens = r.output_tokens.total as f64;
    let per_stream = ((r.duration_s * 1000.0 - TTFT_MS as f64) / ITL_MS as f64)
        .floor()
        .clamp(0.0, TOKENS as f64 - 1.0)
        + 1.0;
    let expected_tokens = f64::from(streams) * per_stream;
    let Some(health) = r.health else {
        bail!("{} has no health section", report.display());
    };
    let health_p99_ms = health.p99_ms;
    let diag_sustained = r.sustained;
    let diag_reason = r.sustained_reason;

    let mut reasons = Vec::new();
    let streams_ok = diag_sustained && tokens >= MIN_TOKEN_RATIO * expected_tokens;
    if !diag_sustained {
        reasons.push(format!("diag: not sustained ({diag_reason})"));
    }
    if tokens < MIN_TOKEN_RATIO * expected_tokens {
        reasons.push(format!(
            "{tokens:.0} tokens relayed < {:.0}% of the {expected_tokens:.0} paced streams deliver",
            MIN_TOKEN_RATIO * 100.0
        ));
    }
    match health_p99_ms {
        Some(p99) if p99 <= HEALTH_P99_MAX_MS => {}
        Some(p99) => reasons.push(format!("/health p99 {p99:.1} ms > {HEALTH_P99_MAX_MS} ms")),
        None => reasons.push("no /health answer".to_string()),
    }
    Ok(Level {
        streams,
        diag_sustained,
        diag_reason,
        tokens,
        expected_tokens,
        events_per_s: r.output_tokens.per_s,
        failed: r.streams.failed,
        max_gap_ms: r.max_gap_ms,
        ttft_p50_ms: r.ttft_ms.p50,
        ttft_p99_ms: r.ttft_ms.p99,
        itl_p99_ms: r.itl_ms.p99,
        cpu,
        rss_before_kib,
        health_p99_ms,
        readyz_p99_ms: r.readyz.and_then(|readyz| readyz.p99_ms),
        readiness: r.readiness.map(Readiness::from),
        rss_max_kib,
        streams_ok,
        not_held: (!reasons.is_empty()).then(|| reasons.join("; ")),
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::gateway_limits;

    #[test]
    fn the_limits_line_keeps_the_accept_queue_but_not_the_port() {
        let log = "INFO gateway listening on 127.0.0.1:4100\nlimits in force:\n  \
                   mode                   fixed\n  \
                   listen                 127.0.0.1:4100, accept queue 4096\n  \
                   async workers          one per core\n  \
                   rate limit             off\n";
        assert_eq!(
            gateway_limits(log),
            "accept queue 4096; async workers one per core"
        );
    }
}
