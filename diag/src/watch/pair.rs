//! `--pair FAST=SLOW`: the starved-pool signature, for any service with one cheap endpoint and
//! one that touches its pool, its database or its blocking work.
//!
//! The lesson of this project in one rule. A service whose pool is starved is neither dead nor
//! overloaded: its cheap endpoint (answered on an async worker, touching nothing shared) stays
//! fast, while everything that needs a pool slot waits for one. So:
//!
//! | FAST's window p99 | SLOW's window p99 | verdict |
//! |---|---|---|
//! | any | within SLOW's `--budget` | `ok` |
//! | within FAST's `--budget` | over SLOW's | `starved`: SLOW waits while FAST answers |
//! | over FAST's | over SLOW's | `both slow`: the whole service is slow (overload, a stalled runtime) |
//!
//! Each probe has its own budget because a slow endpoint is often slow by design (a report
//! that takes 200 ms on an idle service): its budget is what it takes when all is well, plus
//! room, and "starved" means it waits on top of that.
//!
//! A SLOW that only times out is over budget (its timeouts count at the timeout value). A probe
//! with no answers or timeouts in the window gives no verdict (`no data`): a refused connection
//! says the service is down, which is another story, told by the probe's own cell.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::window::WindowStats;
use crate::cli::Pair;
use crate::cli::format_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// FAST or SLOW had nothing to judge by in the window.
    NoData,
    /// SLOW within the budget.
    Ok,
    /// Both over the budget.
    BothSlow,
    /// SLOW over the budget while FAST stays within it.
    Starved,
}

/// The two budgets of a pair: FAST's, then SLOW's.
pub type Budgets = (Duration, Duration);

/// The verdict on one window of `fast` and `slow`.
pub fn judge(
    fast: &WindowStats,
    slow: &WindowStats,
    (fast_budget, slow_budget): Budgets,
) -> Verdict {
    let (Some(fast_p99), Some(slow_p99)) = (fast.seen.p99_ms, slow.seen.p99_ms) else {
        return Verdict::NoData;
    };
    let within = |p99: f64, budget: Duration| p99 <= budget.as_secs_f64() * 1e3;
    if within(slow_p99, slow_budget) {
        Verdict::Ok
    } else if within(fast_p99, fast_budget) {
        Verdict::Starved
    } else {
        Verdict::BothSlow
    }
}

/// What the verdict says, in the line and the summary.
pub fn says(verdict: Verdict, pair: &Pair, (fast_budget, slow_budget): Budgets) -> String {
    let Pair { fast, slow } = pair;
    let (fast_budget, slow_budget) = (format_duration(fast_budget), format_duration(slow_budget));
    match verdict {
        Verdict::Starved => format!("starved: {slow} waits while {fast} answers"),
        Verdict::BothSlow => {
            format!("both slow: {fast} over {fast_budget}, {slow} over {slow_budget}")
        }
        Verdict::Ok => format!("ok: {slow} within {slow_budget}"),
        Verdict::NoData => format!("no verdict: {fast} or {slow} has nothing in the window"),
    }
}

/// A pair's verdicts over the whole watch, for the summary: a starved minute in an hour's
/// watch is the news, even if the last line is `ok` again.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    lines: u64,
    starved: u64,
    both_slow: u64,
    ok: u64,
    /// The clocks of the first and the latest `starved` line.
    starved_from: Option<(String, String)>,
}

impl Tally {
    /// Notes one line's verdict, printed at `clock`.
    pub fn saw(&mut self, clock: &str, verdict: Verdict) {
        self.lines += 1;
        match verdict {
            Verdict::Starved => {
                self.starved += 1;
                let (_, last) = self
                    .starved_from
                    .get_or_insert_with(|| (clock.to_owned(), clock.to_owned()));
                clock.clone_into(last);
            }
            Verdict::BothSlow => self.both_slow += 1,
            Verdict::Ok => self.ok += 1,
            Verdict::NoData => {}
        }
    }

    /// The worst verdict any line gave.
    pub fn worst(&self) -> Verdict {
        if self.starved > 0 {
            Verdict::Starved
        } else if self.both_slow > 0 {
            Verdict::BothSlow
        } else if self.ok > 0 {
            Verdict::Ok
        } else {
            Verdict::NoData
        }
    }

    /// The summary's verdict: the worst, and how much of the watch it held for.
    pub fn says(&self, pair: &Pair, budgets: Budgets) -> String {
        let worst = self.worst();
        let lines = self.lines;
        let held = match worst {
            Verdict::Starved => {
                let (first, last) = self.starved_from.clone().unwrap_or_default();
                format!(" (in {} of {lines} lines, {first} to {last})", self.starved)
            }
            Verdict::BothSlow => format!(" (in {} of {lines} lines)", self.both_slow),
            Verdict::Ok => format!(" (all {} judged lines)", self.ok),
            Verdict::NoData => String::new(),
        };
        format!("{}{held}", says(worst, pair, budgets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeStats;

    fn p99(ms: f64) -> WindowStats {
        WindowStats {
            seen: ProbeStats {
                samples: 10,
                p99_ms: Some(ms),
                ..ProbeStats::default()
            },
            waiting: 0,
        }
    }

    #[test]
    fn slow_over_budget_beside_a_fast_answer_is_starved() {
        let budget = (Duration::from_millis(100), Duration::from_millis(100));
        assert_eq!(judge(&p99(1.0), &p99(2000.0), budget), Verdict::Starved);
        assert_eq!(judge(&p99(500.0), &p99(2000.0), budget), Verdict::BothSlow);
        assert_eq!(judge(&p99(500.0), &p99(50.0), budget), Verdict::Ok);
        assert_eq!(
            judge(&WindowStats::default(), &p99(2000.0), budget),
            Verdict::NoData
        );
        // A report slow by design is judged by its own budget.
        let report = (Duration::from_millis(100), Duration::from_millis(500));
        assert_eq!(judge(&p99(1.0), &p99(210.0), report), Verdict::Ok);
        assert_eq!(judge(&p99(1.0), &p99(900.0), report), Verdict::Starved);
        let pair = Pair {
            fast: "health".into(),
            slow: "report".into(),
        };
        assert_eq!(
            says(Verdict::Starved, &pair, budget),
            "starved: report waits while health answers"
        );
        assert_eq!(
            says(Verdict::BothSlow, &pair, budget),
            "both slow: health over 100ms, report over 100ms"
        );
    }

    #[test]
    fn the_summary_says_the_worst_and_for_how_long() {
        let pair = Pair {
            fast: "a".into(),
            slow: "b".into(),
        };
        let budget = (Duration::from_millis(100), Duration::from_millis(100));
        let mut tally = Tally::default();
        assert_eq!(
            tally.says(&pair, budget),
            "no verdict: a or b has nothing in the window"
        );
        tally.saw("12:00:01", Verdict::Ok);
        tally.saw("12:00:02", Verdict::Starved);
        tally.saw("12:00:03", Verdict::BothSlow);
        tally.saw("12:00:04", Verdict::Starved);
        tally.saw("12:00:05", Verdict::Ok);
        assert_eq!(tally.worst(), Verdict::Starved);
        assert_eq!(
            tally.says(&pair, budget),
            "starved: b waits while a answers (in 2 of 5 lines, 12:00:02 to 12:00:04)"
        );
    }
}
