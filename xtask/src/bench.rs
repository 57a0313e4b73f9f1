//! `cargo xtask bench [ramp|shed|hedge|cpu] [--quick]`: the project's benchmarks, one way to run
//! them all.
//!
//! This file is the capacity ramp (`ramp`, the default, so `cargo xtask bench [--quick]` is what
//! it always was) and the pieces every benchmark shares: the release build and work directory
//! ([`Session`]), running diag and recording each command for the results ([`Runner`]), reading
//! diag's JSON, `/proc` and `/metrics`, the machine description, and writing
//! `bench/results/`. One lesson each, in submodules: [`shed`] (load shedding at 5x the cap),
//! [`hedge`] (hedged requests against a heavy-tailed upstream), [`cpu`] (CPU-bound work per
//! `--cpu-mode`). They were shell scripts; in Rust they get the same exit-status checks,
//! free ports and stop-on-drop services as everything else here.
//!
//! # The capacity ramp: how much the gateway carries, what it costs, what it holds
//!
//! Release build only: a debug build's numbers say nothing about the gateway. xtask builds the
//! binaries, starts `mock-llm` and the gateway on free ports, drives them with the `diag` binary
//! (`diag llm` and `diag load`, each with `--json` into `target/bench/<run>/`), reads the JSON
//! back, and writes `bench/results/<date>-bench[-quick].json` and `.md`. The Markdown is printed
//! at the end. The run fails only when a step fails or a report lacks a field it needs, never on
//! a number: speed is measured here, not asserted (ARCHITECTURE.md, "Testing": tests assert
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
//!    the gateway (fixed). nginx is the reference: a mature C proxy doing the same relay, so the
//!    gateway's added latency can be read against what relaying costs at all on this machine.
//!    nginx is looked up on `PATH` and never installed; without it the step says so.
//! 3. **Memory.** The gateway's resident memory (`VmRSS` of its pid): idle, the peak at 1,000
//!    streams (the highest level in `--quick`), the peak at the highest level held, and 3 s
//!    after the load is gone (does it give memory back?).
//!
//! Open files: each stream costs the gateway two sockets (client and upstream) and diag and the
//! mock one each. Children inherit xtask's `RLIMIT_NOFILE`; xtask does not raise it, it caps the
//! ramp at what the soft limit allows the gateway and says so in the results.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cli::{BenchArgs, What};
use crate::project_root;
use crate::services::{self, INTERRUPTED, Service};

mod cpu;
mod hedge;
mod shed;

/// The mock's pacing for the stream step: TTFT, inter-token latency, tokens per stream.
const TTFT_MS: u64 = 200;
const ITL_MS: u64 = 200;
const TOKENS: u64 = 60;
/// A level is not held when fewer tokens than this share of the paced ideal were relayed.
const MIN_TOKEN_RATIO: f64 = 0.75;
/// A level is not held when the gateway's `/health` p99 is above this.
const HEALTH_P99_MAX_MS: f64 = 10.0;
/// The broken gateway's pool size.
const BROKEN_POOL: u16 = 4;
/// File descriptors kept aside for everything that is not a stream.
const FD_RESERVE: u64 = 256;
/// The level whose memory is reported as "at 1,000 streams" (or the quick run's top level).
const REFERENCE_LEVEL: u32 = 1000;

struct Plan {
    fixed_levels: &'static [u32],
    broken_levels: &'static [u32],
    level_duration: &'static str,
    overhead_duration: &'static str,
}

const QUICK: Plan = Plan {
    fixed_levels: &[50, 100, 200],
    broken_levels: &[2, 4, 8],
    level_duration: "4s",
    overhead_duration: "4s",
};

const FULL: Plan = Plan {
    fixed_levels: &[100, 200, 500, 1000, 2000, 4000, 8000],
    broken_levels: &[2, 4, 8],
    level_duration: "6s",
    overhead_duration: "10s",
};

/// One level of the ramp, as measured.
#[derive(Debug)]
struct Level {
    streams: u32,
    diag_sustained: bool,
    diag_reason: String,
    tokens: f64,
    expected_tokens: f64,
    events_per_s: f64,
    failed: u64,
    max_gap_ms: Option<f64>,
    ttft_p99_ms: Option<f64>,
    health_p99_ms: Option<f64>,
    rss_max_kib: Option<u64>,
    /// Diag's sustained rule and the token count held (whatever `/health` said).
    streams_ok: bool,
    /// Why the level was not held; `None` when it was.
    not_held: Option<String>,
    report: PathBuf,
}

impl Level {
    fn to_json(&self) -> Value {
        json!({
            "streams": self.streams,
            "held": self.not_held.is_none(),
            "streams_sustained": self.streams_ok,
            "not_held_because": self.not_held,
            "diag_sustained": self.diag_sustained,
            "diag_sustained_reason": self.diag_reason,
            "output_tokens": self.tokens,
            "expected_tokens": self.expected_tokens,
            "events_per_s": self.events_per_s,
            "failed_streams": self.failed,
            "max_gap_ms": self.max_gap_ms,
            "ttft_p99_ms": self.ttft_p99_ms,
            "health_p99_ms": self.health_p99_ms,
            "gateway_rss_max_kib": self.rss_max_kib,
            "diag_report": rel(&self.report),
        })
    }
}

