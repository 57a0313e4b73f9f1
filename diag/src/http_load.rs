//! `diag load`: an HTTP load generator in the manner of hey and oha, so that one tool measures
//! both the gateway's health under load and the load itself.
//!
//! # How a run works
//!
//! `-c` workers run on a multi-thread tokio runtime and share one `reqwest::Client`, whose
//! connection pool keeps up to `-c` idle connections per host (none with
//! `--disable-keepalive`). HTTP/1.1 only, as hey does by default: `-c` means `-c` connections,
//! not `-c` streams multiplexed on one HTTP/2 connection. No proxy, no retries: each request
//! measured is one request sent to the URL given.
//!
//! Each worker takes a *ticket* (a shared counter), sends one request, reads the whole body,
//! records the outcome, and takes the next ticket, until `-n` tickets are gone or the `-z`
//! deadline passed. Requests still in flight at the `-z` deadline are dropped and counted as
//! `aborted`, apart from the results.
//!
//! # Latency, and coordinated omission
//!
//! A request's latency runs from its start to the last byte of the response body. Without `-q`
//! the run is a closed loop, and the start is when the request was sent.
//!
//! With `-q RATE` the run is open loop: ticket `k` has the *intended* start time
//! `start + k / RATE`, fixed in advance. If every worker is busy (the server is slow), ticket
//! `k` is taken late, and **its latency counts from its intended start**: the time it waited
//! for a free worker is time the server made it wait. A closed loop would simply send fewer
//! requests while the server stalls, and its percentiles would forget the stall: the
//! *coordinated omission* that oha's `--latency-correction` corrects.
//!
//! A worker that takes its ticket early (it was idle) sleeps until the intended time and counts
//! from the moment it actually sends: tokio's timer has millisecond resolution and wakes up to
//! a millisecond late, and counting that from the intended time would add ~1 ms of diag's own
//! lateness to every request of a fast server (measured: p50 0.98 ms instead of 0.1 ms).
//!
//! A request that times out (`--timeout`, which covers the response and its body) is counted as
//! an error of kind `timeout` *and* recorded in the latencies at the time it gave up, because
//! leaving it out would make a stalled server look fast. Other errors (`connect`, `body`,
//! `other`) measured nothing and are only counted.
//!
//! # Memory
//!
//! Bounded whatever the run length: latencies go into HDR histograms ([`crate::histogram`]),
//! one per shard of workers (at most 16), merged at the end; status codes and error kinds are
//! small maps with one example message per kind. Nothing is kept per request.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Error;
use crate::cli::{LoadArgs, Until};
use crate::histogram::{self, Latencies, secs};
use crate::progress::Progress;
use crate::{lock, root_cause};

/// Workers are grouped into this many shards at most, each with its own tally behind a mutex:
/// enough that two workers rarely contend, few enough that the histograms stay small.
const MAX_SHARDS: usize = 16;

/// The reachability check gives up after this long (or `--timeout`, if shorter).
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `diag load` to the end: check reachability, load, print, write JSON.
pub fn run(args: &LoadArgs) -> Result<(), Error> {
    // Multi-thread: the workers use every core, as hey's goroutines do.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    let report = runtime.block_on(measure(args))?;
    print!("{report}");
    if let Some(path) = &args.json {
        report.write_json(path)?;
        println!("\nreport written to {}", path.display());
    }
    Ok(())
}

/// Errors by kind: `connect`, `timeout`, `body`, `other`.
fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "connect"
    } else if error.is_timeout() {
        "timeout"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "other"
    }
}

/// One error kind: how many, and the first message seen.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub count: u64,
    pub example: String,
}

/// What one shard of workers saw.
#[derive(Debug)]
struct Tally {
    /// Responses and timeouts; from the intended start under `-q` when a request was late.
    latencies: Latencies,
    /// Responses by status code.
    statuses: BTreeMap<u16, u64>,
    /// Requests without a (complete) response, by kind. At most four keys.
    errors: BTreeMap<&'static str, ErrorCount>,
    /// Response body bytes received.
    bytes: u64,
    /// Requests dropped at the `-z` deadline.
    aborted: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latencies: Latencies::new()?,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            bytes: 0,
            aborted: 0,
        })
    }

    fn error(&mut self, kind: &'static str, example: impl FnOnce() -> String) {
        self.errors
            .entry(kind)
            .and_modify(|e| e.count += 1)
            .or_insert_with(|| ErrorCount {
                count: 1,
                example: example(),
            });
    }

    fn merge(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.latencies.merge(&other.latencies)?;
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += count;
        }
        for (kind, error) in &other.errors {
            self.errors
                .entry(kind)
                .and_modify(|e| e.count += error.count)
                .or_insert_with(|| error.clone());
        }
        self.bytes += other.bytes;
        self.aborted += other.aborted;
        Ok(())
    }
}

