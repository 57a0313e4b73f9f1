//! # Jobs: a chat request submitted now, answered later, never lost
//!
//! `POST /v1/jobs` takes a Chat Completions body and answers 202 with an id and a place in the
//! queue; `GET /v1/jobs/{id}` says where the job is and, once it is done, holds the upstream's
//! answer; `POST /v1/jobs/{id}/cancel` stops it. Workers (`--job-workers`) run the jobs through
//! the same provider path a chat request takes ([`crate::policy::chat`]), with no client
//! connection waiting on them. The lesson is in what makes such a queue trustworthy.
//!
//! ## Bounded: a queue that cannot say no is a slow outage
//!
//! A queue absorbs a burst; a queue without a limit absorbs an overload too, silently, until the
//! oldest job in it is hours old and every client has given up on its answer. That is the
//! blocking pool's unbounded queue of lesson 1 again, on disk. So past `--max-queued-jobs`
//! a submit gets 503 `job_queue_full` with `Retry-After` at once: the client learns now, not
//! after an hour, and the queue's wait stays bounded by its length over the workers' pace.
//!
//! ## Durable: the 202 is a promise
//!
//! The 202 is sent only after the job is committed: SQLite with `synchronous=FULL` has fsynced
//! its write-ahead log, Postgres its commit record. An in-memory queue (the original service's)
//! answers faster and loses every accepted job when the process dies; here a `SIGKILL` at any
//! instant loses nothing that was acknowledged. The cost is one fsync per submit; `cargo xtask
//! bench jobs` measures it.
//!
//! ## Where a position comes from
//!
//! From the store, at the moment it is asked: a job's `queue_position` is the count of queued
//! jobs whose sequence number is not greater than its own, over a partial index that holds only
//! queued jobs (`jobs_queued`). No process keeps a counter that a crash, a second instance or a
//! cancel could leave wrong. A job taken back after a crash keeps its number, so it returns to
//! the front, and every waiting job's position only ever goes down.
//!
//! ## A lease, not a lock
//!
//! A worker that claims a job does not own it forever: it holds a *lease* until a time in the
//! store (`--job-lease-secs`), and renews it every third of that while it works (the
//! heartbeat). A worker that dies (a crash, `SIGKILL`, a lost machine) or stalls stops renewing;
//! once the lease has expired, any instance's housekeeper ([`housekeeping`]) puts the job back
//! in the queue with its attempt counted, and after `--job-max-attempts` it fails with a clear
//! error instead of crashing workers forever. On start-up the expired leases are taken back
//! before the workers start. The price of never losing a job is that a job can run twice: one
//! whose worker died after the upstream answered but before the result was written runs again.
//! At least once, never lost; a lease is what makes "at least once" terminate.
//!
//! Every write a worker makes names its lease's token and checks the job is still
//! `in_progress` under it ([`store`]), so a worker that stalled past its lease and wakes up
//! cannot overwrite the result of the worker that took over, nor resurrect a cancelled job.
//!
//! ## The drain hands jobs back
//!
//! When the gateway starts draining ([`crate::lifecycle`]), the workers stop claiming: new jobs
//! are for the other instances, or for this one after its restart. Running jobs go on until the
//! drain deadline (the drain waits for them like for streams), and one still running then is
//! dropped and its lease *given back*: it is `queued` again at once, its attempt not counted,
//! rather than waiting out its lease.
//!
//! ## Layout
//!
//! A layer of its own, between the HTTP surface (`crate::http::jobs` holds the handlers) and
//! the policies it runs requests through. [`store`]: the trait and its SQLite and Postgres
//! implementations; [`view`]: the JSON answers; `worker`: claim, run, heartbeat, finish;
//! [`housekeeping`]: leases, retention, ttl, gauges.

pub mod housekeeping;
pub mod store;
pub mod view;
mod worker;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use tokio::sync::{Notify, OnceCell, watch};
use tokio::task::JoinHandle;

use self::store::{Cancelled, JobStore, NewJob, StoreError, Submitted};
use self::view::{JobList, JobObject, JobStats};
use crate::config::{Config, JobsConfig, JobsStore};
use crate::error::ApiError;
use crate::lifecycle::Lifecycle;
use crate::policy::chat;
use crate::policy::resilience::{DEADLINE_HEADER, HEDGE_DELAY_HEADER, Resilience};
use crate::telemetry::labels::{JobRefusal, JobStatus};
use crate::telemetry::metrics::Metrics;
use crate::upstream::forwarded_request_headers;
use crate::upstream::providers::Providers;
pub use worker::Running;

