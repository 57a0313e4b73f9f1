//! `diag load`'s result: the JSON written by `--json` (its field names are a contract: the
//! benchmarks read them) and the human report, laid out as hey's so the two read side by side.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::{LoadArgs, Until};
use crate::histogram::{self, round_ms, secs};
use crate::load::tally::{ErrorCount, Tally};

/// The `kind` of the report: one value, so that reading an llm report as this one fails on its
/// first field instead of on some number further down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Load,
}

/// `diag load`'s result, as printed and as written by `--json` (schema in the README).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// Always `load`.
    pub kind: Kind,
    pub url: String,
    pub method: String,
    /// Workers (requests in flight at most).
    pub concurrency: usize,
    /// `-q`, requests per second; `null` for a closed loop.
    pub rate: Option<f64>,
    /// From the first request to the last one finished, seconds.
    pub duration_s: f64,
    pub requests: RequestCounts,
    /// `requests.total / duration_s`.
    pub rps: f64,
    pub latency_ms: LatencyMs,
    /// Responses by HTTP status.
    pub status_codes: BTreeMap<u16, u64>,
    /// Requests without a complete response, by kind.
    pub errors: BTreeMap<String, ErrorCount>,
    pub bytes: ByteCount,
    #[serde(skip)]
    bars: Vec<histogram::Bar>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestCounts {
    /// `ok + errors`.
    pub total: u64,
    /// Requests that got a complete response, whatever its status.
    pub ok: u64,
    /// Requests that did not (see `errors`).
    pub errors: u64,
    /// Requests dropped at the `-z` deadline: not in `total`.
    pub aborted: u64,
    /// With `-q` and `-z`: requests that were due before the deadline but never sent, because
    /// every worker was still busy (the server fell behind the rate). Not in `total`.
    pub unsent: u64,
}

/// Latency in ms, 3 decimals; `null` when nothing was measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyMs {
    pub fastest: Option<f64>,
    pub slowest: Option<f64>,
    pub average: Option<f64>,
    pub p10: Option<f64>,
    pub p25: Option<f64>,
    pub p50: Option<f64>,
    pub p75: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub p99_9: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByteCount {
    /// Response body bytes received.
    pub total: u64,
}

/// The percentiles hey prints, with their labels.
const PERCENTILES: [(&str, f64); 8] = [
    ("10%", 0.10),
    ("25%", 0.25),
    ("50%", 0.50),
    ("75%", 0.75),
    ("90%", 0.90),
    ("95%", 0.95),
    ("99%", 0.99),
    ("99.9%", 0.999),
];

impl LoadReport {
    pub(super) fn new(
        args: &LoadArgs,
        concurrency: usize,
        elapsed: Duration,
        tally: &Tally,
    ) -> Self {
        let l = &tally.latencies;
        let responses: u64 = tally.statuses.values().sum();
        let errors: u64 = tally.errors.values().map(|e| e.count).sum();
        let duration_s = elapsed.as_secs_f64();
        let sent = responses + errors + tally.aborted;
        let due = match (args.rate, args.until()) {
            // Tickets k = 0, 1, … with k / rate < duration.
            (Some(rate), Until::Elapsed(duration)) => {
                (duration.as_secs_f64() * rate - 1e-9).ceil().max(0.0) as u64
            }
            _ => sent,
        };
        Self {
            kind: Kind::Load,
            url: args.url.to_string(),
            method: args.method.to_string(),
            concurrency,
            rate: args.rate,
            duration_s: round_ms(duration_s),
            requests: RequestCounts {
                total: responses + errors,
                ok: responses,
                errors,
                aborted: tally.aborted,
                unsent: due.saturating_sub(sent),
            },
            rps: round_ms((responses + errors) as f64 / duration_s.max(1e-9)),
            latency_ms: LatencyMs {
                fastest: l.min_ms(),
                slowest: l.max_ms(),
                average: l.mean_ms(),
                p10: l.quantile_ms(0.10),
                p25: l.quantile_ms(0.25),
                p50: l.quantile_ms(0.50),
                p75: l.quantile_ms(0.75),
                p90: l.quantile_ms(0.90),
                p95: l.quantile_ms(0.95),
                p99: l.quantile_ms(0.99),
                p99_9: l.quantile_ms(0.999),
            },
            status_codes: tally.statuses.clone(),
            errors: tally
                .errors
                .iter()
                .map(|(kind, e)| ((*kind).to_owned(), e.clone()))
                .collect(),
            bytes: ByteCount { total: tally.bytes },
            bars: l.bars(10),
        }
    }

