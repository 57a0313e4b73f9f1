//! `cargo xtask bench cache`: what the response cache buys, in process and through Redis.
//!
//! The mock answers a chat completion after 275 ms (TTFT 200 ms, then 16 tokens 5 ms apart), as
//! one JSON body. diag load sends the same non-streamed request from 20 workers for 10 s, in
//! five runs, each against a fresh mock and gateway:
//!
//! - `off`: `--cache-mode off`, the baseline: every request goes upstream;
//! - `miss`: `--cache-mode all`, every request with `Cache-Control: no-cache`, so each one is a
//!   miss that goes upstream and is stored (what a miss costs over no cache at all);
//! - `hit`: the same gateway warmed with one request, then every request a hit from the
//!   in-process tier;
//! - `miss, redis` and `hit, redis`: the same with `--cache-max-bytes 0 --redis-url` (a
//!   throwaway `redis-server` from `common::services`), so every lookup and store is a Redis
//!   round trip. Skipped, and said so, without `redis-server`.
//!
//! Then the upstream requests saved at a 50 % repeat rate: 400 requests (100 with `--quick`)
//! over 200 prompts, each prompt asked twice in a shuffled order, from 8 threads, against a
//! cached gateway and an uncached one; the mock's `/stats` counts what reached it. diag sends
//! one body per run, so this part has its own small client (ureq on threads).
//!
//! Results: `bench/results/<date>-cache.{md,json}` and diag's report of each run.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::services::Redis;
use serde_json::{Value, json};

use crate::bench::observe::{http_get, metric, samples_at};
use crate::bench::reports::{self, LoadReport, mock_chat_requests, non_200, p50_p99_ms};
use crate::bench::results::{Results, commands_section, head};
use crate::bench::session::{Gateway, Runner, Session, post_load_args, strings};
use crate::cli::BenchArgs;

const MOCK_ARGS: [&str; 8] = [
    "--ttft-ms",
    "200",
    "--itl-ms",
    "5",
    "--tokens",
    "16",
    "--seed",
    "1",
];
const BODY: &str = r#"{"model":"mock-1","temperature":0,"messages":[{"role":"user","content":"What does the cache save?"}]}"#;
const CONCURRENCY: &str = "20";

/// One diag load run: its name, the gateway's cache flags, whether requests skip the read,
/// whether the gateway is warmed first.
struct Run {
    name: &'static str,
    flags: &'static [&'static str],
    no_cache: bool,
    warm: bool,
    redis: bool,
}

const RUNS: [Run; 5] = [
    Run {
        name: "off",
        flags: &["--cache-mode", "off"],
        no_cache: false,
        warm: false,
        redis: false,
    },
    Run {
        name: "miss",
        flags: &["--cache-mode", "all"],
        no_cache: true,
        warm: false,
        redis: false,
    },
    Run {
        name: "hit",
        flags: &["--cache-mode", "all"],
        no_cache: false,
        warm: true,
        redis: false,
    },
    Run {
        name: "miss-redis",
        flags: &["--cache-mode", "all", "--cache-max-bytes", "0"],
        no_cache: true,
        warm: false,
        redis: true,
    },
    Run {
        name: "hit-redis",
        flags: &["--cache-mode", "all", "--cache-max-bytes", "0"],
        no_cache: false,
        warm: true,
        redis: true,
    },
];