/// Everything the workers share.
#[derive(Debug)]
struct Shared {
    client: reqwest::Client,
    method: reqwest::Method,
    url: reqwest::Url,
    body: Option<Bytes>,
    until: Until,
    rate: Option<f64>,
    timeout: Duration,
    /// When the first ticket is due; intended start times count from here.
    start: Instant,
    /// `start + -z`, if given.
    deadline: Option<Instant>,
    /// Next ticket to hand out.
    tickets: AtomicU64,
    /// Requests finished (response or error), for the progress line.
    done: AtomicU64,
    errors: AtomicU64,
    shards: Vec<Mutex<Tally>>,
}

impl Shared {
    /// Takes the next ticket: `None` when the run is over, else the start the latency counts
    /// from (the intended start under `-q`, which may be in the future).
    fn next_start(&self) -> Option<Instant> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        if let Until::Requests(n) = self.until
            && ticket >= n
        {
            return None;
        }
        let start = match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(ticket as f64 / rate),
            None => Instant::now(),
        };
        match self.deadline {
            // Under -q a ticket may be due before the deadline but taken after it (every
            // worker was busy): it is never sent, and counted in `unsent`.
            Some(deadline) if start >= deadline || Instant::now() >= deadline => None,
            _ => Some(start),
        }
    }
}

async fn worker(shared: Arc<Shared>, shard: usize) {
    while let Some(due) = shared.next_start() {
        // Early (this worker was idle): wait, then count from the actual send, because the
        // timer wakes up to a millisecond late and that lateness is diag's. Late (every worker
        // was busy): count from when the request was due. See the module docs.
        let start = if due > Instant::now() {
            tokio::time::sleep_until(due).await;
            Instant::now()
        } else {
            due
        };
        let give_up = Instant::now() + shared.timeout;
        let end = shared
            .deadline
            .map_or(give_up, |deadline| deadline.min(give_up));
        let outcome = tokio::time::timeout_at(end, exchange(&shared)).await;
        let latency = start.elapsed();
        let mut tally = lock(&shared.shards[shard]);
        match outcome {
            Ok(Ok((status, bytes))) => {
                tally.latencies.record(latency);
                *tally.statuses.entry(status).or_insert(0) += 1;
                tally.bytes += bytes;
            }
            Ok(Err(error)) => {
                tally.error(error_kind(&error), || root_cause(&error));
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) if end < give_up => {
                // The -z deadline, not the request's own timeout: not a result.
                tally.aborted += 1;
                continue;
            }
            Err(_) => {
                tally.latencies.record(latency);
                tally.error("timeout", || {
                    format!("no complete response within {:?}", shared.timeout)
                });
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(tally);
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// One request: send, read the whole body. Returns the status and the body's length.
async fn exchange(shared: &Shared) -> Result<(u16, u64), reqwest::Error> {
    let mut request = shared
        .client
        .request(shared.method.clone(), shared.url.clone());
    if let Some(body) = &shared.body {
        request = request.body(body.clone());
    }
    let mut response = request.send().await?;
    let status = response.status().as_u16();
    let mut bytes = 0;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
    }
    Ok((status, bytes))
}

/// Succeeds when something accepts a TCP connection at the URL's host and port: a run against
/// nothing would only count connection errors. Nothing is sent, so no side effect.
pub(crate) async fn check_reachable(url: &reqwest::Url, timeout: Duration) -> Result<(), Error> {
    let unreachable = |reason: String| Error::TargetUnreachable {
        url: url.to_string(),
        reason,
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| unreachable("the URL has no port".into()))?;
    // `[::1]` → `::1`: an IP literal is parsed, not looked up; a name is resolved.
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((host, port));
    let timeout = timeout.min(REACH_TIMEOUT);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(unreachable(error.to_string())),
        Err(_) => Err(unreachable(format!("no connection within {timeout:?}"))),
    }
}

async fn measure(args: &LoadArgs) -> Result<LoadReport, Error> {
    check_reachable(&args.url, args.timeout).await?;

    let concurrency = match args.until() {
        // No point in more workers than requests.
        Until::Requests(n) => u64::from(args.concurrency).min(n) as usize,
        Until::Elapsed(_) => args.concurrency as usize,
    };
    let mut headers = HeaderMap::new();
    for header in &args.headers {
        headers.append(header.name.clone(), header.value.clone());
    }
    if let Some(content_type) = &args.content_type {
        headers.insert(CONTENT_TYPE, content_type.clone());
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("diag/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .pool_max_idle_per_host(if args.disable_keepalive {
            0
        } else {
            concurrency
        })
        .http1_only()
        .tcp_nodelay(true)
        .no_proxy()
        .retry(reqwest::retry::never())
        .build()
        .context("cannot build the HTTP client")?;

    let shards = concurrency.clamp(1, MAX_SHARDS);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        client,
        method: args.method.clone(),
        url: args.url.clone(),
        body: args.body().map(|body| body.0.clone()),
        until: args.until(),
        rate: args.rate,
        timeout: args.timeout,
        start,
        deadline: match args.until() {
            Until::Elapsed(duration) => Some(start + duration),
            Until::Requests(_) => None,
        },
        tickets: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        shards: (0..shards)
            .map(|_| Tally::new().map(Mutex::new))
            .collect::<anyhow::Result<_>>()?,
    });

    println!("{}", announce(args, concurrency));
    let progress = {
        let shared = Arc::clone(&shared);
        Progress::start(!args.no_progress, move |elapsed| {
            let done = shared.done.load(Ordering::Relaxed);
            format!(
                "{:>6.1}s  {done} requests  {:.0} req/s  {} errors",
                elapsed.as_secs_f64(),
                done as f64 / elapsed.as_secs_f64().max(1e-3),
                shared.errors.load(Ordering::Relaxed)
            )
        })
    };
    let mut workers = JoinSet::new();
    for index in 0..concurrency {
        workers.spawn(worker(Arc::clone(&shared), index % shards));
    }
    while workers.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    progress.finish().await;

    let mut total = Tally::new()?;
    for shard in &shared.shards {
        total.merge(&lock(shard))?;
    }
    Ok(LoadReport::new(args, concurrency, elapsed, &total))
}

