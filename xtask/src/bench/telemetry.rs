//! `cargo xtask bench observe`: what the gateway's observability costs, in CPU per request.
//!
//! The same non-streamed chat completion (16 tokens from a mock that answers at once) is sent
//! through a fresh gateway (fixed mode) in five set-ups, side by side in one run:
//!
//! | run | `RUST_LOG` | `--log-format` | `--otlp-endpoint` |
//! |---|---|---|---|
//! | `logs off` | `off` | text | none |
//! | `text` | `info` (one access line per request) | text | none |
//! | `json` | `info` | json | none |
//! | `logs off, traces` | `off` | text | an OTLP sink |
//! | `text, traces` | `info` | text | an OTLP sink |
//!
//! Each run: `diag load -n N -c 16`, and the gateway's CPU time (utime + stime from
//! `/proc/PID/stat`) over exactly those requests, divided by them. Wall-clock throughput on this
//! shared 2-core machine wanders with whatever else runs; CPU time per request is what the
//! process itself spent, and holds steady. The rounds interleave the set-ups (1 2 3 4 5, 1 2 3 4
//! 5, ...) so a neighbour's burst falls on all of them alike; the table gives each set-up's
//! median and its spread.
//!
//! The OTLP sink is a few lines of HTTP on a thread here: it accepts every export with a 200 and
//! counts the bytes, so the gateway pays for building, encoding and sending its spans, as with a
//! real collector, and the sink's own work is not on the gateway's clock.
//!
//! Results: `bench/results/<date>-observe.{md,json}` and diag's report of each run.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use serde_json::json;

use crate::bench::observe::cpu_time;
use crate::bench::reports::{self, LoadReport, non_200, p50_p99_ms};
use crate::bench::results::{Results, commands_section, head};
use crate::bench::session::{Gateway, Runner, Session, strings};
use crate::cli::BenchArgs;

const MOCK_ARGS: [&str; 8] = [
    "--ttft-ms",
    "0",
    "--itl-ms",
    "0",
    "--tokens",
    "16",
    "--seed",
    "1",
];
const BODY: &str =
    r#"{"model":"mock-1","messages":[{"role":"user","content":"How much does a log line cost?"}]}"#;
const CONCURRENCY: &str = "16";

/// One set-up: its name, the gateway's `RUST_LOG` and flags, and whether it exports traces.
struct Setup {
    name: &'static str,
    rust_log: &'static str,
    json: bool,
    traces: bool,
}

const SETUPS: [Setup; 5] = [
    Setup {
        name: "logs off",
        rust_log: "off",
        json: false,
        traces: false,
    },
    Setup {
        name: "text",
        rust_log: "info",
        json: false,
        traces: false,
    },
    Setup {
        name: "json",
        rust_log: "info",
        json: true,
        traces: false,
    },
    Setup {
        name: "logs off, traces",
        rust_log: "off",
        json: false,
        traces: true,
    },
    Setup {
        name: "text, traces",
        rust_log: "info",
        json: false,
        traces: true,
    },
];

/// One run's figures.
struct Run {
    cpu_us_per_request: f64,
    requests: u64,
    rps: f64,
    p50: f64,
    p99: f64,
    not_200: u64,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let (requests, rounds) = if args.quick { (1_000, 1) } else { (4_000, 3) };
    let mut session = Session::begin("-observe")?;
    let mut results = Results::new(args, &session.clock, "observe");
    let sink = Sink::start()?;
    let runner = &mut session.runner;
    runner.commands.push(format!(
        "# an OTLP/HTTP sink on {} (xtask's own: every POST answered 200)",
        sink.addr
    ));
    let mut runs: Vec<Vec<Run>> = SETUPS.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (setup, done) in SETUPS.iter().zip(&mut runs) {
            println!(
                "\n=== bench observe: {}, round {round}/{rounds}",
                setup.name
            );
            let run = load_run(runner, setup, &sink, requests, round, &mut results)?;
            println!(
                "xtask: {}: {:.1} µs CPU per request, {:.0} req/s",
                setup.name, run.cpu_us_per_request, run.rps
            );
            done.push(run);
        }
    }

    let load = format!(
        "Upstream: `mock-llm {}` (16 tokens, answered at once). Load: `diag load -n {requests} -c \
         {CONCURRENCY}`, one non-streamed chat completion, through the gateway (fixed mode), \
         {rounds} round(s) of the five set-ups interleaved. CPU: the gateway's utime + stime from \
         `/proc/PID/stat` across the run, per request.",
        MOCK_ARGS.join(" ")
    );
    let mut md = head(
        &session.clock,
        "What observability costs: CPU per request with logs off, text, JSON, and traces",
        "observe",
        args.quick,
        &load,
    );
    md.push_str(
        "\n| set-up | `RUST_LOG` | format | traces | CPU per request (median) | min .. max | vs logs off \
         | req/s (median) | p50 | p99 | not 200 |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let baseline = median(&runs[0], |r| r.cpu_us_per_request);
    let mut json_setups = Vec::new();
    for (setup, done) in SETUPS.iter().zip(&runs) {
        let cpu = median(done, |r| r.cpu_us_per_request);
        let (min, max) = spread(done, |r| r.cpu_us_per_request);
        let rps = median(done, |r| r.rps);
        let p50 = median(done, |r| r.p50);
        let p99 = median(done, |r| r.p99);
        let not_200: u64 = done.iter().map(|r| r.not_200).sum();
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {cpu:.1} µs | {min:.1} .. {max:.1} | {:+.1} µs | {rps:.0} | \
             {p50:.2} ms | {p99:.2} ms | {not_200} |",
            setup.name,
            setup.rust_log,
            if setup.json { "json" } else { "text" },
            if setup.traces { "OTLP" } else { "off" },
            cpu - baseline,
        );
        json_setups.push(json!({
            "setup": setup.name, "rust_log": setup.rust_log, "json": setup.json,
            "traces": setup.traces, "cpu_us_per_request_median": cpu,
            "cpu_us_per_request": done.iter().map(|r| r.cpu_us_per_request).collect::<Vec<_>>(),
            "requests": done.iter().map(|r| r.requests).collect::<Vec<_>>(),
            "rps_median": rps, "latency_ms_median": {"p50": p50, "p99": p99}, "not_200": not_200,
        }));
    }
    let _ = write!(
        md,
        "\nThe OTLP sink received {} exports, {} bytes in all.\n",
        sink.posts.load(Ordering::Relaxed),
        sink.bytes.load(Ordering::Relaxed)
    );
    md.push_str(&commands_section(&session.runner.commands));
    results.markdown(md);
    results.json(&json!({"setups": json_setups}))?;
    results.write("bench observe done")
}

