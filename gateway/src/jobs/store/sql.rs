//! The SQL both stores share, written once.
//!
//! SQLite and Postgres both take `$1`-style parameters and `RETURNING`, so every statement but
//! the claim is the same text. [`shared_methods!`] writes the [`super::JobStore`] methods that run
//! them once; each store expands it inside its own `impl`, where `self.write` and `self.read` are
//! its driver's concrete pool, so the same body compiles against `sqlx::Sqlite` and
//! `sqlx::Postgres` without a generic bound on every sqlx trait.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use sqlx::migrate::{Migration, MigrationSource, MigrationType};
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::Job;
use crate::telemetry::labels::JobStatus;

/// The columns of a [`Job`], in the order [`job`] reads them.
pub(super) const JOB_COLUMNS: &str = "seq, id, owner, status, model, created_at, started_at, \
     completed_at, attempts, processing_ms, result, error_code, error_message, ticket";

/// The claim's `SET` and `RETURNING`: the lease, an attempt, the start; the job and its request.
pub(super) const CLAIM_SET: &str = "status = 'in_progress', lease_owner = $1, \
     lease_expires_at = $3, started_at = $2, attempts = attempts + 1";

/// `{}`: the store's next ticket.
pub(super) const INSERT: &str = "INSERT INTO jobs (id, owner, status, model, request, headers, \
     created_at, ticket) VALUES ($1, $2, 'queued', $3, $4, $5, $6, {})";
pub(super) const QUEUED: &str = "SELECT COUNT(*) FROM jobs WHERE status = 'queued'";
/// A job's place: the queued jobs at or before it, counted over the partial index `jobs_queued`.
pub(super) const POSITION: &str =
    "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND ticket <= $1";
/// The next job to claim (the store adds its row locking).
pub(super) const NEXT_QUEUED: &str =
    "SELECT seq FROM jobs WHERE status = 'queued' ORDER BY ticket LIMIT 1";
pub(super) const SEQ_OF: &str = "SELECT seq FROM jobs WHERE id = $1 AND owner = $2";
pub(super) const CANCEL: &str = "UPDATE jobs SET status = 'cancelled', completed_at = $3, \
     lease_owner = NULL, lease_expires_at = NULL, \
     processing_ms = CASE WHEN status = 'in_progress' THEN $3 - started_at ELSE NULL END \
     WHERE id = $1 AND owner = $2 AND status IN ('queued', 'in_progress')";
pub(super) const COUNTS: &str = "SELECT status, COUNT(*) FROM jobs GROUP BY status";
pub(super) const OLDEST_QUEUED: &str = "SELECT MIN(created_at) FROM jobs WHERE status = 'queued'";
pub(super) const RENEW: &str = "UPDATE jobs SET lease_expires_at = $3 \
     WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'";
pub(super) const FINISH: &str = "UPDATE jobs SET status = $3, completed_at = $4, \
     processing_ms = $4 - started_at, result = $5, error_code = $6, error_message = $7, \
     lease_owner = NULL, lease_expires_at = NULL \
     WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'";
/// `{}`: the store's next ticket (back of the queue).
pub(super) const RELEASE: &str = "UPDATE jobs SET status = 'queued', lease_owner = NULL, \
     lease_expires_at = NULL, attempts = attempts - 1, ticket = {} \
     WHERE id = $1 AND lease_owner = $2 AND status = 'in_progress'";
/// Out of attempts: the lease expired on the last one it had.
pub(super) const FAIL_EXPIRED: &str = "UPDATE jobs SET status = 'failed', completed_at = $1, \
     processing_ms = $1 - started_at, lease_owner = NULL, lease_expires_at = NULL, \
     error_code = 'lease_expired', error_message = $3 \
     WHERE status = 'in_progress' AND lease_expires_at < $1 AND attempts >= $2";
/// `{}`: the store's next ticket (back of the queue). One row at a time: each gets its own.
pub(super) const REQUEUE_EXPIRED: &str = "UPDATE jobs SET status = 'queued', lease_owner = NULL, \
     lease_expires_at = NULL, ticket = {} WHERE seq = (SELECT seq FROM jobs \
     WHERE status = 'in_progress' AND lease_expires_at < $1 ORDER BY ticket LIMIT 1) \
     AND status = 'in_progress' AND lease_expires_at < $1";
pub(super) const EXPIRE_QUEUED: &str = "UPDATE jobs SET status = 'expired', completed_at = $1, \
     error_code = 'job_expired', error_message = $3 \
     WHERE status = 'queued' AND created_at < $2";
pub(super) const DELETE_FINISHED: &str =
    "DELETE FROM jobs WHERE completed_at IS NOT NULL AND completed_at < $1";

/// The `error.message` of a job whose lease expired on its last attempt.
pub(super) fn lease_message(max_attempts: u32) -> String {
    format!(
        "the job's lease expired {max_attempts} times (--job-max-attempts): the worker running \
         it stopped renewing it (a crash, a stall, or a lost database connection)"
    )
}

