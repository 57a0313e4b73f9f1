//! The one-line view shared by `diag demo` (once per second) and `diag watch` (once per tick):
//!
//! ```text
//! sync 2.013s | async 0.8ms | health degraded | pool 4/4 +4 queued
//! ```
//!
//! One format for both (and the same latency cells in `diag watch --probe`'s lines), so that a
//! person who learned to read one can read the others. Every cell
//! has a fixed vocabulary, documented in the crate's README: a latency in seconds, `>1.2s`
//! (still waiting), `timeout`, `down`, `HTTP 500`, or `-` (nothing to show).
//!
//! With an admin plane (`--admin`) one more cell comes *last*, `readyz ready 0.6ms` (its status
//! and its latency), so every other cell keeps its place for whoever reads the line by position;
//! without one the line is exactly as it always was.

use std::time::Duration;

use common::pool::PoolSnapshot;

use crate::histogram::seconds;
use crate::probe::{Endpoint, Outcome, Prober};

/// The four readings, joined in the fixed order.
pub fn readings(sync: &str, async_: &str, health: &str, pool: &str) -> String {
    format!("sync {sync} | async {async_} | health {health} | pool {pool}")
}

/// `line` with the readiness cell appended, when there is one.
pub fn with_readyz(mut line: String, readyz: Option<&str>) -> String {
    if let Some(cell) = readyz {
        line.push_str(" | readyz ");
        line.push_str(cell);
    }
    line
}

/// The three probe cells (sync, async, health) of a running prober: the demo's live line.
pub fn prober_cells(prober: &Prober) -> [String; 3] {
    Endpoint::ALL.map(|endpoint| {
        let latest = prober.latest(endpoint);
        match endpoint {
            Endpoint::Health => health_cell(latest.outcome.as_ref()),
            _ => latency_cell(
                latest.outcome.as_ref(),
                latest.oldest_waiting,
                prober.every(),
            ),
        }
    })
}

/// A latency probe's cell: the latest finished probe, unless an unanswered one is older than
/// that answer took and older than one probe interval. Then the latest answer is stale, and the
/// cell shows how long the oldest probe has been waiting (`>2.4s`), because a stalled endpoint
/// otherwise keeps showing the last good number it gave.
pub fn latency_cell(
    latest: Option<&Outcome>,
    oldest_waiting: Option<Duration>,
    every: Duration,
) -> String {
    if let Some(waiting) = stale(latest, oldest_waiting, every) {
        return format!(">{:.1}s", waiting.as_secs_f64());
    }
    match latest {
        None => "-".to_owned(),
        Some(Outcome::Answered { latency, .. }) => seconds(*latency),
        Some(other) => failure_cell(other),
    }
}

/// The latency cell of a probe a user named (`diag watch --probe`): a [`latency_cell`], except
/// that a 404 reads `HTTP 404`, not `-`. The gateway's view shows an endpoint a service lacks as
/// `-` because any subset of them may exist; a URL the user named and that is not there is the
/// news.
pub fn named_probe_cell(
    latest: Option<&Outcome>,
    oldest_waiting: Option<Duration>,
    every: Duration,
) -> String {
    match latest {
        Some(Outcome::Status(code)) if stale(latest, oldest_waiting, every).is_none() => {
            format!("HTTP {code}")
        }
        _ => latency_cell(latest, oldest_waiting, every),
    }
}

/// `/readyz`'s cell: its status *and* its latency (`ready 0.6ms`, `degraded 1.2ms`,
/// `draining 0.4ms`). The status is the reading; the latency is there to show that the admin
/// plane answers at once while the other probes wait, which is the point of it. A stale or
/// failed probe reads as any latency cell does.
pub fn readyz_cell(
    latest: Option<&Outcome>,
    oldest_waiting: Option<Duration>,
    every: Duration,
) -> String {
    let latency = latency_cell(latest, oldest_waiting, every);
    match latest {
        Some(Outcome::Answered {
            status: Some(status),
            ..
        }) if stale(latest, oldest_waiting, every).is_none() => format!("{status} {latency}"),
        _ => latency,
    }
}

/// The readiness cell of a running prober.
pub fn prober_readyz_cell(prober: &Prober) -> String {
    let latest = prober.latest(Endpoint::Readyz);
    readyz_cell(
        latest.outcome.as_ref(),
        latest.oldest_waiting,
        prober.every(),
    )
}

/// How long the oldest unanswered probe has waited, when that makes the latest answer stale:
/// longer than one probe interval and longer than that answer took.
fn stale(
    latest: Option<&Outcome>,
    oldest_waiting: Option<Duration>,
    every: Duration,
) -> Option<Duration> {
    let answered = match latest {
        Some(Outcome::Answered { latency, .. }) => Some(*latency),
        _ => None,
    };
    oldest_waiting
        .filter(|waiting| *waiting > every && answered.is_none_or(|latency| *waiting > latency))
}

