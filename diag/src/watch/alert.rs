//! When `diag watch --probe` fails, and with which exit code: for cron, CI smoke tests and
//! Kubernetes jobs, which read nothing but the code.
//!
//! Two thresholds, checked on every line against each probe's window:
//!
//! - `--fail-over D`: the window's p99 above `D`;
//! - `--fail-on-errors N`: `N` or more failures (timeouts, unexpected statuses, no answer) in
//!   the window.
//!
//! The first time one is crossed the watch ends with exit code 1, after its summary; with
//! `--count` it runs to the end first, so the lines show what happened next.
//!
//! At the end (Ctrl-C, `--count`, or that alert), the rules in order ([`verdict`]):
//!
//! 1. No probe got any HTTP answer, ever: exit 3, "cannot reach", nothing was measured.
//! 2. A threshold was crossed: exit 1, naming the first crossing.
//! 3. The service answered and then stopped answering ([`super::downtime`]): exit 4.
//! 4. A probe never got an answer it expects: exit 1. A path that is wrong answers 404 every
//!    time, and without this rule the watch would print `HTTP 404` a thousand times and exit 0.
//! 5. Otherwise 0.

use std::time::Duration;

use super::window::{Ever, WindowStats};
use crate::Error;
use crate::cli::{Probe, format_duration};
use crate::histogram::seconds;
use crate::probe::Outcome;

/// `--fail-over` and `--fail-on-errors`, over one `--window`.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub fail_over: Option<Duration>,
    pub fail_on_errors: Option<u64>,
    pub window: Duration,
}

impl Thresholds {
    /// What `name`'s window crosses, one reason per threshold.
    pub fn crossed(&self, name: &str, stats: &WindowStats) -> Vec<String> {
        let mut reasons = Vec::new();
        if let (Some(limit), Some(p99)) = (self.fail_over, stats.seen.p99_ms)
            && p99 > limit.as_secs_f64() * 1e3
        {
            reasons.push(format!(
                "{name} p99 {} over --fail-over {}",
                seconds(Duration::from_secs_f64(p99 / 1e3)),
                format_duration(limit)
            ));
        }
        if let Some(limit) = self.fail_on_errors
            && stats.failures() >= limit
        {
            reasons.push(format!(
                "{name} failed {} times in the last {} (--fail-on-errors {limit})",
                stats.failures(),
                format_duration(self.window)
            ));
        }
        reasons
    }
}

/// What the end of a watch is decided by.
#[derive(Debug)]
pub struct End<'a> {
    pub probes: &'a [Probe],
    /// Each probe's [`Ever`], in the same order.
    pub ever: &'a [Ever],
    /// The first crossing: the line's clock and what crossed.
    pub alert: Option<(String, String)>,
    /// [`super::downtime::Downtime::failure_of`].
    pub stopped: Option<String>,
    pub timeout: Duration,
}

