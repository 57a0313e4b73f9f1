//! The gateway beside nginx, in the same run: the streaming and non-streaming side-by-side
//! tables, the gateway's memory after the load, the ratios against issue 17's goals, and the
//! limits each proxy ran under.
//!
//! The lesson: compare against a mature proxy **in the same run**, and in **CPU time read from
//! `/proc`**, not only in requests per second. On a machine shared with the mock, the load
//! generator and other work, wall-clock rates wander from run to run (the same gateway has
//! measured 5,700 and 17,000 req/s here); the CPU a proxy spends per relayed token or per request
//! holds steady, and nginx relaying the same mock minutes apart is a reference that moves with
//! the machine. So every goal is a ratio, gateway ÷ nginx, of two numbers from one run, except
//! the two memory goals, which are the gateway's own.
//!
//! nginx runs with one worker ([`crate::bench::session::NGINX_LIMITS`]); its CPU time and memory
//! are its **worker's** (the master only supervises and stays at a few hundred KiB).
//!
//! This module only turns measurements into tables and JSON; [`crate::bench::ramp`] takes them.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::bench::observe::CpuTime;
use crate::bench::results::{mib, opt_ms, rel, round3};

/// What to print and write when nginx is not installed: the one line that installs it.
pub const NGINX_MISSING: &str = "nginx is not on PATH, so the side-by-side has the gateway's \
     columns only (the bench installs nothing): `sudo apt-get install nginx-light` (as root: \
     `apt-get install -y nginx-light`)";

/// The stream level the streaming goals are stated at.
pub const GOAL_STREAMS: u32 = 8000;
/// Issue 17's goals, gateway ÷ nginx unless said otherwise.
const CPU_PER_TOKEN_MAX: f64 = 1.0;
const ITL_P99_MAX: f64 = 1.2;
const TTFT_P99_MAX: f64 = 1.0;
/// The gateway's own RSS per held stream, KiB.
const RSS_PER_STREAM_MAX_KB: f64 = 25.0;
/// The gateway's RSS after the load ÷ its RSS idle.
const RSS_AFTER_MAX: f64 = 2.0;
const CPU_PER_REQUEST_MAX: f64 = 1.5;
const RPS_MIN: f64 = 0.8;

/// A ratio goal: the gateway ÷ nginx at most, or at least, this.
#[derive(Debug, Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

impl Bound {
    fn holds(self, ratio: f64) -> bool {
        match self {
            Self::AtMost(max) => ratio <= max,
            Self::AtLeast(min) => ratio >= min,
        }
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AtMost(max) => write!(f, "≤ {max:.1}×"),
            Self::AtLeast(min) => write!(f, "≥ {min:.1}×"),
        }
    }
}

/// One proxy at one stream level: a row of the streaming side-by-side.
#[derive(Debug, Clone)]
pub struct StreamSide {
    pub proxy: &'static str,
    pub streams: u32,
    /// Tokens relayed over the diag run (diag's `output_tokens.total`).
    pub tokens: f64,
    pub tokens_per_s: f64,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub itl_p99_ms: Option<f64>,
    /// The proxy's CPU time over the diag run, user and system apart.
    pub cpu: Option<CpuTime>,
    /// The proxy's RSS before its first stream level, just before this level, and at this
    /// level's peak.
    pub rss_idle_kib: Option<u64>,
    pub rss_before_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
}

impl StreamSide {
    /// CPU time per relayed token, µs: what relaying one token costs the proxy.
    pub fn cpu_per_token_us(&self) -> Option<f64> {
        self.per_token_us(self.cpu?.total())
    }

    /// The user-space part of [`Self::cpu_per_token_us`]: both proxies make the same two system
    /// calls per token, so a gap between them shows here.
    pub fn user_cpu_per_token_us(&self) -> Option<f64> {
        self.per_token_us(self.cpu?.user)
    }

    fn per_token_us(&self, cpu: Duration) -> Option<f64> {
        (self.tokens > 0.0).then(|| cpu.as_secs_f64() * 1e6 / self.tokens)
    }

