//! What `/v1/jobs` answers: the job object, the list and the stats, in OpenAI's shapes.
//!
//! A completed job's `result` is the upstream's `chat.completion` body byte for byte: it is
//! stored as the bytes that came, and embedded as a [`RawValue`], never parsed into a map and
//! printed again (which would reorder its keys and reformat its numbers).

use serde::Serialize;
use serde_json::value::RawValue;

use super::store::{Counts, Job};
use crate::error::ApiError;
use crate::telemetry::labels::JobStatus;

/// One job, as `GET /v1/jobs/{id}` shows it.
#[derive(Debug, Serialize)]
pub struct JobObject {
    pub id: String,
    pub object: &'static str,
    pub status: &'static str,
    pub model: String,
    /// Unix seconds, like OpenAI's `created_at`.
    pub created_at: i64,
    /// 1 = next; only while queued.
    pub queue_position: Option<u64>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub attempts: i64,
    pub processing_ms: Option<i64>,
    /// The upstream's body, when completed (not in lists: fetch the job for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    pub error: Option<JobError>,
}

/// Why a job failed or expired.
#[derive(Debug, Serialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

impl JobObject {
    /// `job` as an answer; `with_result`: embed a completed job's result.
    pub fn new(job: Job, position: Option<u64>, with_result: bool) -> Result<Self, ApiError> {
        let result = match job.result {
            Some(bytes) if with_result && job.status == JobStatus::Completed => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| ApiError::internal("a stored job result is not UTF-8"))?;
                Some(RawValue::from_string(text).map_err(|e| {
                    ApiError::internal(format!("a stored job result is not JSON: {e}"))
                })?)
            }
            _ => None,
        };
        let error = match (job.error_code, job.error_message) {
            (Some(code), Some(message)) => Some(JobError { code, message }),
            _ => None,
        };
        Ok(Self {
            id: job.id,
            object: "job",
            status: job.status.as_str(),
            model: job.model,
            created_at: secs(job.created_at),
            queue_position: position.filter(|_| job.status == JobStatus::Queued),
            started_at: job.started_at.map(secs),
            completed_at: job.completed_at.map(secs),
            attempts: job.attempts,
            processing_ms: job.processing_ms,
            result,
            error,
        })
    }
}

/// `GET /v1/jobs`: OpenAI's list shape.
#[derive(Debug, Serialize)]
pub struct JobList {
    pub object: &'static str,
    pub data: Vec<JobObject>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

impl JobList {
    /// `jobs` holds up to `limit + 1` rows: the extra one only says there are more.
    pub fn new(mut jobs: Vec<Job>, limit: usize) -> Result<Self, ApiError> {
        let has_more = jobs.len() > limit;
        jobs.truncate(limit);
        let data = jobs
            .into_iter()
            .map(|job| JobObject::new(job, None, false))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            object: "list",
            first_id: data.first().map(|job| job.id.clone()),
            last_id: data.last().map(|job| job.id.clone()),
            has_more,
            data,
        })
    }
}

/// `GET /v1/jobs/stats`: the whole queue (every key's jobs, every instance's workers count
/// in the store's numbers), and this instance's part.
#[derive(Debug, Serialize)]
pub struct JobStats {
    pub object: &'static str,
    pub queued: u64,
    pub in_progress: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub expired: u64,
    /// How long the oldest queued job has waited.
    pub oldest_queued_age_ms: Option<i64>,
    /// This instance's `--job-workers`.
    pub workers: usize,
    /// Jobs this instance's workers are running now.
    pub running: usize,
    /// `--max-queued-jobs`.
    pub capacity: u64,
    /// `sqlite` or `postgres`.
    pub store: &'static str,
}

impl JobStats {
    pub fn new(
        counts: &Counts,
        now: i64,
        workers: usize,
        running: usize,
        capacity: u64,
        store: &'static str,
    ) -> Self {
        Self {
            object: "job.stats",
            queued: counts.of(JobStatus::Queued),
            in_progress: counts.of(JobStatus::InProgress),
            completed: counts.of(JobStatus::Completed),
            failed: counts.of(JobStatus::Failed),
            cancelled: counts.of(JobStatus::Cancelled),
            expired: counts.of(JobStatus::Expired),
            oldest_queued_age_ms: counts.oldest_queued_at.map(|at| (now - at).max(0)),
            workers,
            running,
            capacity,
            store,
        }
    }
}

fn secs(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: JobStatus, result: Option<&str>) -> Job {
        Job {
            seq: 7,
            id: "job_x".into(),
            owner: String::new(),
            status,
            model: "m".into(),
            created_at: 1_700_000_000_123,
            started_at: None,
            completed_at: None,
            attempts: 0,
            processing_ms: None,
            result: result.map(|r| r.as_bytes().to_vec()),
            error_code: None,
            error_message: None,
            ticket: 1,
        }
    }

    #[test]
    fn the_result_is_embedded_byte_for_byte() {
        let body = r#"{"z":1,"a":1.50,"id":"chatcmpl-1"}"#;
        let object = JobObject::new(job(JobStatus::Completed, Some(body)), None, true)
            .expect("a JSON result");
        let text = serde_json::to_string(&object).expect("serialise");
        assert!(text.contains(&format!("\"result\":{body}")), "{text}");
        assert!(text.contains("\"created_at\":1700000000,"), "{text}");
        let listed =
            JobObject::new(job(JobStatus::Completed, Some(body)), None, false).expect("listed");
        let listed = serde_json::to_string(&listed).expect("serialise");
        assert!(!listed.contains("result"), "{listed}");
    }

    #[test]
    fn position_only_while_queued() {
        let queued = JobObject::new(job(JobStatus::Queued, None), Some(3), true).expect("job");
        assert_eq!(queued.queue_position, Some(3));
        let running = JobObject::new(job(JobStatus::InProgress, None), Some(3), true).expect("job");
        assert_eq!(running.queue_position, None);
    }
}
