//! Where jobs live: one trait, [`JobStore`], and its two implementations, SQLite for one instance
//! (`sqlite`) and Postgres for a fleet sharing one queue (`postgres`).
//!
//! Every state change of a job is one SQL statement (or one short transaction) that checks the
//! state it changes from, so two workers, two instances or a worker and a cancel can never both
//! win: a finish counts only while the worker still holds the lease (`lease_owner` is its token
//! and the job is still `in_progress`), a claim takes only a `queued` job, a cancel only an
//! unfinished one. The store, not a process's memory, is the truth; that is what lets a process
//! die at any instant without losing a job.
//!
//! The two implementations differ in three places only: how they connect (SQLite: a file, WAL,
//! `synchronous=FULL`, one writer connection; Postgres: a pool), their schema's types
//! (migrations per database, under `gateway/migrations/`), and the claim (Postgres adds `FOR
//! UPDATE SKIP LOCKED`, so instances claiming at once take different jobs instead of queueing on
//! the same row). The rest is the same SQL, written once in `sql` and compiled for each
//! driver's concrete types.

mod postgres;
mod sql;
mod sqlite;

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::config::JobsStore;
use crate::telemetry::labels::JobStatus;

/// A job as stored, without the request it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The submit order: lists go by it, newest first.
    pub seq: i64,
    pub id: String,
    /// Whose job it is: the hex digest of the API key that submitted it, `""` without keys.
    pub owner: String,
    pub status: JobStatus,
    pub model: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When a worker last started it.
    pub started_at: Option<i64>,
    /// When it reached a final status.
    pub completed_at: Option<i64>,
    /// Times a worker started it (a drain's hand-back does not count).
    pub attempts: i64,
    pub processing_ms: Option<i64>,
    /// The upstream's body, when completed.
    pub result: Option<Vec<u8>>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// The queue order: a job's place is the count of queued jobs whose ticket is not greater.
    /// Given at submit and again when the job goes back to the queue (to its back).
    pub ticket: i64,
}

/// A job found by id, and its place in the queue while it is queued.
pub type Found = (Job, Option<u64>);

/// A job to insert.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub owner: String,
    pub model: String,
    /// The validated Chat Completions body, as the client sent it.
    pub request: Vec<u8>,
    /// The headers that go upstream with it, as JSON `[[name, value], ...]`.
    pub headers: String,
    pub created_at: i64,
}

/// What a submit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Committed; its place in the queue (1 = next).
    Accepted { position: u64 },
    /// Not stored: `queued` jobs were already waiting, at or past the limit.
    Full { queued: u64 },
}

/// A job a worker took, with what it needs to run it and the lease it holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: Job,
    pub request: Vec<u8>,
    pub headers: String,
    /// The lease's token: every later change of this job by the worker names it.
    pub token: String,
}

/// How a worker's run ended.
#[derive(Debug, Clone)]
pub enum Finish {
    Completed { result: Vec<u8> },
    Failed { code: String, message: String },
}

/// What a cancel found.
#[derive(Debug, Clone)]
pub enum Cancelled {
    /// It was queued or in progress, and is `cancelled` now.
    Now(Job),
    /// It had already finished, with this status.
    AlreadyFinal(Job),
}

/// The counts of `GET /v1/jobs/stats` and the `gateway_jobs{status}` gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// By status, in [`JobStatus::ALL`]'s order.
    pub by_status: [u64; JobStatus::ALL.len()],
    /// When the oldest queued job was submitted (unix ms).
    pub oldest_queued_at: Option<i64>,
}

impl Counts {
    pub fn of(&self, status: JobStatus) -> u64 {
        self.by_status[status as usize]
    }
}

/// What one housekeeping pass changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired leases put back in the queue.
    pub requeued: u64,
    /// Expired leases of jobs out of attempts: `failed`.
    pub failed: u64,
    /// Queued past `--job-ttl-secs`: `expired`.
    pub expired: u64,
    /// Finished past `--job-retention-secs`: deleted.
    pub deleted: u64,
}

