//! What the capacity ramp measures and how it is written: the mock's pacing and the rule for a
//! held level, the plans (full and `--quick`), one level, one mode's ramp, and the
//! `<date>-bench[-quick].{json,md}` they become (the overhead table and the side-by-side with
//! nginx are [`crate::bench::versus`]'s).
//!
//! The rule lives here, beside the tables, because the results state it: a reader of
//! `bench/results/` sees the thresholds a level was judged by, in the same file as the numbers
//! (`held_rule` in the JSON, the **Load** line in the Markdown). [`crate::bench::ramp`] applies
//! it; what each step measures and why is written there.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use diag::readiness::ReadinessReport;
use serde_json::{Value, json};

use crate::bench::observe::CpuTime;
use crate::bench::results::{Machine, commands_section, mib, opt_ms, rel};
use crate::bench::versus::{Limits, LoadRun, StreamSide, Versus};

/// The mock's pacing for the stream step: TTFT, inter-token latency, tokens per stream.
pub const TTFT_MS: u64 = 200;
pub const ITL_MS: u64 = 200;
pub const TOKENS: u64 = 60;
/// A level is not held when fewer tokens than this share of the paced ideal were relayed.
pub const MIN_TOKEN_RATIO: f64 = 0.75;
/// A level is not held when the gateway's `/health` p99 is above this.
pub const HEALTH_P99_MAX_MS: f64 = 10.0;
/// The level whose memory is reported as "at 1,000 streams" (or the quick run's top level).
pub const REFERENCE_LEVEL: u32 = 1000;
/// How long after the fixed ramp's last level its memory is read again: long enough for an
/// allocator that gives memory back to have done so (issue 17's goal is stated at 10 s).
pub const AFTER_LOAD: Duration = Duration::from_secs(10);

/// How far and how long a ramp goes: the levels per mode, and how long each step runs.
pub struct Plan {
    pub fixed_levels: &'static [u32],
    pub broken_levels: &'static [u32],
    /// The same streams through nginx, for its own `/health` under that load.
    pub nginx_levels: &'static [u32],
    pub level_duration: &'static str,
    pub overhead_duration: &'static str,
    /// Rounds of the overhead step (mock, nginx, gateway, then again); medians are reported.
    pub overhead_rounds: u32,
}

/// `--quick`: what CI runs, to check the structure, not the speed.
pub const QUICK: Plan = Plan {
    fixed_levels: &[50, 100, 200],
    broken_levels: &[2, 4, 8],
    nginx_levels: &[200],
    level_duration: "4s",
    overhead_duration: "4s",
    overhead_rounds: 1,
};

/// `make bench`: up to 8,000 streams, the numbers the README quotes.
pub const FULL: Plan = Plan {
    fixed_levels: &[100, 200, 500, 1000, 2000, 4000, 8000],
    broken_levels: &[2, 4, 8],
    nginx_levels: &[1000, 4000, 8000],
    level_duration: "6s",
    overhead_duration: "8s",
    overhead_rounds: 3,
};

/// One level of the ramp, as measured.
#[derive(Debug)]
pub struct Level {
    pub streams: u32,
    pub diag_sustained: bool,
    pub diag_reason: String,
    pub tokens: f64,
    pub expected_tokens: f64,
    pub events_per_s: f64,
    pub failed: u64,
    pub max_gap_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub itl_p99_ms: Option<f64>,
    /// The proxy's CPU time over the diag run (nginx: its worker's), user and system apart.
    pub cpu: Option<CpuTime>,
    /// The proxy's RSS just before the level started.
    pub rss_before_kib: Option<u64>,
    pub health_p99_ms: Option<f64>,
    /// The admin plane's `/readyz` p99 under the same load; `None` for nginx.
    pub readyz_p99_ms: Option<f64>,
    /// What `/readyz` said over the level; `None` for nginx.
    pub readiness: Option<Readiness>,
    pub rss_max_kib: Option<u64>,
    /// Diag's sustained rule and the token count held (whatever `/health` said).
    pub streams_ok: bool,
    /// Why the level was not held; `None` when it was.
    pub not_held: Option<String>,
    pub report: PathBuf,
}