/// The ramp of one mode.
#[derive(Debug)]
struct Ramp {
    mode: &'static str,
    blocking_threads: u16,
    levels: Vec<Level>,
    skipped_levels: Vec<u32>,
    idle_rss_kib: Option<u64>,
    after_rss_kib: Option<u64>,
}

impl Ramp {
    /// The last level of the unbroken run of held levels from the bottom of the ramp.
    fn highest_held(&self) -> Option<&Level> {
        self.levels
            .iter()
            .take_while(|l| l.not_held.is_none())
            .last()
    }

    /// The highest level whose streams were sustained, `/health` aside.
    fn highest_streams_ok(&self) -> Option<&Level> {
        self.levels.iter().rfind(|l| l.streams_ok)
    }

    fn to_json(&self) -> Value {
        let held = self.highest_held();
        json!({
            "mode": self.mode,
            "blocking_threads": self.blocking_threads,
            "highest_level_held": held.map(|l| l.streams),
            "events_per_s_at_highest_held": held.map(|l| l.events_per_s),
            "highest_level_streams_sustained": self.highest_streams_ok().map(|l| l.streams),
            "levels": self.levels.iter().map(Level::to_json).collect::<Vec<_>>(),
            "levels_skipped_for_open_files": self.skipped_levels,
        })
    }
}

/// One `diag load` run of the overhead step.
#[derive(Debug)]
struct LoadRun {
    target: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    errors: u64,
    non_200: u64,
    report: PathBuf,
}

impl LoadRun {
    fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "responses": self.ok,
            "non_200": self.non_200,
            "errors": self.errors,
            "diag_report": rel(&self.report),
        })
    }
}

/// Runs commands and remembers them, for the results' "commands" list.
struct Runner {
    bin_dir: PathBuf,
    work_dir: PathBuf,
    commands: Vec<String>,
}

impl Runner {
    /// A fresh run: the directory for its diag reports, pid files and logs, and no commands yet.
    fn new(bin_dir: PathBuf, work_dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&work_dir)?;
        Ok(Runner {
            bin_dir,
            work_dir,
            commands: Vec::new(),
        })
    }

    fn diag(&mut self, args: &[String]) -> Result<()> {
        let program = self.note_diag(args, "");
        run_diag(&program, args)
    }

    /// Records (and prints) a diag command line and returns diag's path, for a caller that runs
    /// it with [`run_diag`] itself, e.g. on another thread beside a second diag. `suffix` is
    /// appended to the recorded line (" &" for one that runs in the background).
    fn note_diag(&mut self, args: &[String], suffix: &str) -> PathBuf {
        let program = self.bin_dir.join("diag");
        let line = command_line(&program, args) + suffix;
        println!("xtask: {line}");
        self.commands.push(line);
        program
    }

    fn start(
        &mut self,
        bin_dir: &Path,
        program: &'static str,
        listen: SocketAddr,
        args: &[String],
        ready_url: &str,
    ) -> Result<Service> {
        self.commands
            .push(command_line(&bin_dir.join(program), args) + " &");
        services::start_in(&self.work_dir, bin_dir, program, listen, args, ready_url)
    }

    /// A mock-llm on a free port with `flags`; ready when its `/health` answers.
    fn start_mock(&mut self, bin_dir: &Path, flags: &[String]) -> Result<(Service, SocketAddr)> {
        let listen = services::free_addr()?;
        let mut args = strings(&["--listen", &listen.to_string()]);
        args.extend_from_slice(flags);
        let ready = format!("http://{listen}/health");
        Ok((
            self.start(bin_dir, "mock-llm", listen, &args, &ready)?,
            listen,
        ))
    }

    /// A gateway on a free port in front of `upstream`, with `flags` (mode, limits, ...); ready
    /// when `/debug/health-async` answers. `--drain-secs 1` only bounds how long its stop waits
    /// for open streams once diag is done: no effect on the numbers.
    fn start_gateway(
        &mut self,
        bin_dir: &Path,
        upstream: SocketAddr,
        flags: &[String],
    ) -> Result<(Service, SocketAddr)> {
        let listen = services::free_addr()?;
        let mut args = strings(&[
            "--listen",
            &listen.to_string(),
            "--upstream",
            &format!("http://{upstream}"),
            "--drain-secs",
            "1",
        ]);
        args.extend_from_slice(flags);
        let ready = format!("http://{listen}/debug/health-async");
        Ok((
            self.start(bin_dir, "gateway", listen, &args, &ready)?,
            listen,
        ))
    }
}