/// A store failure: the database is unreachable, full, or refused a statement.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Sql(#[from] sqlx::Error),
    #[error("migrating the jobs schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("a stored job is unreadable: {0}")]
    Corrupt(String),
}

/// The times a housekeeping pass works with (unix ms).
#[derive(Debug, Clone, Copy)]
pub struct SweepAt {
    pub now: i64,
    pub max_attempts: u32,
    /// Finished before this: deleted.
    pub delete_before: i64,
    /// Queued before this: expired (`None`: no ttl).
    pub expire_before: Option<i64>,
}

/// The queue's storage. Every method is one atomic change or read; see the module docs.
///
/// The futures are boxed so the store is a trait object chosen at start-up by
/// `--jobs-store`'s URL (`Arc<dyn JobStore>`), not a type parameter every layer above repeats.
pub trait JobStore: Send + Sync + fmt::Debug {
    /// `sqlite` or `postgres`, for logs.
    fn kind(&self) -> &'static str;

    /// Commits `job` as `queued` unless `max_queued` jobs are waiting. When this returns
    /// `Accepted`, the job is on disk (the 202 waits for it).
    fn submit<'a>(
        &'a self,
        job: &'a NewJob,
        max_queued: u64,
    ) -> BoxFuture<'a, Result<Submitted, StoreError>>;

    /// `owner`'s job `id`, and its place in the queue while it is queued.
    fn get<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
    ) -> BoxFuture<'a, Result<Option<Found>, StoreError>>;

    /// `owner`'s jobs, newest first, older than job `after` (if given), of `status` (if given);
    /// `limit` at most. `Ok(None)`: `after` is not one of `owner`'s jobs.
    fn list<'a>(
        &'a self,
        owner: &'a str,
        status: Option<JobStatus>,
        after: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Option<Vec<Job>>, StoreError>>;

    /// Cancels `owner`'s job `id` if it has not finished. `Ok(None)`: no such job.
    fn cancel<'a>(
        &'a self,
        id: &'a str,
        owner: &'a str,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<Cancelled>, StoreError>>;

    /// Jobs by status, and the oldest queued one's submit time.
    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>>;

    /// Takes the next queued job (the lowest `seq`) under a lease named `token`, until
    /// `lease_until`; counts an attempt.
    fn claim<'a>(
        &'a self,
        token: &'a str,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<Option<Claimed>, StoreError>>;

    /// Extends the lease; `false` when the worker no longer holds it (cancelled, or expired
    /// and taken back): the worker must stop.
    fn renew<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Records the end of a run; `false` (nothing written) when the lease is no longer held.
    fn finish<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        finish: &'a Finish,
        now: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Gives the lease back: the job is `queued` again, in its old place, and the attempt is
    /// not counted (the drain's hand-back).
    fn release<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Housekeeping: expired leases back to the queue (or `failed` when out of attempts),
    /// queued jobs past their ttl `expired`, finished jobs past retention deleted.
    fn sweep(&self, at: SweepAt) -> BoxFuture<'_, Result<Swept, StoreError>>;
}

/// Opens the store `--jobs-store` names and brings its schema up to date. `None` for `off`.
/// `readers`: connections for reads besides the one writer (SQLite) or in all (Postgres).
pub async fn open(
    store: &JobsStore,
    readers: u32,
) -> Result<Option<Arc<dyn JobStore>>, StoreError> {
    Ok(match store {
        JobsStore::Off => None,
        JobsStore::Sqlite(path) => Some(Arc::new(sqlite::SqliteStore::open(path, readers).await?)),
        JobsStore::Postgres(url) => Some(Arc::new(postgres::PgStore::open(url, readers).await?)),
    })
}

/// Whether a SQLite store's file exists already: a gateway that never got a job creates none.
pub fn exists(store: &JobsStore) -> bool {
    match store {
        JobsStore::Sqlite(path) => path.exists(),
        JobsStore::Off | JobsStore::Postgres(_) => true,
    }
}
