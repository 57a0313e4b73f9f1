//! The verdict of `diag demo`: `FAILED`, `EXHAUSTED` or `HEALTHY`, from what the run measured,
//! with the numbers behind it in words. The rules live here, apart from the report they are
//! written into ([`super::report`]), so that they read as one list.
//!
//! # Two steps
//!
//! **First: did the target fail?** The exhaustion rules below read a starved pool from streams
//! that do not flow and probes that wait. A target that is gone or says no also stops streams
//! and probes, and those rules would misread it: as starvation (streams refused with a 401 do
//! not flow), or as health (streams that flowed before the target died, probes that errored
//! instead of waiting). So these signs are checked first; any one of them makes the run
//! **`FAILED`**, and the reason names every one found, in this order:
//!
//! 1. **it stopped answering**: probes got no HTTP answer at all (refused, reset) and none
//!    answered after the first of those: "the gateway stopped answering at 4.1 s", the moment
//!    of that first failure. First, because a dead target explains everything else: the
//!    streams cut off, the probes in error;
//! 2. **it did not answer for a while**: probes got no HTTP answer, but later ones did (a
//!    restart). The run measured two targets, neither whole;
//! 3. **streams refused**: a non-2xx status (401, 404, 503, ...) to the stream request, named
//!    with its status: "2 of 2 streams refused with HTTP 401". The target is there and said
//!    no: a missing key, a wrong path, an overload it sheds. That is the fix to make, so it
//!    comes before the less specific next sign;
//! 4. **streams broke off**: a stream got no answer or its body broke off mid-way (a transport
//!    error such as `unexpected EOF during chunk size line`) while the probes saw nothing wrong.
//!
//! What does *not* make a run fail: a probe answered with a status (a 404 is an endpoint the
//! service lacks, which `diag watch` shows as `-`; `/health`'s 503 is `degraded`, an answer); a
//! probe that timed out (a starved or stalled target still accepts connections and answers
//! late, which is what the next step measures); streams that waited or crawled.
//!
//! **Then, starved or not.** Three independent signs; any one of them means **`EXHAUSTED`**,
//! none means **`HEALTHY`**:
//!
//! 1. **streams**: fewer streams flowed at once than were opened;
//! 2. **sync probe**: `/debug/health-sync` p99 above `--sync-budget`, or any of its probes timed
//!    out: a request that needs a pool thread had to wait for one;
//! 3. **pool**: a `/debug/pool` sample with every thread busy and jobs queued.
//!
//! (A fourth, [`async_stalled`], adds to them: even `/debug/health-async` slow.) Each sign alone
//! can have another cause (a slow upstream, a busy machine), which is why the reason line names
//! all the numbers, not just a word.
//!
//! **Readiness is reported, not judged.** With an admin plane, the reason ends with what its
//! `/readyz` said ([`readiness`]): "readiness stayed ready", or "readiness turned degraded at
//! 0.8 s (blocking_pool failing, ...)". It takes no part in either step. It is the gateway's opinion of itself, and the
//! point of showing it is to see whether it agrees with what was measured from outside: in
//! `broken` mode it should turn `degraded` naming `blocking_pool`, in `inline` mode naming
//! `runtime`; a readiness that stayed `ready` through an `EXHAUSTED` run would be a check that
//! misses what it is for. Judging by it would also change what `EXHAUSTED` and `HEALTHY` mean
//! between a gateway with an admin plane and one without.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::demo::streams::StreamStats;
use crate::histogram::round_ms;
use crate::pool::PoolStats;
use crate::probe::{ProbeStats, Unanswered};
use crate::readiness::ReadinessReport;

/// The verdict: can the gateway serve the load without anyone waiting for a pool thread? And
/// first, was it there to serve it at all (see the module docs)?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Exhausted,
    Healthy,
    /// The target stopped answering, refused the streams or cut them off: neither of the two
    /// above can be told from such a run.
    Failed,
}

