//! `cargo xtask bench ratelimit`: what counting the rate limits in the shared Redis costs.
//!
//! A shared check is one Lua script run by Redis (`gateway/src/ratelimit/gcra.lua`), one round
//! trip per request. Two measurements, both against a throwaway `redis-server` from
//! `common::services` (the benchmark fails without one: it measures nothing else):
//!
//! - **The check alone**: `redis-benchmark` runs `EVALSHA` of the gateway's own script (loaded
//!   with `redis-cli SCRIPT LOAD`) 1 and 16 at a time: Redis's side of a check, plus a loopback
//!   round trip from a C client.
//! - **What a request pays**: `diag load` sends one non-streamed chat completion through the
//!   gateway (fixed mode; the mock answers at once), 1 and 16 at a time, with no rate limit, the
//!   limit in process, and the limit in Redis. The limit is 10,000,000 rpm, so nothing is ever
//!   refused and every request runs the check; the difference between the rows is its cost.
//!
//! Results: `bench/results/<date>-ratelimit.{md,json}` and diag's report of each run.

use std::fmt::Write as _;
use std::process::Command;

use anyhow::{Context, Result, bail};
use common::services::{Redis, Service};
use serde_json::{Value, json};

use crate::bench::observe::samples_at;
use crate::bench::reports::{self, LoadReport, non_200, p50_p99_ms};
use crate::bench::results::{Results, commands_section, head};
use crate::bench::session::{Gateway, Runner, Session, post_load_args, strings};
use crate::cli::BenchArgs;
use crate::project_root;

const MOCK_ARGS: [&str; 6] = ["--ttft-ms", "0", "--itl-ms", "0", "--tokens", "4"];
const BODY: &str =
    r#"{"model":"mock-1","messages":[{"role":"user","content":"How fast is a check?"}]}"#;
/// High enough that nothing is refused in a run: every request runs the whole check.
const RPM: &str = "10000000";
const CONCURRENCY: [&str; 2] = ["1", "16"];

/// Where the limit is counted in one diag run.
#[derive(Clone, Copy)]
enum Limit {
    Off,
    Local,
    Redis,
}

impl Limit {
    const ALL: [Limit; 3] = [Limit::Off, Limit::Local, Limit::Redis];

    fn name(self) -> &'static str {
        match self {
            Limit::Off => "off",
            Limit::Local => "local",
            Limit::Redis => "redis",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Limit::Off => "no rate limit",
            Limit::Local => "`--rate-limit-rpm`, in process (governor)",
            Limit::Redis => "`--rate-limit-rpm --redis-url`, in Redis (the Lua script)",
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let duration = if args.quick { "3s" } else { "10s" };
    let checks = if args.quick { "20000" } else { "100000" };
    let mut session = Session::begin("-ratelimit")?;
    let mut results = Results::new(args, &session.clock, "ratelimit");
    let runner = &mut session.runner;
    let Some(redis) = Redis::start_for("bench ratelimit") else {
        bail!(
            "bench ratelimit measures Redis: {}",
            Service::Redis.install_line()
        );
    };
    runner.commands.push(format!(
        "redis-server --port {} --bind 127.0.0.1 --save '' --appendonly no &",
        redis.port()
    ));

    println!("\n=== bench ratelimit: the script alone (redis-benchmark)");
    let sha = load_script(runner, &redis)?;
    let mut script_rows = Vec::new();
    let mut script_json = Vec::new();
    for clients in CONCURRENCY {
        let (row, value) = script_run(runner, &redis, &sha, clients, checks)?;
        println!("xtask: {clients} at a time: {row}");
        script_rows.push(row);
        script_json.push(value);
    }

    let mut rows = Vec::new();
    let mut load_json = Vec::new();
    for concurrency in CONCURRENCY {
        for limit in Limit::ALL {
            println!(
                "\n=== bench ratelimit: {}, {concurrency} at a time",
                limit.name()
            );
            let (row, value) =
                load_run(runner, limit, &redis, concurrency, duration, &mut results)?;
            println!("xtask: {row}");
            rows.push(row);
            load_json.push(value);
        }
    }

    let load = format!(
        "Redis {} on loopback. The check alone: `redis-benchmark -n {checks}` of `EVALSHA` of \
         the gateway's script, one bucket. Through the gateway: `diag load -z {duration}`, one \
         non-streamed chat completion, upstream `mock-llm {}` (answers at once), \
         `--rate-limit-rpm {RPM}` (nothing refused: every request runs the check).",
        redis_version(),
        MOCK_ARGS.join(" ")
    );
    let mut md = head(
        &session.clock,
        "Shared rate limits: what a check in Redis costs",
        "ratelimit",
        args.quick,
        &load,
    );
    md.push_str(
        "\nThe check alone, in Redis:\n\n| at a time | checks | checks/s | p50 | p99 | max \
         |\n|---|---|---|---|---|---|\n",
    );
    for row in &script_rows {
        let _ = writeln!(md, "{row}");
    }
    md.push_str(
        "\nWhat a request pays, through the gateway:\n\n| at a time | limit | requests | req/s | \
         latency p50 | latency p99 | not 200 | checks decided locally |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        let _ = writeln!(md, "{row}");
    }
    md.push_str(&commands_section(&session.runner.commands));
    results.markdown(md);
    results.json(&json!({"script": script_json, "through_gateway": load_json}))?;
    results.write("bench ratelimit done")
}

/// `SCRIPT LOAD` of the gateway's own script: its SHA-1, what the gateway sends with EVALSHA.
fn load_script(runner: &mut Runner, redis: &Redis) -> Result<String> {
    let path = project_root().join("gateway/src/ratelimit/gcra.lua");
    let script = std::fs::read_to_string(&path).with_context(|| format!("{path:?}"))?;
    let port = redis.port().to_string();
    runner.commands.push(format!(
        "redis-cli -p {port} SCRIPT LOAD \"$(cat gateway/src/ratelimit/gcra.lua)\""
    ));
    let sha = output(Command::new("redis-cli").args(["-p", &port, "SCRIPT", "LOAD", &script]))?;
    let sha = sha.trim().to_owned();
    if sha.len() != 40 {
        bail!("redis-cli SCRIPT LOAD answered {sha:?}");
    }
    Ok(sha)
}

/// `redis-benchmark` of one check (1 rpm bucket at the benchmark's rate), `clients` at a time.
fn script_run(
    runner: &mut Runner,
    redis: &Redis,
    sha: &str,
    clients: &str,
    checks: &str,
) -> Result<(String, Value)> {
    let port = redis.port().to_string();
    // 6 µs a request (10,000,000 rpm), a burst as large: never refused, always written.
    let args = [
        "-p",
        &port,
        "-n",
        checks,
        "-c",
        clients,
        "--csv",
        "EVALSHA",
        sha,
        "1",
        "gateway:ratelimit:v1:bench",
        "6",
        RPM,
    ];
    runner
        .commands
        .push(format!("redis-benchmark {}", args.join(" ")));
    let csv = output(Command::new("redis-benchmark").args(args))?;
    let fields = csv_row(&csv)?;
    let field = |name: &str| -> Result<f64> {
        fields
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| value.parse().ok())
            .with_context(|| format!("redis-benchmark printed no {name}: {csv}"))
    };
    let (rps, p50, p99, max) = (
        field("rps")?,
        field("p50_latency_ms")?,
        field("p99_latency_ms")?,
        field("max_latency_ms")?,
    );
    let row = format!(
        "| {clients} | {checks} | {rps:.0} | {:.0} µs | {:.0} µs | {max:.1} ms |",
        p50 * 1000.0,
        p99 * 1000.0
    );
    let value = json!({"clients": clients, "checks": checks, "checks_per_s": rps,
        "latency_ms": {"p50": p50, "p99": p99, "max": max}});
    Ok((row, value))
}

