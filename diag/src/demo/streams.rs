//! The demo's load: N concurrent streams through `GET /chat/stream`, and what each one saw.
//! (Not `diag load`, the HTTP load generator: that one is [`crate::load`].)
//!
//! An exhausted pool does not make streams fail; it makes them *wait*. In broken mode stream
//! N+1 gets its response headers only when a pool thread frees up, i.e. when an earlier stream
//! has ended. So the number that tells the story is not errors or throughput but how many
//! streams were **flowing** at the same moment: a stream is flowing while its chunks arrive at
//! the pace the query asked for (the latest chunk came within two chunk intervals) and it has not
//! ended. With a starved pool that number stops at the pool size, whatever N is.
//!
//! Streams that end early are not reopened: the question is "can N streams run at once", and a
//! replacement stream would blur which request waited for which.
//!
//! A stream that *fails* is another story than one that waits, and the two ways it can fail are
//! kept apart for the verdict: **refused** (a non-2xx status: the target is there and said no,
//! e.g. a 401 for a missing key or a 404 for a wrong path) and **broken** (no answer, or a body
//! cut short: the target went away, e.g. `unexpected EOF during chunk size line`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::histogram::round_ms;
use crate::{lock, root_cause};

/// What one stream has seen so far.
#[derive(Debug, Default, Clone)]
struct StreamRecord {
    /// From sending the request to the first non-empty body chunk: includes any wait for a
    /// pool thread, since the gateway sends headers only once its upstream call is running.
    first_byte: Option<Duration>,
    last_chunk: Option<Instant>,
    /// The body ended normally (the upstream sent all its chunks).
    completed: bool,
    /// Why the stream failed: no response, a non-2xx status, or a body cut short.
    error: Option<StreamError>,
    /// The gateway's `X-Stream-Method` (`async`, `blocking`, `inline`), when it sent one.
    method: Option<String>,
}

/// How a stream failed.
#[derive(Debug, Clone)]
enum StreamError {
    /// A non-2xx status: the target refused the stream. `body` is the start of its explanation.
    Refused { status: u16, body: String },
    /// No response, or the body broke off: a transport error, by its root cause.
    Broken(String),
}

impl fmt::Display for StreamError {
    /// The report's failure line: `HTTP 401: {"error":…}`, or the transport error itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Refused { status, body } => write!(f, "HTTP {status}: {body}"),
            StreamError::Broken(reason) => f.write_str(reason),
        }
    }
}

impl StreamRecord {
    fn ended(&self) -> bool {
        self.completed || self.error.is_some()
    }
}

/// How the streams fared. Milliseconds, 3 decimals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamStats {
    /// `--streams`: opened at once at the start.
    pub requested: u32,
    /// The most streams flowing in any one sample (one sample per 100 ms).
    pub max_concurrent_flowing: usize,
    /// Streams whose body ended normally within the run.
    pub completed: usize,
    /// Streams that ended in an error.
    pub failed: usize,
    /// Streams still open when the run ended, then dropped by diag.
    pub cancelled: usize,
    pub first_byte_ms: FirstByte,
    /// Streams that received no byte at all before the run ended (in broken mode: still
    /// waiting for a pool thread); they are not in `first_byte_ms`.
    pub no_first_byte: usize,
    /// Failure reasons and how many streams hit each.
    pub errors: BTreeMap<String, usize>,
    /// The failed streams that were refused, by HTTP status (`{"401": 2}`): the target said no.
    #[serde(default)]
    pub refused: BTreeMap<u16, usize>,
    /// The failed streams that got no answer or broke off, by transport error
    /// (`{"unexpected EOF during chunk size line": 8}`): the target went away.
    #[serde(default)]
    pub broken: BTreeMap<String, usize>,
    /// The gateway's `X-Stream-Method` header, counted per value over the streams that got
    /// headers: the split of `--async-rollout-percent` (e.g. `{"async": 4, "blocking": 4}`).
    pub methods: BTreeMap<String, usize>,
}

/// Time to first byte over the streams that received one; null when none did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirstByte {
    pub p50: Option<f64>,
    pub max: Option<f64>,
}

/// The running streams. Lives on diag's load runtime.
#[derive(Debug)]
pub struct Streams {
    records: Arc<Mutex<Vec<StreamRecord>>>,
    tasks: JoinSet<()>,
    /// The chunk interval the query asked for: the pace that counts as flowing.
    pace: Duration,
    max_flowing: usize,
}