    fn percentiles(&self) -> [Option<f64>; 8] {
        let l = &self.latency_ms;
        [l.p10, l.p25, l.p50, l.p75, l.p90, l.p95, l.p99, l.p99_9]
    }
}

impl fmt::Display for LoadReport {
    /// hey's layout, so the two can be read side by side; the README explains each line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_ms;
        writeln!(f, "Summary:")?;
        writeln!(f, "  Total:\t{:.4} secs", self.duration_s)?;
        writeln!(f, "  Slowest:\t{}", secs(l.slowest))?;
        writeln!(f, "  Fastest:\t{}", secs(l.fastest))?;
        writeln!(f, "  Average:\t{}", secs(l.average))?;
        writeln!(f, "  Requests/sec:\t{:.4}", self.rps)?;
        writeln!(f)?;
        writeln!(f, "  Total data:\t{} bytes", self.bytes.total)?;
        if let Some(size) = self.bytes.total.checked_div(self.requests.ok) {
            writeln!(f, "  Size/request:\t{size} bytes")?;
        }
        if self.requests.aborted > 0 {
            writeln!(
                f,
                "  Aborted:\t{} requests in flight at the end of -z (not counted)",
                self.requests.aborted
            )?;
        }
        if self.requests.unsent > 0 {
            writeln!(
                f,
                "  Unsent:\t{} requests due under -q were never sent (all {} workers were busy)",
                self.requests.unsent, self.concurrency
            )?;
        }

        if !self.bars.is_empty() {
            writeln!(f, "\nResponse time histogram:")?;
            let mut text = String::new();
            histogram::write_bars(&mut text, &self.bars)?;
            f.write_str(&text)?;

            let from = if self.rate.is_some() {
                " (a late request counts from its intended start)"
            } else {
                ""
            };
            writeln!(f, "\nLatency distribution{from}:")?;
            for ((label, _), value) in PERCENTILES.iter().zip(self.percentiles()) {
                writeln!(f, "  {label} in {}", secs(value))?;
            }
        }

        if !self.status_codes.is_empty() {
            writeln!(f, "\nStatus code distribution:")?;
            for (status, count) in &self.status_codes {
                writeln!(f, "  [{status}]\t{count} responses")?;
            }
        }
        if !self.errors.is_empty() {
            writeln!(f, "\nError distribution:")?;
            for (kind, error) in &self.errors {
                writeln!(f, "  [{}]\t{kind}: {}", error.count, error.example)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{self, Command};

    #[test]
    fn the_report_reads_back_as_it_was_written() {
        let Command::Load(args) = cli::parse(&["load", "-z", "1s", "-q", "50", "http://[::1]:9/"])
        else {
            panic!("not diag load");
        };
        let mut tally = Tally::new().expect("tally");
        for ms in [2, 3, 5] {
            tally.latencies.record(Duration::from_millis(ms));
        }
        tally.statuses.insert(200, 2);
        tally.statuses.insert(503, 1);
        tally.error("timeout", || "no complete response within 1s".into());
        tally.bytes = 45;
        tally.aborted = 1;
        let report = LoadReport::new(&args, 5, Duration::from_secs(1), &tally);
        let (json, back): (_, crate::LoadReport) = crate::read_back(&report);
        assert_eq!(back.kind, Kind::Load);
        assert_eq!(back.status_codes[&503], 1);
        assert_eq!(back.errors["timeout"].count, 1);
        assert_eq!(back.rate, Some(50.0));
        // Another report's kind is refused on that field.
        let llm = json.replace(r#""kind": "load""#, r#""kind": "llm""#);
        assert!(serde_json::from_str::<LoadReport>(&llm).is_err());
    }
}