/// The first line: what is about to happen.
fn announce(args: &LoadArgs, concurrency: usize) -> String {
    let what = match args.until() {
        Until::Requests(n) => format!("{n} requests"),
        Until::Elapsed(duration) => format!("requests for {duration:?}"),
    };
    let pace = match args.rate {
        Some(rate) => {
            format!(
                " at {rate}/s (open loop: a late request's latency counts from when it was due)"
            )
        }
        None => String::new(),
    };
    format!(
        "diag load: {what} of {} {}, {concurrency} at a time{pace}\n",
        args.method, args.url
    )
}

/// `diag load`'s result, as printed and as written by `--json` (schema in the README).
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Always `load`.
    pub kind: &'static str,
    pub url: String,
    pub method: String,
    /// Workers (requests in flight at most).
    pub concurrency: usize,
    /// `-q`, requests per second; `null` for a closed loop.
    pub rate: Option<f64>,
    /// From the first request to the last one finished, seconds.
    pub duration_s: f64,
    pub requests: RequestCounts,
    /// `requests.total / duration_s`.
    pub rps: f64,
    pub latency_ms: LatencyMs,
    /// Responses by HTTP status.
    pub status_codes: BTreeMap<u16, u64>,
    /// Requests without a complete response, by kind.
    pub errors: BTreeMap<String, ErrorCount>,
    pub bytes: ByteCount,
    #[serde(skip)]
    bars: Vec<histogram::Bar>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestCounts {
    /// `ok + errors`.
    pub total: u64,
    /// Requests that got a complete response, whatever its status.
    pub ok: u64,
    /// Requests that did not (see `errors`).
    pub errors: u64,
    /// Requests dropped at the `-z` deadline: not in `total`.
    pub aborted: u64,
    /// With `-q` and `-z`: requests that were due before the deadline but never sent, because
    /// every worker was still busy (the server fell behind the rate). Not in `total`.
    pub unsent: u64,
}

/// Latency in ms, 3 decimals; `null` when nothing was measured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyMs {
    pub fastest: Option<f64>,
    pub slowest: Option<f64>,
    pub average: Option<f64>,
    pub p10: Option<f64>,
    pub p25: Option<f64>,
    pub p50: Option<f64>,
    pub p75: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub p99_9: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ByteCount {
    /// Response body bytes received.
    pub total: u64,
}

/// The percentiles hey prints, with their labels.
const PERCENTILES: [(&str, f64); 8] = [
    ("10%", 0.10),
    ("25%", 0.25),
    ("50%", 0.50),
    ("75%", 0.75),
    ("90%", 0.90),
    ("95%", 0.95),
    ("99%", 0.99),
    ("99.9%", 0.999),
];

