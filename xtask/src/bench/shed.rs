//! `cargo xtask bench shed`: load shedding at 5x the configured concurrency (lesson 8).
//!
//! The mock paces each stream at TTFT 200 ms + 40 tokens × 50 ms = ~2.2 s. The gateway is capped
//! at `--max-concurrent-requests 200` (queue 100, wait 1 s). diag offers streams open loop at
//! 455/s, i.e. 455 × 2.2 s = ~1,000 streams wanting to be open at once: 5x the cap. The same load
//! runs again with no wait queue (shed at once), and with the cap lifted (100,000), to show what
//! the queue costs and what the cap buys.
//!
//! Reported per run: streams accepted (completed) and shed (HTTP 503), TTFT and end-to-end p99
//! of the accepted ones, `/health` p99 (polled every 250 ms from diag's own thread), the
//! gateway's peak RSS (`VmHWM`, read before it is stopped) and its `gateway_shed_total` counters
//! from `/metrics`. Results: `bench/results/<date>-shed.md` and diag's report of each run as
//! `<date>-shed-<run>.json`. The Markdown has the table; what it means is written by hand into
//! the committed results (the numbers move from machine to machine, the reading does not).

use std::fmt::Write as _;

use anyhow::Result;

use crate::bench::observe::{http_get, metric_samples, status_kib};
use crate::bench::reports::{self, LlmReport};
use crate::bench::results::{Results, secs_or_ms};
use crate::bench::session::{Gateway, Session, strings};
use crate::cli::BenchArgs;

/// The mock's pacing: a stream takes ~2.2 s.
const MOCK_ARGS: [&str; 6] = ["--ttft-ms", "200", "--itl-ms", "50", "--tokens", "40"];
/// Streams offered per second, open loop: ~1,000 wanted at once, 5x the cap of 200.
const RATE: &str = "455";

/// The three gateway limit sets, by run name.
const RUNS: [(&str, &[&str]); 3] = [
    (
        "capped",
        &[
            "--max-concurrent-requests",
            "200",
            "--max-queued-requests",
            "100",
            "--max-queue-wait-ms",
            "1000",
        ],
    ),
    (
        "no-queue",
        &[
            "--max-concurrent-requests",
            "200",
            "--max-queued-requests",
            "0",
        ],
    ),
    ("uncapped", &["--max-concurrent-requests", "100000"]),
];

/// One run's row.
struct Row {
    limits: String,
    report: LlmReport,
    peak_rss_kib: Option<u64>,
    shed_counters: Vec<(String, f64)>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let duration = if args.quick { "5s" } else { "20s" };
    let mut session = Session::begin("-shed")?;
    let mut results = Results::new(args, &session.clock, "shed");
    let runner = &mut session.runner;

    let (_mock, mock_listen) = runner.start_mock(&strings(&MOCK_ARGS))?;

    let mut rows = Vec::new();
    for (name, limits) in RUNS {
        println!("\n=== bench shed: {name}");
        let mut gateway_args = strings(&["--mode", "fixed"]);
        gateway_args.extend(strings(limits));
        let Gateway {
            service: gateway,
            listen,
            ..
        } = runner.start_gateway(mock_listen, &gateway_args)?;
        let report_path = runner.work_dir.join(format!("shed-{name}.json"));
        runner.diag(&strings(&[
            "llm",
            "--base-url",
            &format!("http://{listen}"),
            "-q",
            RATE,
            "-z",
            duration,
            "--health",
            "--timeout",
            "30s",
            "--no-progress",
            "--json",
            &report_path.to_string_lossy(),
        ]))?;
        // Read while the gateway still runs: its peak memory and its own count of what it shed.
        let peak_rss_kib = status_kib(gateway.pid(), "VmHWM:");
        let metrics = http_get(&format!("http://{listen}/metrics"))?;
        drop(gateway);
        let row = Row {
            limits: limits.join(" "),
            report: reports::read(&report_path)?,
            peak_rss_kib,
            shed_counters: {
                // Sorted: the gateway exposes the labels in no fixed order.
                let mut counters = metric_samples(&metrics, "gateway_shed_total{");
                counters.sort_by(|a, b| a.0.cmp(&b.0));
                counters
            },
        };
        let line = row.markdown();
        println!("xtask: {name} done: {line}");
        results.diag_report(name, &report_path)?;
        rows.push(line);
    }

    results.table(
        "Load shedding at 5x the configured concurrency",
        &format!(
            "Load: `diag llm -q {RATE} -z {duration} --health --timeout 30s` against \
             `mock-llm {}`: {RATE} streams/s x ~2.2 s each = ~1000 wanted at once.",
            MOCK_ARGS.join(" ")
        ),
        "\n| gateway limits | streams offered | accepted (completed) | shed (503) | other failures \
         | TTFT p99 accepted | E2E p99 accepted | /health p99 | /health failures | gateway peak RSS \
         | shed counters |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        &rows,
        &session.runner.commands,
    );
    results.write("bench shed done")
}

impl Row {
    /// The table row: the columns of the committed `2026-11-23-shed.md`, so results compare.
    fn markdown(&self) -> String {
        let r = &self.report;
        let mut shed = 0;
        let mut other = 0;
        let mut other_kinds = Vec::new();
        for (kind, &count) in &r.streams.errors {
            if kind == "http_503" {
                shed += count;
            } else {
                other += count;
                other_kinds.push(format!("{kind} {count}"));
            }
        }
        let (health_p99, health_failures) = match &r.health {
            None => ("n/a".to_string(), "no samples".to_string()),
            Some(health) => (
                secs_or_ms(health.p99_ms, 1),
                format!(
                    "{} timeouts, {} errors of {}",
                    health.timeouts, health.errors, health.samples
                ),
            ),
        };
        let counters = self
            .shed_counters
            .iter()
            .map(|(name, value)| {
                // `gateway_shed_total{reason="queue_full"}` -> `queue_full 6100`
                let reason = name.split('"').nth(1).unwrap_or(name);
                format!("{reason} {value:.0}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut row = String::new();
        let _ = write!(
            row,
            "| `{}` | {} | {} | {shed} | {other}{} | {} | {} | {health_p99} | {health_failures} | {} | {} |",
            self.limits,
            r.streams.started,
            r.streams.completed,
            if other_kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", other_kinds.join(", "))
            },
            secs_or_ms(r.ttft_ms.p99, 1),
            secs_or_ms(r.e2e_ms.p99, 1),
            self.peak_rss_kib
                .map_or_else(|| "n/a".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0)),
            if counters.is_empty() {
                "none exposed".to_string()
            } else {
                counters
            },
        );
        row
    }
}