impl Streams {
    /// Opens `count` streams to `url` at once. Must be called inside a tokio runtime.
    pub fn start(client: &reqwest::Client, url: &str, count: u32, pace: Duration) -> Self {
        let records = Arc::new(Mutex::new(vec![StreamRecord::default(); count as usize]));
        let mut tasks = JoinSet::new();
        for index in 0..count as usize {
            tasks.spawn(stream(
                client.clone(),
                url.to_owned(),
                index,
                Arc::clone(&records),
            ));
        }
        Self {
            records,
            tasks,
            pace,
            max_flowing: 0,
        }
    }

    pub fn requested(&self) -> usize {
        lock(&self.records).len()
    }

    /// Counts the streams flowing now and remembers the highest count.
    pub fn sample_flowing(&mut self) -> usize {
        let now = Instant::now();
        let window = self.pace * 2;
        let flowing = lock(&self.records)
            .iter()
            .filter(|record| {
                !record.ended()
                    && record
                        .last_chunk
                        .is_some_and(|at| now.duration_since(at) <= window)
            })
            .count();
        self.max_flowing = self.max_flowing.max(flowing);
        flowing
    }

    /// Drops the streams still open (closing their connections) and sums up.
    pub async fn finish(mut self) -> StreamStats {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let records = lock(&self.records);
        let mut first_bytes: Vec<f64> = records
            .iter()
            .filter_map(|r| r.first_byte.map(|d| d.as_secs_f64() * 1e3))
            .collect();
        first_bytes.sort_by(f64::total_cmp);
        let (mut errors, mut refused, mut broken) =
            (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for error in records.iter().filter_map(|r| r.error.as_ref()) {
            *errors.entry(error.to_string()).or_insert(0) += 1;
            match error {
                StreamError::Refused { status, .. } => *refused.entry(*status).or_insert(0) += 1,
                StreamError::Broken(reason) => *broken.entry(reason.clone()).or_insert(0) += 1,
            }
        }
        let mut methods = BTreeMap::new();
        for method in records.iter().filter_map(|r| r.method.as_ref()) {
            *methods.entry(method.clone()).or_insert(0) += 1;
        }
        let completed = records.iter().filter(|r| r.completed).count();
        let failed = records.iter().filter(|r| r.error.is_some()).count();
        StreamStats {
            requested: u32::try_from(records.len()).unwrap_or(u32::MAX),
            max_concurrent_flowing: self.max_flowing,
            completed,
            failed,
            cancelled: records.len() - completed - failed,
            first_byte_ms: FirstByte {
                p50: percentile(&first_bytes, 0.50).map(round_ms),
                max: first_bytes.last().copied().map(round_ms),
            },
            no_first_byte: records.len() - first_bytes.len(),
            errors,
            refused,
            broken,
            methods,
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], quantile: f64) -> Option<f64> {
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}

/// One stream, start to end, writing what it sees into its record.
async fn stream(
    client: reqwest::Client,
    url: String,
    index: usize,
    records: Arc<Mutex<Vec<StreamRecord>>>,
) {
    let update = |f: &dyn Fn(&mut StreamRecord)| {
        if let Some(record) = lock(&records).get_mut(index) {
            f(record);
        }
    };
    let fail = |error: StreamError| update(&|r| r.error = Some(error.clone()));
    let sent = Instant::now();
    let response = match client.get(&url).send().await {
        Ok(response) => response,
        Err(error) => return fail(StreamError::Broken(root_cause(&error))),
    };
    if let Some(method) = response
        .headers()
        .get("x-stream-method")
        .and_then(|v| v.to_str().ok())
    {
        let method = method.to_owned();
        update(&|r| r.method = Some(method.clone()));
    }
    let status = response.status();
    if !status.is_success() {
        // The gateway explains a refusal (a bad query, say) in the body: keep the start of it.
        let body = response.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(160).collect();
        let status = status.as_u16();
        return fail(StreamError::Refused { status, body });
    }
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) if chunk.is_empty() => {}
            Ok(_) => {
                let now = Instant::now();
                update(&|r| {
                    r.first_byte.get_or_insert(now.duration_since(sent));
                    r.last_chunk = Some(now);
                });
            }
            Err(error) => return fail(StreamError::Broken(root_cause(&error))),
        }
    }
    update(&|r| r.completed = true);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&values, 0.5), Some(2.0));
        assert_eq!(percentile(&values, 1.0), Some(4.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.5), Some(7.0));
    }
}