pub(super) const EXPIRED_MESSAGE: &str =
    "the job waited in the queue longer than --job-ttl-secs and was not run";

/// Reads a [`Job`] from a row of [`JOB_COLUMNS`], whichever database it came from.
pub(super) fn job<R: Row>(row: &R) -> Result<Job, sqlx::Error>
where
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let status: String = row.try_get(3)?;
    let status = JobStatus::parse(&status).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "status".into(),
        source: format!("unknown job status {status:?}").into(),
    })?;
    Ok(Job {
        seq: row.try_get(0)?,
        id: row.try_get(1)?,
        owner: row.try_get(2)?,
        status,
        model: row.try_get(4)?,
        created_at: row.try_get(5)?,
        started_at: row.try_get(6)?,
        completed_at: row.try_get(7)?,
        attempts: row.try_get(8)?,
        processing_ms: row.try_get(9)?,
        result: row.try_get(10)?,
        error_code: row.try_get(11)?,
        error_message: row.try_get(12)?,
        ticket: row.try_get(13)?,
    })
}

/// A store's migrations, compiled into the binary: a deployed gateway carries its schema, and
/// no `migrations/` directory has to be shipped beside it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Embedded(pub &'static [(i64, &'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The [`super::JobStore`] methods whose SQL both databases share. Expanded inside each store's
/// `impl JobStore`, whose `write` and `read` fields are its concrete pools (the same pool for
/// Postgres; SQLite's one writer and its readers).
macro_rules! shared_methods {
    () => {
        fn submit<'a>(
            &'a self,
            job: &'a NewJob,
            max_queued: u64,
        ) -> BoxFuture<'a, Result<Submitted, StoreError>> {
            Box::pin(async move {
                let mut tx = self.write.begin().await?;
                if let Some(lock) = Self::SUBMIT_LOCK {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                let queued: i64 = sqlx::query_scalar(sql::QUEUED).fetch_one(&mut *tx).await?;
                let queued = u64::try_from(queued).unwrap_or(0);
                if queued >= max_queued {
                    return Ok(Submitted::Full { queued });
                }
                sqlx::query(&sql::INSERT.replace("{}", Self::NEXT_TICKET))
                    .bind(&job.id)
                    .bind(&job.owner)
                    .bind(&job.model)
                    .bind(&job.request)
                    .bind(&job.headers)
                    .bind(job.created_at)
                    .execute(&mut *tx)
                    .await?;
                // The 202 waits for this: with SQLite's synchronous=FULL the WAL is on disk,
                // with Postgres the commit record is (synchronous_commit defaults to on).
                tx.commit().await?;
                Ok(Submitted::Accepted {
                    position: queued + 1,
                })
            })
        }

        fn get<'a>(
            &'a self,
            id: &'a str,
            owner: &'a str,
        ) -> BoxFuture<'a, Result<Option<Found>, StoreError>> {
            Box::pin(async move {
                let query = format!(
                    "SELECT {} FROM jobs WHERE id = $1 AND owner = $2",
                    sql::JOB_COLUMNS
                );
                let Some(row) = sqlx::query(&query)
                    .bind(id)
                    .bind(owner)
                    .fetch_optional(&self.read)
                    .await?
                else {
                    return Ok(None);
                };
                let job = sql::job(&row)?;
                let position = if job.status == JobStatus::Queued {
                    let ahead: i64 = sqlx::query_scalar(sql::POSITION)
                        .bind(job.ticket)
                        .fetch_one(&self.read)
                        .await?;
                    u64::try_from(ahead).ok()
                } else {
                    None
                };
                Ok(Some((job, position)))
            })
        }

        fn list<'a>(
            &'a self,
            owner: &'a str,
            status: Option<JobStatus>,
            after: Option<&'a str>,
            limit: u32,
        ) -> BoxFuture<'a, Result<Option<Vec<Job>>, StoreError>> {
            Box::pin(async move {
                let before = match after {
                    None => i64::MAX,
                    Some(after) => {
                        let seq: Option<i64> = sqlx::query_scalar(sql::SEQ_OF)
                            .bind(after)
                            .bind(owner)
                            .fetch_optional(&self.read)
                            .await?;
                        match seq {
                            Some(seq) => seq,
                            None => return Ok(None),
                        }
                    }
                };
                let query = format!(
                    "SELECT {} FROM jobs WHERE owner = $1 AND ($2 = '' OR status = $2) \
                     AND seq < $3 ORDER BY seq DESC LIMIT $4",
                    sql::JOB_COLUMNS
                );
                let rows = sqlx::query(&query)
                    .bind(owner)
                    .bind(status.map_or("", JobStatus::as_str))
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&self.read)
                    .await?;
                let jobs = rows.iter().map(sql::job).collect::<Result<Vec<_>, _>>()?;
                Ok(Some(jobs))
            })
        }

        fn cancel<'a>(
            &'a self,
            id: &'a str,
            owner: &'a str,
            now: i64,
        ) -> BoxFuture<'a, Result<Option<Cancelled>, StoreError>> {
            Box::pin(async move {
                let changed = sqlx::query(sql::CANCEL)
                    .bind(id)
                    .bind(owner)
                    .bind(now)
                    .execute(&self.write)
                    .await?
                    .rows_affected();
                let query = format!(
                    "SELECT {} FROM jobs WHERE id = $1 AND owner = $2",
                    sql::JOB_COLUMNS
                );
                let row = sqlx::query(&query)
                    .bind(id)
                    .bind(owner)
                    .fetch_optional(&self.write)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                let job = sql::job(&row)?;
                Ok(Some(if changed > 0 {
                    Cancelled::Now(job)
                } else {
                    Cancelled::AlreadyFinal(job)
                }))
            })
        }

        fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>> {
            Box::pin(async move {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as(sql::COUNTS).fetch_all(&self.read).await?;
                let mut counts = Counts::default();
                for (status, count) in rows {
                    if let Some(status) = JobStatus::parse(&status) {
                        counts.by_status[status as usize] = u64::try_from(count).unwrap_or(0);
                    }
                }
                counts.oldest_queued_at = sqlx::query_scalar::<_, Option<i64>>(sql::OLDEST_QUEUED)
                    .fetch_one(&self.read)
                    .await?;
                Ok(counts)
            })
        }

        fn claim<'a>(
            &'a self,
            token: &'a str,
            now: i64,
            lease_until: i64,
        ) -> BoxFuture<'a, Result<Option<Claimed>, StoreError>> {
            Box::pin(async move {
                let query = format!(
                    "UPDATE jobs SET {} WHERE seq = ({}) AND status = 'queued' \
                     RETURNING {}, request, headers",
                    sql::CLAIM_SET,
                    Self::claimable(),
                    sql::JOB_COLUMNS
                );
                let row = sqlx::query(&query)
                    .bind(token)
                    .bind(now)
                    .bind(lease_until)
                    .fetch_optional(&self.write)
                    .await?;
                let Some(row) = row else { return Ok(None) };
                Ok(Some(Claimed {
                    job: sql::job(&row)?,
                    request: row.try_get(14)?,
                    headers: row.try_get(15)?,
                    token: token.to_owned(),
                }))
            })
        }

        fn renew<'a>(
            &'a self,
            id: &'a str,
            token: &'a str,
            lease_until: i64,
        ) -> BoxFuture<'a, Result<bool, StoreError>> {
            Box::pin(async move {
                let result = sqlx::query(sql::RENEW)
                    .bind(id)
                    .bind(token)
                    .bind(lease_until)
                    .execute(&self.write)
                    .await?;
                Ok(result.rows_affected() == 1)
            })
        }

        fn finish<'a>(
            &'a self,
            id: &'a str,
            token: &'a str,
            finish: &'a Finish,
            now: i64,
        ) -> BoxFuture<'a, Result<bool, StoreError>> {
            Box::pin(async move {
                let (status, result, code, message) = match finish {
                    Finish::Completed { result } => {
                        (JobStatus::Completed, Some(result), None, None)
                    }
                    Finish::Failed { code, message } => {
                        (JobStatus::Failed, None, Some(code), Some(message))
                    }
                };
                let done = sqlx::query(sql::FINISH)
                    .bind(id)
                    .bind(token)
                    .bind(status.as_str())
                    .bind(now)
                    .bind(result)
                    .bind(code)
                    .bind(message)
                    .execute(&self.write)
                    .await?;
                Ok(done.rows_affected() == 1)
            })
        }

        fn release<'a>(
            &'a self,
            id: &'a str,
            token: &'a str,
        ) -> BoxFuture<'a, Result<bool, StoreError>> {
            Box::pin(async move {
                let result = sqlx::query(&sql::RELEASE.replace("{}", Self::NEXT_TICKET))
                    .bind(id)
                    .bind(token)
                    .execute(&self.write)
                    .await?;
                Ok(result.rows_affected() == 1)
            })
        }

        fn sweep(&self, at: SweepAt) -> BoxFuture<'_, Result<Swept, StoreError>> {
            Box::pin(async move {
                let mut tx = self.write.begin().await?;
                let failed = sqlx::query(sql::FAIL_EXPIRED)
                    .bind(at.now)
                    .bind(i64::from(at.max_attempts))
                    .bind(sql::lease_message(at.max_attempts))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let requeue = sql::REQUEUE_EXPIRED.replace("{}", Self::NEXT_TICKET);
                let mut requeued = 0;
                while sqlx::query(&requeue)
                    .bind(at.now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0
                {
                    requeued += 1;
                }
                let expired = match at.expire_before {
                    Some(before) => sqlx::query(sql::EXPIRE_QUEUED)
                        .bind(at.now)
                        .bind(before)
                        .bind(sql::EXPIRED_MESSAGE)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected(),
                    None => 0,
                };
                let deleted = sqlx::query(sql::DELETE_FINISHED)
                    .bind(at.delete_before)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(Swept {
                    requeued,
                    failed,
                    expired,
                    deleted,
                })
            })
        }
    };
}

pub(super) use shared_methods;
