//! `cargo xtask bench hedge`: hedged requests against a heavy-tailed upstream (lesson 9).
//!
//! The mock's TTFT is 100 ms, but 5 % of its delays are 10 times longer (`--heavy-tail 0.05`):
//! one request in twenty waits a second for its first token. diag keeps 50 streams open for 20 s
//! through the gateway: without hedging, and hedging after 150 ms with the default 10 % budget.
//! Then the upstream turns bad for everyone (30 % of delays 10 times longer) and the same runs
//! again, plus one with a 100 % budget (hedging nearly unbounded), to show what the budget saves.
//! Extra upstream load = upstream requests the mock saw / streams diag started - 1.
//!
//! Each run gets a fresh mock (same `--seed 7`, so the same sequence of delays, and its `/stats`
//! count only that run) and a fresh gateway (its hedge counters count only that run).
//! Results: `bench/results/<date>-hedge.md` and diag's report of each run as
//! `<date>-hedge-<run>.json`; the reading of the table is written by hand into the committed
//! results.

use std::fmt::Write as _;

use anyhow::Result;

use crate::bench::observe::{http_get, metric, samples_at};
use crate::bench::reports::{self, LlmReport, mock_chat_requests};
use crate::bench::results::{Results, secs_or_ms};
use crate::bench::session::{Gateway, Session, strings};
use crate::cli::BenchArgs;

/// The hedging flags of the runs that hedge; the label in the table leaves out the route.
const HEDGE_ROUTE: [&str; 2] = ["--hedge-routes", "/v1/chat/completions"];
const BUDGET_10: &[&str] = &["--hedge-delay-ms", "150"];
const BUDGET_100: &[&str] = &["--hedge-delay-ms", "150", "--hedge-budget-percent", "100"];

/// The five runs: name, `--heavy-tail`, hedging flags (`None`: hedging off).
const RUNS: [(&str, f64, Option<&[&str]>); 5] = [
    ("tail5-off", 0.05, None),
    ("tail5-budget10", 0.05, Some(BUDGET_10)),
    ("tail30-off", 0.3, None),
    ("tail30-budget10", 0.3, Some(BUDGET_10)),
    ("tail30-budget100", 0.3, Some(BUDGET_100)),
];

const MOCK_ARGS: [&str; 6] = ["--ttft-ms", "100", "--itl-ms", "20", "--tokens", "20"];
const SEED: &str = "7";

pub fn run(args: &BenchArgs) -> Result<()> {
    let duration = if args.quick { "5s" } else { "20s" };
    let mut session = Session::begin("-hedge")?;
    let mut results = Results::new(args, &session.clock, "hedge");
    let runner = &mut session.runner;

    let mut rows = Vec::new();
    for (name, tail, hedge) in RUNS {
        println!("\n=== bench hedge: {name}");
        let mut mock_args = strings(&MOCK_ARGS);
        mock_args.extend(strings(&[
            "--heavy-tail",
            &tail.to_string(),
            "--seed",
            SEED,
        ]));
        let (mock, mock_listen) = runner.start_mock(&mock_args)?;
        let mut gateway_args = strings(&["--mode", "fixed"]);
        if let Some(flags) = hedge {
            gateway_args.extend(strings(&HEDGE_ROUTE));
            gateway_args.extend(strings(flags));
        }
        let Gateway {
            service: gateway,
            listen,
            ..
        } = runner.start_gateway(mock_listen, &gateway_args)?;
        let report_path = runner.work_dir.join(format!("hedge-{name}.json"));
        runner.diag(&strings(&[
            "llm",
            "--base-url",
            &format!("http://{listen}"),
            "-c",
            "50",
            "-z",
            duration,
            "--no-progress",
            "--json",
            &report_path.to_string_lossy(),
        ]))?;
        // Both counts are read before the services stop: they live in the processes.
        let upstream = mock_chat_requests(&http_get(&format!("http://{mock_listen}/stats"))?)?;
        let metrics = samples_at(listen, "gateway_hedges_")?;
        drop(gateway);
        drop(mock);

        let r: LlmReport = reports::read(&report_path)?;
        let started = r.streams.started;
        let extra = if started > 0 {
            upstream as f64 / started as f64 - 1.0
        } else {
            0.0
        };
        let label = hedge.map_or_else(|| "off".to_string(), |f| format!("`{}`", f.join(" ")));
        let ms = |latency: Option<f64>| secs_or_ms(latency, 0);
        let mut line = String::new();
        let _ = write!(
            line,
            "| {:.0} % | {label} | {started} | {} | {} | {} | {} | {} | {upstream} | {:+.1} % | {:.0} / {:.0} / {:.0} |",
            tail * 100.0,
            ms(r.ttft_ms.p50),
            ms(r.ttft_ms.p90),
            ms(r.ttft_ms.p99),
            ms(r.e2e_ms.p50),
            ms(r.e2e_ms.p99),
            extra * 100.0,
            metric(&metrics, "gateway_hedges_fired_total"),
            metric(&metrics, "gateway_hedges_won_total"),
            metric(&metrics, "gateway_hedges_skipped_total{reason=\"budget\"}"),
        );
        println!("xtask: {name} done: {line}");
        results.diag_report(name, &report_path)?;
        rows.push(line);
    }

    results.table(
        "Hedged requests against a heavy-tailed upstream",
        &format!(
            "Upstream: `mock-llm {} --heavy-tail TAIL --seed {SEED}`. Load: `diag llm -c 50 -z {duration}` \
             through the gateway (fixed mode).",
            MOCK_ARGS.join(" ")
        ),
        "\n| heavy tail | hedging | streams | TTFT p50 | TTFT p90 | TTFT p99 | E2E p50 | E2E p99 \
         | upstream requests | extra upstream load | hedges fired / won / skipped (budget) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
        &rows,
        &session.runner.commands,
    );
    results.write("bench hedge done")
}