impl Level {
    /// This level as a row of the side-by-side with nginx; `idle` is the proxy's RSS before
    /// its first stream level.
    pub fn side(&self, proxy: &'static str, idle: Option<u64>) -> StreamSide {
        StreamSide {
            proxy,
            streams: self.streams,
            tokens: self.tokens,
            tokens_per_s: self.events_per_s,
            ttft_p50_ms: self.ttft_p50_ms,
            ttft_p99_ms: self.ttft_p99_ms,
            itl_p99_ms: self.itl_p99_ms,
            cpu: self.cpu,
            rss_idle_kib: idle,
            rss_before_kib: self.rss_before_kib,
            rss_peak_kib: self.rss_max_kib,
        }
    }

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
            "ttft_p50_ms": self.ttft_p50_ms,
            "ttft_p99_ms": self.ttft_p99_ms,
            "itl_p99_ms": self.itl_p99_ms,
            "cpu_per_token_us": self.side("", None).cpu_per_token_us(),
            "rss_before_kib": self.rss_before_kib,
            "health_p99_ms": self.health_p99_ms,
            "readyz_p99_ms": self.readyz_p99_ms,
            "readiness": self.readiness.as_ref().map(Readiness::to_json),
            "gateway_rss_max_kib": self.rss_max_kib,
            "diag_report": rel(&self.report),
        })
    }
}

/// What the admin plane's `/readyz` answered over one level: the readiness verdict the issue
/// asks of it, which should turn `degraded` only where streams really fall behind their pace.
#[derive(Debug)]
pub struct Readiness {
    pub answers: u64,
    pub not_ready: u64,
    /// Check name → answers that named it failing.
    pub failing: BTreeMap<String, u64>,
}

impl From<ReadinessReport> for Readiness {
    fn from(r: ReadinessReport) -> Self {
        Self {
            answers: r.answers,
            not_ready: r.not_ready_answers,
            failing: r.failing,
        }
    }
}

impl Readiness {
    /// `ready (24 answers)` or `degraded in 3 of 24 (runtime 3)`.
    pub fn verdict(&self) -> String {
        if self.not_ready == 0 {
            return format!("ready ({} answers)", self.answers);
        }
        let failing: Vec<String> = self
            .failing
            .iter()
            .map(|(check, n)| format!("{check} {n}"))
            .collect();
        format!(
            "degraded in {} of {} ({})",
            self.not_ready,
            self.answers,
            failing.join(", ")
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "answers": self.answers,
            "not_ready_answers": self.not_ready,
            "failing": self.failing,
            "verdict": self.verdict(),
        })
    }
}

/// The ramp of one mode.
#[derive(Debug)]
pub struct Ramp {
    pub mode: &'static str,
    pub blocking_threads: u16,
    pub levels: Vec<Level>,
    pub skipped_levels: Vec<u32>,
    pub idle_rss_kib: Option<u64>,
    pub after_rss_kib: Option<u64>,
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

/// Everything one ramp run found, for its JSON and Markdown.
pub struct RampResults {
    pub quick: bool,
    pub date: String,
    pub machine: Machine,
    pub commit: String,
    pub nofile: Option<u64>,
    pub max_streams: Option<u64>,
    pub plan: &'static Plan,
    pub nginx_note: String,
    pub limits: Limits,
    pub ramps: Vec<Ramp>,
    /// The same streams through nginx (empty without nginx).
    pub nginx_streams: Vec<Level>,
    pub overhead: Vec<LoadRun>,
    pub commands: Vec<String>,
    pub elapsed: Duration,
    pub build_time: Duration,
}

impl RampResults {
    fn fixed(&self) -> Option<&Ramp> {
        self.ramps.iter().find(|r| r.mode == "fixed")
    }