/// How long a client refused with `job_queue_full` is told to wait.
pub const QUEUE_FULL_RETRY: Duration = Duration::from_secs(5);
/// `GET /v1/jobs`'s `limit` when none is given, and its largest.
pub const LIST_LIMIT: (u32, u32) = (20, 100);

/// The job queue of this instance: its store, its workers, its housekeeper.
#[derive(Debug)]
pub struct Jobs {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// What the API, the workers and the housekeeper share.
#[derive(Debug)]
struct Shared {
    settings: JobsConfig,
    /// Opened at start-up, or (a SQLite file that does not exist yet) by the first submit, so a
    /// gateway that never gets a job leaves no file behind.
    store: OnceCell<Arc<dyn JobStore>>,
    /// Flips to `true` once the store is open: workers and housekeeper wait for it.
    opened: watch::Sender<bool>,
    providers: Arc<Providers>,
    resilience: Arc<Resilience>,
    metrics: Arc<Metrics>,
    lifecycle: Lifecycle,
    /// A submit here wakes one idle worker at once, rather than at its next poll.
    wake: Notify,
    running: Running,
    /// Names this process in lease tokens.
    instance: String,
    stop: StopSignal,
}

impl Jobs {
    pub fn new(
        config: &Config,
        providers: Arc<Providers>,
        resilience: Arc<Resilience>,
        metrics: Arc<Metrics>,
        lifecycle: Lifecycle,
    ) -> Self {
        let settings = config.jobs.clone();
        let on = settings.jobs_store != JobsStore::Off;
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        metrics.jobs.capacity.set(if on {
            gauge(settings.max_queued_jobs)
        } else {
            0
        });
        metrics.jobs.workers.set(if on {
            gauge(settings.job_workers as u64)
        } else {
            0
        });
        Self {
            shared: Arc::new(Shared {
                settings,
                store: OnceCell::new(),
                opened: watch::Sender::new(false),
                providers,
                resilience,
                metrics,
                lifecycle,
                wake: Notify::new(),
                running: Running::default(),
                instance: format!("{}-{}", std::process::id(), random_id(8)),
                stop: StopSignal::default(),
            }),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Opens the store (unless it is a SQLite file still to be created), takes back the leases
    /// that expired while no one watched, then starts the housekeeper and the workers. An `Err`
    /// stops the gateway's start: a store named but unreachable is a configuration error.
    pub async fn start(&self) -> Result<(), StoreError> {
        let shared = &self.shared;
        let url = &shared.settings.jobs_store;
        if *url == JobsStore::Off {
            return Ok(());
        }
        if store::exists(url) {
            let store = shared.open().await?;
            let swept = housekeeping::sweep(shared, store.as_ref()).await?;
            tracing::info!(
                "jobs: {} store {url} open; {} expired leases taken back",
                store.kind(),
                swept.requeued + swept.failed
            );
        } else {
            tracing::info!("jobs: {url} is created with the first job");
        }
        let mut tasks = self
            .tasks
            .lock()
            .map_err(|_| StoreError::Corrupt("poisoned".into()))?;
        tasks.push(tokio::spawn(housekeeping::run(Arc::clone(shared))));
        for _ in 0..shared.settings.job_workers {
            tasks.push(tokio::spawn(worker::work(Arc::clone(shared))));
        }
        Ok(())
    }

    /// Stops the workers (a running job gives its lease back) and the housekeeper, and waits a
    /// few seconds for them: after the drain, before the runtime goes.
    pub async fn stop(&self) {
        self.shared.stop.fire();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let all = futures_util::future::join_all(tasks);
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            tracing::warn!(
                "jobs: workers still busy 5 s after the drain; their leases will expire"
            );
        }
    }

    /// Jobs this instance's workers are running now (the drain waits for them).
    pub fn running(&self) -> usize {
        self.shared.running.count()
    }

    /// Commits a validated chat `body` for `model` as `owner`'s job; the answer is sent only
    /// once it is on disk.
    pub async fn submit(
        &self,
        owner: &str,
        model: String,
        body: Bytes,
        headers: &HeaderMap,
    ) -> Result<JobObject, ApiError> {
        let shared = &self.shared;
        if shared.settings.jobs_store == JobsStore::Off {
            return Err(disabled());
        }
        chat::check(&shared.providers, &shared.resilience, &model, headers)?;
        let job = NewJob {
            id: format!("job_{}", random_id(24)),
            owner: owner.to_owned(),
            model,
            request: body.to_vec(),
            headers: kept_headers(headers),
            created_at: now_ms(),
        };
        let metrics = &shared.metrics.jobs;
        let refused = |error: StoreError| {
            metrics.refused(JobRefusal::StoreUnavailable);
            store_error(&error)
        };
        let store = shared.open().await.map_err(refused)?;
        match store.submit(&job, shared.settings.max_queued_jobs).await {
            Ok(Submitted::Accepted { position }) => {
                metrics.submitted.inc();
                shared.wake.notify_one();
                let NewJob {
                    id,
                    owner,
                    model,
                    created_at,
                    ..
                } = job;
                let stored = store::Job {
                    seq: 0,
                    id,
                    owner,
                    status: JobStatus::Queued,
                    model,
                    created_at,
                    started_at: None,
                    completed_at: None,
                    attempts: 0,
                    processing_ms: None,
                    result: None,
                    error_code: None,
                    error_message: None,
                    ticket: 0,
                };
                JobObject::new(stored, Some(position), false)
            }
            Ok(Submitted::Full { queued }) => {
                metrics.refused(JobRefusal::QueueFull);
                Err(ApiError::overloaded(
                    "job_queue_full",
                    format!(
                        "the job queue is full: {queued} jobs are waiting \
                         (--max-queued-jobs {}); retry later",
                        shared.settings.max_queued_jobs
                    ),
                )
                .retry_after(QUEUE_FULL_RETRY))
            }
            Err(error) => Err(refused(error)),
        }
    }

    /// `owner`'s job `id`, with its place while queued and its result once completed.
    pub async fn get(&self, owner: &str, id: &str) -> Result<JobObject, ApiError> {
        let Some(store) = self.existing().await? else {
            return Err(not_found(id));
        };
        match store.get(id, owner).await.map_err(|e| store_error(&e))? {
            Some((job, position)) => JobObject::new(job, position, true),
            None => Err(not_found(id)),
        }
    }

    /// Cancels `owner`'s job `id`: a queued one at once, a running one's upstream request too.
    pub async fn cancel(&self, owner: &str, id: &str) -> Result<JobObject, ApiError> {
        let Some(store) = self.existing().await? else {
            return Err(not_found(id));
        };
        let now = now_ms();
        match store
            .cancel(id, owner, now)
            .await
            .map_err(|e| store_error(&e))?
        {
            Some(Cancelled::Now(job)) => {
                // Running here: the worker drops the request now. Running elsewhere: that
                // worker's next heartbeat finds its lease gone and drops it.
                self.shared.running.cancel(id);
                self.shared.metrics.jobs.finished(JobStatus::Cancelled);
                JobObject::new(job, None, false)
            }
            Some(Cancelled::AlreadyFinal(job)) => Err(ApiError {
                status: StatusCode::CONFLICT,
                ..ApiError::bad_request(
                    None,
                    format!(
                        "job {id} is already {}: only a queued or in_progress job can be cancelled",
                        job.status.as_str()
                    ),
                )
                .with_code("job_not_cancellable")
            }),
            None => Err(not_found(id)),
        }
    }

    /// `owner`'s jobs, newest first.
    pub async fn list(
        &self,
        owner: &str,
        status: Option<JobStatus>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<JobList, ApiError> {
        let jobs = match self.existing().await? {
            Some(store) => store
                .list(owner, status, after, limit + 1)
                .await
                .map_err(|e| store_error(&e))?,
            // No store yet, so no job: `after` names none.
            None => after.is_none().then(Vec::new),
        };
        match jobs {
            Some(jobs) => JobList::new(jobs, limit as usize),
            None => Err(ApiError::bad_request(
                Some("after"),
                format!(
                    "`after` names no job of yours: {}",
                    after.unwrap_or_default()
                ),
            )
            .with_code("invalid_value")),
        }
    }

    /// The whole queue's counts, and this instance's workers.
    pub async fn stats(&self) -> Result<JobStats, ApiError> {
        let shared = &self.shared;
        let counts = match self.existing().await? {
            Some(store) => store.counts().await.map_err(|e| store_error(&e))?,
            None => store::Counts::default(),
        };
        let kind = match shared.settings.jobs_store {
            JobsStore::Postgres(_) => "postgres",
            _ => "sqlite",
        };
        Ok(JobStats::new(
            &counts,
            now_ms(),
            shared.settings.job_workers,
            self.running(),
            shared.settings.max_queued_jobs,
            kind,
        ))
    }

    /// The store for a read: `None` when it is a SQLite file nobody created yet (so nothing
    /// can be in it), a 404 when jobs are off.
    async fn existing(&self) -> Result<Option<Arc<dyn JobStore>>, ApiError> {
        let shared = &self.shared;
        let url = &shared.settings.jobs_store;
        if *url == JobsStore::Off {
            return Err(disabled());
        }
        if shared.store.get().is_none() && !store::exists(url) {
            return Ok(None);
        }
        shared.open().await.map(Some).map_err(|e| store_error(&e))
    }
}

impl Shared {
    /// The store, opened on first use.
    async fn open(&self) -> Result<Arc<dyn JobStore>, StoreError> {
        let readers = u32::try_from(self.settings.job_workers + 4).unwrap_or(u32::MAX);
        let store = self
            .store
            .get_or_try_init(|| async {
                let opened = store::open(&self.settings.jobs_store, readers).await?;
                opened.ok_or_else(|| StoreError::Corrupt("the job store is off".into()))
            })
            .await?;
        self.opened.send_replace(true);
        Ok(Arc::clone(store))
    }

    /// Waits until the store is open; `None` if the gateway stops first.
    async fn opened(&self) -> Option<Arc<dyn JobStore>> {
        let mut opened = self.opened.subscribe();
        tokio::select! {
            result = opened.wait_for(|open| *open) => result.ok()?,
            () = self.stop.cancelled() => return None,
        };
        self.store.get().cloned()
    }

    fn stopping(&self) -> bool {
        self.stop.fired()
    }
}

/// A one-way signal: fired once, seen by every waiter, now and later.
#[derive(Debug)]
struct StopSignal(watch::Sender<bool>);

impl Default for StopSignal {
    fn default() -> Self {
        Self(watch::Sender::new(false))
    }
}

impl StopSignal {
    fn fire(&self) {
        self.0.send_replace(true);
    }

    fn fired(&self) -> bool {
        *self.0.borrow()
    }

    async fn cancelled(&self) {
        let _ = self.0.subscribe().wait_for(|fired| *fired).await;
    }
}

/// The headers a job keeps for its run: those that go upstream, and the `x-gateway-*` ones
/// that plan its retries and deadline; as JSON `[[name, value], ...]`.
fn kept_headers(headers: &HeaderMap) -> String {
    let mut kept: Vec<(&str, &str)> = Vec::new();
    let forwarded = forwarded_request_headers(headers);
    for (name, value) in &forwarded {
        if let Ok(value) = value.to_str() {
            kept.push((name.as_str(), value));
        }
    }
    for name in [DEADLINE_HEADER, HEDGE_DELAY_HEADER] {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            kept.push((name, value));
        }
    }
    serde_json::to_string(&kept).unwrap_or_else(|_| "[]".to_owned())
}

fn disabled() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::bad_request(
            None,
            "the job queue is off (--jobs-store off); start the gateway with --jobs-store \
             sqlite://PATH or postgres://... to use /v1/jobs",
        )
        .with_code("jobs_disabled")
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::bad_request(
            None,
            format!("no job {id:?} (a job is visible only to the API key that submitted it)"),
        )
        .with_code("job_not_found")
    }
}

/// The store could not answer: 503, so the client retries (its job was not accepted).
fn store_error(error: &StoreError) -> ApiError {
    ApiError::overloaded(
        "job_store_unavailable",
        format!("the job store did not answer: {error}"),
    )
    .retry_after(Duration::from_secs(1))
}

/// Unix milliseconds: the store's clock. Instances of a fleet compare leases with it, so their
/// clocks must agree to well within a lease (NTP does).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `len` random letters and digits.
fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
        .collect()
}
