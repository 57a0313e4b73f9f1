//! The Postgres store: one queue shared by a fleet of gateways.
//!
//! Several instances claim at once, so the claim must not hand one job to two of them, nor make
//! them queue behind each other on the first row: `FOR UPDATE SKIP LOCKED` locks the row it
//! takes and lets every other claimer skip it and take the next. The leases are the same as
//! SQLite's; here they also cover an instance that died while other instances keep running:
//! any of them takes its jobs back once their leases have expired.
//!
//! Connections: one pool, its size the readers asked for plus one per worker (set by the
//! caller), with a short acquire timeout so a database that went away becomes a 503 quickly.

use std::str::FromStr as _;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::PgPool;
use sqlx::Row as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::sql::{self, Embedded, shared_methods};
use super::{
    Cancelled, Claimed, Counts, Finish, Found, Job, JobStore, NewJob, StoreError, Submitted,
    SweepAt, Swept,
};
use crate::telemetry::labels::JobStatus;

const MIGRATIONS: Embedded = Embedded(&[(
    1,
    "jobs",
    include_str!("../../../migrations/postgres/0001_jobs.sql"),
)]);

#[derive(Debug)]
pub struct PgStore {
    write: PgPool,
    /// The same pool as `write`: Postgres has no single-writer rule.
    read: PgPool,
}

impl PgStore {
    /// The next ticket, from a sequence every instance shares.
    const NEXT_TICKET: &'static str = "nextval('jobs_ticket')";

    /// Taken first in a submit's transaction and held to its commit: submits take turns, so the
    /// count each one reads includes every job committed before it, and `--max-queued-jobs`
    /// holds for the whole fleet. Without it, read-committed transactions racing on every
    /// instance each counted room for one more: 11 accepted for a limit of 5 in
    /// `tests/jobs.rs`. Transaction-scoped, so an error or a dropped connection releases it;
    /// the key is any number no other user of the database takes an advisory lock on.
    const SUBMIT_LOCK: Option<&'static str> = Some("SELECT pg_advisory_xact_lock(4242001)");

    /// The next queued job no other instance is claiming right now.
    fn claimable() -> String {
        format!("{} FOR UPDATE SKIP LOCKED", sql::NEXT_QUEUED)
    }

    /// Connects to `url` and migrates the database (under an advisory lock, so instances
    /// starting together migrate once).
    pub async fn open(url: &str, connections: u32) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(2))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Migrator::new(MIGRATIONS).await?.run(&pool).await?;
        Ok(Self {
            write: pool.clone(),
            read: pool,
        })
    }
}

impl JobStore for PgStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    shared_methods!();
}
