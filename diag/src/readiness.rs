//! The gateway's `/readyz`, as diag reads it: what one answer says, and what a run of answers
//! adds up to.
//!
//! The lesson it carries: `/readyz` is served by the gateway's admin plane, a thread and a
//! runtime of its own that measure the main runtime *from outside*. So it answers at once
//! however stalled the gateway is, and its latency says little about the gateway; what it
//! *reads* does: its `status` (`ready`, or 503 `degraded`, `draining`, `starting`), the checks
//! it names failing (`runtime`, `blocking_pool`) and the delay each one measured. That is why a
//! 503 with a readiness body is an answer, not a failure, and why diag keeps, beside the usual
//! latency percentiles ([`crate::probe`]), the statuses and the checks.
//!
//! Nothing here judges: a run's verdict stays the demo's three signs
//! ([`crate::demo::verdict`]). Readiness is the gateway's own opinion of itself, reported beside
//! them, so a reader sees whether it agreed.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::histogram::{round_ms, seconds};

/// The statuses that take an instance out of a load balancer's rotation for cause. `starting`
/// is not one of them: every gateway reads it until its first probes come back, a fraction of
/// a second after it starts, and saying "it turned starting" would only be noise.
const NOT_READY: [&str; 2] = ["degraded", "draining"];

/// The part of a `/readyz` body diag reads besides `status` (`gateway/README.md` documents the
/// whole of it).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Ready {
    /// The checks over their threshold.
    #[serde(default)]
    pub failing: Vec<String>,
    /// Each check's latest delay and its threshold, by name.
    #[serde(default)]
    pub checks: BTreeMap<String, Check>,
}

/// One check of a `/readyz` answer.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Check {
    pub delay_ms: f64,
    pub threshold_ms: f64,
}

/// What the `/readyz` answers of a run said, as they came in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// Answers that carried a status.
    pub answers: u64,
    /// Of them, `degraded` or `draining`.
    pub not_ready: u64,
    /// The earliest-sent of those: when it was sent, and its status.
    pub first_not_ready: Option<(Instant, String)>,
    /// Check name → answers that named it failing.
    pub failing: BTreeMap<String, u64>,
    /// Check name → the longest delay an answer reported for it (with its threshold).
    pub checks: BTreeMap<String, Check>,
}

impl Seen {
    /// Notes one answer, sent at `sent`, with `status` and the rest of its body.
    pub fn record(&mut self, sent: Instant, status: Option<&str>, ready: &Ready) {
        let Some(status) = status else { return };
        self.answers += 1;
        if NOT_READY.contains(&status) {
            self.not_ready += 1;
            // Probes finish out of order now and then; the first is the first *sent*.
            if self
                .first_not_ready
                .as_ref()
                .is_none_or(|(first, _)| sent < *first)
            {
                self.first_not_ready = Some((sent, status.to_owned()));
            }
        }
        for name in &ready.failing {
            *self.failing.entry(name.clone()).or_insert(0) += 1;
        }
        for (name, check) in &ready.checks {
            let worst = self.checks.entry(name.clone()).or_insert(*check);
            if check.delay_ms > worst.delay_ms {
                *worst = *check;
            }
        }
    }
}

/// The demo report's `readiness`: what `/readyz` said over the run, on the live line's clock
/// (seconds since the streams opened). Its latency percentiles are with the other probes', in
/// `probes.readyz`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadinessReport {
    /// The `/readyz` URL probed (`--admin` plus `/readyz`).
    pub url: String,
    /// Answers that carried a status.
    pub answers: u64,
    /// Of them, `degraded` or `draining`.
    pub not_ready_answers: u64,
    /// When the first of those was sent; null if readiness never turned.
    pub first_not_ready_s: Option<f64>,
    /// Its status (`degraded`, `draining`); null if readiness never turned.
    pub first_not_ready: Option<String>,
    /// Check name → answers that named it failing, e.g. `{"blocking_pool": 12}`.
    pub failing: BTreeMap<String, u64>,
    /// Check name → the longest delay an answer reported, and that check's threshold.
    pub checks: BTreeMap<String, CheckReport>,
}

/// One check over the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    pub max_delay_ms: f64,
    pub threshold_ms: f64,
}

