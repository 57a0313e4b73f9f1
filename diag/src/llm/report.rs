//! `diag llm`'s result: the JSON written by `--json` (its field names are a contract: the
//! benchmarks read them), the human report, and the *sustained* rule of [`crate::llm`]'s docs.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cli::{Arrivals, LlmArgs};
use crate::histogram::{Spread, round_ms, seconds};
use crate::llm::stream::Tally;
use crate::probe::{Endpoint, ProbeStats, Probed};
use crate::readiness::ReadinessReport;

/// A gap longer than this many times the pacing means a stream stalled.
pub const GAP_FACTOR: f64 = 10.0;

/// The smallest pacing the gap rule uses, ms.
pub const MIN_PACING_MS: f64 = 1.0;

/// Failed streams must stay below this fraction of the streams started.
pub const MAX_ERROR_RATE: f64 = 0.001;

/// The `kind` of the report: one value, so that reading a load report as this one fails on its
/// first field instead of on some number further down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Llm,
}

/// `diag llm`'s result, as printed and as written by `--json` (schema in the README).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlmReport {
    /// Always `llm`.
    pub kind: Kind,
    pub base_url: String,
    pub model: String,
    /// `-c`; `null` under `-q`.
    pub concurrency: Option<u32>,
    /// `-q`, streams per second; `null` under `-c`.
    pub rate: Option<f64>,
    /// From the first stream started to the last one ended, seconds.
    pub duration_s: f64,
    pub streams: StreamCounts,
    pub ttft_ms: Spread,
    pub itl_ms: Spread,
    pub e2e_ms: Spread,
    /// The largest gap between two tokens of one stream, over all streams.
    pub max_gap_ms: Option<f64>,
    pub output_tokens: OutputTokens,
    /// `--health`'s probes of `{base}/health` (or `--health-url`); `null` without `--health`.
    pub health: Option<PollStats>,
    /// The URL `--health` polled; `null` without `--health`. (Reports written before
    /// `--health-url` existed polled `{base}/health`.)
    #[serde(default)]
    pub health_url: Option<String>,
    /// `--admin`'s probes of the admin plane's `/readyz` (latency; a 503 is an answer); `null`
    /// without `--admin`.
    #[serde(default)]
    pub readyz: Option<PollStats>,
    /// What those `/readyz` answers said (ready or not, which check, its worst delay), on the
    /// streams' clock; `null` without `--admin`.
    #[serde(default)]
    pub readiness: Option<ReadinessReport>,
    /// The pacing the gap rule used: `--pacing-ms`, else the median ITL; `null` if neither.
    pub pacing_ms: Option<f64>,
    pub sustained: bool,
    pub sustained_reason: String,
    /// One message per error kind, for the printed report.
    #[serde(skip)]
    error_examples: BTreeMap<String, String>,
}

/// What `--health`'s probes of `{base}/health` (or `--health-url`) saw. Milliseconds, 3 decimals. The prober's
/// [`ProbeStats`] less what this report never carried (p95, the `/health` statuses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollStats {
    /// Probes answered or timed out: the percentiles' population.
    pub samples: u64,
    /// `null` when there were no samples.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Probes with no answer within the probe timeout (in the percentiles at that value).
    pub timeouts: u64,
    /// Probes with no usable answer (refused, an unexpected status): not in the percentiles.
    pub errors: u64,
}

