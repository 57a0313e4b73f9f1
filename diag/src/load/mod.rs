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
//!
//! # Layout
//!
//! This file runs the workers; [`tally`] is what they count and [`report`] what is printed and
//! written at the end.

pub mod report;

pub mod tally;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Error;
use crate::cli::{LoadArgs, Until};
use crate::progress::Progress;
use crate::reachable::check_reachable;
use crate::{lock, root_cause};
use report::LoadReport;
use tally::{Tally, error_kind};

/// Workers are grouped into this many shards at most, each with its own tally behind a mutex:
/// enough that two workers rarely contend, few enough that the histograms stay small.
const MAX_SHARDS: usize = 16;

/// Runs `diag load` to the end: check reachability, load, print, write JSON.
pub fn run(args: &LoadArgs) -> Result<(), Error> {
    crate::measure_and_report(measure(args), args.json.as_deref(), "\nreport written to")
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
