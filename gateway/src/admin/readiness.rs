//! Readiness measured from outside: how long the main runtime makes new work wait, timed by a
//! thread that does not wait with it.
//!
//! The main listener's `/health` ([`crate::http::probes`]) is the lesson of a check that shares
//! the runtime it judges: its request is one more task in the queue it is meant to measure, so
//! under load it answers late (776 ms p99 at 4,000 streams on 2 cores, every stream on pace),
//! and in `inline` mode, with every worker blocked, it cannot answer at all; even its timeout is
//! a timer of the stalled runtime. A load balancer then cannot tell "busy but fine" from "stuck".
//!
//! The admin plane judges from its own thread and runtime instead. Every
//! `--readiness-interval-ms` it sends two probes into the main runtime:
//!
//! - **runtime**: a task spawned on the main runtime's [`Handle`]; its delay is the time until a
//!   worker first polls it, which is the time every relayed stream's next chunk waits too;
//! - **blocking_pool**: a trivial job on the counted blocking pool
//!   ([`crate::telemetry::pool::BlockingPool::spawn_on`]); its delay is the time until a thread
//!   starts it, the starvation of `--mode broken`.
//!
//! Each is awaited with a timer of the *admin* runtime, bounded by its threshold: past it the
//! check is failing and says so in the log, while the probe is still waited for (never sent
//! again while one is outstanding, so a stalled runtime does not pile them up). `/readyz` answers
//! at once from the latest result; for a probe still outstanding, its age is a lower bound on
//! its delay and is reported as such. So the answer itself never waits on the runtime it judges.
//!
//! The verdict, in order: `draining` once a drain began; `degraded` when a check is past its
//! threshold; `starting` until the first probes came back; else `ready`. The first probes coming
//! back is also what moves the lifecycle from `Starting` to `Serving`.
//!
//! The same readings go to `/metrics` ([`Readiness::publish`]): `gateway_readiness_ready` and
//! each check's `gateway_readiness_delay_seconds{check}` beside its threshold, written every
//! interval by a task of the admin runtime (not by the probe loop, which waits for a stuck
//! probe) and again at each scrape of the admin plane's `/metrics`, so an alert rule sees what
//! a load balancer sees.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use tokio::runtime::Handle;
use tokio::task::{JoinError, JoinHandle};

use crate::config::ReadinessSettings;
use crate::http::state::AppState;
use crate::lifecycle::{Lifecycle, Phase};
use crate::telemetry::labels::ReadinessCheck;

/// The two checks and their latest results. Shared by the prober and the handlers.
#[derive(Debug)]
pub struct Readiness {
    interval: Duration,
    runtime: Check,
    pool: Check,
}

/// `/readyz`'s `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ready,
    Degraded,
    Draining,
    Starting,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Degraded => "degraded",
            Self::Draining => "draining",
            Self::Starting => "starting",
        }
    }
}

/// One check: its name in the JSON, its threshold, and its latest probe.
#[derive(Debug)]
struct Check {
    name: &'static str,
    threshold: Duration,
    probe: Mutex<Probe>,
    /// What the log last said about it, so it speaks only when that changes.
    logged_ok: AtomicBool,
}

#[derive(Debug, Default, Clone, Copy)]
struct Probe {
    /// The delay of the last probe that came back.
    last: Option<Duration>,
    /// When the probe still outstanding was sent.
    pending_since: Option<Instant>,
}

/// A check as `/readyz` reports it.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    pub name: &'static str,
    /// The last delay measured, or the outstanding probe's age when that is longer.
    pub delay: Duration,
    pub threshold: Duration,
    /// A probe is outstanding: `delay` is then at least its age.
    pub pending: bool,
    pub ok: bool,
}

impl Check {
    fn new(name: &'static str, threshold: Duration) -> Self {
        Self {
            name,
            threshold,
            probe: Mutex::new(Probe::default()),
            logged_ok: AtomicBool::new(true),
        }
    }

    fn probe(&self) -> Probe {
        *self
            .probe
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut Probe)) {
        change(
            &mut self
                .probe
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }

    fn read(&self, now: Instant) -> Reading {
        let probe = self.probe();
        let age = probe
            .pending_since
            .map(|since| now.saturating_duration_since(since));
        let delay = probe.last.unwrap_or_default().max(age.unwrap_or_default());
        Reading {
            name: self.name,
            delay,
            threshold: self.threshold,
            pending: age.is_some(),
            ok: delay <= self.threshold,
        }
    }

    /// Logs a change of verdict, once per change: a stalled runtime is one warning, not four a
    /// second.
    fn log_change(&self, what: &str) {
        let reading = self.read(Instant::now());
        if self.logged_ok.swap(reading.ok, Ordering::Relaxed) == reading.ok {
            return;
        }
        if reading.ok {
            tracing::info!(
                check = self.name,
                delay_ms = reading.delay.as_millis() as u64,
                "readiness: {what} within {:?} again",
                self.threshold
            );
        } else {
            tracing::warn!(
                check = self.name,
                delay_ms = reading.delay.as_millis() as u64,
                "readiness degraded: {what} took longer than {:?}",
                self.threshold
            );
        }
    }

    /// Waits for a probe sent at `sent`, with the admin runtime's timer: past the threshold the
    /// check fails (and the log says so) while the probe is still waited for.
    async fn wait(
        &self,
        sent: Instant,
        mut probe: JoinHandle<Duration>,
        what: &str,
    ) -> Result<(), JoinError> {
        self.update(|p| p.pending_since = Some(sent));
        let delay = match tokio::time::timeout(self.threshold, &mut probe).await {
            Ok(delay) => delay?,
            Err(_) => {
                self.log_change(what);
                probe.await?
            }
        };
        self.update(|p| {
            p.last = Some(delay);
            p.pending_since = None;
        });
        self.log_change(what);
        Ok(())
    }
}