    /// (peak RSS − RSS before the first stream level) ÷ streams, KiB: what one held stream
    /// costs. Not "just before this level": a proxy that keeps the memory of the level below (the
    /// gateway held 220 MiB 10 s after 8,000 streams) would start from there and look cheaper per
    /// stream the less it gives back. Not idle at start either: what the non-streaming step left
    /// behind is no stream's cost.
    pub fn rss_per_stream_kb(&self) -> Option<f64> {
        let grown = self.rss_peak_kib?.saturating_sub(self.rss_idle_kib?);
        (self.streams > 0).then(|| grown as f64 / f64::from(self.streams))
    }

    fn to_json(&self) -> Value {
        json!({
            "streams": self.streams,
            "proxy": self.proxy,
            "tokens": self.tokens,
            "tokens_per_s": self.tokens_per_s,
            "ttft_p50_ms": self.ttft_p50_ms,
            "ttft_p99_ms": self.ttft_p99_ms,
            "itl_p99_ms": self.itl_p99_ms,
            "cpu_s": self.cpu.map(|c| round3(c.total().as_secs_f64())),
            "cpu_per_token_us": self.cpu_per_token_us().map(round1),
            "user_cpu_per_token_us": self.user_cpu_per_token_us().map(round1),
            "rss_before_first_level_kib": self.rss_idle_kib,
            "rss_before_level_kib": self.rss_before_kib,
            "peak_rss_kib": self.rss_peak_kib,
            "rss_per_stream_kb": self.rss_per_stream_kb().map(round1),
        })
    }
}

/// One `diag load` run of the non-streaming step, with the proxy's CPU time over it.
#[derive(Debug)]
pub struct LoadRun {
    pub target: String,
    /// 1, 2, 3: the targets take turns, so a slow minute on the box hits each of them.
    pub round: u32,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ok: u64,
    pub errors: u64,
    pub non_200: u64,
    /// The proxy's CPU time over the run; `None` for the mock alone.
    pub cpu: Option<Duration>,
    pub report: PathBuf,
}

impl LoadRun {
    /// CPU time per completed request, µs.
    pub fn cpu_per_request_us(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.ok > 0).then(|| cpu.as_secs_f64() * 1e6 / self.ok as f64)
    }

    fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "round": self.round,
            "rps": self.rps,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "responses": self.ok,
            "non_200": self.non_200,
            "errors": self.errors,
            "cpu_per_request_us": self.cpu_per_request_us().map(round1),
            "diag_report": rel(&self.report),
        })
    }
}

/// The medians of one target's rounds (each column its own median).
#[derive(Debug, Clone)]
struct Median {
    target: String,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_per_request_us: Option<f64>,
}

/// The limits each proxy ran under: one line each, for the results.
#[derive(Debug, Default)]
pub struct Limits {
    pub gateway: String,
    /// `None` without nginx.
    pub nginx: Option<String>,
}

/// Everything the side-by-side needs from one ramp run.
pub struct Versus<'a> {
    pub quick: bool,
    /// The levels both proxies ran (the plan's nginx levels).
    pub levels: &'a [u32],
    pub sides: Vec<StreamSide>,
    pub overhead: &'a [LoadRun],
    pub overhead_duration: &'a str,
    pub rounds: u32,
    pub gateway_idle_rss_kib: Option<u64>,
    pub gateway_after_rss_kib: Option<u64>,
    pub after: Duration,
    pub limits: &'a Limits,
}

/// One row of the goals table.
struct Goal {
    what: String,
    goal: String,
    /// The ratio (or the gateway's own value) the goal is judged on.
    value: Option<f64>,
    /// The value, with what it was computed from.
    measured: String,
    met: Option<bool>,
}

