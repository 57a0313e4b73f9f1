//! `cargo xtask bench fleet` (`make bench-fleet`): the fleet of issue 16 measured. With 1, 2 and
//! 3 gateways behind HAProxy (the shipped `deploy/haproxy.cfg`, free ports, no Redis or
//! Postgres: nothing here uses them):
//!
//! - **non-streaming requests per second** through HAProxy: `diag load` of short chat
//!   completions (a mock answering at once) at c = 64, with HAProxy's CPU time per request and
//!   the gateways' together, from `/proc/PID/stat`;
//! - **streams held**: `diag llm -c N` of paced streams (200 ms to the first token, 50 tokens
//!   100 ms apart) through HAProxy, and whether the fleet sustained them (no gap between tokens
//!   over 10 x the 100 ms pace, under 0.1 % failed);
//! - **how fast HAProxy stops sending to a starved instance** (with 3): the last gateway
//!   restarted in broken mode with a pool of 2, its pool held by streams sent to its own port,
//!   then the time to its `/readyz` 503 and to HAProxy's `DOWN`, three times.
//!
//! Expect no gain from more instances on this machine: every process (diag, HAProxy, the
//! gateways, the mock) shares the same 2 cores, so a second gateway adds no CPU, only another
//! process to schedule and HAProxy's hop in front of all of them. A fleet scales out where each
//! instance gets cores of its own; what it buys on one box is what the demo shows: an instance
//! can leave, starve or restart without a client noticing.
//!
//! Results: `bench/results/<date>-fleet[-quick].{json,md}` and diag's report of each run.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use crate::bench::observe::cpu_time;
use crate::bench::reports::{self, LlmReport, LoadReport};
use crate::bench::results::{Results, command_line, commands_section, head, secs_or_ms};
use crate::bench::session::{Runner, Session, strings};
use crate::cli::BenchArgs;
use crate::fleet::steps::{restart, saturate, starvation};
use crate::fleet::{Fleet, How, Layout, Needs, refuse_missing};

/// The mock answers at once, so a non-streaming request measures the proxies, not the upstream;
/// the streams ask for their pacing per request (`x-mock-*`, relayed by the gateway).
const MOCK_FLAGS: [&str; 6] = ["--ttft-ms", "0", "--itl-ms", "0", "--tokens", "8"];
const PACED: [&str; 6] = [
    "-H",
    "x-mock-ttft-ms: 200",
    "-H",
    "x-mock-itl-ms: 100",
    "-H",
    "x-mock-tokens: 50",
];

/// One fleet size's numbers.
struct Row {
    instances: usize,
    load: LoadReport,
    /// HAProxy's and the gateways' CPU time per non-streaming request, in ms.
    haproxy_ms: Option<f64>,
    gateways_ms: Option<f64>,
    llm: LlmReport,
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    if let Some(code) = refuse_missing(Needs::NONE) {
        return Ok(code);
    }
    let (duration, streams, starves) = if args.quick {
        ("4s", 200, 1)
    } else {
        ("10s", 1000, 3)
    };
    let mut session = Session::begin(if args.quick { "-fleet-quick" } else { "-fleet" })?;
    let mut results = Results::new(args, &session.clock, "fleet");
    let runner = &mut session.runner;
    let mut rows = Vec::new();
    let mut starved = Vec::new();
    for instances in 1..=3 {
        println!("\n=== bench fleet: {instances} gateway(s) behind HAProxy");
        let mut fleet = start(runner, instances)?;
        let row = measure(runner, &mut results, &fleet, duration, streams)?;
        rows.push(row);
        if instances == 3 {
            for run in 1..=starves {
                starved.push(starve_once(&mut fleet, run)?);
            }
        }
    }
    let json = json!({
        "kind": "fleet",
        "machine": crate::bench::results::machine().describe(),
        "load": {"duration": duration, "concurrency": 64, "streams": streams},
        "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
        "starved": starved,
    });
    results.json(&json)?;
    results.markdown(markdown(
        &session.clock,
        args.quick,
        &rows,
        &starved,
        streams,
        duration,
        &runner.commands,
    ));
    results.write("bench fleet done")?;
    Ok(ExitCode::SUCCESS)
}

