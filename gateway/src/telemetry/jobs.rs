//! The job queue's series in `/metrics` ([`crate::jobs`]):
//!
//! | family | type | what moves it |
//! |---|---|---|
//! | `gateway_jobs{status}` | gauge | jobs in the store by status, all instances together (read from the store every second) |
//! | `gateway_jobs_capacity` | gauge | `--max-queued-jobs` |
//! | `gateway_jobs_workers` | gauge | `--job-workers` of this instance |
//! | `gateway_jobs_running` | gauge | jobs this instance's workers are running now |
//! | `gateway_jobs_submitted_total` | counter | jobs accepted (committed) by this instance |
//! | `gateway_jobs_refused_total{reason}` | counter | submits refused with 503: `queue_full`, `store_unavailable` |
//! | `gateway_jobs_finished_total{status}` | counter | jobs this instance finished: `completed`, `failed`, `cancelled`, `expired` |
//! | `gateway_jobs_lease_expired_total` | counter | leases found expired (a worker died or stalled) and taken back by this instance |
//! | `gateway_jobs_wait_seconds` | histogram | from submit to a worker's start |
//! | `gateway_jobs_processing_seconds` | histogram | from a worker's start to its end |
//!
//! The status gauges mirror the store rather than counting here: with a fleet, other instances
//! move jobs too, and a count kept in one process would drift from the truth.

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::labels::{JobRefusal, JobRefusalLabels, JobStatus, JobStatusLabels};

/// The job queue's families, registered in the gateway's one registry.
#[derive(Debug)]
pub struct JobMetrics {
    pub by_status: Family<JobStatusLabels, Gauge<i64, AtomicI64>>,
    pub capacity: Gauge<i64, AtomicI64>,
    pub workers: Gauge<i64, AtomicI64>,
    pub running: Gauge<i64, AtomicI64>,
    pub submitted: Counter,
    pub refused: Family<JobRefusalLabels, Counter>,
    pub finished: Family<JobStatusLabels, Counter>,
    pub lease_expired: Counter,
    pub wait: Histogram,
    pub processing: Histogram,
}

impl JobMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let by_status = Family::<JobStatusLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "gateway_jobs",
            "Jobs in the store by status, all instances together",
            by_status.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::<i64, AtomicI64>::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let capacity = gauge(
            registry,
            "gateway_jobs_capacity",
            "Jobs that may wait in the queue (--max-queued-jobs)",
        );
        let workers = gauge(
            registry,
            "gateway_jobs_workers",
            "Job workers of this instance (--job-workers)",
        );
        let running = gauge(
            registry,
            "gateway_jobs_running",
            "Jobs this instance's workers are running",
        );
        let submitted = Counter::default();
        registry.register(
            "gateway_jobs_submitted",
            "Jobs accepted (committed to the store) by this instance",
            submitted.clone(),
        );
        let refused = Family::<JobRefusalLabels, Counter>::default();
        registry.register(
            "gateway_jobs_refused",
            "Job submits refused with 503, by reason (queue_full, store_unavailable)",
            refused.clone(),
        );
        let finished = Family::<JobStatusLabels, Counter>::default();
        registry.register(
            "gateway_jobs_finished",
            "Jobs this instance finished, by final status",
            finished.clone(),
        );
        let lease_expired = Counter::default();
        registry.register(
            "gateway_jobs_lease_expired",
            "Expired leases taken back (the job's worker died or stalled)",
            lease_expired.clone(),
        );
        // 1 ms .. ~9 h: a job waits milliseconds on an idle queue, hours behind a long one.
        let wait = Histogram::new(exponential_buckets(0.001, 4.0, 13));
        registry.register(
            "gateway_jobs_wait_seconds",
            "Time from a job's submit to a worker's start",
            wait.clone(),
        );
        // 10 ms .. ~11 min: an LLM answer takes from a fraction of a second to minutes.
        let processing = Histogram::new(exponential_buckets(0.01, 2.0, 17));
        registry.register(
            "gateway_jobs_processing_seconds",
            "Time from a worker's start of a job to its end",
            processing.clone(),
        );
        for status in JobStatus::ALL {
            let _ = by_status.get_or_create(&JobStatusLabels { status });
            if status.is_final() {
                let _ = finished.get_or_create(&JobStatusLabels { status });
            }
        }
        for reason in JobRefusal::ALL {
            let _ = refused.get_or_create(&JobRefusalLabels { reason });
        }
        Self {
            by_status,
            capacity,
            workers,
            running,
            submitted,
            refused,
            finished,
            lease_expired,
            wait,
            processing,
        }
    }

    pub fn refused(&self, reason: JobRefusal) {
        self.refused
            .get_or_create(&JobRefusalLabels { reason })
            .inc();
    }

    pub fn finished(&self, status: JobStatus) {
        self.finished
            .get_or_create(&JobStatusLabels { status })
            .inc();
    }
}