pub fn run(args: &BenchArgs) -> Result<()> {
    let duration = if args.quick { "3s" } else { "10s" };
    let mut session = Session::begin("-cache")?;
    let mut results = Results::new(args, &session.clock, "cache");
    let runner = &mut session.runner;
    let redis = Redis::start_for("bench cache (the Redis rows)");
    if let Some(redis) = &redis {
        runner.commands.push(format!(
            "redis-server --port {} --bind 127.0.0.1 --save '' --appendonly no &",
            redis.port()
        ));
    }

    let mut rows = Vec::new();
    let mut json_runs = Vec::new();
    for run in &RUNS {
        let redis_url = match (&redis, run.redis) {
            (_, false) => None,
            (Some(redis), true) => Some(redis.url()),
            (None, true) => {
                rows.push(format!(
                    "| {} | skipped: no redis-server | | | | | | |",
                    run.name
                ));
                continue;
            }
        };
        println!("\n=== bench cache: {}", run.name);
        let (row, value) = load_run(runner, run, redis_url.as_deref(), duration, &mut results)?;
        println!("xtask: {} done: {row}", run.name);
        rows.push(row);
        json_runs.push(value);
    }

    let total = if args.quick { 100 } else { 400 };
    let mut repeat_rows = Vec::new();
    let mut json_repeat = Vec::new();
    for mode in ["off", "all"] {
        println!("\n=== bench cache: 50 % repeats, --cache-mode {mode}");
        let (row, value) = repeat_run(runner, mode, total)?;
        println!("xtask: repeats with --cache-mode {mode}: {row}");
        repeat_rows.push(row);
        json_repeat.push(value);
    }

    let load = format!(
        "Upstream: `mock-llm {}` (a non-streamed answer after ~275 ms). Load: `diag load -c \
         {CONCURRENCY} -z {duration}`, one non-streamed request, through the gateway (fixed \
         mode); `miss` runs send `Cache-Control: no-cache`.",
        MOCK_ARGS.join(" ")
    );
    let mut md = head(
        &session.clock,
        "The response cache: a hit against a miss, in process and through Redis",
        "cache",
        args.quick,
        &load,
    );
    md.push_str(
        "\n| run | requests | req/s | latency p50 | latency p99 | not 200 | upstream requests \
         | cache hits / misses |\n|---|---|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        let _ = writeln!(md, "{row}");
    }
    let _ = write!(
        md,
        "\nUpstream requests saved at a 50 % repeat rate: {total} requests over {} prompts, each \
         asked twice in a shuffled order, 8 at a time.\n\n| cache | requests | upstream requests \
         | saved | cache hits (of them in flight) | wall time |\n|---|---|---|---|---|---|\n",
        total / 2
    );
    for row in &repeat_rows {
        let _ = writeln!(md, "{row}");
    }
    md.push_str(&commands_section(&session.runner.commands));
    results.markdown(md);
    results.json(&json!({"load": json_runs, "repeat_50_percent": json_repeat}))?;
    results.write("bench cache done")
}

/// One diag load run against a fresh mock and gateway; its row and its JSON.
fn load_run(
    runner: &mut Runner,
    run: &Run,
    redis_url: Option<&str>,
    duration: &str,
    results: &mut Results,
) -> Result<(String, Value)> {
    let (mock, mock_listen) = runner.start_mock(&strings(&MOCK_ARGS))?;
    let mut flags = strings(&["--mode", "fixed"]);
    flags.extend(strings(run.flags));
    if let Some(url) = redis_url {
        flags.extend(strings(&["--redis-url", url]));
    }
    let Gateway {
        service: gateway,
        listen,
        ..
    } = runner.start_gateway(mock_listen, &flags)?;
    let url = format!("http://{listen}/v1/chat/completions");
    if run.warm {
        post(&url, BODY)?;
        // The answer is stored after its last byte went out: wait until a repeat is a hit.
        wait_for_hit(&url)?;
    }
    let before = mock_chat_requests(&http_get(&format!("http://{mock_listen}/stats"))?)?;
    let report_path = runner.work_dir.join(format!("cache-{}.json", run.name));
    let mut diag_args = post_load_args(&url, BODY, CONCURRENCY, duration, &report_path);
    if run.no_cache {
        diag_args.extend(strings(&["-H", "Cache-Control: no-cache"]));
    }
    runner.diag(&diag_args)?;
    let upstream = mock_chat_requests(&http_get(&format!("http://{mock_listen}/stats"))?)? - before;
    let metrics = cache_metrics(listen)?;
    drop(gateway);
    drop(mock);
    let report: LoadReport = reports::read(&report_path)?;
    results.diag_report(run.name, &report_path)?;
    let (p50, p99) = p50_p99_ms(&report)?;
    let hits = total_hits(&metrics);
    let misses = metric(&metrics, "gateway_cache_misses_total");
    let row = format!(
        "| {} | {} | {:.0} | {p50:.2} ms | {p99:.2} ms | {} | {upstream} | {hits:.0} / {misses:.0} |",
        label(run),
        report.requests.total,
        report.rps,
        non_200(&report),
    );
    let value = json!({
        "run": run.name, "requests": report.requests.total, "rps": report.rps,
        "latency_ms": {"p50": p50, "p99": p99}, "not_200": non_200(&report),
        "upstream_requests": upstream, "cache_hits": hits, "cache_misses": misses,
    });
    Ok((row, value))
}

