//! The SQLite store: one instance's queue in one file, the default (`sqlite://gateway-jobs.db`).
//!
//! - **WAL** (write-ahead log): readers (a `GET`, a position count) never wait for the writer,
//!   and a commit appends to the log instead of rewriting pages.
//! - **`synchronous=FULL`**: a commit returns only once the log is fsynced, so a job that got
//!   its 202 survives a crash of the process *and* of the machine. (`NORMAL`, the usual WAL
//!   setting, may lose the last commits on power loss: fine for a cache, not for a promise.)
//! - **One writer**: SQLite allows one writer at a time; with several writer connections they
//!   would take turns through `SQLITE_BUSY` and retries. One connection in a pool of one turns
//!   that into an orderly queue in the pool, and makes the claim's `UPDATE … RETURNING` safe
//!   without `SKIP LOCKED` (which SQLite does not have): no two claims run at once.
//! - **A busy timeout** for the readers (and for another process opening the same file): wait
//!   up to 5 s for a lock rather than fail at once.

use std::path::Path;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::Row as _;
use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::sql::{self, Embedded, shared_methods};
use super::{
    Cancelled, Claimed, Counts, Finish, Found, Job, JobStore, NewJob, StoreError, Submitted,
    SweepAt, Swept,
};
use crate::telemetry::labels::JobStatus;

const MIGRATIONS: Embedded = Embedded(&[(
    1,
    "jobs",
    include_str!("../../../migrations/sqlite/0001_jobs.sql"),
)]);

#[derive(Debug)]
pub struct SqliteStore {
    /// The one writer connection.
    write: SqlitePool,
    /// Read-only connections for `GET`s, lists and counts.
    read: SqlitePool,
}

impl SqliteStore {
    /// The next ticket: one past the highest, read under the one writer, so never taken twice.
    const NEXT_TICKET: &'static str = "(SELECT COALESCE(MAX(ticket), 0) + 1 FROM jobs)";

    /// None needed: the one writer already runs submits one at a time, so each one's count of
    /// the queue is exact.
    const SUBMIT_LOCK: Option<&'static str> = None;

    /// The next queued job; safe without row locks because there is one writer.
    fn claimable() -> String {
        sql::NEXT_QUEUED.to_owned()
    }

    /// Opens (creating if missing) the file at `path` and migrates it.
    pub async fn open(path: &Path, readers: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        Migrator::new(MIGRATIONS).await?.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { write, read })
    }
}

impl JobStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    shared_methods!();
}