/// A fleet of `instances` on free ports under the run's directory, its commands recorded.
fn start(runner: &mut Runner, instances: usize) -> Result<Fleet> {
    let dir = runner.work_dir.join(format!("fleet-{instances}"));
    let fleet = Fleet::start(
        &dir,
        runner.bin_dir(),
        Layout::free(instances)?,
        Needs::NONE,
        &strings(&MOCK_FLAGS),
    )?;
    let mut mock_args = strings(&["--listen", &fleet.layout.mock.to_string()]);
    mock_args.extend(strings(&MOCK_FLAGS));
    runner.note(command_line(&runner.bin_dir().join("mock-llm"), &mock_args) + " &");
    let gateway = runner.bin_dir().join("gateway");
    for i in 0..instances {
        let args = fleet.gateways.args(i, &How::default());
        runner.note(command_line(&gateway, &args) + " &");
    }
    runner.note(format!(
        "haproxy -db -f {}  # deploy/haproxy.cfg rendered with the ports above",
        crate::bench::results::rel(&fleet.haproxy.config_file())
    ));
    Ok(fleet)
}

/// Sum of the CPU time of `pids` so far.
fn cpu(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|&pid| cpu_time(pid)).sum()
}

fn measure(
    runner: &mut Runner,
    results: &mut Results,
    fleet: &Fleet,
    duration: &str,
    streams: u32,
) -> Result<Row> {
    let instances = fleet.gateways.list.len();
    let haproxy = fleet.haproxy.pid().unwrap_or(0);
    let gateways: Vec<u32> = fleet
        .gateways
        .list
        .iter()
        .filter_map(|g| g.service.as_ref().map(|s| s.pid()))
        .collect();
    let url = fleet.url();
    let body = json!({"model": "mock-1", "messages": [{"role": "user", "content": "hi"}]});
    let load_path = runner.work_dir.join(format!("fleet-{instances}-load.json"));
    let (proxy_before, gateways_before) = (cpu(&[haproxy]), cpu(&gateways));
    runner.diag(&strings(&[
        "load",
        &format!("{url}/v1/chat/completions"),
        "-z",
        duration,
        "-c",
        "64",
        "-m",
        "POST",
        "-T",
        "application/json",
        "-d",
        &body.to_string(),
        "--no-progress",
        "--json",
        &load_path.to_string_lossy(),
    ]))?;
    let (proxy_spent, gateways_spent) = (
        cpu(&[haproxy]) - proxy_before,
        cpu(&gateways) - gateways_before,
    );
    let load: LoadReport = reports::read(&load_path)?;
    results.diag_report(&format!("{instances}-load"), &load_path)?;
    let answered = load.requests.total.max(1) as f64;
    let per_request = |spent: Duration| Some(spent.as_secs_f64() * 1e3 / answered);

    let llm_path = runner.work_dir.join(format!("fleet-{instances}-llm.json"));
    let mut llm_args = strings(&[
        "llm",
        "--base-url",
        &url,
        "-c",
        &streams.to_string(),
        "-z",
        duration,
        "--timeout",
        "30s",
        // The mock's pace, so "sustained" means no gap over 1 s; the median gap seen would be
        // near 0, since at this load several tokens often arrive in one read.
        "--pacing-ms",
        "100",
        "--no-progress",
        "--json",
        &llm_path.to_string_lossy(),
    ]);
    llm_args.extend(strings(&PACED));
    runner.diag(&llm_args)?;
    let llm: LlmReport = reports::read(&llm_path)?;
    results.diag_report(&format!("{instances}-llm"), &llm_path)?;
    Ok(Row {
        instances,
        haproxy_ms: per_request(proxy_spent),
        gateways_ms: per_request(gateways_spent),
        load,
        llm,
    })
}