/// Runs diag with `args`; fails if it exits with a status other than 0 or Ctrl-C was pressed.
fn run_diag(program: &Path, args: &[String]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program:?}"))?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    if !output.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            command_line(program, args),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// What every benchmark does first: Ctrl-C handling, the release build, a work directory
/// `target/bench/<unix time><suffix>` for diag's reports and the services' logs.
struct Session {
    started: SystemTime,
    build_time: Duration,
    bin_dir: PathBuf,
    runner: Runner,
}

impl Session {
    /// `suffix` ends the work directory's name: "" for the ramp (as it always was), "-quick",
    /// "-shed" and so on for the others.
    fn begin(suffix: &str) -> Result<Self> {
        services::catch_ctrl_c();
        let started = SystemTime::now();
        let bin_dir = services::build(false)?;
        let build_time = started.elapsed().unwrap_or_default();
        let stamp = started.duration_since(UNIX_EPOCH)?.as_secs();
        let work_dir = services::target_dir()
            .join("bench")
            .join(format!("{stamp}{suffix}"));
        let runner = Runner::new(bin_dir.clone(), work_dir)?;
        Ok(Session {
            started,
            build_time,
            bin_dir,
            runner,
        })
    }

    /// `YYYY-MM-DD HH:MM UTC` of the start; results are named after its first ten characters.
    fn date(&self) -> String {
        utc_datetime(self.started)
    }

    /// The Markdown head the shed, hedge and cpu results share: title, then date, machine,
    /// commit, the command that made them and how long it took, then `lines` (the load).
    fn head(&self, title: &str, what: &str, quick: bool, lines: &[String]) -> String {
        let elapsed = self.started.elapsed().unwrap_or_default();
        let mut md = format!("# {title}\n\n");
        let _ = writeln!(
            md,
            "Date: {}. Machine: {}. Commit: {}.",
            self.date(),
            machine().describe(),
            commit()
        );
        let _ = writeln!(
            md,
            "Command: `make bench-{what}{}` (`cargo xtask bench {what}{}`; release build, loopback, \
             every process on the same cores), {:.0} s of which {:.0} s building.",
            if quick { " ARGS=--quick" } else { "" },
            if quick { " --quick" } else { "" },
            elapsed.as_secs_f64(),
            self.build_time.as_secs_f64()
        );
        for line in lines {
            let _ = writeln!(md, "{line}");
        }
        md
    }
}

/// The results name for a run: `<date>-<kind>[-quick]`.
fn results_name(date: &str, kind: &str, quick: bool) -> String {
    let day = date.get(..10).unwrap_or(date);
    format!("{day}-{kind}{}", if quick { "-quick" } else { "" })
}

/// Writes `files` (name, contents) to `dir` (`bench/results/` unless `--out`) and returns their
/// paths.
fn write_results(dir: &Path, files: &[(String, String)]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    files
        .iter()
        .map(|(name, contents)| {
            let path = dir.join(name);
            std::fs::write(&path, contents).with_context(|| format!("cannot write {path:?}"))?;
            Ok(path)
        })
        .collect()
}

/// The "Commands" section every results file ends with: what ran, to paste into a shell.
fn commands_section(commands: &[String]) -> String {
    let mut md = String::from("\n## Commands\n\n```sh\n");
    for c in commands {
        let _ = writeln!(md, "{c}");
    }
    md.push_str("```\n");
    md
}

/// `cargo xtask bench [WHAT]`.
pub fn run(args: &BenchArgs) -> Result<()> {
    match args.what {
        What::Ramp => capacity(args),
        What::Shed => shed::run(args),
        What::Hedge => hedge::run(args),
        What::Cpu => cpu::run(args),
    }
}

