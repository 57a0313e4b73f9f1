//! `diag jobs`'s flags, with `DIAG_JOBS_*` environment overrides (and `DIAG_API_KEY`, with
//! `-H`, from [`super::access`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::access::Access;
use super::load::{parse_concurrency, parse_count};
use super::{parse_duration, parse_gateway};

#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Base URL of the gateway; jobs go to `{base}/v1/jobs`.
    #[arg(long, env = "DIAG_JOBS_BASE_URL", default_value = "http://127.0.0.1:8000",
          value_parser = parse_gateway)]
    pub base_url: String,

    /// Jobs to submit.
    #[arg(short = 'n', long = "jobs", env = "DIAG_JOBS_COUNT", default_value = "100",
          value_parser = parse_count)]
    pub jobs: u64,

    /// Submits in flight at once (each waits for its job's durable commit).
    #[arg(short = 'c', long = "concurrency", env = "DIAG_JOBS_CONCURRENCY", default_value = "8",
          value_parser = parse_concurrency)]
    pub concurrency: u32,

    /// How often the unfinished jobs are polled: the resolution of the end-to-end times.
    #[arg(long, env = "DIAG_JOBS_POLL_INTERVAL", default_value = "100ms",
          value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// The oldest unfinished jobs polled each round: the queue runs in order, so a later job
    /// rarely finishes before these.
    #[arg(long, env = "DIAG_JOBS_POLL_WINDOW", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub poll_window: u32,

    /// Give up on jobs not finished this long after the first submit; they count as `lost`.
    #[arg(long, env = "DIAG_JOBS_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// The `model` of each job.
    #[arg(long, env = "DIAG_JOBS_MODEL", default_value = "mock-1")]
    pub model: String,

    /// Submit only: report the accepted rate and leave the jobs to run (or wait) without polling.
    #[arg(long)]
    pub no_wait: bool,

    /// Write the report as JSON to this file.
    #[arg(long, env = "DIAG_JSON", value_name = "PATH")]
    pub json: Option<PathBuf>,

    #[command(flatten)]
    pub access: Access,
}