impl Verdict {
    /// The word the verdict line starts with: `EXHAUSTED`, `HEALTHY`, `FAILED`.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Exhausted => "EXHAUSTED",
            Verdict::Healthy => "HEALTHY",
            Verdict::Failed => "FAILED",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Exhausted => "exhausted",
            Verdict::Healthy => "healthy",
            Verdict::Failed => "failed",
        })
    }
}

/// The probes that got no HTTP answer at all, on the live line's clock: seconds since the
/// streams opened. Zero and nulls when the target answered every probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outage {
    /// Probes, of any endpoint, that got no HTTP answer (refused, reset).
    pub unanswered_probes: u64,
    /// When the first of them failed.
    pub first_unanswered_s: Option<f64>,
    /// When the last of them failed.
    pub last_unanswered_s: Option<f64>,
    /// When the target stopped answering for good: the first failure with no HTTP answer after
    /// it. Null if it answered again after its last failure (or never failed).
    pub stopped_answering_s: Option<f64>,
    /// Why the first of them failed, e.g. `Connection refused`.
    pub reason: Option<String>,
}

impl Outage {
    /// The prober's record, with times counted from `origin` (when the streams opened; a
    /// failure before that counts as 0 s).
    pub fn new(unanswered: &Unanswered, origin: Instant) -> Self {
        let secs = |at: Instant| round_ms(at.saturating_duration_since(origin).as_secs_f64());
        Self {
            unanswered_probes: unanswered.count,
            first_unanswered_s: unanswered.first.as_ref().map(|(at, _)| secs(*at)),
            last_unanswered_s: unanswered.last.map(secs),
            stopped_answering_s: unanswered.since.map(secs),
            reason: unanswered.first.as_ref().map(|(_, reason)| reason.clone()),
        }
    }
}

/// Both steps: the signs of a failing target first, then the starvation rules.
pub fn decide(
    streams: &StreamStats,
    sync: &ProbeStats,
    async_: &ProbeStats,
    pool: &PoolStats,
    budget: Duration,
    outage: &Outage,
    stream_path: &str,
) -> (Verdict, String) {
    if let Some(reason) = failure(streams, outage, stream_path) {
        return (Verdict::Failed, reason);
    }
    let (verdict, reason) = judge(streams, sync, pool, budget);
    match async_stalled(async_, budget) {
        None => (verdict, reason),
        Some(stalled) if verdict == Verdict::Healthy => (Verdict::Exhausted, stalled),
        Some(stalled) => (Verdict::Exhausted, format!("{reason}; {stalled}")),
    }
}

/// The first step: the signs of a failing target, in the order of the module docs, joined by
/// `; `. `None` when there is none, and the run is judged for starvation instead. A refusal
/// with one status that has a usual fix says which (the streams went to `stream_path`).
pub fn failure(streams: &StreamStats, outage: &Outage, stream_path: &str) -> Option<String> {
    let mut signs = Vec::new();
    let requested = streams.requested;
    let seconds = |s: Option<f64>| format!("{:.1} s", s.unwrap_or(0.0));
    let because = outage.reason.as_deref().unwrap_or("no answer");
    match (outage.unanswered_probes, outage.stopped_answering_s) {
        (0, _) => {}
        (n, Some(at)) => signs.push(format!(
            "the gateway stopped answering at {} ({} got no answer: {because})",
            seconds(Some(at)),
            probes(n)
        )),
        (1, None) => signs.push(format!(
            "the gateway did not answer 1 probe at {} ({because})",
            seconds(outage.first_unanswered_s)
        )),
        (n, None) => signs.push(format!(
            "the gateway did not answer {n} probes between {} and {} ({because})",
            seconds(outage.first_unanswered_s),
            seconds(outage.last_unanswered_s)
        )),
    }

    let refused: usize = streams.refused.values().sum();
    if refused > 0 {
        let mut statuses: Vec<(u16, usize)> =
            streams.refused.iter().map(|(s, n)| (*s, *n)).collect();
        // The most frequent status first; equal counts in status order.
        statuses.sort_by_key(|(status, count)| (std::cmp::Reverse(*count), *status));
        signs.push(match statuses.as_slice() {
            [(status, _)] => format!(
                "{refused} of {requested} streams refused with HTTP {status}{}",
                refusal_hint(*status, stream_path)
            ),
            _ => {
                let each: Vec<String> = statuses
                    .iter()
                    .map(|(status, count)| format!("{count} with HTTP {status}"))
                    .collect();
                format!(
                    "{refused} of {requested} streams refused: {}",
                    each.join(", ")
                )
            }
        });
    }

    let broken: usize = streams.broken.values().sum();
    if let Some((reason, _)) = streams.broken.iter().max_by_key(|(_, count)| **count) {
        let example = if streams.broken.len() > 1 {
            "e.g. "
        } else {
            ""
        };
        signs.push(format!(
            "{broken} of {requested} streams broke off ({example}{reason})"
        ));
    }

    (!signs.is_empty()).then(|| signs.join("; "))
}