/// `/health`'s cell: the status it reported (`ok`, `degraded`), not its latency, because
/// `/health` bounds its own wait and its status is what a load balancer acts on.
pub fn health_cell(latest: Option<&Outcome>) -> String {
    match latest {
        None => "-".to_owned(),
        Some(Outcome::Answered { status, .. }) => status.clone().unwrap_or_else(|| "ok".into()),
        Some(other) => failure_cell(other),
    }
}

/// `running/max +queued queued`, or `-` when the service has no `/debug/pool`.
pub fn pool_cell(pool: Option<&PoolSnapshot>) -> String {
    match pool {
        None => "-".to_owned(),
        Some(pool) => format!(
            "{}/{} +{} queued",
            pool.running, pool.max_threads, pool.queued
        ),
    }
}

fn failure_cell(outcome: &Outcome) -> String {
    match outcome {
        Outcome::TimedOut => "timeout".to_owned(),
        // The endpoint does not exist here (another service, an older gateway): nothing to show.
        Outcome::Status(404) => "-".to_owned(),
        Outcome::Status(code) => format!("HTTP {code}"),
        Outcome::Failed(_) => "down".to_owned(),
        Outcome::Answered { .. } => "ok".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(ms: u64) -> Outcome {
        Outcome::Answered {
            latency: Duration::from_millis(ms),
            status: Some("degraded".into()),
            mode: None,
            ready: None,
        }
    }

    #[test]
    fn cells_use_the_documented_vocabulary() {
        let every = Duration::from_millis(250);
        assert_eq!(latency_cell(None, None, every), "-");
        assert_eq!(latency_cell(Some(&answered(2013)), None, every), "2.013s");
        assert_eq!(
            latency_cell(Some(&Outcome::TimedOut), None, every),
            "timeout"
        );
        assert_eq!(latency_cell(Some(&Outcome::Status(404)), None, every), "-");
        assert_eq!(
            named_probe_cell(Some(&Outcome::Status(404)), None, every),
            "HTTP 404"
        );
        assert_eq!(named_probe_cell(Some(&answered(2)), None, every), "2.0ms");
        assert_eq!(
            latency_cell(Some(&Outcome::Status(500)), None, every),
            "HTTP 500"
        );
        assert_eq!(
            latency_cell(Some(&Outcome::Failed("refused".into())), None, every),
            "down"
        );
        assert_eq!(health_cell(Some(&answered(1))), "degraded");
        let pool = PoolSnapshot {
            max_threads: 4,
            running: 4,
            queued: 3,
            peak_running: 4,
            peak_queued: 5,
            saturation: 1.0,
            completed: 12,
        };
        assert_eq!(pool_cell(Some(&pool)), "4/4 +3 queued");
        assert_eq!(
            readings("2.0ms", "1.0ms", "ok", "0/4 +0 queued"),
            "sync 2.0ms | async 1.0ms | health ok | pool 0/4 +0 queued"
        );
    }

    #[test]
    fn the_readiness_cell_is_its_status_and_latency_and_comes_last() {
        let every = Duration::from_millis(250);
        let ready = |status: &str| Outcome::Answered {
            latency: Duration::from_micros(600),
            status: Some(status.into()),
            mode: None,
            ready: None,
        };
        assert_eq!(
            readyz_cell(Some(&ready("ready")), None, every),
            "ready 0.6ms"
        );
        assert_eq!(
            readyz_cell(Some(&ready("degraded")), None, every),
            "degraded 0.6ms"
        );
        assert_eq!(readyz_cell(None, None, every), "-");
        assert_eq!(
            readyz_cell(Some(&Outcome::Failed("refused".into())), None, every),
            "down"
        );
        let waiting = Some(Duration::from_millis(2400));
        assert_eq!(readyz_cell(Some(&ready("ready")), waiting, every), ">2.4s");
        let line = readings("2.0ms", "1.0ms", "ok", "0/4 +0 queued");
        assert_eq!(with_readyz(line.clone(), None), line);
        assert_eq!(
            with_readyz(line, Some("ready 0.6ms")),
            "sync 2.0ms | async 1.0ms | health ok | pool 0/4 +0 queued | readyz ready 0.6ms"
        );
    }

    #[test]
    fn a_stale_answer_gives_way_to_the_wait() {
        let every = Duration::from_millis(250);
        let waiting = Some(Duration::from_millis(2400));
        assert_eq!(latency_cell(Some(&answered(2)), waiting, every), ">2.4s");
        assert_eq!(latency_cell(None, waiting, every), ">2.4s");
        // A probe younger than one interval is just in flight, not a stall.
        let young = Some(Duration::from_millis(100));
        assert_eq!(latency_cell(Some(&answered(2)), young, every), "2.0ms");
        // The latest answer took longer than the oldest wait so far: it is the better number.
        assert_eq!(
            latency_cell(Some(&answered(3000)), waiting, every),
            "3.000s"
        );
    }
}
