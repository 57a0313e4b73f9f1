//! The result of `diag demo`: one struct, serialised as the JSON report, printed as a table,
//! and judged by the verdict rules.
//!
//! The JSON field names are a contract (make targets, CI and the benchmarks read them), so they
//! are the Rust field names, and every addition is a new field, never a renamed one.
//!
//! The verdict reads three independent signs; any one of them means *exhausted*:
//!
//! 1. **streams**: fewer streams flowed at once than were opened;
//! 2. **sync probe**: `/debug/health-sync` p99 above `--sync-budget`, or any of its probes timed
//!    out: a request that needs a pool thread had to wait for one;
//! 3. **pool**: a `/debug/pool` sample with every thread busy and jobs queued.
//!
//! Each sign alone can have another cause (a slow upstream, a busy machine), which is why the
//! reason line names all the numbers, not just a word.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::demo::streams::StreamStats;
use crate::pool::PoolStats;
use crate::probe::{Endpoint, ProbeStats, Probed};
use crate::process::ProcessStats;

/// The verdict: can the gateway serve the load without anyone waiting for a pool thread?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Exhausted,
    Healthy,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Exhausted => "exhausted",
            Verdict::Healthy => "healthy",
        })
    }
}

/// The three endpoints' stats, under the names the JSON report uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    pub health_sync: ProbeStats,
    pub health_async: ProbeStats,
    pub health: ProbeStats,
    /// The gateway's `--mode`, from the last `/health` answer that named it.
    #[serde(skip)]
    pub mode: Option<String>,
}

impl From<Probed> for ProbeReport {
    fn from(probed: Probed) -> Self {
        Self {
            health_sync: probed.stats(Endpoint::HealthSync),
            health_async: probed.stats(Endpoint::HealthAsync),
            health: probed.stats(Endpoint::Health),
            mode: probed.mode,
        }
    }
}

/// Everything `diag demo` measured, as written by `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The gateway's `--mode` from its `/health` answers, or `unknown`.
    pub mode: String,
    /// `--gateway`.
    pub gateway: String,
    /// `--stream-query`.
    pub stream_query: String,
    /// `--duration`, in seconds.
    pub duration_s: f64,
    /// `--sync-budget`, in milliseconds.
    pub sync_budget_ms: f64,
    pub streams: StreamStats,
    pub probes: ProbeReport,
    pub pool: PoolStats,
    pub process: ProcessStats,
    pub verdict: Verdict,
    /// The numbers behind the verdict, in words.
    pub verdict_reason: String,
}

/// The inputs of a report, before judging.
#[derive(Debug)]
pub struct Measurements {
    pub gateway: String,
    pub stream_query: String,
    pub duration: Duration,
    pub sync_budget: Duration,
    pub streams: StreamStats,
    pub probes: ProbeReport,
    pub pool: PoolStats,
    pub process: ProcessStats,
}

impl Report {
    pub fn new(m: Measurements) -> Self {
        let (mut verdict, mut verdict_reason) =
            judge(&m.streams, &m.probes.health_sync, &m.pool, m.sync_budget);
        if let Some(stalled) = async_stalled(&m.probes.health_async, m.sync_budget) {
            verdict_reason = match verdict {
                Verdict::Exhausted => format!("{verdict_reason}; {stalled}"),
                Verdict::Healthy => stalled,
            };
            verdict = Verdict::Exhausted;
        }
        Self {
            mode: m.probes.mode.clone().unwrap_or_else(|| "unknown".into()),
            gateway: m.gateway,
            stream_query: m.stream_query,
            duration_s: m.duration.as_secs_f64(),
            sync_budget_ms: m.sync_budget.as_secs_f64() * 1e3,
            streams: m.streams,
            probes: m.probes,
            pool: m.pool,
            process: m.process,
            verdict,
            verdict_reason,
        }
    }

    /// Writes the report as pretty JSON, creating the file's directory if needed.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        crate::write_json(path, self)
    }

    /// The verdict line: `EXHAUSTED: <reason>` or `HEALTHY: <reason>`.
    pub fn verdict_line(&self) -> String {
        let word = match self.verdict {
            Verdict::Exhausted => "EXHAUSTED",
            Verdict::Healthy => "HEALTHY",
        };
        format!("{word}: {}", self.verdict_reason)
    }
}

