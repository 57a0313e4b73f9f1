//! Samples the gateway's blocking-pool counters from `GET /debug/pool`.
//!
//! The probes show *that* requests wait; the pool counters show *why*: every thread taken
//! (`running == max_threads`) and jobs waiting behind them (`queued > 0`). That pair, seen in
//! the same sample, is the signature of an exhausted pool, and it is what the verdict checks.
//!
//! The gateway also keeps `peak_running`/`peak_queued`, which catch a peak between two samples,
//! but they count since the gateway started, maybe long before this run. So the report uses a
//! gateway peak only if it rose during the run (then the new value was reached during the run),
//! and the highest sampled value otherwise.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::{lock, root_cause};

/// The `/debug/pool` body: the gateway's own type (in `common`), so the two ends cannot drift.
pub use common::pool::PoolSnapshot;

/// One `GET /debug/pool`. `Err` carries a short reason (`HTTP 404`, `timeout`, a socket error).
pub async fn fetch(
    client: &reqwest::Client,
    gateway: &str,
    timeout: Duration,
) -> Result<PoolSnapshot, String> {
    let exchange = async {
        let response = client.get(format!("{gateway}/debug/pool")).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Err("timeout".into()),
        Ok(Err(error)) => Err(root_cause(&error)),
        Ok(Ok((status, _))) if !status.is_success() => Err(format!("HTTP {}", status.as_u16())),
        Ok(Ok((_, body))) => {
            serde_json::from_slice(&body).map_err(|e| format!("unexpected /debug/pool body: {e}"))
        }
    }
}

/// What the run saw of the pool. `None` (JSON null) when `/debug/pool` never answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolStats {
    /// The pool's size (tokio `max_blocking_threads`).
    pub max_threads: Option<usize>,
    /// Most jobs holding a pool thread at once during the run.
    pub peak_running: Option<usize>,
    /// Most jobs waiting for a pool thread at once during the run.
    pub peak_queued: Option<usize>,
    /// `/debug/pool` answers received.
    pub samples: u64,
    /// Samples with every thread busy and jobs queued.
    pub saturated_samples: u64,
}

#[derive(Debug, Default)]
struct Tally {
    samples: u64,
    saturated_samples: u64,
    latest: Option<PoolSnapshot>,
    max_running: usize,
    max_queued: usize,
}

impl Tally {
    fn record(&mut self, snapshot: PoolSnapshot) {
        self.samples += 1;
        self.saturated_samples += u64::from(snapshot.saturated());
        self.max_running = self.max_running.max(snapshot.running);
        self.max_queued = self.max_queued.max(snapshot.queued);
        self.latest = Some(snapshot);
    }
}

/// Called with each `/debug/pool` answer and when it arrived. The demo records them in its
/// timeline this way; the sampler needs to know nothing of it.
pub type OnSample = Box<dyn Fn(Instant, &PoolSnapshot) + Send + Sync>;

/// Samples `/debug/pool` on a period, in a task on diag's load runtime. (Unlike the probes,
/// these are not latency measurements, so a little scheduling delay does not matter.)
#[derive(Debug)]
pub struct PoolWatch {
    tally: Arc<Mutex<Tally>>,
    /// The gateway's counters before the run: the reference its peaks are compared with.
    baseline: Option<PoolSnapshot>,
    task: JoinHandle<()>,
    client: reqwest::Client,
    gateway: String,
    timeout: Duration,
}

impl PoolWatch {
    /// Takes the baseline sample, then samples every `every` until [`PoolWatch::finish`];
    /// `on_sample`, if given, sees every answer.
    pub async fn start(
        client: reqwest::Client,
        gateway: String,
        every: Duration,
        timeout: Duration,
        on_sample: Option<OnSample>,
    ) -> Self {
        let baseline = fetch(&client, &gateway, timeout).await.ok();
        let tally = Arc::new(Mutex::new(Tally::default()));
        let task = tokio::spawn(sample(
            client.clone(),
            gateway.clone(),
            every,
            timeout,
            Arc::clone(&tally),
            on_sample,
        ));
        Self {
            tally,
            baseline,
            task,
            client,
            gateway,
            timeout,
        }
    }

    pub fn latest(&self) -> Option<PoolSnapshot> {
        lock(&self.tally).latest
    }

    /// Stops sampling, reads the gateway's peaks one last time, and sums up.
    pub async fn finish(self) -> PoolStats {
        self.task.abort();
        let last = fetch(&self.client, &self.gateway, self.timeout).await.ok();
        let mut tally = lock(&self.tally);
        if let Some(last) = last {
            tally.record(last);
        }
        let risen = |peak: fn(&PoolSnapshot) -> usize| match (self.baseline, last) {
            (Some(before), Some(after)) if peak(&after) > peak(&before) => peak(&after),
            // Not risen, or no reference to tell: the samples are all we know of this run.
            _ => 0,
        };
        let seen = tally.samples > 0;
        PoolStats {
            max_threads: tally.latest.map(|s| s.max_threads),
            peak_running: seen.then(|| tally.max_running.max(risen(|s| s.peak_running))),
            peak_queued: seen.then(|| tally.max_queued.max(risen(|s| s.peak_queued))),
            samples: tally.samples,
            saturated_samples: tally.saturated_samples,
        }
    }
}

async fn sample(
    client: reqwest::Client,
    gateway: String,
    every: Duration,
    timeout: Duration,
    tally: Arc<Mutex<Tally>>,
    on_sample: Option<OnSample>,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Ok(snapshot) = fetch(&client, &gateway, timeout).await {
            if let Some(on_sample) = &on_sample {
                on_sample(Instant::now(), &snapshot);
            }
            lock(&tally).record(snapshot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturated_means_full_and_waiting() {
        let pool = |running, queued| PoolSnapshot {
            max_threads: 4,
            running,
            queued,
            peak_running: 0,
            peak_queued: 0,
            saturation: running as f64 / 4.0,
            completed: 0,
        };
        assert!(pool(4, 1).saturated());
        assert!(!pool(4, 0).saturated(), "busy but nobody waits");
        assert!(
            !pool(3, 1).saturated(),
            "a job about to start on a free thread"
        );
    }
}