impl ReadinessReport {
    /// `readiness URL | not ready in N of M answers, first degraded at 0.8 s | checks: ...`: what the
    /// admin plane said, with each check's worst delay against its threshold and how often it
    /// failed.
    pub fn line(&self) -> String {
        let r = self;
        let turned = match (&r.first_not_ready, r.first_not_ready_s) {
            (Some(status), Some(at)) => format!(
                "not ready in {} of {} answers, first {status} at {at:.1} s",
                r.not_ready_answers, r.answers
            ),
            _ => format!("{} answers, none degraded or draining", r.answers),
        };
        let checks: Vec<String> = r
            .checks
            .iter()
            .map(|(name, check)| {
                let failing = match r.failing.get(name) {
                    Some(n) => format!(", failing in {n}"),
                    None => String::new(),
                };
                format!(
                    "{name} up to {} (threshold {}){failing}",
                    ms(check.max_delay_ms),
                    ms(check.threshold_ms)
                )
            })
            .collect();
        let mut line = format!("readiness {} | {turned}", r.url);
        if !checks.is_empty() {
            line.push_str(" | ");
            line.push_str(&checks.join(" | "));
        }
        line
    }

    /// `seen`, probed at `url`, with times counted from `origin` (an answer sent before that
    /// counts as 0 s).
    pub fn new(url: String, seen: &Seen, origin: Instant) -> Self {
        let first = seen.first_not_ready.as_ref();
        Self {
            url,
            answers: seen.answers,
            not_ready_answers: seen.not_ready,
            first_not_ready_s: first
                .map(|(at, _)| round_ms(at.saturating_duration_since(origin).as_secs_f64())),
            first_not_ready: first.map(|(_, status)| status.clone()),
            failing: seen.failing.clone(),
            checks: seen
                .checks
                .iter()
                .map(|(name, check)| {
                    let report = CheckReport {
                        max_delay_ms: round_ms(check.delay_ms),
                        threshold_ms: round_ms(check.threshold_ms),
                    };
                    (name.clone(), report)
                })
                .collect(),
        }
    }
}

fn ms(ms: f64) -> String {
    seconds(std::time::Duration::from_secs_f64(ms.max(0.0) / 1e3))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ready(failing: &[&str], pool_ms: f64) -> Ready {
        Ready {
            failing: failing.iter().map(|name| (*name).to_owned()).collect(),
            checks: BTreeMap::from([(
                "blocking_pool".to_owned(),
                Check {
                    delay_ms: pool_ms,
                    threshold_ms: 100.0,
                },
            )]),
        }
    }

    #[test]
    fn readiness_turns_at_the_first_degraded_answer_sent_not_at_starting() {
        let origin = Instant::now();
        let at = |ms| origin + Duration::from_millis(ms);
        let mut seen = Seen::default();
        seen.record(at(0), Some("starting"), &ready(&[], 0.1));
        seen.record(at(250), Some("ready"), &ready(&[], 0.2));
        // Finished first, sent later.
        seen.record(
            at(900),
            Some("degraded"),
            &ready(&["blocking_pool"], 1840.0),
        );
        seen.record(at(700), Some("degraded"), &ready(&["blocking_pool"], 300.0));
        seen.record(at(950), None, &Ready::default());
        let report = ReadinessReport::new("http://a/readyz".into(), &seen, origin);
        assert_eq!((report.answers, report.not_ready_answers), (4, 2));
        assert_eq!(report.first_not_ready_s, Some(0.7));
        assert_eq!(report.first_not_ready.as_deref(), Some("degraded"));
        assert_eq!(report.failing["blocking_pool"], 2);
        assert_eq!(
            report.checks["blocking_pool"],
            CheckReport {
                max_delay_ms: 1840.0,
                threshold_ms: 100.0
            }
        );
    }

    #[test]
    fn a_body_without_checks_reads_as_none() {
        let body: Ready = serde_json::from_str(r#"{"status":"ready"}"#).expect("JSON");
        assert_eq!(body, Ready::default());
        let body: Ready = serde_json::from_str(
            r#"{"status":"degraded","failing":["runtime"],
                "checks":{"runtime":{"delay_ms":300.5,"threshold_ms":250.0,"pending":true,"ok":false}}}"#,
        )
        .expect("JSON");
        assert_eq!(body.failing, ["runtime"]);
        assert_eq!(body.checks["runtime"].delay_ms, 300.5);
    }
}