/// Applies the three rules of the module docs. Returns the verdict and its reason.
pub fn judge(
    streams: &StreamStats,
    sync: &ProbeStats,
    pool: &PoolStats,
    budget: Duration,
) -> (Verdict, String) {
    let budget_ms = budget.as_secs_f64() * 1e3;
    let mut bad = Vec::new();
    let mut good = Vec::new();

    let (flowing, requested) = (streams.max_concurrent_flowing, streams.requested as usize);
    // Failed streams did not flow either, but for another reason than a full pool (a bad
    // query, a dead upstream): name the most common one, so the reader checks that first.
    let failed = match streams.errors.iter().max_by_key(|(_, count)| **count) {
        Some((error, _)) if streams.failed > 0 => {
            let error = error.split(':').next().unwrap_or(error);
            format!(" ({} failed, e.g. {error})", streams.failed)
        }
        _ => String::new(),
    };
    if flowing < requested {
        bad.push(format!(
            "only {flowing} of {requested} streams flowed at once{failed}"
        ));
    } else {
        good.push(format!("all {requested} streams flowed at once"));
    }

    let timeouts = match sync.timeouts {
        0 => String::new(),
        1 => "1 probe timed out".to_owned(),
        n => format!("{n} probes timed out"),
    };
    match sync.p99_ms {
        Some(p99) if p99 > budget_ms => bad.push(format!(
            "/debug/health-sync p99 {} > {} budget{}",
            short(p99),
            short(budget_ms),
            if timeouts.is_empty() {
                String::new()
            } else {
                format!(" ({timeouts})")
            }
        )),
        // Rare, but a timeout means some request waited at least that long: it counts.
        Some(p99) if sync.timeouts > 0 => bad.push(format!(
            "/debug/health-sync: {timeouts} (p99 {})",
            short(p99)
        )),
        Some(p99) => good.push(format!(
            "/debug/health-sync p99 {} within {}",
            short(p99),
            short(budget_ms)
        )),
        None => good.push("/debug/health-sync not measured".to_owned()),
    }

    match (pool.max_threads, pool.peak_queued) {
        (Some(max), queued) if pool.saturated_samples > 0 => bad.push(format!(
            "blocking pool full ({max}/{max}) with up to {} jobs queued",
            queued.unwrap_or(0)
        )),
        (Some(_), Some(0)) => good.push("blocking pool never queued".to_owned()),
        (Some(_), queued) => good.push(format!(
            "blocking pool never full with jobs waiting (peak queued {})",
            queued.unwrap_or(0)
        )),
        (None, _) => good.push("blocking pool not observed (no /debug/pool)".to_owned()),
    }

    if bad.is_empty() {
        (Verdict::Healthy, good.join("; "))
    } else {
        (Verdict::Exhausted, bad.join("; "))
    }
}

/// A fourth sign, beside the three rules: `/debug/health-async` itself slow (p99 above the same
/// budget) or timing out. It needs no pool thread, so when it stalls the async workers are
/// blocked (a blocking call on a worker, `--mode inline`): the whole runtime stopped, not just
/// the pool. `None` when the async probe was fine or not measured.
pub fn async_stalled(probe: &ProbeStats, budget: Duration) -> Option<String> {
    let budget_ms = budget.as_secs_f64() * 1e3;
    let p99 = probe.p99_ms;
    if probe.timeouts == 0 && p99.is_none_or(|p99| p99 <= budget_ms) {
        return None;
    }
    let timeouts = match probe.timeouts {
        0 => String::new(),
        1 => ", 1 probe timed out".to_owned(),
        n => format!(", {n} probes timed out"),
    };
    Some(format!(
        "even /debug/health-async stalled (p99 {}{timeouts}): the async workers themselves were \
         blocked, not just the pool",
        p99.map_or_else(|| "-".to_owned(), short)
    ))
}

/// A duration in milliseconds, the way a person says it: `3ms`, `0.4ms`, `2.0s`.
fn short(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.1}s", ms / 1e3)
    } else if ms >= 10.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{ms:.1}ms")
    }
}