/// `cargo xtask bench [--quick]`: the capacity ramp, overhead and memory.
fn capacity(args: &BenchArgs) -> Result<()> {
    let plan = if args.quick { &QUICK } else { &FULL };
    let Session {
        started,
        build_time,
        bin_dir,
        mut runner,
    } = Session::begin(if args.quick { "-quick" } else { "" })?;

    let nofile = open_files_limit();
    // The gateway holds two sockets per stream; diag and the mock one each.
    let max_streams = nofile.map(|n| n.saturating_sub(FD_RESERVE) / 2);
    let nginx = find_on_path("nginx");

    let (_mock, mock_listen) = runner.start_mock(
        &bin_dir,
        &strings(&[
            "--ttft-ms",
            &TTFT_MS.to_string(),
            "--itl-ms",
            &ITL_MS.to_string(),
            "--tokens",
            &TOKENS.to_string(),
            "--seed",
            "1",
        ]),
    )?;

    // Fixed gateway: idle memory, overhead, ramp, memory after.
    let (fixed_ramp, overhead) = {
        let (gateway, gateway_url) = ramp_gateway(&mut runner, &bin_dir, "fixed", 4, mock_listen)?;
        std::thread::sleep(Duration::from_millis(500));
        let idle = rss_kib(gateway.pid());

        println!(
            "\n=== bench: overhead (non-streaming, -c 50, {})",
            plan.overhead_duration
        );
        let mut overhead = vec![load_run(
            &mut runner,
            "mock-llm (direct)",
            &format!("http://{mock_listen}"),
            plan.overhead_duration,
        )?];
        let nginx_note = match &nginx {
            Some(path) => {
                let (service, url) = start_nginx(&mut runner, path, mock_listen)?;
                overhead.push(load_run(
                    &mut runner,
                    "nginx (reference proxy)",
                    &url,
                    plan.overhead_duration,
                )?);
                drop(service);
                format!("nginx {} as the reference proxy", path.display())
            }
            None => "nginx not on PATH: reference proxy skipped (the bench installs nothing)"
                .to_string(),
        };
        println!("xtask: {nginx_note}");
        overhead.push(load_run(
            &mut runner,
            "gateway (fixed)",
            &gateway_url,
            plan.overhead_duration,
        )?);

        println!("\n=== bench: stream capacity, fixed gateway");
        let mut ramp = ramp(
            &mut runner,
            &gateway,
            &gateway_url,
            "fixed",
            4,
            plan.fixed_levels,
            plan.level_duration,
            max_streams,
        )?;
        ramp.idle_rss_kib = idle;
        std::thread::sleep(Duration::from_secs(3));
        ramp.after_rss_kib = rss_kib(gateway.pid());
        (ramp, (overhead, nginx_note))
    };

    println!("\n=== bench: stream capacity, broken gateway");
    let broken_ramp = {
        let (gateway, gateway_url) =
            ramp_gateway(&mut runner, &bin_dir, "broken", BROKEN_POOL, mock_listen)?;
        std::thread::sleep(Duration::from_millis(500));
        let idle = rss_kib(gateway.pid());
        let mut ramp = ramp(
            &mut runner,
            &gateway,
            &gateway_url,
            "broken",
            BROKEN_POOL,
            plan.broken_levels,
            plan.level_duration,
            max_streams,
        )?;
        ramp.idle_rss_kib = idle;
        std::thread::sleep(Duration::from_secs(3));
        ramp.after_rss_kib = rss_kib(gateway.pid());
        ramp
    };

    let (overhead, nginx_note) = overhead;
    let elapsed = started.elapsed().unwrap_or_default();
    let results = Results {
        quick: args.quick,
        date: utc_datetime(started),
        machine: machine(),
        commit: commit(),
        nofile,
        max_streams,
        plan,
        nginx_note,
        ramps: vec![fixed_ramp, broken_ramp],
        overhead,
        commands: runner.commands,
        elapsed,
        build_time,
    };
    let markdown = results.markdown();
    let name = results_name(&results.date, "bench", args.quick);
    let paths = write_results(
        &args.results_dir(),
        &[
            (
                format!("{name}.json"),
                serde_json::to_string_pretty(&results.to_json())? + "\n",
            ),
            (format!("{name}.md"), markdown.clone()),
        ],
    )?;
    println!("\n{markdown}");
    println!(
        "xtask: bench done in {:.0} s; results in {}",
        elapsed.as_secs_f64(),
        paths
            .iter()
            .map(|p| rel(p))
            .collect::<Vec<_>>()
            .join(" and ")
    );
    Ok(())
}

/// A ramp gateway: `mode` with a pool of `blocking_threads`, and its base URL.
fn ramp_gateway(
    runner: &mut Runner,
    bin_dir: &Path,
    mode: &str,
    blocking_threads: u16,
    mock_listen: SocketAddr,
) -> Result<(Service, String)> {
    let (gateway, listen) = runner.start_gateway(
        bin_dir,
        mock_listen,
        &strings(&[
            "--mode",
            mode,
            "--blocking-threads",
            &blocking_threads.to_string(),
            // The ramp measures the gateway's own capacity (up to 8,000 streams), so the
            // inbound cap, 1,024 by default, must not shed first.
            "--max-concurrent-requests",
            "100000",
        ]),
    )?;
    Ok((gateway, format!("http://{listen}")))
}

/// nginx as a plain reverse proxy in front of the mock: keep-alive upstream connections, no
/// buffering, no access log, everything under the run's directory.
fn start_nginx(runner: &mut Runner, nginx: &Path, mock: SocketAddr) -> Result<(Service, String)> {
    let listen = services::free_addr()?;
    let dir = runner.work_dir.join("nginx");
    std::fs::create_dir_all(dir.join("tmp"))?;
    let d = dir.display();
    let conf = format!(
        "daemon off;\nworker_processes auto;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  \
         proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
         uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  \
         upstream mock {{ server {mock}; keepalive 128; }}\n  \
         server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://mock;\n      \
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
         proxy_buffering off;\n    }}\n  }}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let bin_dir = nginx.parent().context("nginx path has no directory")?;
    let service = runner.start(
        bin_dir,
        "nginx",
        listen,
        &strings(&["-p", &format!("{d}/"), "-c", &conf_path.to_string_lossy()]),
        &format!("http://{listen}/health"),
    )?;
    Ok((service, format!("http://{listen}")))
}

