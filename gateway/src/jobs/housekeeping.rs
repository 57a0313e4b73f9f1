//! The queue's housekeeper: once a second, one sweep of the store and one read of its counts.
//!
//! The sweep takes back expired leases (a worker that died or stalled stopped renewing them:
//! its jobs go back to `queued`, or to `failed` once out of attempts), expires queued jobs past
//! `--job-ttl-secs`, and deletes finished jobs past `--job-retention-secs`. Every instance of a
//! fleet sweeps; the statements are idempotent, so two sweeps at once change each row once.
//! The counts feed the `gateway_jobs{status}` gauges.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::store::{JobStore, SweepAt, Swept};
use crate::telemetry::labels::{JobStatus, JobStatusLabels};

/// How often the housekeeper runs: a dead worker's job waits at most its lease plus this.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Sweeps and refreshes the gauges until the gateway stops.
pub(super) async fn run(shared: Arc<Shared>) {
    let Some(store) = shared.opened().await else {
        return;
    };
    let mut every = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shared.stop.cancelled() => return,
        }
        if let Err(error) = sweep(&shared, store.as_ref()).await {
            tracing::warn!("jobs housekeeping: {error}");
        }
        refresh_gauges(&shared, store.as_ref()).await;
    }
}

/// One sweep, with its metrics and log lines. Also run once at start-up, before the workers.
pub(super) async fn sweep(
    shared: &Shared,
    store: &dyn JobStore,
) -> Result<Swept, super::store::StoreError> {
    let now = super::now_ms();
    let settings = &shared.settings;
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let swept = store
        .sweep(SweepAt {
            now,
            max_attempts: settings.job_max_attempts,
            delete_before: now.saturating_sub(ms(settings.retention())),
            expire_before: settings.ttl().map(|ttl| now.saturating_sub(ms(ttl))),
        })
        .await?;
    let metrics = &shared.metrics.jobs;
    let taken_back = swept.requeued + swept.failed;
    if taken_back > 0 {
        metrics.lease_expired.inc_by(taken_back);
        tracing::warn!(
            requeued = swept.requeued,
            failed = swept.failed,
            "took back {taken_back} jobs whose lease had expired (their worker died or stalled)"
        );
        // Requeued jobs are work for the idle workers now, not at their next poll.
        shared.wake.notify_waiters();
    }
    for _ in 0..swept.failed {
        metrics.finished(JobStatus::Failed);
    }
    for _ in 0..swept.expired {
        metrics.finished(JobStatus::Expired);
    }
    if swept.expired > 0 || swept.deleted > 0 {
        tracing::info!(
            expired = swept.expired,
            deleted = swept.deleted,
            "jobs housekeeping"
        );
    }
    Ok(swept)
}

async fn refresh_gauges(shared: &Shared, store: &dyn JobStore) {
    match store.counts().await {
        Ok(counts) => {
            for status in JobStatus::ALL {
                let count = i64::try_from(counts.of(status)).unwrap_or(i64::MAX);
                shared
                    .metrics
                    .jobs
                    .by_status
                    .get_or_create(&JobStatusLabels { status })
                    .set(count);
            }
        }
        Err(error) => tracing::warn!("jobs housekeeping: cannot count jobs: {error}"),
    }
}
