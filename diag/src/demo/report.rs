//! The result of `diag demo`: one struct, serialised as the JSON report, printed as a table,
//! and judged by the verdict rules of [`super::verdict`] (re-exported here, at their older
//! paths: `diag::report::Verdict`, `judge`, `async_stalled`).
//!
//! The JSON field names are a contract (make targets, CI and the benchmarks read them), so they
//! are the Rust field names, and every addition is a new field, never a renamed one.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::demo::verdict::{Outage, Verdict, async_stalled, failure, judge};

use crate::demo::streams::StreamStats;
use crate::demo::verdict;
use crate::pool::PoolStats;
use crate::probe::{Endpoint, ProbeStats, Probed};
use crate::process::ProcessStats;
use crate::readiness::ReadinessReport;

/// The endpoints' stats, under the names the JSON report uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeReport {
    pub health_sync: ProbeStats,
    pub health_async: ProbeStats,
    pub health: ProbeStats,
    /// The admin plane's `/readyz`; null when there was none to probe (`--admin`).
    #[serde(default)]
    pub readyz: Option<ProbeStats>,
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
            readyz: probed
                .probed(Endpoint::Readyz)
                .then(|| probed.stats(Endpoint::Readyz)),
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
    /// `--stream-path`.
    #[serde(default = "default_stream_path")]
    pub stream_path: String,
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
    /// Probes that got no HTTP answer at all; the first sign of a `failed` run.
    #[serde(default)]
    pub outage: Outage,
    /// What the admin plane's `/readyz` said over the run; null without one (`--admin`).
    /// Reported beside the verdict, never part of it.
    #[serde(default)]
    pub readiness: Option<ReadinessReport>,
    pub verdict: Verdict,
    /// The numbers behind the verdict, in words.
    pub verdict_reason: String,
}

/// The inputs of a report, before judging.
#[derive(Debug)]
pub struct Measurements {
    pub gateway: String,
    pub stream_path: String,
    pub stream_query: String,
    pub duration: Duration,
    pub sync_budget: Duration,
    pub streams: StreamStats,
    pub probes: ProbeReport,
    pub pool: PoolStats,
    pub process: ProcessStats,
    pub outage: Outage,
    pub readiness: Option<ReadinessReport>,
}

impl Report {
    /// Judges the measurements ([`verdict::decide`]: failure first, then starvation), and
    /// says what readiness read beside it ([`verdict::readiness`]), when it was probed.
    pub fn new(m: Measurements) -> Self {
        let (verdict, mut verdict_reason) = verdict::decide(
            &m.streams,
            &m.probes.health_sync,
            &m.probes.health_async,
            &m.pool,
            m.sync_budget,
            &m.outage,
            &m.stream_path,
        );
        if let (Some(readiness), Some(readyz)) = (&m.readiness, &m.probes.readyz) {
            verdict_reason.push_str("; ");
            verdict_reason.push_str(&verdict::readiness(readiness, readyz));
        }
        Self {
            mode: m.probes.mode.clone().unwrap_or_else(|| "unknown".into()),
            gateway: m.gateway,
            stream_path: m.stream_path,
            stream_query: m.stream_query,
            duration_s: m.duration.as_secs_f64(),
            sync_budget_ms: m.sync_budget.as_secs_f64() * 1e3,
            streams: m.streams,
            probes: m.probes,
            pool: m.pool,
            process: m.process,
            outage: m.outage,
            readiness: m.readiness,
            verdict,
            verdict_reason,
        }
    }

    /// Writes the report as pretty JSON, creating the file's directory if needed.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        crate::write_json(path, self)
    }

    /// The verdict line: `EXHAUSTED: <reason>`, `HEALTHY: <reason>` or `FAILED: <reason>`.
    pub fn verdict_line(&self) -> String {
        format!("{}: {}", self.verdict.word(), self.verdict_reason)
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
        let mut rows = vec![
            ("/debug/health-sync", &self.probes.health_sync),
            ("/debug/health-async", &self.probes.health_async),
            ("/health", &self.probes.health),
        ];
        rows.extend(
            self.probes
                .readyz
                .iter()
                .map(|stats| ("/readyz (admin)", stats)),
        );
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
            // `/health`'s and `/readyz`'s answers by status: how often each told a load
            // balancer to stay away.
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
        if let Some(readiness) = &self.readiness {
            writeln!(f, "{}", readiness.line())?;
        }
        writeln!(f)?;
        writeln!(f, "{}", self.verdict_line())
    }
}

/// Reports written before `--stream-path` existed streamed from here.
fn default_stream_path() -> String {
    crate::cli::DEFAULT_STREAM_PATH.to_owned()
}