impl fmt::Display for Report {
    /// The human table printed after the run; the README explains every row.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<24}{:>8}{:>10}{:>8}{:>10}{:>10}{:>10}{:>10}",
            "probe", "samples", "timeouts", "errors", "p50", "p95", "p99", "max"
        )?;
        let rows = [
            ("/debug/health-sync", &self.probes.health_sync),
            ("/debug/health-async", &self.probes.health_async),
            ("/health", &self.probes.health),
        ];
        for (path, stats) in rows {
            write!(
                f,
                "{path:<24}{:>8}{:>10}{:>8}{:>10}{:>10}{:>10}{:>10}",
                stats.samples,
                stats.timeouts,
                stats.errors,
                secs(stats.p50_ms),
                secs(stats.p95_ms),
                secs(stats.p99_ms),
                secs(stats.max_ms),
            )?;
            // `/health`'s answers by status: how often it told a load balancer to stay away.
            let statuses: Vec<String> = stats
                .statuses
                .iter()
                .map(|(status, count)| format!("{status} {count}"))
                .collect();
            if statuses.is_empty() {
                writeln!(f)?;
            } else {
                writeln!(f, "   {}", statuses.join(", "))?;
            }
        }
        writeln!(f)?;

        let s = &self.streams;
        writeln!(
            f,
            "streams   {} requested | first byte p50 {}, max {}{} | {} flowing at most at once | \
             {} completed, {} failed, {} cancelled at the end",
            s.requested,
            secs(s.first_byte_ms.p50),
            secs(s.first_byte_ms.max),
            match s.no_first_byte {
                0 => String::new(),
                n => format!(", none for {n}"),
            },
            s.max_concurrent_flowing,
            s.completed,
            s.failed,
            s.cancelled
        )?;
        for (error, count) in &s.errors {
            writeln!(f, "          {count} x {error}")?;
        }
        if !s.methods.is_empty() {
            let methods: Vec<String> = s
                .methods
                .iter()
                .map(|(method, count)| format!("{method} {count}"))
                .collect();
            writeln!(f, "          X-Stream-Method: {}", methods.join(", "))?;
        }

        let p = &self.pool;
        match p.max_threads {
            None => writeln!(f, "pool      not observed (GET /debug/pool did not answer)")?,
            Some(max) => writeln!(
                f,
                "pool      {max} threads max | peak running {} | peak queued {} | \
                 full with jobs queued in {} of {} samples",
                number(p.peak_running),
                number(p.peak_queued),
                p.saturated_samples,
                p.samples
            )?,
        }

        let p = &self.process;
        match p.pid {
            None => writeln!(f, "process   not sampled (pass --pid or --pid-file)")?,
            Some(pid) => writeln!(
                f,
                "process   pid {pid} | threads max {} | RSS max {} | CPU avg {}",
                number(p.threads_max),
                p.rss_max_bytes.map_or_else(|| "-".to_owned(), mebibytes),
                p.cpu_percent_avg
                    .map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.1}%")),
            )?,
        }
        writeln!(f)?;
        writeln!(f, "{}", self.verdict_line())
    }
}

fn secs(ms: Option<f64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| crate::live::seconds(std::time::Duration::from_secs_f64(ms.max(0.0) / 1e3)),
    )
}