/// The overhead step against one target: small completions, no mock delay, `-c 50`.
fn load_run(runner: &mut Runner, target: &str, base: &str, duration: &str) -> Result<LoadRun> {
    let slug: String = target
        .chars()
        .take_while(|c| *c != ' ')
        .collect::<String>()
        .replace('-', "_");
    let report = runner.work_dir.join(format!("load-{slug}.json"));
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
    let v = read_json(&report)?;
    let statuses = field(&v, "status_codes")?
        .as_object()
        .context("status_codes is not an object")?;
    let mut non_200 = 0;
    for (status, count) in statuses {
        let count = count.as_u64().context("a status count is not an integer")?;
        if status != "200" {
            non_200 += count;
        }
    }
    let ok = uint(&v, "requests.ok")?;
    if ok == 0 {
        bail!("no response at all from {target}: see {}", report.display());
    }
    Ok(LoadRun {
        target: target.to_string(),
        rps: num(&v, "rps")?,
        p50_ms: num(&v, "latency_ms.p50")?,
        p99_ms: num(&v, "latency_ms.p99")?,
        ok,
        errors: uint(&v, "requests.errors")?,
        non_200,
        report,
    })
}

#[allow(clippy::too_many_arguments)]
fn ramp(
    runner: &mut Runner,
    gateway: &Service,
    url: &str,
    mode: &'static str,
    blocking_threads: u16,
    levels: &[u32],
    duration: &str,
    max_streams: Option<u64>,
) -> Result<Ramp> {
    let mut ramp = Ramp {
        mode,
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
        let level = stream_level(runner, gateway, url, mode, streams, duration)?;
        let streams_ok = level.streams_ok;
        println!(
            "xtask: {mode} {streams} streams: {:.0} events/s, /health p99 {}, {}",
            level.events_per_s,
            opt_ms(level.health_p99_ms),
            level
                .not_held
                .as_ref()
                .map_or("held".to_string(), |why| format!("not held: {why}"))
        );
        ramp.levels.push(level);
        if !streams_ok {
            break;
        }
        // Let the cancelled streams' sockets close before the next level opens more.
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(ramp)
}

fn stream_level(
    runner: &mut Runner,
    gateway: &Service,
    url: &str,
    mode: &str,
    streams: u32,
    duration: &str,
) -> Result<Level> {
    let report = runner.work_dir.join(format!("llm-{mode}-{streams}.json"));
    let args = strings(&[
        "llm",
        "--base-url",
        url,
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
    let pid = gateway.pid();
    let stop = AtomicBool::new(false);
    let (result, rss_max_kib) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut max = None;
            while !stop.load(Ordering::SeqCst) {
                max = max.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(200));
            }
            max
        });
        let result = runner.diag(&args);
        stop.store(true, Ordering::SeqCst);
        (result, sampler.join().ok().flatten())
    });
    result?;

    let v = read_json(&report)?;
    let duration_s = num(&v, "duration_s")?;
    let tokens = num(&v, "output_tokens.total")?;
    let per_stream = ((duration_s * 1000.0 - TTFT_MS as f64) / ITL_MS as f64)
        .floor()
        .clamp(0.0, TOKENS as f64 - 1.0)
        + 1.0;
    let expected_tokens = f64::from(streams) * per_stream;
    let health = field(&v, "health")?;
    if health.is_null() {
        bail!("{} has no health section", report.display());
    }
    let health_p99_ms = opt_num(&v, "health.p99_ms")?;
    let diag_sustained = field(&v, "sustained")?
        .as_bool()
        .context("sustained is not a boolean")?;
    let diag_reason = str_field(&v, "sustained_reason")?;

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
        events_per_s: num(&v, "output_tokens.per_s")?,
        failed: uint(&v, "streams.failed")?,
        max_gap_ms: opt_num(&v, "max_gap_ms")?,
        ttft_p99_ms: opt_num(&v, "ttft_ms.p99")?,
        health_p99_ms,
        rss_max_kib,
        streams_ok,
        not_held: (!reasons.is_empty()).then(|| reasons.join("; ")),
        report,
    })
}

struct Results {
    quick: bool,
    date: String,
    machine: Machine,
    commit: String,
    nofile: Option<u64>,
    max_streams: Option<u64>,
    plan: &'static Plan,
    nginx_note: String,
    ramps: Vec<Ramp>,
    overhead: Vec<LoadRun>,
    commands: Vec<String>,
    elapsed: Duration,
    build_time: Duration,
}

impl Results {
    fn fixed(&self) -> Option<&Ramp> {
        self.ramps.iter().find(|r| r.mode == "fixed")
    }

