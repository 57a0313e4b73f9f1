//! One probe's recent past, for `diag watch --probe`: what the probes sent in the last
//! `--window` saw (p50, p99, max, failures), and a few counts over the whole watch that its
//! exit status needs.
//!
//! A window, not the whole run, because a watch runs for hours: a pool that starved for the
//! last ten seconds must move the p99 on the line *now*, which the run's histogram, with an
//! hour of fast answers in it, would hide. The window holds each result (one per probe per
//! `--interval`, so 60 at the defaults), placed by when its probe was *sent*; the percentiles
//! are computed from them each line in the prober's own histogram ([`Latencies`]), so that a
//! line's p99 and the summary's are the same kind of number. A timeout is in them at the
//! timeout value, as the prober records it: leaving it out would make a stall look fast.
//!
//! For the same reason a probe still *waiting* is in them too, once it has waited longer than
//! one `--interval`, at its wait so far: a lower bound of what it will take. Counting only the
//! probes that finished would leave a starved endpoint's window empty for as long as it
//! starves (every probe of it waiting), and the verdict and the alerts would arrive only after
//! the stall had ended, when nobody needs them. (A probe younger than one interval is merely
//! in flight: counted at its age, it would pull a healthy service's percentiles down.)

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::histogram::Latencies;
use crate::probe::{Outcome, ProbeStats};

/// More results than any sane `--window`/`--interval` ratio gives (a day at one per second);
/// past it the oldest go, so that a window cannot grow without bound.
const MAX_RESULTS: usize = 86_400;

/// What one finished probe counts as.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seen {
    Answered(Duration),
    TimedOut,
    /// An unexpected status, or no HTTP answer at all.
    Failed,
}

/// One probe's window, fed as its probes finish and read once per line.
#[derive(Debug)]
pub struct Window {
    span: Duration,
    timeout: Duration,
    /// `--interval`: a probe waiting longer than this counts at its wait so far.
    every: Duration,
    /// When each probe was sent and what it saw, in the order they finished.
    results: VecDeque<(Instant, Seen)>,
    /// Over the whole watch, not the window: what the exit status is decided by.
    pub ever: Ever,
}

/// What a probe saw over the whole watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ever {
    /// Answers it expected.
    pub answers: u64,
    /// HTTP responses of any status: something was there.
    pub responses: u64,
    /// The latest probe that did not answer as expected (a status, a timeout, no answer).
    pub last_failure: Option<Outcome>,
}

/// A window's numbers at one moment: the prober's own kind ([`ProbeStats`], as the summary and
/// `diag demo` report them), over the window, plus the probes still waiting in it.
#[derive(Debug, Clone, Default)]
pub struct WindowStats {
    /// Answers, timeouts and the probes waiting past one interval (`samples` counts all three;
    /// `timeouts` and `errors` as the prober counts them).
    pub seen: ProbeStats,
    /// Probes still waiting past one interval (in the percentiles, at their wait so far).
    pub waiting: u64,
}

impl WindowStats {
    /// Timeouts and errors: what `--fail-on-errors` counts.
    pub fn failures(&self) -> u64 {
        self.seen.timeouts + self.seen.errors
    }

    /// Probes that finished in the window: answers, timeouts and errors.
    pub fn finished(&self) -> u64 {
        self.seen.samples - self.waiting + self.seen.errors
    }
}

impl Window {
    /// An empty window of `span`, for probes sent `every` so often that time out after
    /// `timeout`.
    pub fn new(span: Duration, timeout: Duration, every: Duration) -> Self {
        Self {
            span,
            timeout,
            every,
            results: VecDeque::new(),
            ever: Ever::default(),
        }
    }

    /// Notes a probe sent at `sent` that saw `outcome`.
    pub fn record(&mut self, sent: Instant, outcome: &Outcome) {
        let seen = match outcome {
            Outcome::Answered { latency, .. } => Seen::Answered(*latency),
            Outcome::TimedOut => Seen::TimedOut,
            Outcome::Status(_) | Outcome::Failed(_) => Seen::Failed,
        };
        match outcome {
            Outcome::Answered { .. } => {
                self.ever.answers += 1;
                self.ever.responses += 1;
            }
            Outcome::Status(_) => self.ever.responses += 1,
            Outcome::TimedOut | Outcome::Failed(_) => {}
        }
        if !matches!(seen, Seen::Answered(_)) {
            self.ever.last_failure = Some(outcome.clone());
        }
        if self.results.len() == MAX_RESULTS {
            self.results.pop_front();
        }
        self.results.push_back((sent, seen));
    }