fn number(n: Option<usize>) -> String {
    n.map_or_else(|| "-".to_owned(), |n| n.to_string())
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::demo::streams::FirstByte;

    fn streams(requested: u32, flowing: usize) -> StreamStats {
        StreamStats {
            requested,
            max_concurrent_flowing: flowing,
            completed: 0,
            failed: 0,
            cancelled: requested as usize,
            first_byte_ms: FirstByte {
                p50: Some(300.0),
                max: Some(2100.0),
            },
            no_first_byte: 0,
            errors: BTreeMap::new(),
            methods: BTreeMap::new(),
        }
    }

    #[test]
    fn a_stalled_async_probe_is_named() {
        assert_eq!(async_stalled(&sync(2.0, 0), BUDGET), None);
        let reason = async_stalled(&sync(4200.0, 3), BUDGET).expect("stalled");
        assert!(
            reason.contains("/debug/health-async stalled (p99 4.2s, 3 probes timed out)"),
            "{reason}"
        );
        assert!(reason.contains("async workers"), "{reason}");
    }

    fn sync(p99_ms: f64, timeouts: u64) -> ProbeStats {
        ProbeStats {
            samples: 30,
            p50_ms: Some(p99_ms),
            p95_ms: Some(p99_ms),
            p99_ms: Some(p99_ms),
            max_ms: Some(p99_ms),
            timeouts,
            errors: 0,
            last_status: None,
            statuses: BTreeMap::new(),
        }
    }

    fn pool(saturated_samples: u64, peak_queued: usize) -> PoolStats {
        PoolStats {
            max_threads: Some(4),
            peak_running: Some(4),
            peak_queued: Some(peak_queued),
            samples: 80,
            saturated_samples,
        }
    }

    const BUDGET: Duration = Duration::from_millis(100);

    #[test]
    fn a_starved_pool_is_exhausted_with_every_number_named() {
        let (verdict, reason) = judge(&streams(8, 4), &sync(2013.0, 0), &pool(70, 4), BUDGET);
        assert_eq!(verdict, Verdict::Exhausted);
        assert_eq!(
            reason,
            "only 4 of 8 streams flowed at once; /debug/health-sync p99 2.0s > 100ms budget; \
             blocking pool full (4/4) with up to 4 jobs queued"
        );
    }

    #[test]
    fn a_gateway_with_room_is_healthy() {
        let (verdict, reason) = judge(&streams(8, 8), &sync(3.2, 0), &pool(0, 0), BUDGET);
        assert_eq!(verdict, Verdict::Healthy);
        assert_eq!(
            reason,
            "all 8 streams flowed at once; /debug/health-sync p99 3.2ms within 100ms; \
             blocking pool never queued"
        );
    }

    #[test]
    fn each_sign_alone_is_enough() {
        let ok = (streams(8, 8), sync(3.0, 0), pool(0, 0));
        assert_eq!(
            judge(&streams(8, 7), &ok.1, &ok.2, BUDGET).0,
            Verdict::Exhausted
        );
        assert_eq!(
            judge(&ok.0, &sync(150.0, 0), &ok.2, BUDGET).0,
            Verdict::Exhausted
        );
        assert_eq!(
            judge(&ok.0, &ok.1, &pool(1, 1), BUDGET).0,
            Verdict::Exhausted
        );
        // A timeout is exhaustion even if the p99 happens to hide it.
        let (verdict, reason) = judge(&ok.0, &sync(3.0, 1), &ok.2, BUDGET);
        assert_eq!(verdict, Verdict::Exhausted);
        assert!(reason.contains("1 probe timed out"), "{reason}");
    }

    #[test]
    fn failed_streams_are_named_in_the_reason() {
        let mut failing = streams(2, 0);
        failing.failed = 2;
        failing.cancelled = 0;
        failing.errors.insert("HTTP 400: bad query".into(), 2);
        let (verdict, reason) = judge(&failing, &sync(3.0, 0), &pool(0, 0), BUDGET);
        assert_eq!(verdict, Verdict::Exhausted);
        assert!(
            reason.starts_with("only 0 of 2 streams flowed at once (2 failed, e.g. HTTP 400)"),
            "{reason}"
        );
    }

    /// A report of a fixed gateway, 20 s at the default query, `/health` probed as `health`.
    fn fixed_report(streams: StreamStats, health: ProbeStats, process: ProcessStats) -> Report {
        let probes = ProbeReport {
            health_sync: sync(3.0, 0),
            health_async: sync(1.0, 0),
            health,
            mode: Some("fixed".into()),
        };
        Report::new(Measurements {
            gateway: "http://127.0.0.1:8000".into(),
            stream_query: "chunks=20&interval_ms=500".into(),
            duration: Duration::from_secs(20),
            sync_budget: BUDGET,
            streams,
            probes,
            pool: pool(0, 0),
            process,
        })
    }

    #[test]
    fn the_report_reads_back_as_it_was_written() {
        let mut with_errors = streams(8, 6);
        with_errors.failed = 2;
        with_errors.errors.insert("HTTP 502: upstream".into(), 2);
        with_errors.methods.insert("async".into(), 6);
        let mut health = sync(2.0, 0);
        health.last_status = Some("ok".into());
        health.statuses.insert("ok".into(), 30);
        let process = ProcessStats {
            pid: Some(42),
            threads_max: Some(9),
            rss_max_bytes: Some(12 << 20),
            cpu_percent_avg: Some(0.5),
            samples: 80,
        };
        let report = fixed_report(with_errors, health, process);
        let (json, back): (_, crate::DemoReport) = crate::read_back(&report);
        assert_eq!(back.verdict, Verdict::Exhausted);
        assert_eq!(back.probes.health.statuses["ok"], 30);
        // Written without `statuses` when empty, read back as empty.
        let written: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert!(written["probes"]["health_sync"].get("statuses").is_none());
        assert!(back.probes.health_sync.statuses.is_empty());
        assert_eq!(back.probes.health_sync.last_status, None);
    }

    #[test]
    fn the_json_has_the_contracted_fields() {
        let report = fixed_report(streams(8, 8), sync(2.0, 0), ProcessStats::default());
        let json = serde_json::to_value(&report).expect("serialisable");
        for pointer in [
            "/mode",
            "/gateway",
            "/duration_s",
            "/streams/requested",
            "/streams/max_concurrent_flowing",
            "/streams/completed",
            "/streams/failed",
            "/streams/first_byte_ms/p50",
            "/streams/first_byte_ms/max",
            "/probes/health_sync/samples",
            "/probes/health_async/p50_ms",
            "/probes/health/p95_ms",
            "/probes/health/p99_ms",
            "/probes/health/max_ms",
            "/probes/health/timeouts",
            "/pool/max_threads",
            "/pool/peak_running",
            "/pool/peak_queued",
            "/process/threads_max",
            "/process/rss_max_bytes",
            "/process/cpu_percent_avg",
            "/verdict",
            "/verdict_reason",
        ] {
            assert!(json.pointer(pointer).is_some(), "missing {pointer}");
        }
        assert_eq!(json["mode"], "fixed");
        assert_eq!(json["verdict"], "healthy");
        assert!(json["process"]["threads_max"].is_null());
        assert!(report.to_string().contains("HEALTHY: all 8 streams"));
    }
}