    /// The added latency of the gateway over the direct run: (p50, p99) in ms.
    fn added_latency(&self) -> Option<(f64, f64)> {
        let direct = self
            .overhead
            .iter()
            .find(|r| r.target.starts_with("mock"))?;
        let gateway = self
            .overhead
            .iter()
            .find(|r| r.target.starts_with("gateway"))?;
        Some((
            round3(gateway.p50_ms - direct.p50_ms),
            round3(gateway.p99_ms - direct.p99_ms),
        ))
    }

    /// Memory of the fixed gateway: (label, level, KiB).
    fn memory(&self) -> Vec<(String, Option<u32>, Option<u64>)> {
        let Some(fixed) = self.fixed() else {
            return Vec::new();
        };
        let reference = fixed
            .levels
            .iter()
            .find(|l| l.streams == REFERENCE_LEVEL)
            .or_else(|| fixed.levels.iter().rfind(|l| l.streams <= REFERENCE_LEVEL));
        let held = fixed.highest_held();
        let mut rows = vec![("idle".to_string(), None, fixed.idle_rss_kib)];
        if let Some(l) = reference {
            rows.push((
                format!("{} streams (peak)", l.streams),
                Some(l.streams),
                l.rss_max_kib,
            ));
        }
        if let Some(l) = held {
            rows.push((
                format!("highest level held, {} streams (peak)", l.streams),
                Some(l.streams),
                l.rss_max_kib,
            ));
        }
        rows.push((
            "3 s after the load is gone".to_string(),
            None,
            fixed.after_rss_kib,
        ));
        rows
    }

    fn to_json(&self) -> Value {
        let added = self.added_latency();
        json!({
            "kind": if self.quick { "bench-quick" } else { "bench" },
            "date": self.date,
            "machine": {
                "cores": self.machine.cores,
                "cpu": self.machine.cpu,
                "memory_kib": self.machine.memory_kib,
                "kernel": self.machine.kernel,
            },
            "commit": self.commit,
            "build": "release",
            "open_files_limit": self.nofile,
            "max_streams_for_open_files": self.max_streams,
            "mock": { "ttft_ms": TTFT_MS, "itl_ms": ITL_MS, "tokens": TOKENS },
            "level_duration": self.plan.level_duration,
            "held_rule": {
                "diag_sustained": true,
                "min_token_ratio": MIN_TOKEN_RATIO,
                "health_p99_max_ms": HEALTH_P99_MAX_MS,
            },
            "nginx": self.nginx_note,
            "stream_capacity": self.ramps.iter().map(Ramp::to_json).collect::<Vec<_>>(),
            "overhead": {
                "concurrency": 50,
                "duration": self.plan.overhead_duration,
                "runs": self.overhead.iter().map(LoadRun::to_json).collect::<Vec<_>>(),
                "gateway_added_p50_ms": added.map(|a| a.0),
                "gateway_added_p99_ms": added.map(|a| a.1),
            },
            "memory_fixed_gateway": self.memory().iter().map(|(label, level, kib)| json!({
                "when": label, "streams": level, "rss_kib": kib,
            })).collect::<Vec<_>>(),
            "memory_broken_gateway": self.ramps.iter().find(|r| r.mode == "broken").map(|r| json!({
                "idle_rss_kib": r.idle_rss_kib,
                "after_rss_kib": r.after_rss_kib,
            })),
            "commands": self.commands,
            "elapsed_s": (self.elapsed.as_secs_f64() * 10.0).round() / 10.0,
            "of_which_build_s": (self.build_time.as_secs_f64() * 10.0).round() / 10.0,
        })
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# Benchmark{}, {}\n",
            if self.quick { " (quick)" } else { "" },
            self.date
        );
        let _ = writeln!(
            md,
            "- **Machine:** {}, open files limit {}.",
            self.machine.describe(),
            self.nofile
                .map(|n| n.to_string())
                .unwrap_or_else(|| "unknown".into())
        );
        let _ = writeln!(
            md,
            "- **Build:** release. **Commit:** {}. **Run:** `{}`, {:.0} s (of which {:.0} s building).",
            self.commit,
            if self.quick {
                "make bench-quick"
            } else {
                "make bench"
            },
            self.elapsed.as_secs_f64(),
            self.build_time.as_secs_f64()
        );
        let _ = writeln!(
            md,
            "- **Load:** mock-llm streams of {TOKENS} tokens, {ITL_MS} ms apart after a {TTFT_MS} ms TTFT; \
             `diag llm` for {} per level. A level is *held* when diag says sustained (no gap > 10 × 200 ms, \
             < 0.1% failed), ≥ {:.0}% of the paced tokens arrived, and `/health` p99 ≤ {HEALTH_P99_MAX_MS} ms.",
            self.plan.level_duration,
            MIN_TOKEN_RATIO * 100.0
        );
        let _ = writeln!(md, "- **Reference proxy:** {}.", self.nginx_note);
        if let Some(max) = self.max_streams {
            let _ = writeln!(
                md,
                "- **Open files:** the gateway holds 2 sockets per stream, so its limit allows about {max} streams."
            );
            let skipped: Vec<String> = self
                .ramps
                .iter()
                .flat_map(|r| r.skipped_levels.iter().map(|l| format!("{} {l}", r.mode)))
                .collect();
            if !skipped.is_empty() {
                let _ = writeln!(
                    md,
                    "- **Capped:** the open files limit allows the gateway about {max} streams; \
                     levels not run: {}.",
                    skipped.join(", ")
                );
            }
        }

