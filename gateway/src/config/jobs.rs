//! Settings of the job queue (`/v1/jobs`): where jobs are kept, how many run at once, how many
//! may wait, how long a worker's lease lasts and how long results are kept.
//!
//! Settings types only (the queue itself is [`crate::jobs`]). The flags are a group of their own,
//! flattened into [`super::Config`], so each has its `GATEWAY_*` variable and its key in the
//! `--config` file like every other flag.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;
use clap::builder::TypedValueParser as _;

/// The job queue's flags.
#[derive(Debug, Clone, Args)]
pub struct JobsConfig {
    /// Where jobs are kept: `sqlite://PATH` (one instance; the file is created on the first
    /// job), `postgres://USER@HOST:PORT/DB` (a fleet sharing one queue), or `off` (the `/v1/jobs`
    /// routes answer 404).
    #[arg(
        long,
        env = "GATEWAY_JOBS_STORE",
        value_name = "URL",
        default_value = "sqlite://gateway-jobs.db"
    )]
    pub jobs_store: JobsStore,

    /// Jobs this instance runs at once, each through the same provider path as a chat request.
    /// 0: this instance only accepts jobs, others run them.
    #[arg(long, env = "GATEWAY_JOB_WORKERS", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(0..=1024).map(usize::from))]
    pub job_workers: usize,

    /// Jobs that may wait in the queue (all instances together); past it, `POST /v1/jobs` gets
    /// 503 `job_queue_full` with `Retry-After`.
    #[arg(long, env = "GATEWAY_MAX_QUEUED_JOBS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_queued_jobs: u64,

    /// A worker holds its job under a lease it renews every third of this (seconds); a job whose
    /// lease ran out (its worker or process died, or stalled) goes back to the queue.
    #[arg(long, env = "GATEWAY_JOB_LEASE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub job_lease_secs: u64,

    /// Times a job may be started; a job whose lease expires this many times is `failed`.
    #[arg(long, env = "GATEWAY_JOB_MAX_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub job_max_attempts: u32,

    /// Finished jobs (completed, failed, cancelled, expired) are deleted this long after they
    /// finished (seconds).
    #[arg(long, env = "GATEWAY_JOB_RETENTION_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..=(400 * 86_400)))]
    pub job_retention_secs: u64,

    /// A job still queued this long after it was submitted (seconds) is `expired` instead of
    /// run. Default: never.
    #[arg(long, env = "GATEWAY_JOB_TTL_SECS",
          value_parser = clap::value_parser!(u64).range(1..=(400 * 86_400)))]
    pub job_ttl_secs: Option<u64>,
}

impl JobsConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.job_lease_secs)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.job_retention_secs)
    }

    pub fn ttl(&self) -> Option<Duration> {
        self.job_ttl_secs.map(Duration::from_secs)
    }

    /// The limits block's line (see [`super::Config::limits_block`]).
    pub fn describe(&self) -> String {
        if self.jobs_store == JobsStore::Off {
            return "off (--jobs-store off): /v1/jobs answers 404".to_owned();
        }
        format!(
            "{}; {} workers, {} queued at most, then 503; lease {} s, {} attempts; results kept \
             {} s; {}",
            self.jobs_store,
            self.job_workers,
            self.max_queued_jobs,
            self.job_lease_secs,
            self.job_max_attempts,
            self.job_retention_secs,
            self.job_ttl_secs.map_or_else(
                || "no ttl".to_owned(),
                |s| format!("queued ones expire after {s} s")
            )
        )
    }
}

/// `--jobs-store`: a SQLite file, a Postgres database, or nothing.
#[derive(Clone, PartialEq, Eq)]
pub enum JobsStore {
    /// `/v1/jobs` answers 404 naming the flag.
    Off,
    /// One instance's queue in a file (`sqlite://PATH`, relative to the working directory).
    Sqlite(PathBuf),
    /// A queue shared by a fleet; the URL as given (it may hold a password: never printed).
    Postgres(String),
}

impl FromStr for JobsStore {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        if let Some(path) = s.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err("sqlite:// needs a file path, e.g. sqlite://gateway-jobs.db".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        Err(format!(
            "expected sqlite://PATH, postgres://USER@HOST:PORT/DB or `off`; got {s:?}"
        ))
    }
}

impl fmt::Display for JobsStore {
    /// Without a Postgres password: the limits block and the logs show this.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl fmt::Debug for JobsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobsStore({self})")
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!("off".parse(), Ok(JobsStore::Off));
        assert_eq!(
            "sqlite://jobs.db".parse(),
            Ok(JobsStore::Sqlite("jobs.db".into()))
        );
        assert!("sqlite://".parse::<JobsStore>().is_err());
        let pg: JobsStore = "postgres://gw:hunter2@127.0.0.1:5432/jobs"
            .parse()
            .expect("postgres");
        assert_eq!(pg.to_string(), "postgres://gw:***@127.0.0.1:5432/jobs");
        assert!(!format!("{pg:?}").contains("hunter2"));
        let error = "mysql://x".parse::<JobsStore>().expect_err("mysql");
        assert!(error.contains("`off`"), "{error}");
    }
}