impl Versus<'_> {
    fn side(&self, proxy: &str, streams: u32) -> Option<&StreamSide> {
        self.sides
            .iter()
            .find(|s| s.proxy == proxy && s.streams == streams)
    }

    /// The level the streaming goals are judged at: 8,000, or the quick run's top level.
    fn goal_level(&self) -> Option<u32> {
        self.levels
            .iter()
            .copied()
            .find(|&l| l == GOAL_STREAMS)
            .or_else(|| self.levels.iter().copied().max())
    }

    fn medians(&self) -> Vec<Median> {
        let mut targets: Vec<&str> = Vec::new();
        for run in self.overhead {
            if !targets.contains(&run.target.as_str()) {
                targets.push(&run.target);
            }
        }
        targets
            .into_iter()
            .map(|target| {
                let runs: Vec<&LoadRun> = self
                    .overhead
                    .iter()
                    .filter(|r| r.target == target)
                    .collect();
                let cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_per_request_us()).collect();
                Median {
                    target: target.to_string(),
                    rps: median(runs.iter().map(|r| r.rps).collect()),
                    p50_ms: median(runs.iter().map(|r| r.p50_ms).collect()),
                    p99_ms: median(runs.iter().map(|r| r.p99_ms).collect()),
                    cpu_per_request_us: (!cpu.is_empty()).then(|| median(cpu)),
                }
            })
            .collect()
    }

    fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        let quick_note = |level: u32| {
            if self.quick && level != GOAL_STREAMS {
                format!(" (quick: the goal is at {GOAL_STREAMS})")
            } else {
                String::new()
            }
        };
        let ratio_goal =
            |what: String, gateway: Option<f64>, nginx: Option<f64>, unit: &str, bound: Bound| {
                let value = gateway
                    .zip(nginx)
                    .and_then(|(g, n)| (n > 0.0).then(|| g / n));
                Goal {
                    what,
                    goal: bound.to_string(),
                    value,
                    measured: match value {
                        Some(v) => format!("{v:.2}× ({} / {} {unit})", fmt1(gateway), fmt1(nginx)),
                        None => {
                            format!("no ratio: gateway {}, nginx {}", fmt1(gateway), fmt1(nginx))
                        }
                    },
                    met: value.map(|v| bound.holds(v)),
                }
            };
        for &level in self.levels {
            let g = self.side("gateway", level);
            let n = self.side("nginx", level);
            goals.push(ratio_goal(
                format!("CPU per relayed token at {level} streams"),
                g.and_then(StreamSide::cpu_per_token_us),
                n.and_then(StreamSide::cpu_per_token_us),
                "µs",
                Bound::AtMost(CPU_PER_TOKEN_MAX),
            ));
        }
        if let Some(level) = self.goal_level() {
            let g = self.side("gateway", level);
            let n = self.side("nginx", level);
            goals.push(ratio_goal(
                format!("ITL p99 at {level} streams{}", quick_note(level)),
                g.and_then(|s| s.itl_p99_ms),
                n.and_then(|s| s.itl_p99_ms),
                "ms",
                Bound::AtMost(ITL_P99_MAX),
            ));
            goals.push(ratio_goal(
                format!(
                    "TTFT p99 of a {level}-connection burst{}",
                    quick_note(level)
                ),
                g.and_then(|s| s.ttft_p99_ms),
                n.and_then(|s| s.ttft_p99_ms),
                "ms",
                Bound::AtMost(TTFT_P99_MAX),
            ));
            let per_stream = g.and_then(StreamSide::rss_per_stream_kb);
            goals.push(Goal {
                what: format!(
                    "gateway RSS per held stream at {level} streams{}",
                    quick_note(level)
                ),
                goal: format!("≤ {RSS_PER_STREAM_MAX_KB:.0} KB"),
                value: per_stream,
                measured: format!(
                    "{} KB (nginx {})",
                    fmt1(per_stream),
                    n.and_then(StreamSide::rss_per_stream_kb)
                        .map_or("-".into(), |kb| format!("{kb:.1} KB"))
                ),
                met: per_stream.map(|v| v <= RSS_PER_STREAM_MAX_KB),
            });
        }
        let after = self
            .gateway_after_rss_kib
            .zip(self.gateway_idle_rss_kib)
            .and_then(|(a, i)| (i > 0).then(|| a as f64 / i as f64));
        goals.push(Goal {
            what: format!(
                "gateway RSS {} s after the load, ÷ idle",
                self.after.as_secs()
            ),
            goal: format!("≤ {RSS_AFTER_MAX:.0}×"),
            value: after,
            measured: format!(
                "{}× ({} / {})",
                after.map_or("-".into(), |v| format!("{v:.2}")),
                mib(self.gateway_after_rss_kib),
                mib(self.gateway_idle_rss_kib)
            ),
            met: after.map(|v| v <= RSS_AFTER_MAX),
        });
        let medians = self.medians();
        let find = |prefix: &str| medians.iter().find(|m| m.target.starts_with(prefix));
        let (g, n) = (find("gateway"), find("nginx"));
        goals.push(ratio_goal(
            "CPU per request (non-streaming, c = 50)".into(),
            g.and_then(|m| m.cpu_per_request_us),
            n.and_then(|m| m.cpu_per_request_us),
            "µs",
            Bound::AtMost(CPU_PER_REQUEST_MAX),
        ));
        goals.push(ratio_goal(
            "req/s (non-streaming, c = 50)".into(),
            g.map(|m| m.rps),
            n.map(|m| m.rps),
            "req/s",
            Bound::AtLeast(RPS_MIN),
        ));
        goals
    }

    /// The quick run's structural check: every side-by-side row has a CPU per token, for both
    /// proxies when nginx ran, and a CPU per request. No speed is asserted.
    pub fn check_structure(&self) -> Result<(), String> {
        let mut proxies = vec!["gateway"];
        if self.limits.nginx.is_some() {
            proxies.push("nginx");
        }
        for &level in self.levels {
            for proxy in &proxies {
                if self
                    .side(proxy, level)
                    .and_then(StreamSide::cpu_per_token_us)
                    .is_none()
                {
                    return Err(format!("no CPU per token for {proxy} at {level} streams"));
                }
            }
        }
        for median in self.medians() {
            if !median.target.starts_with("mock") && median.cpu_per_request_us.is_none() {
                return Err(format!("no CPU per request for {}", median.target));
            }
        }
        Ok(())
    }

    /// `overhead` in the results JSON: every run, the medians, the gateway's added latency.
    pub fn overhead_json(&self) -> Value {
        let medians = self.medians();
        let added = added_latency(&medians);
        json!({
            "concurrency": 50,
            "duration": self.overhead_duration,
            "rounds": self.rounds,
            "runs": self.overhead.iter().map(LoadRun::to_json).collect::<Vec<_>>(),
            "medians": medians.iter().map(|m| json!({
                "target": m.target,
                "rps": m.rps,
                "p50_ms": m.p50_ms,
                "p99_ms": m.p99_ms,
                "cpu_per_request_us": m.cpu_per_request_us.map(round1),
            })).collect::<Vec<_>>(),
            "gateway_added_p50_ms": added.map(|a| a.0),
            "gateway_added_p99_ms": added.map(|a| a.1),
        })
    }

    /// `versus_nginx` in the results JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "limits": { "gateway": self.limits.gateway, "nginx": self.limits.nginx },
            "nginx_worker_measured": "the worker process (worker_processes 1)",
            "streams": self.sides.iter().map(StreamSide::to_json).collect::<Vec<_>>(),
            "memory_after_load": {
                "after_s": self.after.as_secs(),
                "idle_rss_kib": self.gateway_idle_rss_kib,
                "after_rss_kib": self.gateway_after_rss_kib,
            },
            "goals": self.goals().iter().map(|g| json!({
                "goal": g.what,
                "target": g.goal,
                "value": g.value.map(|v| (v * 100.0).round() / 100.0),
                "measured": g.measured,
                "met": g.met,
            })).collect::<Vec<_>>(),
        })
    }

    /// The non-streaming table (medians of the rounds), in place of the old overhead section.
    pub fn overhead_markdown(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "\n## Overhead (non-streaming, `max_tokens: 1`, no mock delay, -c 50, {} × {} round{}, medians)\n\n\
             The targets take turns (mock, nginx, gateway, then again), so a slow moment on the \
             machine falls on each of them; each column is the median of its rounds. *Proxy CPU per \
             request* is the proxy's CPU time (user + system, `/proc/PID/stat`) over the run ÷ the \
             responses.\n\n\
             | target | req/s | p50 | p99 | proxy CPU per request |\n|---|---|---|---|---|",
            self.overhead_duration,
            self.rounds,
            if self.rounds == 1 { "" } else { "s" }
        );
        let medians = self.medians();
        for m in &medians {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.3} ms | {:.3} ms | {} |",
                m.target,
                m.rps,
                m.p50_ms,
                m.p99_ms,
                m.cpu_per_request_us
                    .map_or("-".into(), |us| format!("{us:.1} µs"))
            );
        }
        let non_200: u64 = self.overhead.iter().map(|r| r.non_200).sum();
        let errors: u64 = self.overhead.iter().map(|r| r.errors).sum();
        let _ = writeln!(
            md,
            "\nOver every run: {non_200} answers other than 200, {errors} requests without an answer."
        );
        if let Some((p50, p99)) = added_latency(&medians) {
            let _ = writeln!(
                md,
                "The gateway adds {p50:.3} ms at p50 and {p99:.3} ms at p99 over the direct run."
            );
        }
    }

    /// The streaming side-by-side, the memory after the load, the goals and the limits.
    pub fn markdown(&self, md: &mut String) {
        let _ = writeln!(
            md,
            "\n## Side by side with nginx\n\n\
             The same `diag llm` run through each proxy at the levels both ran. *CPU per relayed \
             token* is the proxy's CPU time over the run ÷ the tokens relayed, and in brackets \
             its user-space part (the rest is the kernel's, mostly the same read and write per \
             token for both proxies); *RSS per stream* is \
             (peak RSS − the proxy's RSS before its first stream level) ÷ streams, in KB of 1,024 \
             bytes. nginx's figures are its worker's (one worker).{}\n\n\
             | streams | proxy | tokens/s | TTFT p50 / p99 | ITL p99 | CPU per relayed token | peak RSS | RSS per stream |\n\
             |---|---|---|---|---|---|---|---|",
            if self.limits.nginx.is_none() {
                format!("\n\n{NGINX_MISSING}.")
            } else {
                String::new()
            }
        );
        for s in self.levels.iter().flat_map(|&level| {
            ["nginx", "gateway"]
                .into_iter()
                .filter_map(move |proxy| self.side(proxy, level))
        }) {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {} / {} ms | {} | {} | {} | {} |",
                s.streams,
                s.proxy,
                s.tokens_per_s,
                fmt0(s.ttft_p50_ms),
                fmt0(s.ttft_p99_ms),
                opt_ms(s.itl_p99_ms),
                match (s.cpu_per_token_us(), s.user_cpu_per_token_us()) {
                    (Some(us), Some(user)) => format!("{us:.1} µs (user {user:.1})"),
                    _ => "-".into(),
                },
                mib(s.rss_peak_kib),
                s.rss_per_stream_kb()
                    .map_or("-".into(), |kb| format!("{kb:.1} KB")),
            );
        }

        let _ = writeln!(
            md,
            "\n## Against the goals (issue 17; gateway ÷ nginx in this run unless said otherwise)\n\n\
             | goal | target | measured | verdict |\n|---|---|---|---|"
        );
        for g in self.goals() {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                g.what,
                g.goal,
                g.measured,
                match g.met {
                    Some(true) => "met",
                    Some(false) => "not met",
                    None => "no data",
                }
            );
        }
        if self.quick {
            let _ = writeln!(
                md,
                "\nQuick run: the levels are not the goals' levels and the runs are short; the \
                 verdicts show the table works, not where the gateway stands."
            );
        }

        let _ = writeln!(md, "\n## Limits in force\n");
        let _ = writeln!(md, "- **gateway:** {}", self.limits.gateway);
        let _ = writeln!(
            md,
            "- **nginx:** {}",
            self.limits.nginx.as_deref().unwrap_or("not run")
        );
    }
}