impl Readiness {
    pub fn new(settings: ReadinessSettings) -> Self {
        Self {
            interval: settings.interval,
            runtime: Check::new("runtime", settings.runtime_threshold),
            pool: Check::new("blocking_pool", settings.pool_threshold),
        }
    }

    /// The probe loop, on the admin runtime, until the main runtime is gone (or the task is
    /// aborted with the admin plane).
    pub async fn probe(self: Arc<Self>, main: Handle, state: AppState) {
        let mut every = tokio::time::interval(self.interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let runtime = async {
                let sent = Instant::now();
                // Measured inside the task: the time until a worker polls it.
                let task = main.spawn(async move { sent.elapsed() });
                self.runtime
                    .wait(
                        sent,
                        task,
                        "a task on the main runtime waiting to be polled",
                    )
                    .await
            };
            let pool = async {
                let sent = Instant::now();
                // The job is given how long it waited for a thread.
                let job = state.pool().spawn_on(&main, |waited| waited);
                self.pool
                    .wait(sent, job, "a blocking-pool job waiting to start")
                    .await
            };
            let (runtime, pool) = tokio::join!(runtime, pool);
            if runtime.is_err() || pool.is_err() {
                // Cancelled: the main runtime is shutting down.
                return;
            }
            if state.lifecycle().advance(Phase::Serving) {
                tracing::info!("readiness: the first probes came back; serving");
            }
        }
    }

    /// Writes the verdict and the readings into the readiness series of `/metrics`.
    pub fn publish(&self, state: &AppState) {
        let readings = self.readings();
        let ready = Self::status(state.lifecycle().phase(), &readings) == Status::Ready;
        let checks = [ReadinessCheck::Runtime, ReadinessCheck::BlockingPool]
            .into_iter()
            .zip(&readings)
            .map(|(check, r)| (check, r.delay.as_secs_f64(), r.threshold.as_secs_f64()));
        let checks: Vec<_> = checks.collect();
        state.metrics().llm.set_readiness(ready, &checks);
    }

    /// [`Readiness::publish`] every probe interval, on the admin runtime, until aborted.
    pub async fn publish_every(self: Arc<Self>, state: AppState) {
        let mut every = tokio::time::interval(self.interval);
        loop {
            every.tick().await;
            self.publish(&state);
        }
    }

    /// The checks as of now.
    pub fn readings(&self) -> [Reading; 2] {
        let now = Instant::now();
        [self.runtime.read(now), self.pool.read(now)]
    }

    /// The verdict for `phase` and `readings`.
    pub fn status(phase: Phase, readings: &[Reading]) -> Status {
        if phase >= Phase::Draining {
            Status::Draining
        } else if readings.iter().any(|r| !r.ok) {
            Status::Degraded
        } else if phase == Phase::Starting {
            Status::Starting
        } else {
            Status::Ready
        }
    }

    /// `/readyz`: 200 when ready, else 503; the JSON is documented in `gateway/README.md`.
    pub fn report(&self, state: &AppState) -> (StatusCode, Value) {
        let lifecycle: &Lifecycle = state.lifecycle();
        let phase = lifecycle.phase();
        let readings = self.readings();
        let status = Self::status(phase, &readings);
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mut checks = Map::new();
        for r in &readings {
            checks.insert(
                r.name.to_owned(),
                json!({
                    "delay_ms": ms(r.delay),
                    "threshold_ms": ms(r.threshold),
                    "pending": r.pending,
                    "ok": r.ok,
                }),
            );
        }
        let failing: Vec<&str> = readings.iter().filter(|r| !r.ok).map(|r| r.name).collect();
        let places = state.inbound().places();
        let body = json!({
            "status": status.as_str(),
            "phase": phase.as_str(),
            "mode": state.mode().to_string(),
            "failing": failing,
            "checks": checks,
            "probe_interval_ms": ms(self.interval),
            "pool": state.pool().snapshot(),
            "live_streams": state.live_streams().get(),
            "websockets": state.sockets().in_use(),
            "requests_in_flight": places.in_use(),
        });
        let code = if status == Status::Ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ok: bool) -> Reading {
        Reading {
            name: "runtime",
            delay: Duration::ZERO,
            threshold: Duration::from_millis(1),
            pending: false,
            ok,
        }
    }

    #[test]
    fn draining_first_then_degraded_then_starting() {
        let status = Readiness::status;
        assert_eq!(status(Phase::Serving, &[reading(true)]), Status::Ready);
        assert_eq!(status(Phase::Serving, &[reading(false)]), Status::Degraded);
        assert_eq!(status(Phase::Starting, &[reading(true)]), Status::Starting);
        assert_eq!(status(Phase::Starting, &[reading(false)]), Status::Degraded);
        assert_eq!(status(Phase::Draining, &[reading(false)]), Status::Draining);
        assert_eq!(
            status(Phase::ShuttingDown, &[reading(true)]),
            Status::Draining
        );
    }

    #[test]
    fn an_outstanding_probe_counts_its_age() {
        let check = Check::new("runtime", Duration::from_millis(100));
        let sent = Instant::now();
        check.update(|p| {
            p.last = Some(Duration::from_millis(2));
            p.pending_since = Some(sent);
        });
        let soon = check.read(sent + Duration::from_millis(1));
        assert_eq!(
            soon.delay,
            Duration::from_millis(2),
            "the last result, while larger"
        );
        assert!(soon.pending && soon.ok);
        let late = check.read(sent + Duration::from_millis(500));
        assert_eq!(late.delay, Duration::from_millis(500), "at least its age");
        assert!(!late.ok);
    }
}
