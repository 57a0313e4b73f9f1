//! The demo's time series: every probe, every `/debug/pool` sample and every flowing count, with
//! *when* it happened, so that `--plot` can draw the run instead of only its percentiles.
//!
//! The report keeps what a run adds up to (a histogram, peaks, counts); a picture needs the
//! order of events: the sync probe climbing while the async one stays flat, the queue growing
//! while the running count sits at the pool size. The recorders ([`crate::probe`],
//! [`crate::pool`], the demo loop) each push a point into a shared [`Timeline`] as they go,
//! through the hooks the prober and the pool sampler call: they know nothing of a timeline.
//!
//! Times are seconds since the timeline was created, which `diag demo` does just before it
//! starts its samplers; the streams open a few milliseconds later. A probe is placed at the
//! moment it was *sent*, with the latency it then saw (a timeout at the timeout value), so a
//! point at 3 s with 5 s latency is a request sent at 3 s that had no answer by 8 s.
//!
//! Memory is bounded: each series keeps at most [`MAX_POINTS`] points and counts the ones it had
//! to drop. At the demo's rates (each probe every 250 ms, `/debug/pool` every 250 ms, the flowing
//! count every 100 ms) the busiest series fills that in 2.7 hours, when a demo lasts minutes; and
//! a point is at most 32 bytes, so even six full series (four probes, the pool, the flowing
//! count) stay under 20 MB.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pool::PoolSnapshot;

use crate::lock;
use crate::probe::{Endpoint, Outcome};

/// The most points one series keeps; later points are counted in [`Series::dropped`].
pub const MAX_POINTS: usize = 100_000;

/// What one probe saw, for the picture.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Answered after this many milliseconds.
    Answered(f64),
    /// No answer within the probe timeout, this many milliseconds.
    TimedOut(f64),
    /// No usable answer (refused, 404, ...): nothing was measured.
    Failed,
}

impl Latency {
    /// The value the picture draws: the latency, or the timeout for a probe that timed out.
    pub fn drawn_ms(self) -> Option<f64> {
        match self {
            Latency::Answered(ms) | Latency::TimedOut(ms) => Some(ms),
            Latency::Failed => None,
        }
    }
}

/// One probe: when it was sent, what it saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbePoint {
    pub at_s: f64,
    pub latency: Latency,
}

/// One `/debug/pool` answer: when it arrived, and the counters in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolPoint {
    pub at_s: f64,
    pub running: usize,
    pub queued: usize,
    pub max_threads: usize,
}

/// One count of the streams flowing at that moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowingPoint {
    pub at_s: f64,
    pub flowing: usize,
}

/// Everything recorded so far; [`Timeline::series`] hands out a copy.
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// One list per endpoint, in the order of [`Endpoint::ALL`] and then `/readyz` (empty when
    /// there was no admin plane to probe), in the order probes *finished* (sort by `at_s` for
    /// send order).
    pub probes: [Vec<ProbePoint>; 4],
    pub pool: Vec<PoolPoint>,
    pub flowing: Vec<FlowingPoint>,
    /// Points not kept because their series was full ([`MAX_POINTS`]).
    pub dropped: u64,
}

impl Series {
    /// The probes of one endpoint, in the order they finished.
    pub fn probes(&self, endpoint: Endpoint) -> &[ProbePoint] {
        self.probes.get(endpoint.index()).map_or(&[], Vec::as_slice)
    }
}

/// A shared, cheaply cloned handle that the recorders push points into.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Time zero of every point.
    origin: Instant,
    series: Arc<Mutex<Series>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Timeline {
    /// A timeline whose time zero is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            series: Arc::default(),
        }
    }

    fn offset(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.origin)
    }

    /// A probe to `endpoint`, sent at `sent`, that saw `outcome`.
    pub fn record_probe(
        &self,
        endpoint: Endpoint,
        sent: Instant,
        outcome: &Outcome,
        timeout: Duration,
    ) {
        let latency = match outcome {
            Outcome::Answered { latency, .. } => Latency::Answered(ms(*latency)),
            Outcome::TimedOut => Latency::TimedOut(ms(timeout)),
            Outcome::Status(_) | Outcome::Failed(_) => Latency::Failed,
        };
        let point = ProbePoint {
            at_s: self.offset(sent).as_secs_f64(),
            latency,
        };
        let mut series = lock(&self.series);
        let Series {
            probes, dropped, ..
        } = &mut *series;
        // Only the gateway's endpoints have a series; the demo probes nothing else.
        if let Some(probes) = probes.get_mut(endpoint.index()) {
            push(probes, point, dropped);
        }
    }

    /// A `/debug/pool` answer that arrived at `at`.
    pub fn record_pool(&self, at: Instant, snapshot: &PoolSnapshot) {
        let point = PoolPoint {
            at_s: self.offset(at).as_secs_f64(),
            running: snapshot.running,
            queued: snapshot.queued,
            max_threads: snapshot.max_threads,
        };
        let mut series = lock(&self.series);
        let Series { pool, dropped, .. } = &mut *series;
        push(pool, point, dropped);
    }

    /// `flowing` streams were flowing at `at`.
    pub fn record_flowing(&self, at: Instant, flowing: usize) {
        let point = FlowingPoint {
            at_s: self.offset(at).as_secs_f64(),
            flowing,
        };
        let mut series = lock(&self.series);
        let Series {
            flowing, dropped, ..
        } = &mut *series;
        push(flowing, point, dropped);
    }

    /// A copy of everything recorded so far.
    pub fn series(&self) -> Series {
        lock(&self.series).clone()
    }
}

fn push<T>(points: &mut Vec<T>, point: T, dropped: &mut u64) {
    if points.len() < MAX_POINTS {
        points.push(point);
    } else {
        *dropped += 1;
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_placed_at_their_send_time_and_timeouts_at_the_timeout() {
        let timeline = Timeline::new();
        let sent = timeline.origin + Duration::from_millis(1500);
        let timeout = Duration::from_secs(5);
        timeline.record_probe(Endpoint::HealthSync, sent, &Outcome::TimedOut, timeout);
        let answer = Outcome::Answered {
            latency: Duration::from_micros(400),
            status: None,
            mode: None,
            ready: None,
        };
        timeline.record_probe(Endpoint::HealthAsync, sent, &answer, timeout);
        let failed = Outcome::Failed("refused".into());
        timeline.record_probe(Endpoint::Health, sent, &failed, timeout);

        let series = timeline.series();
        let [sync] = series.probes(Endpoint::HealthSync) else {
            panic!("one sync probe: {series:?}");
        };
        assert_eq!(sync.at_s, 1.5);
        assert_eq!(sync.latency, Latency::TimedOut(5000.0));
        assert_eq!(sync.latency.drawn_ms(), Some(5000.0));
        let [async_] = series.probes(Endpoint::HealthAsync) else {
            panic!("one async probe: {series:?}");
        };
        assert!(matches!(async_.latency, Latency::Answered(ms) if (ms - 0.4).abs() < 1e-9));
        let [health] = series.probes(Endpoint::Health) else {
            panic!("one health probe: {series:?}");
        };
        assert_eq!(health.latency.drawn_ms(), None);
    }

    #[test]
    fn a_full_series_drops_and_counts() {
        let timeline = Timeline::new();
        let now = Instant::now();
        for _ in 0..MAX_POINTS + 3 {
            timeline.record_flowing(now, 1);
        }
        let series = timeline.series();
        assert_eq!(series.flowing.len(), MAX_POINTS);
        assert_eq!(series.dropped, 3);
    }
}