fn secs(ms: Option<f64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| crate::histogram::seconds(std::time::Duration::from_secs_f64(ms.max(0.0) / 1e3)),
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
    use crate::demo::verdict::tests::{BUDGET, failing, outage, pool, streams, sync};
    use crate::readiness::CheckReport;

    #[test]
    fn a_failed_run_is_neither_exhausted_nor_healthy() {
        let mut report = fixed_report(
            failing(2, &[(401, 2)], &[]),
            sync(2.0, 0),
            ProcessStats::default(),
        );
        assert_eq!(report.verdict, Verdict::Failed);
        assert_eq!(
            report.verdict_line(),
            "FAILED: 2 of 2 streams refused with HTTP 401 (a key? pass --api-key or -H)"
        );
        let json = serde_json::to_value(&report).expect("serialisable");
        assert_eq!(json["verdict"], "failed");
        assert_eq!(json["streams"]["refused"]["401"], 2);
        assert_eq!(json["outage"]["unanswered_probes"], 0);
        assert!(json["outage"]["stopped_answering_s"].is_null());
        report.outage = outage(3, 1.0, 1.2, Some(1.0));
        let (_, back): (_, crate::DemoReport) = crate::read_back(&report);
        assert_eq!(back.outage, report.outage);
    }

    /// A report of a fixed gateway, 20 s at the default query, `/health` probed as `health`.
    fn fixed_report(streams: StreamStats, health: ProbeStats, process: ProcessStats) -> Report {
        let probes = ProbeReport {
            health_sync: sync(3.0, 0),
            health_async: sync(1.0, 0),
            health,
            readyz: None,
            mode: Some("fixed".into()),
        };
        Report::new(Measurements {
            gateway: "http://127.0.0.1:8000".into(),
            stream_path: "/chat/stream".into(),
            stream_query: "chunks=20&interval_ms=500".into(),
            duration: Duration::from_secs(20),
            sync_budget: BUDGET,
            streams,
            probes,
            pool: pool(0, 0),
            process,
            outage: Outage::default(),
            readiness: None,
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
    fn readiness_is_a_row_a_line_and_a_clause_but_not_the_verdict() {
        let without = fixed_report(streams(8, 8), sync(2.0, 0), ProcessStats::default());
        let json = serde_json::to_value(&without).expect("serialisable");
        assert!(json["probes"]["readyz"].is_null() && json["readiness"].is_null());
        assert!(!without.to_string().contains("readyz"));

        let mut readyz = sync(0.6, 0);
        readyz.last_status = Some("degraded".into());
        readyz.statuses = BTreeMap::from([("degraded".into(), 25), ("ready".into(), 6)]);
        let readiness = ReadinessReport {
            url: "http://127.0.0.1:8002/readyz".into(),
            answers: 31,
            not_ready_answers: 25,
            first_not_ready_s: Some(0.8),
            first_not_ready: Some("degraded".into()),
            failing: BTreeMap::from([("blocking_pool".into(), 25)]),
            checks: BTreeMap::from([(
                "blocking_pool".into(),
                CheckReport {
                    max_delay_ms: 1840.0,
                    threshold_ms: 100.0,
                },
            )]),
        };
        let mut probes = without.probes.clone();
        probes.readyz = Some(readyz);
        let with = Report::new(Measurements {
            gateway: without.gateway.clone(),
            stream_path: without.stream_path.clone(),
            stream_query: without.stream_query.clone(),
            duration: Duration::from_secs(20),
            sync_budget: BUDGET,
            streams: without.streams.clone(),
            probes,
            pool: without.pool.clone(),
            process: ProcessStats::default(),
            outage: Outage::default(),
            readiness: Some(readiness.clone()),
        });
        // The same verdict, for the same reason, and then what readiness said.
        assert_eq!(with.verdict, without.verdict);
        assert_eq!(
            with.verdict_reason,
            format!(
                "{}; readiness turned degraded at 0.8 s (blocking_pool failing, 25 of 31 answers \
                 not ready)",
                without.verdict_reason
            )
        );
        let table = with.to_string();
        assert!(
            table.contains(&format!("{:<24}{:>8}", "/readyz (admin)", 30))
                && table.contains("   degraded 25, ready 6\n"),
            "{table}"
        );
        assert!(
            table.contains(
                "readiness http://127.0.0.1:8002/readyz | not ready in 25 of 31 answers, first \
                 degraded at 0.8 s | blocking_pool up to 1.840s (threshold 100.0ms), failing in 25"
            ),
            "{table}"
        );
        let (_, back): (_, crate::DemoReport) = crate::read_back(&with);
        assert_eq!(back.readiness, Some(readiness));
        assert_eq!(
            back.probes.readyz.expect("read back").statuses["degraded"],
            25
        );
    }

    #[test]
    fn the_json_has_the_contracted_fields() {
        let report = fixed_report(streams(8, 8), sync(2.0, 0), ProcessStats::default());
        let json = serde_json::to_value(&report).expect("serialisable");
        for pointer in [
            "/mode",
            "/gateway",
            "/stream_path",
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