    /// The side-by-side with nginx: the fixed ramp's levels that nginx ran too, nginx's, the
    /// overhead rounds, the memory after the load.
    pub fn versus(&self) -> Versus<'_> {
        let fixed = self.fixed();
        let levels = self.plan.nginx_levels;
        // Idle for a stream is before the first stream level: the non-streaming step's leftovers
        // are no stream's cost.
        let sides = |proxy, levels: &[Level]| {
            let idle = levels.first().and_then(|l| l.rss_before_kib);
            levels
                .iter()
                .map(|l| l.side(proxy, idle))
                .collect::<Vec<_>>()
        };
        let gateway = fixed
            .map(|r| sides("gateway", &r.levels))
            .unwrap_or_default();
        let nginx = sides("nginx", &self.nginx_streams);
        Versus {
            quick: self.quick,
            levels,
            sides: gateway
                .into_iter()
                .chain(nginx)
                .filter(|s| levels.contains(&s.streams))
                .collect(),
            overhead: &self.overhead,
            overhead_duration: self.plan.overhead_duration,
            rounds: self.plan.overhead_rounds,
            gateway_idle_rss_kib: fixed.and_then(|r| r.idle_rss_kib),
            gateway_after_rss_kib: fixed.and_then(|r| r.after_rss_kib),
            after: AFTER_LOAD,
            limits: &self.limits,
        }
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
            format!("{} s after the load is gone", AFTER_LOAD.as_secs()),
            None,
            fixed.after_rss_kib,
        ));
        rows
    }

    pub fn to_json(&self) -> Value {
        let versus = self.versus();
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
            "nginx_streams": self.nginx_streams.iter().map(Level::to_json).collect::<Vec<_>>(),
            "overhead": versus.overhead_json(),
            "versus_nginx": versus.to_json(),
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

    pub fn markdown(&self) -> String {
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

        self.health_section(&mut md);

        let versus = self.versus();
        versus.overhead_markdown(&mut md);

        let _ = writeln!(md, "\n## Gateway memory (fixed, VmRSS)\n");
        let _ = writeln!(md, "| when | RSS |\n|---|---|");
        for (label, _, kib) in self.memory() {
            let _ = writeln!(md, "| {label} | {} |", mib(kib));
        }

        versus.markdown(&mut md);

        md.push_str(&commands_section(&self.commands));
        md
    }

    /// Main `/health` (on the runtime it judges) against the admin plane's `/readyz` (measured
    /// from its own thread) at each level of the fixed ramp, beside nginx's own `/health` under
    /// the same streams, and whether readiness agreed with the streams.
    fn health_section(&self, md: &mut String) {
        let Some(fixed) = self.fixed() else { return };
        let _ = writeln!(
            md,
            "\n## Health under streams: main `/health` vs admin `/readyz`, nginx beside\n\n\
             The main listener's `/health` runs on the runtime that relays the streams and takes a \
             blocking-pool job, so it waits behind them; `/readyz` is answered by the admin plane's own \
             thread and reports what it measured of the main runtime. Readiness should turn `degraded` \
             only where the streams fell behind their pace (the *streams on pace* column).\n\n\
             | streams | streams on pace | main `/health` p99 | admin `/readyz` p99 | readiness | nginx `/health` p99 | nginx streams on pace |\n\
             |---|---|---|---|---|---|---|"
        );
        for l in &fixed.levels {
            let nginx = self.nginx_streams.iter().find(|n| n.streams == l.streams);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                l.streams,
                if l.streams_ok { "yes" } else { "no" },
                opt_ms(l.health_p99_ms),
                opt_ms(l.readyz_p99_ms),
                l.readiness
                    .as_ref()
                    .map_or_else(|| "-".to_string(), Readiness::verdict),
                nginx.map_or_else(|| "-".to_string(), |n| opt_ms(n.health_p99_ms)),
                nginx.map_or("-", |n| if n.streams_ok { "yes" } else { "no" }),
            );
        }
        if let Some(broken) = self.ramps.iter().find(|r| r.mode == "broken") {
            let verdicts: Vec<String> = broken
                .levels
                .iter()
                .filter_map(|l| {
                    let r = l.readiness.as_ref()?;
                    Some(format!("{} streams: {}", l.streams, r.verdict()))
                })
                .collect();
            let _ = writeln!(
                md,
                "\nBroken mode (pool {}), where a full pool makes every new request wait: {}.",
                broken.blocking_threads,
                verdicts.join("; ")
            );
        }
    }
}