impl LoadReport {
    fn new(args: &LoadArgs, concurrency: usize, elapsed: Duration, tally: &Tally) -> Self {
        let l = &tally.latencies;
        let responses: u64 = tally.statuses.values().sum();
        let errors: u64 = tally.errors.values().map(|e| e.count).sum();
        let duration_s = elapsed.as_secs_f64();
        let sent = responses + errors + tally.aborted;
        let due = match (args.rate, args.until()) {
            // Tickets k = 0, 1, … with k / rate < duration.
            (Some(rate), Until::Elapsed(duration)) => {
                (duration.as_secs_f64() * rate - 1e-9).ceil().max(0.0) as u64
            }
            _ => sent,
        };
        Self {
            kind: "load",
            url: args.url.to_string(),
            method: args.method.to_string(),
            concurrency,
            rate: args.rate,
            duration_s: crate::histogram::round_ms(duration_s),
            requests: RequestCounts {
                total: responses + errors,
                ok: responses,
                errors,
                aborted: tally.aborted,
                unsent: due.saturating_sub(sent),
            },
            rps: crate::histogram::round_ms((responses + errors) as f64 / duration_s.max(1e-9)),
            latency_ms: LatencyMs {
                fastest: l.min_ms(),
                slowest: l.max_ms(),
                average: l.mean_ms(),
                p10: l.quantile_ms(0.10),
                p25: l.quantile_ms(0.25),
                p50: l.quantile_ms(0.50),
                p75: l.quantile_ms(0.75),
                p90: l.quantile_ms(0.90),
                p95: l.quantile_ms(0.95),
                p99: l.quantile_ms(0.99),
                p99_9: l.quantile_ms(0.999),
            },
            status_codes: tally.statuses.clone(),
            errors: tally
                .errors
                .iter()
                .map(|(kind, e)| ((*kind).to_owned(), e.clone()))
                .collect(),
            bytes: ByteCount { total: tally.bytes },
            bars: l.bars(10),
        }
    }

    fn percentiles(&self) -> [Option<f64>; 8] {
        let l = &self.latency_ms;
        [l.p10, l.p25, l.p50, l.p75, l.p90, l.p95, l.p99, l.p99_9]
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        crate::write_json(path, self)
    }
}

impl fmt::Display for LoadReport {
    /// hey's layout, so the two can be read side by side; the README explains each line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_ms;
        writeln!(f, "Summary:")?;
        writeln!(f, "  Total:\t{:.4} secs", self.duration_s)?;
        writeln!(f, "  Slowest:\t{}", secs(l.slowest))?;
        writeln!(f, "  Fastest:\t{}", secs(l.fastest))?;
        writeln!(f, "  Average:\t{}", secs(l.average))?;
        writeln!(f, "  Requests/sec:\t{:.4}", self.rps)?;
        writeln!(f)?;
        writeln!(f, "  Total data:\t{} bytes", self.bytes.total)?;
        if let Some(size) = self.bytes.total.checked_div(self.requests.ok) {
            writeln!(f, "  Size/request:\t{size} bytes")?;
        }
        if self.requests.aborted > 0 {
            writeln!(
                f,
                "  Aborted:\t{} requests in flight at the end of -z (not counted)",
                self.requests.aborted
            )?;
        }
        if self.requests.unsent > 0 {
            writeln!(
                f,
                "  Unsent:\t{} requests due under -q were never sent (all {} workers were busy)",
                self.requests.unsent, self.concurrency
            )?;
        }

        if !self.bars.is_empty() {
            writeln!(f, "\nResponse time histogram:")?;
            let mut text = String::new();
            histogram::write_bars(&mut text, &self.bars)?;
            f.write_str(&text)?;

            let from = if self.rate.is_some() {
                " (a late request counts from its intended start)"
            } else {
                ""
            };
            writeln!(f, "\nLatency distribution{from}:")?;
            for ((label, _), value) in PERCENTILES.iter().zip(self.percentiles()) {
                writeln!(f, "  {label} in {}", secs(value))?;
            }
        }

        if !self.status_codes.is_empty() {
            writeln!(f, "\nStatus code distribution:")?;
            for (status, count) in &self.status_codes {
                writeln!(f, "  [{status}]\t{count} responses")?;
            }
        }
        if !self.errors.is_empty() {
            writeln!(f, "\nError distribution:")?;
            for (kind, error) in &self.errors {
                writeln!(f, "  [{}]\t{kind}: {}", error.count, error.example)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_by_kind_keep_one_example_and_merge() {
        let mut a = Tally::new().expect("tally");
        a.error("connect", || "refused".into());
        a.error("connect", || "never used".into());
        let mut b = Tally::new().expect("tally");
        b.error("connect", || "reset".into());
        b.error("timeout", || "slow".into());
        b.statuses.insert(200, 3);
        a.merge(&b).expect("merge");
        assert_eq!(a.errors["connect"].count, 3);
        assert_eq!(a.errors["connect"].example, "refused");
        assert_eq!(a.errors["timeout"].count, 1);
        assert_eq!(a.statuses[&200], 3);
    }
}
