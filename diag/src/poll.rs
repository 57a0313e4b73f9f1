//! One endpoint, probed on a fixed schedule from its own OS thread: `diag llm --health`.
//!
//! The same rules as the demo's prober ([`crate::probe`]), whose single-probe function it uses:
//! an own thread with a current-thread runtime and an own HTTP client (so the latency measured
//! is the server's, not the time diag's busy load runtime took to get round to the probe);
//! open loop (each probe fires on schedule, even while earlier ones wait); a probe that times
//! out is recorded at the timeout, not dropped. It differs in probing one endpoint only: the
//! demo's three would add two probes to the load, one of them holding a gateway pool thread.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::histogram::Latencies;
use crate::lock;
use crate::probe::{self, Endpoint, Outcome};

/// What the probes of one endpoint saw. Milliseconds, 3 decimals.
#[derive(Debug, Clone, Serialize)]
pub struct PollStats {
    /// Probes answered or timed out: the percentiles' population.
    pub samples: u64,
    /// `null` when there were no samples.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Probes with no answer within the probe timeout (in the percentiles at that value).
    pub timeouts: u64,
    /// Probes with no usable answer (refused, an unexpected status): not in the percentiles.
    pub errors: u64,
}

#[derive(Debug)]
struct Tally {
    latencies: Latencies,
    timeouts: u64,
    errors: u64,
}

/// Probes `{base}{endpoint}` every `every` until [`Poll::finish`].
#[derive(Debug)]
pub struct Poll {
    tally: Arc<Mutex<Tally>>,
    /// Dropping it ends the schedule; probes in flight then finish or time out.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Poll {
    /// Starts the probe thread; the first probe fires at once.
    pub fn start(
        base: String,
        endpoint: Endpoint,
        every: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let tally = Arc::new(Mutex::new(Tally {
            latencies: Latencies::new()?,
            timeouts: 0,
            errors: 0,
        }));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the probe runtime")?;
        let client = reqwest::Client::builder()
            .build()
            .context("cannot build the probe HTTP client")?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let thread_tally = Arc::clone(&tally);
        let thread = std::thread::Builder::new()
            .name("diag-poll".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let base: Arc<str> = base.into();
                    let mut ticks = tokio::time::interval(every);
                    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
                    let mut in_flight = JoinSet::new();
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            _ = ticks.tick() => {
                                let (client, base, tally) =
                                    (client.clone(), Arc::clone(&base), Arc::clone(&thread_tally));
                                in_flight.spawn(async move {
                                    let outcome = probe::probe(&client, &base, endpoint, timeout).await;
                                    let mut tally = lock(&tally);
                                    match outcome {
                                        Outcome::Answered { latency, .. } => tally.latencies.record(latency),
                                        Outcome::TimedOut => {
                                            tally.latencies.record(timeout);
                                            tally.timeouts += 1;
                                        }
                                        Outcome::Status(_) | Outcome::Failed(_) => tally.errors += 1,
                                    }
                                });
                            }
                            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                        }
                    }
                    while in_flight.join_next().await.is_some() {}
                });
            })
            .context("cannot start the probe thread")?;
        Ok(Self {
            tally,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the schedule, waits for the probes in flight (each at most its timeout), sums up.
    pub async fn finish(mut self) -> PollStats {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let tally = lock(&self.tally);
        PollStats {
            samples: tally.latencies.len(),
            p50_ms: tally.latencies.quantile_ms(0.50),
            p99_ms: tally.latencies.quantile_ms(0.99),
            max_ms: tally.latencies.max_ms(),
            timeouts: tally.timeouts,
            errors: tally.errors,
        }
    }
}