/// The usual fix for a refusal, where there is one a flag can make: the new user met
/// both (a keyed gateway, a service whose stream is elsewhere).
fn refusal_hint(status: u16, stream_path: &str) -> String {
    match status {
        401 | 403 => " (a key? pass --api-key or -H)".to_owned(),
        404 => format!(" (nothing at {stream_path}: see --stream-path)"),
        _ => String::new(),
    }
}

/// `1 probe`, `18 probes`.
fn probes(n: u64) -> String {
    if n == 1 {
        "1 probe".to_owned()
    } else {
        format!("{n} probes")
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

/// The clause on readiness the reason ends with (see the module docs): whether `/readyz` turned
/// not ready (`degraded`, `draining`), when, how often, and which checks failed; `stats` are its
/// probes' (for a readiness that never answered).
pub fn readiness(report: &ReadinessReport, stats: &ProbeStats) -> String {
    if report.answers == 0 {
        return format!(
            "readiness never answered ({} /readyz probes timed out, {} failed)",
            stats.timeouts, stats.errors
        );
    }
    match (&report.first_not_ready, report.first_not_ready_s) {
        (Some(status), Some(at)) => {
            // No `; ` inside the clause: the reason's clauses are split there (`--plot`'s title).
            let names: Vec<&str> = report.failing.keys().map(String::as_str).collect();
            let failing = match names.as_slice() {
                [] => String::new(),
                names => format!("{} failing, ", names.join(" and ")),
            };
            format!(
                "readiness turned {status} at {at:.1} s ({failing}{} of {} answers not ready)",
                report.not_ready_answers, report.answers
            )
        }
        // `starting` before the first `ready` is every gateway's first fraction of a second.
        _ => match stats.last_status.as_deref() {
            Some("ready") | None => "readiness stayed ready".to_owned(),
            Some(other) => format!("readiness stayed {other}"),
        },
    }
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

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::demo::streams::FirstByte;

    pub(crate) fn streams(requested: u32, flowing: usize) -> StreamStats {
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
            refused: BTreeMap::new(),
            broken: BTreeMap::new(),
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

    pub(crate) fn sync(p99_ms: f64, timeouts: u64) -> ProbeStats {
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

    pub(crate) fn pool(saturated_samples: u64, peak_queued: usize) -> PoolStats {
        PoolStats {
            max_threads: Some(4),
            peak_running: Some(4),
            peak_queued: Some(peak_queued),
            samples: 80,
            saturated_samples,
        }
    }

    const PATH: &str = "/chat/stream";

    pub(crate) const BUDGET: Duration = Duration::from_millis(100);

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

    /// `streams` of which `refused` got these statuses and `broken` these transport errors.
    pub(crate) fn failing(
        requested: u32,
        refused: &[(u16, usize)],
        broken: &[(&str, usize)],
    ) -> StreamStats {
        let mut stats = streams(requested, 0);
        stats.refused = refused.iter().copied().collect();
        stats.broken = broken.iter().map(|(e, n)| ((*e).to_owned(), *n)).collect();
        stats.failed = stats.refused.values().sum::<usize>() + stats.broken.values().sum::<usize>();
        stats.cancelled = requested as usize - stats.failed;
        stats
    }

    pub(crate) fn outage(count: u64, first: f64, last: f64, stopped: Option<f64>) -> Outage {
        Outage {
            unanswered_probes: count,
            first_unanswered_s: Some(first),
            last_unanswered_s: Some(last),
            stopped_answering_s: stopped,
            reason: Some("Connection refused".into()),
        }
    }

    #[test]
    fn readiness_is_named_with_when_it_turned_and_which_checks_failed() {
        let mut report = ReadinessReport {
            url: "http://127.0.0.1:8002/readyz".into(),
            answers: 31,
            ..ReadinessReport::default()
        };
        let mut stats = sync(0.5, 0);
        stats.last_status = Some("ready".into());
        assert_eq!(readiness(&report, &stats), "readiness stayed ready");
        report.not_ready_answers = 25;
        report.first_not_ready = Some("degraded".into());
        report.first_not_ready_s = Some(0.8);
        report.failing.insert("blocking_pool".into(), 25);
        assert_eq!(
            readiness(&report, &stats),
            "readiness turned degraded at 0.8 s (blocking_pool failing, 25 of 31 answers not \
             ready)"
        );
        let silent = ReadinessReport::default();
        assert_eq!(
            readiness(&silent, &ProbeStats::default()),
            "readiness never answered (0 /readyz probes timed out, 0 failed)"
        );
    }

    #[test]
    fn a_target_that_answered_and_took_every_stream_did_not_fail() {
        assert_eq!(failure(&streams(8, 8), &Outage::default(), PATH), None);
        // Streams that waited and probes that timed out are starvation, not failure.
        assert_eq!(failure(&streams(8, 4), &Outage::default(), PATH), None);
    }

    #[test]
    fn a_target_that_died_failed_at_the_moment_it_stopped_answering() {
        let dead = outage(18, 4.1, 7.9, Some(4.1));
        let cut = failing(8, &[], &[("unexpected EOF during chunk size line", 8)]);
        assert_eq!(
            failure(&cut, &dead, PATH).as_deref(),
            Some(
                "the gateway stopped answering at 4.1 s (18 probes got no answer: Connection \
                 refused); 8 of 8 streams broke off (unexpected EOF during chunk size line)"
            )
        );
        // Even with every stream flowing until then: never HEALTHY.
        assert!(failure(&streams(8, 8), &dead, PATH).is_some());
    }

    #[test]
    fn a_target_that_came_back_still_failed() {
        let blip = outage(6, 4.1, 5.9, None);
        assert_eq!(
            failure(&streams(8, 8), &blip, PATH).as_deref(),
            Some(
                "the gateway did not answer 6 probes between 4.1 s and 5.9 s (Connection refused)"
            )
        );
    }

    #[test]
    fn refused_streams_failed_naming_the_status() {
        let none = Outage::default();
        assert_eq!(
            failure(&failing(2, &[(401, 2)], &[]), &none, PATH).as_deref(),
            Some("2 of 2 streams refused with HTTP 401 (a key? pass --api-key or -H)")
        );
        assert_eq!(
            failure(&failing(8, &[(429, 2), (503, 3)], &[]), &none, PATH).as_deref(),
            Some("5 of 8 streams refused: 3 with HTTP 503, 2 with HTTP 429")
        );
        // A refusal is a specific fix to make; it is named before streams that broke off.
        let both = failing(8, &[(503, 1)], &[("connection closed", 1), ("reset", 2)]);
        assert_eq!(
            failure(&both, &none, PATH).as_deref(),
            Some("1 of 8 streams refused with HTTP 503; 3 of 8 streams broke off (e.g. reset)")
        );
    }
}