/// redis-benchmark's `--csv`: a header line and one row, every field quoted.
fn csv_row(csv: &str) -> Result<Vec<(String, String)>> {
    let mut lines = csv.lines().filter(|line| line.starts_with('"'));
    let split = |line: &str| -> Vec<String> {
        line.split("\",\"")
            .map(|field| field.trim_matches('"').to_owned())
            .collect()
    };
    let (Some(header), Some(row)) = (lines.next(), lines.next()) else {
        bail!("redis-benchmark --csv printed no table: {csv}");
    };
    Ok(split(header).into_iter().zip(split(row)).collect())
}

/// One diag load run against a fresh mock and gateway; its row and its JSON.
fn load_run(
    runner: &mut Runner,
    limit: Limit,
    redis: &Redis,
    concurrency: &str,
    duration: &str,
    results: &mut Results,
) -> Result<(String, Value)> {
    let (mock, mock_listen) = runner.start_mock(&strings(&MOCK_ARGS))?;
    let mut flags = strings(&["--mode", "fixed"]);
    match limit {
        Limit::Off => {}
        Limit::Local => flags.extend(strings(&["--rate-limit-rpm", RPM])),
        Limit::Redis => flags.extend(strings(&[
            "--rate-limit-rpm",
            RPM,
            "--redis-url",
            &redis.url(),
        ])),
    }
    let Gateway {
        service: gateway,
        listen,
        ..
    } = runner.start_gateway(mock_listen, &flags)?;
    let url = format!("http://{listen}/v1/chat/completions");
    let run = format!("{}-c{concurrency}", limit.name());
    let report_path = runner.work_dir.join(format!("ratelimit-{run}.json"));
    runner.diag(&post_load_args(
        &url,
        BODY,
        concurrency,
        duration,
        &report_path,
    ))?;
    let metrics = samples_at(listen, "gateway_rate_limit_fallback_total")?;
    let fell_back: f64 = metrics.iter().map(|(_, v)| v).sum();
    drop(gateway);
    drop(mock);
    let report: LoadReport = reports::read(&report_path)?;
    results.diag_report(&run, &report_path)?;
    let (p50, p99) = p50_p99_ms(&report)?;
    let row = format!(
        "| {concurrency} | {} | {} | {:.0} | {p50:.3} ms | {p99:.3} ms | {} | {fell_back:.0} |",
        limit.label(),
        report.requests.total,
        report.rps,
        non_200(&report),
    );
    let value = json!({
        "limit": limit.name(), "concurrency": concurrency, "requests": report.requests.total,
        "rps": report.rps, "latency_ms": {"p50": p50, "p99": p99}, "not_200": non_200(&report),
        "checks_decided_locally": fell_back,
    });
    Ok((row, value))
}

/// `redis-server --version`'s `v=…`, for the results' head.
fn redis_version() -> String {
    Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_whitespace()
                .find_map(|word| word.strip_prefix("v=").map(str::to_owned))
        })
        .unwrap_or_else(|| "(version unknown)".into())
}

/// A command's standard output; its failure, with its standard error, otherwise.
fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmarks_csv_is_read_by_name() {
        let csv =
            "\"test\",\"rps\",\"p50_latency_ms\"\n\"EVALSHA x 1 b 6 1\",\"8791.21\",\"0.031\"\n";
        let fields = csv_row(csv).expect("a table");
        assert_eq!(fields[1], ("rps".to_owned(), "8791.21".to_owned()));
        assert_eq!(fields[2], ("p50_latency_ms".to_owned(), "0.031".to_owned()));
        assert!(csv_row("ERROR\n").is_err());
    }
}