    /// The numbers of the probes sent within the window before `now`; older ones are dropped.
    /// `waiting`: when each probe still in flight was sent ([`crate::probe::Prober::waiting_of`]).
    pub fn stats(&mut self, now: Instant, waiting: &[Instant]) -> WindowStats {
        let start = now.checked_sub(self.span);
        let within = |sent: &Instant| start.is_none_or(|start| *sent >= start);
        self.results.retain(|(sent, _)| within(sent));
        let Ok(mut latencies) = Latencies::new() else {
            return WindowStats::default();
        };
        let mut waiting_past = 0;
        for sent in waiting.iter().filter(|sent| within(sent)) {
            let waited = now.saturating_duration_since(*sent);
            if waited > self.every {
                latencies.record(waited.min(self.timeout));
                waiting_past += 1;
            }
        }
        let (mut timeouts, mut errors) = (0, 0);
        for (_, seen) in &self.results {
            match seen {
                Seen::Answered(latency) => latencies.record(*latency),
                Seen::TimedOut => {
                    latencies.record(self.timeout);
                    timeouts += 1;
                }
                Seen::Failed => errors += 1,
            }
        }
        WindowStats {
            seen: ProbeStats::of(&latencies, timeouts, errors),
            waiting: waiting_past,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(ms: u64) -> Outcome {
        Outcome::Answered {
            latency: Duration::from_millis(ms),
            status: None,
            mode: None,
            ready: None,
        }
    }

    #[test]
    fn the_window_keeps_what_was_sent_within_it_and_timeouts_at_the_timeout() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut window = Window::new(
            Duration::from_secs(10),
            Duration::from_secs(5),
            Duration::from_secs(1),
        );
        window.record(at(0), &answered(900));
        window.record(at(5), &answered(2));
        window.record(at(6), &Outcome::TimedOut);
        window.record(at(7), &Outcome::Status(404));
        window.record(at(8), &answered(4));
        let stats = window.stats(at(12), &[]);
        // The 900 ms answer was sent 12 s ago: out of the window.
        assert_eq!(
            (stats.seen.samples, stats.seen.timeouts, stats.seen.errors),
            (3, 1, 1)
        );
        assert_eq!(stats.failures(), 2);
        let (p50, max) = (
            stats.seen.p50_ms.expect("p50"),
            stats.seen.max_ms.expect("max"),
        );
        assert!((3.99..4.01).contains(&p50), "{p50}");
        assert!(
            (5000.0..5010.0).contains(&max),
            "the timeout, at 5 s: {max}"
        );
        // Later, only the answer sent at 8 s is left.
        let stats = window.stats(at(18), &[]);
        assert_eq!((stats.seen.samples, stats.failures()), (1, 0));
        assert_eq!(window.stats(at(30), &[]).seen.samples, 0);
    }

    #[test]
    fn a_probe_waiting_past_one_interval_counts_at_its_wait_so_far() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut window = Window::new(
            Duration::from_secs(10),
            Duration::from_secs(5),
            Duration::from_millis(250),
        );
        window.record(at(0), &answered(2));
        // Sent at 500 ms and 3 s, still waiting at 3.1 s: the first for 2.6 s (counted), the
        // second for 100 ms (in flight, not counted).
        let stats = window.stats(at(3100), &[at(500), at(3000)]);
        assert_eq!(
            (stats.seen.samples, stats.waiting, stats.failures()),
            (2, 1, 0)
        );
        let max = stats.seen.max_ms.expect("max");
        assert!((2600.0..2610.0).contains(&max), "{max}");
        // A wait longer than the timeout is about to be a timeout: it counts at the timeout.
        let stats = window.stats(at(9000), &[at(500)]);
        let max = stats.seen.max_ms.expect("max");
        assert!((5000.0..5010.0).contains(&max), "{max}");
    }

    #[test]
    fn the_whole_watch_remembers_answers_responses_and_the_last_failure() {
        let mut window = Window::new(
            Duration::from_secs(1),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        let now = Instant::now();
        window.record(now, &Outcome::Status(404));
        window.record(now, &Outcome::Failed("Connection refused".into()));
        assert_eq!(
            window.ever,
            Ever {
                answers: 0,
                responses: 1,
                last_failure: Some(Outcome::Failed("Connection refused".into())),
            }
        );
        window.record(now, &answered(1));
        assert_eq!((window.ever.answers, window.ever.responses), (1, 2));
    }
}