/// The gateway's `gateway_cache_*` samples, read before it stops.
fn cache_metrics(listen: SocketAddr) -> Result<Vec<(String, f64)>> {
    samples_at(listen, "gateway_cache_")
}

/// Hits from every source.
fn total_hits(metrics: &[(String, f64)]) -> f64 {
    metrics
        .iter()
        .filter(|(name, _)| name.starts_with("gateway_cache_hits_total"))
        .map(|(_, v)| v)
        .sum()
}

fn label(run: &Run) -> String {
    let tier = if run.redis {
        "Redis only"
    } else {
        "in process"
    };
    match run.name {
        "off" => "cache off (every request upstream)".to_owned(),
        _ if run.no_cache => format!("miss, {tier} (`no-cache`: upstream, then stored)"),
        _ => format!("hit, {tier}"),
    }
}

/// 50 % repeats: `total` requests over `total / 2` prompts, each twice, shuffled; 8 threads.
fn repeat_run(runner: &mut Runner, mode: &str, total: usize) -> Result<(String, Value)> {
    let (mock, mock_listen) = runner.start_mock(&strings(&MOCK_ARGS))?;
    let flags = strings(&["--mode", "fixed", "--cache-mode", mode]);
    let Gateway {
        service: gateway,
        listen,
        ..
    } = runner.start_gateway(mock_listen, &flags)?;
    let url = format!("http://{listen}/v1/chat/completions");
    let order = Arc::new(shuffled_pairs(total / 2));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (order, next, url) = (Arc::clone(&order), Arc::clone(&next), url.clone());
            std::thread::spawn(move || -> Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(prompt) = order.get(i) else {
                        return Ok(());
                    };
                    let body = json!({"model": "mock-1", "temperature": 0,
                        "messages": [{"role": "user", "content": format!("prompt {prompt}")}]});
                    post(&url, &body.to_string())?;
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
    }
    let wall = started.elapsed();
    runner.commands.push(format!(
        "# {total} POSTs to {url} over {} prompts, each twice, shuffled, 8 threads (xtask's own client)",
        total / 2
    ));
    let upstream = mock_chat_requests(&http_get(&format!("http://{mock_listen}/stats"))?)?;
    let metrics = cache_metrics(listen)?;
    drop(gateway);
    drop(mock);
    let hits = total_hits(&metrics);
    let in_flight = metric(&metrics, "gateway_cache_hits_total{source=\"in_flight\"}");
    let saved = 1.0 - upstream as f64 / total as f64;
    let row = format!(
        "| `--cache-mode {mode}` | {total} | {upstream} | {:.0} % | {hits:.0} ({in_flight:.0}) | {:.1} s |",
        saved * 100.0,
        wall.as_secs_f64()
    );
    let value = json!({"cache_mode": mode, "requests": total, "upstream_requests": upstream,
        "saved": saved, "cache_hits": hits, "in_flight_hits": in_flight,
        "wall_s": wall.as_secs_f64()});
    Ok((row, value))
}

/// `0, 0, 1, 1, ... n-1, n-1` in a fixed shuffled order (a seeded LCG, so every run is the same).
fn shuffled_pairs(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).flat_map(|p| [p, p]).collect();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..order.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = usize::try_from(state >> 33).unwrap_or(0) % (i + 1);
        order.swap(i, j);
    }
    order
}

/// One POST of `body`, read whole; fails unless it is a 200. Returns `x-gateway-cache`.
fn post(url: &str, body: &str) -> Result<String> {
    let mut response = agent()
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .with_context(|| format!("POST {url}"))?;
    response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("POST {url}: cannot read the body"))?;
    let cache = response.headers().get("x-gateway-cache");
    Ok(cache.and_then(|v| v.to_str().ok()).unwrap_or("").to_owned())
}

/// Until `BODY` is answered from the cache (at most 5 s).
fn wait_for_hit(url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if post(url, BODY)? == "hit" {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("{url}: no cache hit within 5 s of a warm-up request")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_prompt_comes_twice() {
        let order = shuffled_pairs(100);
        assert_eq!(order.len(), 200);
        for p in 0..100 {
            assert_eq!(order.iter().filter(|&&x| x == p).count(), 2);
        }
        assert_ne!(order[..4], [0, 0, 1, 1], "shuffled");
        assert_eq!(order, shuffled_pairs(100), "the same every run");
    }
}
