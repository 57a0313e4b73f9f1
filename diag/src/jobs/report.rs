//! `diag jobs`'s result: as printed, and as `--json` writes it (xtask's `bench jobs` reads it).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cli::jobs::JobsArgs;
use crate::histogram::Spread;

/// One phase: how long it took, and the spread of its per-item times (ms).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    pub seconds: f64,
    pub latency: Spread,
}

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobsReport {
    /// Always `jobs`.
    pub kind: String,
    pub base_url: String,
    /// `-n`.
    pub jobs: u64,
    /// `-c`.
    pub concurrency: u32,
    /// Submits answered 202 (each a durable commit).
    pub accepted: u64,
    /// Other answers, by status and error code (or transport error).
    pub refused: BTreeMap<String, u64>,
    /// `accepted / submit.seconds`.
    pub accepted_per_s: f64,
    /// The submit phase; `latency` is each submit's answer time.
    pub submit: Phase,
    /// The largest `queue_position` a 202 gave.
    pub max_queue_position: u64,
    /// Accepted jobs by the final status they were seen in.
    pub finished: BTreeMap<String, u64>,
    /// Accepted jobs not seen finished before `--timeout`.
    pub lost: u64,
    /// From each job's submit to the poll that saw it finished, ms.
    pub end_to_end_ms: Spread,
    /// `--poll-interval`, ms: the resolution of `end_to_end_ms`.
    pub poll_interval_ms: u64,
    /// From the first submit to the last job seen finished, seconds.
    pub total_seconds: f64,
}

impl JobsReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        args: &JobsArgs,
        accepted: u64,
        refused: BTreeMap<String, u64>,
        submit: Phase,
        max_queue_position: u64,
        finished: BTreeMap<String, u64>,
        lost: u64,
        end_to_end_ms: Spread,
        total: Duration,
    ) -> Self {
        Self {
            kind: "jobs".to_owned(),
            base_url: args.base_url.clone(),
            jobs: args.jobs,
            concurrency: args.concurrency,
            accepted,
            refused,
            accepted_per_s: if submit.seconds > 0.0 {
                accepted as f64 / submit.seconds
            } else {
                0.0
            },
            submit,
            max_queue_position,
            finished,
            lost,
            end_to_end_ms,
            poll_interval_ms: u64::try_from(args.poll_interval.as_millis()).unwrap_or(u64::MAX),
            total_seconds: total.as_secs_f64(),
        }
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"))
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(what, n)| format!("{n} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for JobsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let submit = &self.submit.latency;
        let e2e = &self.end_to_end_ms;
        writeln!(
            f,
            "Jobs: {} at {}/v1/jobs, {} submits at once",
            self.jobs, self.base_url, self.concurrency
        )?;
        writeln!(
            f,
            "  accepted     {} in {:.2} s: {:.1} jobs/s (each a durable commit); refused: {}",
            self.accepted,
            self.submit.seconds,
            self.accepted_per_s,
            counts(&self.refused)
        )?;
        writeln!(
            f,
            "  submit       p50 {}, p99 {}, max {}; deepest queue position {}",
            ms(submit.p50),
            ms(submit.p99),
            ms(submit.max),
            self.max_queue_position
        )?;
        writeln!(
            f,
            "  finished     {}; lost {}",
            counts(&self.finished),
            self.lost
        )?;
        writeln!(
            f,
            "  end to end   p50 {}, p90 {}, p99 {}, max {} (seen by polls every {} ms)",
            ms(e2e.p50),
            ms(e2e.p90),
            ms(e2e.p99),
            ms(e2e.max),
            self.poll_interval_ms
        )?;
        writeln!(
            f,
            "  total        {:.2} s from the first submit to the last job finished",
            self.total_seconds
        )
    }
}