        let _ = writeln!(md, "\n## Stream capacity\n");
        let _ = writeln!(
            md,
            "| mode | highest level held | events/s there | highest level with streams sustained (`/health` aside) |\n|---|---|---|---|"
        );
        for r in &self.ramps {
            let held = r.highest_held();
            let _ = writeln!(
                md,
                "| {} (pool {}) | {} | {} | {} |",
                r.mode,
                r.blocking_threads,
                held.map(|l| l.streams.to_string())
                    .unwrap_or_else(|| "none".into()),
                held.map(|l| format!("{:.0}", l.events_per_s))
                    .unwrap_or_else(|| "-".into()),
                r.highest_streams_ok()
                    .map(|l| l.streams.to_string())
                    .unwrap_or_else(|| "none".into()),
            );
        }
        let _ = writeln!(
            md,
            "\n| mode | streams | events/s | tokens / paced ideal | max gap | TTFT p99 | `/health` p99 | gateway RSS (peak) | held |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        for r in &self.ramps {
            for l in &r.levels {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} | {:.0}% | {} | {} | {} | {} | {} |",
                    r.mode,
                    l.streams,
                    l.events_per_s,
                    if l.expected_tokens > 0.0 {
                        100.0 * l.tokens / l.expected_tokens
                    } else {
                        0.0
                    },
                    opt_ms(l.max_gap_ms),
                    opt_ms(l.ttft_p99_ms),
                    opt_ms(l.health_p99_ms),
                    mib(l.rss_max_kib),
                    match &l.not_held {
                        None => "yes".to_string(),
                        Some(why) => format!("no: {why}"),
                    }
                );
            }
        }

        let _ = writeln!(
            md,
            "\n## Overhead (non-streaming, `max_tokens: 1`, no mock delay, -c 50, {})\n",
            self.plan.overhead_duration
        );
        let _ = writeln!(
            md,
            "| target | req/s | p50 | p99 | non-200 | errors |\n|---|---|---|---|---|---|"
        );
        for o in &self.overhead {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.3} ms | {:.3} ms | {} | {} |",
                o.target, o.rps, o.p50_ms, o.p99_ms, o.non_200, o.errors
            );
        }
        if let Some((p50, p99)) = self.added_latency() {
            let _ = writeln!(
                md,
                "\nThe gateway adds {p50:.3} ms at p50 and {p99:.3} ms at p99 over the direct run."
            );
        }

        let _ = writeln!(md, "\n## Gateway memory (fixed, VmRSS)\n");
        let _ = writeln!(md, "| when | RSS |\n|---|---|");
        for (label, _, kib) in self.memory() {
            let _ = writeln!(md, "| {label} | {} |", mib(kib));
        }

        md.push_str(&commands_section(&self.commands));
        md
    }
}

#[derive(Debug)]
struct Machine {
    cores: usize,
    cpu: String,
    memory_kib: Option<u64>,
    kernel: String,
}

impl Machine {
    /// "2 cores (model), 24 GiB RAM, Linux 6.18.44": one line for a results file's head.
    fn describe(&self) -> String {
        format!(
            "{} cores ({}), {}, Linux {}",
            self.cores,
            self.cpu,
            self.memory_kib
                .map(|k| format!("{:.0} GiB RAM", k as f64 / 1024.0 / 1024.0))
                .unwrap_or_else(|| "RAM unknown".into()),
            self.kernel
        )
    }
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        memory_kib: kib_field(&meminfo, "MemTotal:"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
    }
}

/// `git rev-parse --short HEAD`, with `-dirty` when tracked files differ from it.
fn commit() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(project_root())
            .args(args)
            .output()
            .ok()
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]).filter(|o| o.status.success()) else {
        return "unknown".into();
    };
    let mut commit = String::from_utf8_lossy(&head.stdout).trim().to_string();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        commit.push_str("-dirty");
    }
    commit
}

/// The soft `RLIMIT_NOFILE` this process (and so its children) runs with, from /proc.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Resident memory of `pid` in KiB (`VmRSS`), or `None` if it cannot be read.
fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A KiB field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), or `None` if it cannot be read.
fn status_kib(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, name)
}

/// The body of `GET url`; a non-2xx answer is an error.
fn http_get(url: &str) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("GET {url}: cannot read the body"))
}

/// The Prometheus reader shared with the gateway's tests.
use common::prometheus::samples as metric_samples;