/// The gateway's median latency over the direct run's: (p50, p99) in ms.
fn added_latency(medians: &[Median]) -> Option<(f64, f64)> {
    let direct = medians.iter().find(|m| m.target.starts_with("mock"))?;
    let gateway = medians.iter().find(|m| m.target.starts_with("gateway"))?;
    Some((
        round3(gateway.p50_ms - direct.p50_ms),
        round3(gateway.p99_ms - direct.p99_ms),
    ))
}

/// The middle value (the upper one of an even count); NaN for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn fmt0(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.0}"))
}

fn fmt1(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(proxy: &'static str, streams: u32, cpu_ms: u64, itl: f64) -> StreamSide {
        StreamSide {
            proxy,
            streams,
            tokens: 10_000.0,
            tokens_per_s: 5_000.0,
            ttft_p50_ms: Some(250.0),
            ttft_p99_ms: Some(400.0),
            itl_p99_ms: Some(itl),
            cpu: Some(CpuTime {
                user: Duration::from_millis(cpu_ms / 3),
                system: Duration::from_millis(cpu_ms - cpu_ms / 3),
            }),
            rss_idle_kib: Some(10_000),
            rss_before_kib: Some(12_000),
            rss_peak_kib: Some(10_000 + u64::from(streams) * 20),
        }
    }

    fn run(target: &str, round: u32, rps: f64, cpu_ms: Option<u64>) -> LoadRun {
        LoadRun {
            target: target.into(),
            round,
            rps,
            p50_ms: 2.0,
            p99_ms: 5.0,
            ok: 10_000,
            errors: 0,
            non_200: 0,
            cpu: cpu_ms.map(Duration::from_millis),
            report: PathBuf::from("x.json"),
        }
    }

    #[test]
    fn goals_are_ratios_of_the_same_run_with_a_verdict_each() {
        let limits = Limits {
            gateway: "g".into(),
            nginx: Some("n".into()),
        };
        let overhead = [
            run("mock-llm (direct)", 1, 20_000.0, None),
            run("nginx (reference proxy)", 1, 10_000.0, Some(300)),
            run("gateway (fixed)", 1, 9_000.0, Some(600)),
        ];
        let v = Versus {
            quick: true,
            levels: &[200],
            // 30 µs per token against 24: 1.25×, not met; ITL 1.1×, met.
            sides: vec![
                side("nginx", 200, 240, 200.0),
                side("gateway", 200, 300, 220.0),
            ],
            overhead: &overhead,
            overhead_duration: "4s",
            rounds: 1,
            gateway_idle_rss_kib: Some(10_000),
            gateway_after_rss_kib: Some(15_000),
            after: Duration::from_secs(10),
            limits: &limits,
        };
        assert_eq!(v.check_structure(), Ok(()));
        let goals = v.goals();
        let verdict = |prefix: &str| {
            goals
                .iter()
                .find(|g| g.what.starts_with(prefix))
                .and_then(|g| g.met)
        };
        assert_eq!(verdict("CPU per relayed token"), Some(false));
        assert_eq!(verdict("ITL p99"), Some(true));
        assert_eq!(verdict("gateway RSS per held stream"), Some(true));
        assert_eq!(verdict("gateway RSS 10 s"), Some(true));
        assert_eq!(verdict("CPU per request"), Some(false));
        assert_eq!(verdict("req/s"), Some(true));
        let mut md = String::new();
        v.markdown(&mut md);
        assert!(
            md.contains("| 200 | gateway | 5000 | 250 / 400 ms | 220.0 ms | 30.0 µs (user 10.0) |")
        );
        assert!(md.contains("(quick: the goal is at 8000)"));
    }

    #[test]
    fn without_nginx_the_gateway_columns_stay_and_the_install_line_is_printed() {
        let limits = Limits {
            gateway: "g".into(),
            nginx: None,
        };
        let v = Versus {
            quick: true,
            levels: &[200],
            sides: vec![side("gateway", 200, 300, 220.0)],
            overhead: &[],
            overhead_duration: "4s",
            rounds: 1,
            gateway_idle_rss_kib: None,
            gateway_after_rss_kib: None,
            after: Duration::from_secs(10),
            limits: &limits,
        };
        assert_eq!(v.check_structure(), Ok(()));
        let mut md = String::new();
        v.markdown(&mut md);
        assert!(md.contains("apt-get install -y nginx-light"));
        assert!(md.contains("| 200 | gateway |"));
        assert!(md.contains("no data"));
    }
}