impl From<&ProbeStats> for PollStats {
    fn from(stats: &ProbeStats) -> Self {
        Self {
            samples: stats.samples,
            p50_ms: stats.p50_ms,
            p99_ms: stats.p99_ms,
            max_ms: stats.max_ms,
            timeouts: stats.timeouts,
            errors: stats.errors,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamCounts {
    pub started: u64,
    /// Ended with `data: [DONE]`.
    pub completed: u64,
    /// Ended otherwise; by kind in `errors`.
    pub failed: u64,
    /// Still open at the end of `-z`, dropped by diag: neither completed nor failed.
    pub cancelled: u64,
    /// Failed streams by kind: `http_<status>`, `connect`, `timeout`, `cut`, `bad_event`,
    /// `api_error`, `other`.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputTokens {
    /// Over all streams: usage tokens of those that reported them, else content events.
    pub total: u64,
    /// `total / duration_s`.
    pub per_s: f64,
    /// Median over completed streams of the stream's tokens / its E2E.
    pub per_stream_p50_per_s: Option<f64>,
}

impl LlmReport {
    /// Adds what the side probes saw: `--health`'s and `--admin`'s `/readyz`, whose times count
    /// from `started`, when the streams began.
    pub(super) fn add_probes(&mut self, args: &LlmArgs, probed: &Probed, started: Instant) {
        if probed.probed(Endpoint::Health) {
            self.health = Some(PollStats::from(&probed.stats(Endpoint::Health)));
            self.health_url = args.health_url();
        }
        if let Some(admin) = &args.admin {
            self.readyz = Some(PollStats::from(&probed.stats(Endpoint::Readyz)));
            self.readiness = Some(ReadinessReport::new(
                format!("{admin}/readyz"),
                &probed.readiness,
                started,
            ));
        }
    }

    pub(super) fn new(args: &LlmArgs, elapsed: Duration, t: &Tally) -> Self {
        let duration_s = elapsed.as_secs_f64();
        let itl = t.itl.spread();
        let pacing_ms = args.pacing_ms.or(itl.p50);
        let max_gap_ms = t.max_gap.map(|gap| round_ms(gap.as_secs_f64() * 1e3));
        let errors: BTreeMap<String, u64> = t
            .errors
            .iter()
            .map(|(kind, (count, _))| (kind.clone(), *count))
            .collect();
        let (sustained, sustained_reason) =
            judge(t.started, t.failed, &errors, max_gap_ms, pacing_ms);
        Self {
            kind: Kind::Llm,
            base_url: args.base_url.clone(),
            model: args.model.clone(),
            concurrency: match args.arrivals() {
                Arrivals::Closed(c) => Some(c),
                Arrivals::Open(_) => None,
            },
            rate: args.rate,
            duration_s: round_ms(duration_s),
            streams: StreamCounts {
                started: t.started,
                completed: t.completed,
                failed: t.failed,
                cancelled: t.cancelled,
                errors,
            },
            ttft_ms: t.ttft.spread(),
            itl_ms: itl,
            e2e_ms: t.e2e.spread(),
            max_gap_ms,
            output_tokens: OutputTokens {
                total: t.tokens,
                per_s: round_ms(t.tokens as f64 / duration_s.max(1e-9)),
                per_stream_p50_per_s: (!t.stream_rates.is_empty())
                    .then(|| round_ms(t.stream_rates.value_at_quantile(0.5) as f64 / 1e3)),
            },
            health_url: None,
            health: None,
            readyz: None,
            readiness: None,
            pacing_ms,
            sustained,
            sustained_reason,
            error_examples: t
                .errors
                .iter()
                .map(|(kind, (_, example))| (kind.clone(), example.clone()))
                .collect(),
        }
    }

    /// `SUSTAINED: <reason>` or `NOT SUSTAINED: <reason>`.
    pub fn sustained_line(&self) -> String {
        let word = if self.sustained {
            "SUSTAINED"
        } else {
            "NOT SUSTAINED"
        };
        format!("{word}: {}", self.sustained_reason)
    }
}

/// The sustained rule of the module docs. Returns the judgement and its reason, which always
/// names both numbers: the largest gap against its limit, and the failures against theirs.
pub fn judge(
    started: u64,
    failed: u64,
    errors: &BTreeMap<String, u64>,
    max_gap_ms: Option<f64>,
    pacing_ms: Option<f64>,
) -> (bool, String) {
    if started == 0 {
        return (false, "no stream started".to_owned());
    }
    let rate = failed as f64 / started as f64;
    let errors_ok = rate < MAX_ERROR_RATE;
    let kinds: Vec<String> = errors
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect();
    let errors_part = format!(
        "{failed} of {started} streams failed ({:.1}% {} {:.1}%{})",
        rate * 100.0,
        if errors_ok { "<" } else { ">=" },
        MAX_ERROR_RATE * 100.0,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(": {}", kinds.join(", "))
        }
    );
    let (gaps_ok, gaps_part) = match (max_gap_ms, pacing_ms) {
        (Some(gap), Some(pacing)) => {
            let limit = GAP_FACTOR * pacing.max(MIN_PACING_MS);
            let ok = gap <= limit;
            (
                ok,
                format!(
                    "largest gap {} {} {GAP_FACTOR} x {} pacing",
                    ms(gap),
                    if ok { "<=" } else { ">" },
                    ms(pacing.max(MIN_PACING_MS))
                ),
            )
        }
        (Some(gap), None) => (true, format!("largest gap {} (no pacing known)", ms(gap))),
        (None, _) => (true, "no gap between tokens to judge".to_owned()),
    };
    let sustained = errors_ok && gaps_ok;
    (sustained, format!("{gaps_part}; {errors_part}"))
}

/// A time in ms for a person: `0.4ms`, `21.3ms`, `2.013s`.
fn ms(ms: f64) -> String {
    seconds(Duration::from_secs_f64(ms.max(0.0) / 1e3))
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), ms)
}