/// Starves the last gateway once (broken mode, a pool of 2, 3 streams of 8 s to its own port)
/// and times its `/readyz` 503 and HAProxy's `DOWN`; then lets it recover and restarts it fixed.
fn starve_once(fleet: &mut Fleet, run: usize) -> Result<Value> {
    let victim = fleet.gateways.list.len() - 1;
    println!("xtask: starve run {run}: the last gateway in broken mode, its pool held");
    restart(fleet, victim, How::broken(2))?;
    let holders = saturate(fleet.gateways.list[victim].main, 3, 8);
    let found = starvation(fleet, victim, Duration::from_secs(15));
    for holder in holders {
        let _ = holder.join();
    }
    restart(fleet, victim, How::default())?;
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    Ok(json!({
        "run": run,
        "readyz_503_s": secs(found.readyz_503),
        "haproxy_down_s": secs(found.down),
        "down_after_503_s": match (found.readyz_503, found.down) {
            (Some(r), Some(d)) => Some(d.saturating_sub(r).as_secs_f64()),
            _ => None,
        },
    }))
}

fn row_json(row: &Row) -> Value {
    json!({
        "instances": row.instances,
        "rps": row.load.rps,
        "latency_ms": {"p50": row.load.latency_ms.p50, "p99": row.load.latency_ms.p99},
        "non_200": reports::non_200(&row.load),
        "haproxy_cpu_ms_per_request": row.haproxy_ms,
        "gateways_cpu_ms_per_request": row.gateways_ms,
        "streams": row.llm.streams,
        "sustained": row.llm.sustained,
        "sustained_reason": row.llm.sustained_reason,
        "ttft_ms": row.llm.ttft_ms,
    })
}

fn markdown(
    clock: &crate::bench::results::Clock,
    quick: bool,
    rows: &[Row],
    starved: &[Value],
    streams: u32,
    duration: &str,
    commands: &[String],
) -> String {
    let load = format!(
        "Load: per fleet size, `diag load` of non-streaming chat completions at c = 64 for {duration} \
         (the mock answers at once), then `diag llm -c {streams}` of paced streams (200 ms to the first \
         token, 50 tokens 100 ms apart) for {duration}, both through HAProxy. CPU times from \
         /proc/PID/stat over the `diag load` run."
    );
    let mut md = head(
        clock,
        "Fleet: gateways behind HAProxy",
        "fleet",
        quick,
        &load,
    );
    md.push_str(
        "\n| gateways | req/s | p50 | p99 | not 200 | HAProxy CPU / request | gateways' CPU / request \
         | streams open | failed | sustained | TTFT p99 | largest gap |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3} ms"));
    for row in rows {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.instances,
            row.load.rps,
            secs_or_ms(row.load.latency_ms.p50, 1),
            secs_or_ms(row.load.latency_ms.p99, 1),
            reports::non_200(&row.load),
            ms(row.haproxy_ms),
            ms(row.gateways_ms),
            streams,
            row.llm.streams.failed,
            if row.llm.sustained { "yes" } else { "no" },
            secs_or_ms(row.llm.ttft_ms.p99, 0),
            secs_or_ms(row.llm.max_gap_ms, 0),
        );
    }
    md.push_str(
        "\nA starved instance (broken mode, a pool of 2 held by 3 streams sent to its own port), \
         timed from the moment its pool was taken:\n\n\
         | run | its /readyz says 503 | HAProxy marks it DOWN | DOWN after the 503 |\n|---|---|---|---|\n",
    );
    for run in starved {
        let s = |key: &str| {
            run[key]
                .as_f64()
                .map_or("never".into(), |v| format!("{v:.2} s"))
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            run["run"],
            s("readyz_503_s"),
            s("haproxy_down_s"),
            s("down_after_503_s")
        );
    }
    md.push_str(
        "\nWhy more gateways add nothing here: every process (diag, HAProxy, each gateway, the \
         mock) shares the same 2 cores, so the second and third gateway bring no CPU, only more \
         processes to schedule, while HAProxy's hop costs the same per request whatever stands \
         behind it. The DOWN time is HAProxy's rule, not a measurement of the gateway: two \
         failed checks one second apart (`inter 1s fall 2`) after `/readyz` turns 503.\n",
    );
    md.push_str(&commands_section(commands));
    md
}