/// The watch's result by the rules of the module docs.
pub fn verdict(end: &End<'_>) -> Result<(), Error> {
    if end.ever.iter().all(|ever| ever.responses == 0) {
        let url = end
            .probes
            .iter()
            .map(|probe| probe.target.url.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let reason = end
            .ever
            .iter()
            .find_map(|ever| ever.last_failure.as_ref())
            .map_or_else(
                || "no probe had finished".to_owned(),
                |o| failure(o, end.timeout),
            );
        return Err(Error::TargetUnreachable { url, reason });
    }
    if let Some((at, reason)) = &end.alert {
        return Err(Error::Alert {
            reason: format!("{reason}, at {at}"),
        });
    }
    if let Some(reason) = &end.stopped {
        return Err(Error::Failed {
            reason: reason.clone(),
        });
    }
    let never = end
        .probes
        .iter()
        .zip(end.ever)
        .find(|(_, ever)| ever.answers == 0);
    if let Some((probe, ever)) = never {
        let ask = &probe.target.ask;
        let expect = ask.expect.clone().unwrap_or_default();
        let seen = ever
            .last_failure
            .as_ref()
            .map_or_else(|| "nothing".to_owned(), |o| failure(o, end.timeout));
        let hint = match ever.last_failure {
            Some(Outcome::Status(404)) => ": nothing there, check the path and --gateway",
            Some(Outcome::Status(_)) => ": if that status is right, say so with --expect-status",
            _ => "",
        };
        return Err(Error::Alert {
            reason: format!(
                "{} ({} {}) never answered with {expect}; the last probe saw {seen}{hint}",
                probe.name, ask.method, probe.target.url
            ),
        });
    }
    Ok(())
}

/// A probe that did not answer as expected, in words.
fn failure(outcome: &Outcome, timeout: Duration) -> String {
    match outcome {
        Outcome::Status(code) => format!("HTTP {code}"),
        Outcome::TimedOut => format!("no answer within {}", format_duration(timeout)),
        Outcome::Failed(reason) => reason.clone(),
        Outcome::Answered { .. } => "an answer".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Ask, Endpoint, ProbeStats, Target};

    fn probe(name: &str) -> Probe {
        Probe {
            name: name.into(),
            budget: Duration::from_millis(100),
            target: Target {
                endpoint: Endpoint::Url,
                url: format!("http://127.0.0.1:9/{name}"),
                ask: Ask::default(),
            },
        }
    }

    fn ever(answers: u64, responses: u64, last_failure: Option<Outcome>) -> Ever {
        Ever {
            answers,
            responses,
            last_failure,
        }
    }

    fn code(result: Result<(), Error>) -> (u8, String) {
        match result {
            Ok(()) => (0, String::new()),
            Err(error) => (error.exit_code(), error.to_string()),
        }
    }

    #[test]
    fn thresholds_cross_on_the_window() {
        let thresholds = Thresholds {
            fail_over: Some(Duration::from_millis(500)),
            fail_on_errors: Some(2),
            window: Duration::from_secs(60),
        };
        let calm = WindowStats {
            seen: ProbeStats {
                samples: 5,
                p99_ms: Some(2.0),
                errors: 1,
                ..ProbeStats::default()
            },
            waiting: 0,
        };
        assert!(thresholds.crossed("a", &calm).is_empty());
        let bad = WindowStats {
            seen: ProbeStats {
                p99_ms: Some(2013.0),
                timeouts: 1,
                ..calm.seen
            },
            waiting: 0,
        };
        assert_eq!(
            thresholds.crossed("a", &bad),
            [
                "a p99 2.013s over --fail-over 500ms",
                "a failed 2 times in the last 60s (--fail-on-errors 2)"
            ]
        );
    }

    #[test]
    fn the_end_goes_by_the_rules_in_order() {
        let probes = [probe("a"), probe("b")];
        let refused = Some(Outcome::Failed("Connection refused".into()));
        let end = |ever: &[Ever], alert: Option<(String, String)>, stopped: Option<String>| {
            code(verdict(&End {
                probes: &probes,
                ever,
                alert,
                stopped,
                timeout: Duration::from_secs(5),
            }))
        };
        let (exit, message) = end(&[ever(0, 0, refused.clone()), ever(0, 0, None)], None, None);
        assert_eq!(exit, 3, "{message}");
        assert!(
            message.contains("http://127.0.0.1:9/a, http://127.0.0.1:9/b (Connection refused)"),
            "{message}"
        );

        let fine = [ever(3, 3, None), ever(3, 3, None)];
        let alert = Some((
            "12:00:02".to_owned(),
            "b p99 2.0s over --fail-over 1s".to_owned(),
        ));
        let (exit, message) = end(&fine, alert, Some("stopped".into()));
        assert_eq!(
            (exit, message.as_str()),
            (1, "ALERT: b p99 2.0s over --fail-over 1s, at 12:00:02")
        );
        assert_eq!(end(&fine, None, Some("stopped".into())).0, 4);
        assert_eq!(end(&fine, None, None), (0, String::new()));

        let (exit, message) = end(
            &[ever(3, 3, None), ever(0, 3, Some(Outcome::Status(404)))],
            None,
            None,
        );
        assert_eq!(exit, 1);
        assert_eq!(
            message,
            "ALERT: b (GET http://127.0.0.1:9/b) never answered with 2xx; the last probe saw HTTP \
             404: nothing there, check the path and --gateway"
        );
    }
}
