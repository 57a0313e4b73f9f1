//! `diag llm`: streaming chat completions at a concurrency or an arrival rate, measured the way
//! an LLM client feels them, and a judgement: did the server *sustain* the load?
//!
//! Each stream is one `POST {base}/v1/chat/completions` with `stream: true` and
//! `stream_options: {include_usage: true}`. The server-sent events are parsed by
//! `eventsource-stream` (events split across TCP chunks, several events in one chunk, CRLF,
//! comments: the WHATWG rules), and each `data:` is read as an OpenAI chunk.
//!
//! # What is measured, per stream
//!
//! - **TTFT**, time to first token: from sending the request to the first event whose
//!   `choices[].delta.content` is non-empty (the role-only first chunk does not count).
//! - **ITL**, inter-token latency: the gap between successive content events. All gaps of all
//!   streams go into one histogram; each stream also keeps its largest gap.
//! - **E2E**: from sending the request to `data: [DONE]`.
//! - **Output tokens**: `usage.completion_tokens` from the usage chunk if the server sent one,
//!   else the number of content events.
//!
//! Everything goes into histograms ([`crate::histogram`]) as it is seen, so memory does not grow
//! with the run, and the TTFT and gaps of a stream cancelled at the end still count.
//!
//! # Arrivals
//!
//! `-c N` is a closed loop: N workers, each starting a stream when its previous one ended, so N
//! streams are open at any time: a test of "can it hold N streams". `-q R` is an open loop:
//! a stream starts every 1/R s on schedule, however many are still open, so a slow server
//! faces a growing pile, as it would from independent users. TTFT always counts from the
//! actual send, which under `-q` is the scheduled time (nothing queues in diag).
//!
//! # Sustained
//!
//! The run *sustained* its load when no stream had a gap between tokens longer than 10 × the
//! pacing (`--pacing-ms`, else the median ITL observed; a pacing under 1 ms counts as 1 ms, so
//! that back-to-back tokens do not make a 10 µs limit) **and** fewer than 0.1% of the streams
//! started failed. A stalled stream is what a user of a starved gateway sees: tokens that stop
//! mid-sentence. The reason line names the numbers either way.
//!
//! # Layout
//!
//! This file sets a run up and prints it; [`schedule`] starts the streams (closed or open loop)
//! and ends the run, [`stream`] is one stream's state and the tally they all add to, [`sse`] is
//! the wire (the request, the events, the failures), and [`report`] the result and its rule.

pub mod report;
pub mod schedule;
pub mod sse;
pub mod stream;

pub use report::{LlmReport, PollStats};

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::header::{CONTENT_TYPE, HeaderValue};

use crate::Error;
use crate::cli::{Arrivals, LlmArgs, StreamsUntil};
use crate::lock;
use crate::probe::{Endpoint, Prober, Target};
use crate::progress::Progress;
use stream::{Shared, Tally};

/// `--health` probes this often.
const HEALTH_EVERY: Duration = Duration::from_millis(250);

/// A `--health` probe with no answer after this long is a timeout.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `diag llm` to the end: check reachability, run the streams, print, write JSON.
pub fn run(args: &LlmArgs) -> Result<(), Error> {
    crate::measure_and_report(measure(args), args.json.as_deref(), "report written to")
}

async fn measure(args: &LlmArgs) -> Result<LlmReport, Error> {
    let url = format!("{}/v1/chat/completions", args.base_url);
    let base = reqwest::Url::parse(&args.base_url).context("bad --base-url")?;
    crate::reachable::check_reachable(&base, args.timeout).await?;

    // The key and `-H` on every request, the `--health` probes included; JSON unless a `-H`
    // says otherwise.
    let access = args.access.header_map()?;
    let mut headers = access.clone();
    headers
        .entry(CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    let arrivals = args.arrivals();
    let until = args.until();
    let pool = match arrivals {
        Arrivals::Closed(concurrency) => concurrency as usize,
        Arrivals::Open(_) => 64,
    };
    let client = reqwest::Client::builder()
        .user_agent(concat!("diag/", env!("CARGO_PKG_VERSION")))
        .default_headers(headers)
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .retry(reqwest::retry::never())
        .build()
        .context("cannot build the HTTP client")?;
    let shared = Arc::new(Shared {
        client,
        url: url.clone(),
        body: sse::request_body(args)?,
        timeout: args.timeout,
        tickets: AtomicU64::new(0),
        tally: Mutex::new(Tally::new()?),
    });

    // Read as `/health` is (its 503 is an answer) wherever it points: `/readyz` reads the same.
    // `--admin` adds the admin plane's `/readyz` to the same prober, on the same schedule.
    let mut targets: Vec<Target> = args
        .health_url()
        .map(|url| Target::whole(Endpoint::Health, url))
        .into_iter()
        .collect();
    if let Some(admin) = &args.admin {
        targets.push(Target::at(admin, Endpoint::Readyz));
    }
    let probes = match targets.is_empty() {
        true => None,
        false => Some(Prober::start(
            access,
            &targets,
            HEALTH_EVERY,
            HEALTH_TIMEOUT,
            None,
        )?),
    };
    println!("{}", announce(args, &url));
    let progress = {
        let shared = Arc::clone(&shared);
        Progress::start(!args.no_progress, move |elapsed| {
            let t = lock(&shared.tally);
            format!(
                "{:>6.1}s  streams {} started, {} completed, {} failed, {} open | {} tokens",
                elapsed.as_secs_f64(),
                t.started,
                t.completed,
                t.failed,
                t.started - t.completed - t.failed - t.cancelled,
                t.tokens
            )
        })
    };

    let started = Instant::now();
    let elapsed = schedule::run(&shared, arrivals, until).await;
    progress.finish().await;
    let probed = match probes {
        Some(prober) => Some(prober.finish().await),
        None => None,
    };
    let tally = lock(&shared.tally);
    let mut report = LlmReport::new(args, elapsed, &tally);
    if let Some(probed) = probed {
        report.add_probes(args, &probed, started);
    }
    Ok(report)
}

fn announce(args: &LlmArgs, url: &str) -> String {
    let how_many = match args.until() {
        StreamsUntil::Count(n) => format!("{n} streams"),
        StreamsUntil::Elapsed(duration) => format!("streams for {duration:?}"),
    };
    let pace = match args.arrivals() {
        Arrivals::Closed(c) => format!("{c} at a time"),
        Arrivals::Open(rate) => format!("{rate} started per second"),
    };
    let health = match args.health_url() {
        Some(url) => format!("; polling {url} every {HEALTH_EVERY:?}"),
        None => String::new(),
    };
    format!(
        "diag llm: {how_many} of POST {url} (model {}), {pace}{health}\n",
        args.model
    )
}