impl fmt::Display for LlmReport {
    /// The human report; the README explains each line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.streams;
        writeln!(
            f,
            "streams   {} started | {} completed | {} failed | {} cancelled at the end",
            s.started, s.completed, s.failed, s.cancelled
        )?;
        for (kind, count) in &s.errors {
            let example = self.error_examples.get(kind).map_or("", String::as_str);
            writeln!(f, "          {count} x {kind}: {example}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<10}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p90", "p99", "max"
        )?;
        for (name, spread) in [
            ("TTFT", &self.ttft_ms),
            ("ITL", &self.itl_ms),
            ("E2E", &self.e2e_ms),
        ] {
            writeln!(
                f,
                "{name:<10}{:>10}{:>10}{:>10}{:>10}",
                cell(spread.p50),
                cell(spread.p90),
                cell(spread.p99),
                cell(spread.max)
            )?;
        }
        writeln!(f)?;
        let t = &self.output_tokens;
        writeln!(
            f,
            "tokens    {} output | {:.1} tokens/s over {:.2}s | {} tokens/s per stream (p50) | largest gap {}",
            t.total,
            t.per_s,
            self.duration_s,
            t.per_stream_p50_per_s
                .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.1}")),
            cell(self.max_gap_ms),
        )?;
        if let Some(h) = &self.health {
            let url = match &self.health_url {
                Some(url) => url.clone(),
                None => format!("{}/health", self.base_url),
            };
            writeln!(
                f,
                "health    {url}: {} samples | p50 {} | p99 {} | max {} | {} timeouts | {} errors",
                h.samples,
                cell(h.p50_ms),
                cell(h.p99_ms),
                cell(h.max_ms),
                h.timeouts,
                h.errors
            )?;
        }
        if let Some(r) = &self.readyz {
            writeln!(
                f,
                "readyz    {} samples | p50 {} | p99 {} | max {} | {} timeouts | {} errors",
                r.samples,
                cell(r.p50_ms),
                cell(r.p99_ms),
                cell(r.max_ms),
                r.timeouts,
                r.errors
            )?;
        }
        if let Some(readiness) = &self.readiness {
            writeln!(f, "{}", readiness.line())?;
        }
        writeln!(f)?;
        writeln!(f, "{}", self.sustained_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{self, Command};

    #[test]
    fn the_report_reads_back_as_it_was_written() {
        let Command::Llm(args) = cli::parse(&["llm", "-n", "4", "-c", "2", "--pacing-ms", "20"])
        else {
            panic!("not diag llm");
        };
        let mut tally = Tally::new().expect("tally");
        tally.ttft.record(Duration::from_millis(100));
        tally.itl.record(Duration::from_millis(21));
        tally.e2e.record(Duration::from_millis(300));
        tally.stream_rates.saturating_record(33_000);
        tally.max_gap = Some(Duration::from_millis(25));
        (tally.started, tally.completed, tally.failed, tally.tokens) = (4, 3, 1, 30);
        tally
            .errors
            .insert("http_500".into(), (1, "HTTP 500: boom".into()));
        let health = PollStats {
            samples: 4,
            p50_ms: Some(0.4),
            p99_ms: Some(1.2),
            max_ms: Some(1.2),
            timeouts: 0,
            errors: 0,
        };
        let mut report = LlmReport::new(&args, Duration::from_secs(1), &tally);
        report.health = Some(health);
        let (json, back): (_, crate::LlmReport) = crate::read_back(&report);
        assert_eq!(back.kind, Kind::Llm);
        assert_eq!(back.concurrency, Some(2));
        assert_eq!(back.streams.errors["http_500"], 1);
        assert!(!back.sustained);
        // Another report's kind is refused on that field.
        let load = json.replace(r#""kind": "llm""#, r#""kind": "load""#);
        assert!(serde_json::from_str::<LlmReport>(&load).is_err());
    }

    fn no_errors() -> BTreeMap<String, u64> {
        BTreeMap::new()
    }

    #[test]
    fn steady_streams_are_sustained_with_both_numbers_named() {
        let (ok, reason) = judge(20, 0, &no_errors(), Some(21.3), Some(20.1));
        assert!(ok);
        assert_eq!(
            reason,
            "largest gap 21.3ms <= 10 x 20.1ms pacing; 0 of 20 streams failed (0.0% < 0.1%)"
        );
    }

    #[test]
    fn a_stall_or_a_failure_is_not_sustained() {
        let (ok, reason) = judge(20, 0, &no_errors(), Some(250.0), Some(20.0));
        assert!(!ok);
        assert!(
            reason.starts_with("largest gap 250.0ms > 10 x 20.0ms pacing"),
            "{reason}"
        );
        let errors = BTreeMap::from([("http_500".to_owned(), 1)]);
        let (ok, reason) = judge(20, 1, &errors, Some(21.0), Some(20.0));
        assert!(!ok);
        assert!(
            reason.ends_with("1 of 20 streams failed (5.0% >= 0.1%: 1 http_500)"),
            "{reason}"
        );
    }

    #[test]
    fn edge_cases_are_judged_plainly() {
        assert_eq!(
            judge(0, 0, &no_errors(), None, None),
            (false, "no stream started".to_owned())
        );
        // One token per stream: no gaps; only the failures decide.
        let (ok, reason) = judge(5, 0, &no_errors(), None, None);
        assert!(ok);
        assert!(
            reason.starts_with("no gap between tokens to judge"),
            "{reason}"
        );
        // Back-to-back tokens: a 0.01 ms median does not make a 0.1 ms limit.
        assert!(judge(5, 0, &no_errors(), Some(5.0), Some(0.01)).0);
        // 1 failure in 2000 is 0.05%: below the bar.
        assert!(judge(2000, 1, &no_errors(), Some(1.0), Some(1.0)).0);
    }

    #[test]
    fn health_stats_keep_their_own_json_fields() {
        let mut stats = ProbeStats {
            samples: 3,
            p95_ms: Some(2.0),
            last_status: Some("ok".into()),
            ..ProbeStats::default()
        };
        stats.statuses.insert("ok".into(), 3);
        let json = serde_json::to_value(PollStats::from(&stats)).expect("serialisable");
        let mut keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "errors", "max_ms", "p50_ms", "p99_ms", "samples", "timeouts"
            ]
        );
        assert_eq!(json["samples"], 3);
    }
}