/// One diag load run against a fresh mock and gateway set up as `setup`.
fn load_run(
    runner: &mut Runner,
    setup: &Setup,
    sink: &Sink,
    requests: u64,
    round: u32,
    results: &mut Results,
) -> Result<Run> {
    let (mock, mock_listen) = runner.start_mock(&strings(&MOCK_ARGS))?;
    let mut flags = strings(&["--mode", "fixed", "--jobs-store", "off"]);
    if setup.json {
        flags.extend(strings(&["--log-format", "json"]));
    }
    if setup.traces {
        flags.extend(strings(&[
            "--otlp-endpoint",
            &format!("http://{}", sink.addr),
        ]));
    }
    let env = [("RUST_LOG", setup.rust_log), ("NO_COLOR", "1")];
    let Gateway {
        service: gateway,
        listen,
        ..
    } = runner.start_gateway_env(mock_listen, &flags, &env)?;
    let url = format!("http://{listen}/v1/chat/completions");
    let slug = setup.name.replace([',', ' '], "-").replace("--", "-");
    let report_path = runner.work_dir.join(format!("observe-{slug}-{round}.json"));
    let diag_args = strings(&[
        "load",
        &url,
        "-m",
        "POST",
        "-T",
        "application/json",
        "-d",
        BODY,
        "-c",
        CONCURRENCY,
        "-n",
        &requests.to_string(),
        "--no-progress",
        "--json",
        &report_path.to_string_lossy(),
    ]);
    let cpu_now = || cpu_time(gateway.pid()).context("cannot read the gateway's /proc/PID/stat");
    let before = cpu_now()?;
    runner.diag(&diag_args)?;
    let after = cpu_now()?;
    drop(gateway);
    drop(mock);
    let report: LoadReport = reports::read(&report_path)?;
    results.diag_report(&format!("{slug}-{round}"), &report_path)?;
    let (p50, p99) = p50_p99_ms(&report)?;
    let total = report.requests.total;
    #[allow(clippy::cast_precision_loss)]
    let cpu_us_per_request = after.saturating_sub(before).as_secs_f64() * 1e6 / total.max(1) as f64;
    Ok(Run {
        cpu_us_per_request,
        requests: total,
        rps: report.rps,
        p50,
        p99,
        not_200: non_200(&report),
    })
}

fn median(runs: &[Run], field: impl Fn(&Run) -> f64) -> f64 {
    let mut values: Vec<f64> = runs.iter().map(field).collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn spread(runs: &[Run], field: impl Fn(&Run) -> f64) -> (f64, f64) {
    let values: Vec<f64> = runs.iter().map(field).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// An OTLP/HTTP endpoint that takes every export and answers 200, on threads of its own.
struct Sink {
    addr: SocketAddr,
    posts: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind the OTLP sink")?;
        let addr = listener.local_addr()?;
        let posts = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (p, b) = (Arc::clone(&posts), Arc::clone(&bytes));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (p, b) = (Arc::clone(&p), Arc::clone(&b));
                std::thread::spawn(move || serve(stream, &p, &b));
            }
        });
        Ok(Self { addr, posts, bytes })
    }
}

/// Answers the requests of one keep-alive connection until it closes.
fn serve(stream: TcpStream, posts: &AtomicU64, bytes: &AtomicU64) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        posts.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(length as u64, Ordering::Relaxed);
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_answers_two_exports_on_one_connection() {
        let sink = Sink::start().expect("sink");
        let mut stream = TcpStream::connect(sink.addr).expect("connect");
        let request = "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc";
        stream
            .write_all(format!("{request}{request}").as_bytes())
            .expect("write");
        let mut reader = BufReader::new(stream);
        let mut answers = 0;
        let mut line = String::new();
        while answers < 2 && reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            answers += usize::from(line.starts_with("HTTP/1.1 200"));
            line.clear();
        }
        assert_eq!(answers, 2);
        assert_eq!(sink.bytes.load(Ordering::Relaxed), 6);
    }
}