/// The value of the sample named exactly `name`, 0 when the gateway has not exposed it yet.
fn metric(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0.0, |(_, v)| *v)
}

/// A latency as the scripts printed it: seconds with two decimals from 1 s up, else
/// milliseconds with `ms_decimals` decimals; "n/a" when diag had no sample.
fn secs_or_ms(ms: Option<f64>, ms_decimals: usize) -> String {
    match ms {
        None => "n/a".into(),
        Some(ms) if ms >= 1000.0 => format!("{:.2} s", ms / 1000.0),
        Some(ms) => format!("{ms:.ms_decimals$} ms"),
    }
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("diag wrote no {path:?}"))?;
    serde_json::from_str(&text).with_context(|| format!("{path:?} is not JSON"))
}

fn field<'a>(v: &'a Value, path: &str) -> Result<&'a Value> {
    path.split('.').try_fold(v, |v, key| {
        v.get(key)
            .with_context(|| format!("diag's report has no field `{path}`"))
    })
}

fn num(v: &Value, path: &str) -> Result<f64> {
    field(v, path)?
        .as_f64()
        .with_context(|| format!("`{path}` in diag's report is not a number"))
}

fn opt_num(v: &Value, path: &str) -> Result<Option<f64>> {
    let f = field(v, path)?;
    if f.is_null() {
        return Ok(None);
    }
    f.as_f64()
        .map(Some)
        .with_context(|| format!("`{path}` in diag's report is not a number"))
}

/// `section.key` when diag wrote the section, `None` when the section is null (diag leaves a
/// latency section null when nothing was measured, e.g. no stream got a first token).
fn section_num(v: &Value, section: &str, key: &str) -> Result<Option<f64>> {
    if field(v, section)?.is_null() {
        return Ok(None);
    }
    opt_num(v, &format!("{section}.{key}"))
}

fn uint(v: &Value, path: &str) -> Result<u64> {
    field(v, path)?
        .as_u64()
        .with_context(|| format!("`{path}` in diag's report is not an integer"))
}

fn str_field(v: &Value, path: &str) -> Result<String> {
    field(v, path)?
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("`{path}` in diag's report is not a string"))
}

/// Milliseconds to microseconds' precision, as diag reports them.
fn round3(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

fn opt_ms(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms"))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_string()).collect()
}

/// A path relative to the workspace root when it is inside it.
fn rel(path: &Path) -> String {
    path.strip_prefix(project_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A command as it could be pasted into a shell.
fn command_line(program: &Path, args: &[String]) -> String {
    let root = format!("{}/", project_root().display());
    let mut line = rel(program);
    for arg in args {
        let arg = &arg.replace(&root, "");
        line.push(' ');
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./:=,@%+-".contains(c));
        if plain {
            line.push_str(arg);
        } else {
            let _ = write!(line, "'{}'", arg.replace('\'', r"'\''"));
        }
    }
    line
}

/// `YYYY-MM-DD HH:MM UTC` for a time, without a date crate (days to civil date, H. Hinnant).
fn utc_datetime(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_datetime(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_434_600);
        assert_eq!(utc_datetime(t), "2026-11-23 11:50 UTC");
    }

    #[test]
    fn commands_are_quoted_for_a_shell() {
        let line = command_line(
            Path::new("/x/diag"),
            &strings(&["-H", "a: b", "it's", "-c"]),
        );
        assert_eq!(line, r"/x/diag -H 'a: b' 'it'\''s' -c");
    }

    #[test]
    fn metrics_are_read_by_prefix() {
        let text = "# HELP gateway_shed_total x\n\
                    gateway_shed_total{reason=\"queue_full\"} 6100\n\
                    gateway_shed_total{reason=\"queue_timeout\"} 900\n\
                    gateway_hedges_fired_total 77\n";
        let shed = metric_samples(text, "gateway_shed_total{");
        assert_eq!(shed.len(), 2);
        assert_eq!(
            metric(&shed, "gateway_shed_total{reason=\"queue_timeout\"}"),
            900.0
        );
        let hedges = metric_samples(text, "gateway_hedges_");
        assert_eq!(metric(&hedges, "gateway_hedges_fired_total"), 77.0);
        assert_eq!(metric(&hedges, "gateway_hedges_won_total"), 0.0);
    }

    #[test]
    fn latencies_read_like_the_committed_tables() {
        assert_eq!(secs_or_ms(Some(1128.447), 1), "1.13 s");
        assert_eq!(secs_or_ms(Some(205.6), 1), "205.6 ms");
        assert_eq!(secs_or_ms(Some(102.3), 0), "102 ms");
        assert_eq!(secs_or_ms(None, 0), "n/a");
    }

    #[test]
    fn missing_fields_are_named() {
        let v = json!({"a": {"b": 1}});
        assert_eq!(num(&v, "a.b").ok(), Some(1.0));
        let err = num(&v, "a.c").err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("diag's report has no field `a.c`"));
    }
}
