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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource as _};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Error;
use crate::cli::{Arrivals, LlmArgs, StreamsUntil};
use crate::histogram::round_ms;
use crate::histogram::{Latencies, Spread};
use crate::live::seconds;
use crate::probe::{Endpoint, ProbeStats, Prober};
use crate::progress::Progress;
use crate::{lock, root_cause};

/// `--health` probes this often.
const HEALTH_EVERY: Duration = Duration::from_millis(250);
/// A `--health` probe with no answer after this long is a timeout.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// A gap longer than this many times the pacing means a stream stalled.
pub const GAP_FACTOR: f64 = 10.0;
/// The smallest pacing the gap rule uses, ms.
pub const MIN_PACING_MS: f64 = 1.0;
/// Failed streams must stay below this fraction of the streams started.
pub const MAX_ERROR_RATE: f64 = 0.001;

/// Runs `diag llm` to the end: check reachability, run the streams, print, write JSON.
pub fn run(args: &LlmArgs) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    let report = runtime.block_on(measure(args))?;
    print!("{report}");
    if let Some(path) = &args.json {
        report.write_json(path)?;
        println!("report written to {}", path.display());
    }
    Ok(())
}

/// The body of every request, encoded once.
fn request_body(args: &LlmArgs) -> anyhow::Result<Bytes> {
    let mut body = serde_json::json!({
        "model": args.model,
        "messages": [{"role": "user", "content": args.prompt}],
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(max_tokens) = args.max_tokens {
        body["max_tokens"] = max_tokens.into();
    }
    Ok(serde_json::to_vec(&body)
        .context("cannot encode the request")?
        .into())
}

/// The parts of an OpenAI `chat.completion.chunk` diag reads. Lenient: a field it does not
/// know or that is `null` is skipped, as other servers (vLLM, Ollama, gateways) vary.
#[derive(Debug, Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    /// Some servers report a failure mid-stream as `data: {"error": {...}}`.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
}

#[derive(Debug, Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    completion_tokens: Option<u64>,
}

impl Chunk<'_> {
    fn has_content(&self) -> bool {
        self.choices.iter().any(|choice| {
            choice
                .delta
                .as_ref()
                .and_then(|delta| delta.content.as_deref())
                .is_some_and(|content| !content.is_empty())
        })
    }
}

/// Why a stream failed: a short kind (`http_500`, `connect`, `timeout`, `cut`, …) that keys
/// the error counts, and a message for a person.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    kind: String,
    message: String,
}

impl Failure {
    fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// A request that got no response.
    fn sending(error: &reqwest::Error) -> Self {
        let kind = if error.is_connect() {
            "connect"
        } else if error.is_timeout() {
            "timeout"
        } else {
            "other"
        };
        Self::new(kind, root_cause(error))
    }
}

/// Counts and histograms over all streams.
#[derive(Debug)]
struct Tally {
    ttft: Latencies,
    itl: Latencies,
    e2e: Latencies,
    /// Per completed stream: output tokens / E2E, in thousandths of a token per second.
    stream_rates: Histogram<u64>,
    max_gap: Option<Duration>,
    tokens: u64,
    started: u64,
    completed: u64,
    failed: u64,
    cancelled: u64,
    /// Failures by kind: how many, and the first message.
    errors: BTreeMap<String, (u64, String)>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ttft: Latencies::new()?,
            itl: Latencies::new()?,
            e2e: Latencies::new()?,
            // Up to 10^9 tokens/s, in thousandths: more than any server will stream.
            stream_rates: Histogram::new_with_bounds(1, 1_000_000_000_000, 3)
                .context("cannot create a rate histogram")?,
            max_gap: None,
            tokens: 0,
            started: 0,
            completed: 0,
            failed: 0,
            cancelled: 0,
            errors: BTreeMap::new(),
        })
    }
}

/// What the streams share.
#[derive(Debug)]
struct Shared {
    client: reqwest::Client,
    url: String,
    body: Bytes,
    /// No response, or no event, for this long: a timeout.
    timeout: Duration,
    /// Closed loop with `-n`: streams handed out so far.
    tickets: AtomicU64,
    tally: Mutex<Tally>,
}

/// One stream's own state. Dropping it before [`Stream::end`] (the run's end cancelled the
/// stream) counts it as cancelled, with the tokens it had received.
#[derive(Debug)]
struct Stream<'a> {
    shared: &'a Shared,
    sent: Instant,
    last_token: Option<Instant>,
    content_events: u64,
    usage_tokens: Option<u64>,
    ended: bool,
}

impl<'a> Stream<'a> {
    fn start(shared: &'a Shared) -> Self {
        lock(&shared.tally).started += 1;
        Self {
            shared,
            sent: Instant::now(),
            last_token: None,
            content_events: 0,
            usage_tokens: None,
            ended: false,
        }
    }

    /// A content event arrived now: record the TTFT or the gap since the previous one.
    fn token(&mut self) {
        let now = Instant::now();
        let mut tally = lock(&self.shared.tally);
        match self.last_token {
            None => tally.ttft.record(now - self.sent),
            Some(last) => {
                let gap = now - last;
                tally.itl.record(gap);
                tally.max_gap = Some(tally.max_gap.map_or(gap, |max| max.max(gap)));
            }
        }
        self.last_token = Some(now);
        self.content_events += 1;
    }

    fn tokens(&self) -> u64 {
        self.usage_tokens.unwrap_or(self.content_events)
    }

    fn end(mut self, result: Result<(), Failure>) {
        self.ended = true;
        let e2e = self.sent.elapsed();
        let tokens = self.tokens();
        let mut tally = lock(&self.shared.tally);
        tally.tokens += tokens;
        match result {
            Ok(()) => {
                tally.completed += 1;
                tally.e2e.record(e2e);
                let rate = tokens as f64 / e2e.as_secs_f64().max(1e-6);
                tally
                    .stream_rates
                    .saturating_record((rate * 1e3).round() as u64);
            }
            Err(failure) => {
                tally.failed += 1;
                tally
                    .errors
                    .entry(failure.kind)
                    .and_modify(|(count, _)| *count += 1)
                    .or_insert((1, failure.message));
            }
        }
    }

    /// Sends the request and reads events until `[DONE]`.
    async fn run(&mut self) -> Result<(), Failure> {
        let shared = self.shared;
        let timeout = shared.timeout;
        let request = shared
            .client
            .post(&shared.url)
            .body(shared.body.clone())
            .send();
        self.sent = Instant::now();
        let response = match tokio::time::timeout(timeout, request).await {
            Err(_) => {
                return Err(Failure::new(
                    "timeout",
                    format!("no response within {timeout:?}"),
                ));
            }
            Ok(Err(error)) => return Err(Failure::sending(&error)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            // The server explains a refusal in the body: keep the start of it.
            let body = tokio::time::timeout(timeout, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let body: String = body.trim().chars().take(160).collect();
            return Err(Failure::new(
                format!("http_{}", status.as_u16()),
                format!("HTTP {status}: {body}"),
            ));
        }
        let mut events = response.bytes_stream().eventsource();
        loop {
            let event = match tokio::time::timeout(timeout, events.next()).await {
                Err(_) => {
                    return Err(Failure::new(
                        "timeout",
                        format!(
                            "no event for {timeout:?} (after {} tokens)",
                            self.content_events
                        ),
                    ));
                }
                Ok(None) => {
                    return Err(Failure::new(
                        "cut",
                        format!(
                            "the stream ended before [DONE] (after {} tokens)",
                            self.content_events
                        ),
                    ));
                }
                Ok(Some(Err(EventStreamError::Transport(error)))) => {
                    return Err(Failure::new(
                        "cut",
                        format!(
                            "{} (after {} tokens)",
                            root_cause(&error),
                            self.content_events
                        ),
                    ));
                }
                Ok(Some(Err(error))) => return Err(Failure::new("bad_event", error.to_string())),
                Ok(Some(Ok(event))) => event,
            };
            if event.data == "[DONE]" {
                return Ok(());
            }
            let chunk: Chunk<'_> = serde_json::from_str(&event.data).map_err(|error| {
                let data: String = event.data.chars().take(80).collect();
                Failure::new("bad_event", format!("{error} in `{data}`"))
            })?;
            if let Some(error) = &chunk.error {
                let error: String = error.to_string().chars().take(160).collect();
                return Err(Failure::new("api_error", error));
            }
            if let Some(Usage {
                completion_tokens: Some(tokens),
            }) = chunk.usage
            {
                self.usage_tokens = Some(tokens);
            }
            if chunk.has_content() {
                self.token();
            }
        }
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let tokens = self.tokens();
            let mut tally = lock(&self.shared.tally);
            tally.cancelled += 1;
            tally.tokens += tokens;
        }
    }
}

/// One stream, start to end.
async fn one_stream(shared: Arc<Shared>) {
    let mut stream = Stream::start(&shared);
    let result = stream.run().await;
    stream.end(result);
}

/// A closed-loop worker: one stream after another until the tickets are gone (with `-n`) or
/// the run is cancelled (with `-z`).
async fn worker(shared: Arc<Shared>, until: StreamsUntil) {
    loop {
        if let StreamsUntil::Count(n) = until
            && shared.tickets.fetch_add(1, Ordering::Relaxed) >= n
        {
            break;
        }
        one_stream(Arc::clone(&shared)).await;
    }
}

async fn measure(args: &LlmArgs) -> Result<LlmReport, Error> {
    let url = format!("{}/v1/chat/completions", args.base_url);
    let base = reqwest::Url::parse(&args.base_url).context("bad --base-url")?;
    crate::reachable::check_reachable(&base, args.timeout).await?;

    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(key) = &args.api_key {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", key.0))
            .context("the API key cannot go into a header")?;
        bearer.set_sensitive(true);
        headers.insert(AUTHORIZATION, bearer);
    }
    for header in &args.headers {
        headers.append(header.name.clone(), header.value.clone());
    }
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
        body: request_body(args)?,
        timeout: args.timeout,
        tickets: AtomicU64::new(0),
        tally: Mutex::new(Tally::new()?),
    });

    let health = if args.health {
        Some(Prober::start(
            args.base_url.clone(),
            &[Endpoint::Health],
            HEALTH_EVERY,
            HEALTH_TIMEOUT,
            None,
        )?)
    } else {
        None
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

    let start = Instant::now();
    let deadline = match until {
        StreamsUntil::Elapsed(duration) => Some(start + duration),
        StreamsUntil::Count(_) => None,
    };
    let mut streams = JoinSet::new();
    match arrivals {
        Arrivals::Closed(concurrency) => {
            let workers = match until {
                StreamsUntil::Count(n) => u64::from(concurrency).min(n),
                StreamsUntil::Elapsed(_) => u64::from(concurrency),
            };
            for _ in 0..workers {
                streams.spawn(worker(Arc::clone(&shared), until));
            }
        }
        Arrivals::Open(rate) => {
            for k in 0u64.. {
                if let StreamsUntil::Count(n) = until
                    && k >= n
                {
                    break;
                }
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                if deadline.is_some_and(|deadline| due >= deadline) {
                    break;
                }
                tokio::time::sleep_until(due).await;
                streams.spawn(one_stream(Arc::clone(&shared)));
                // Reap the streams that ended, so the set holds only open ones.
                while streams.try_join_next().is_some() {}
            }
        }
    }
    match deadline {
        Some(deadline) => {
            let drain = async { while streams.join_next().await.is_some() {} };
            if tokio::time::timeout_at(deadline, drain).await.is_err() {
                // Dropping the streams counts them as cancelled (see `Stream`'s `Drop`).
                streams.abort_all();
                while streams.join_next().await.is_some() {}
            }
        }
        None => while streams.join_next().await.is_some() {},
    }
    let elapsed = start.elapsed();
    progress.finish().await;
    let health = match health {
        Some(prober) => Some(PollStats::from(
            &prober.finish().await.stats(Endpoint::Health),
        )),
        None => None,
    };
    let tally = lock(&shared.tally);
    Ok(LlmReport::new(args, elapsed, &tally, health))
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
    let health = if args.health {
        format!("; polling {}/health every {HEALTH_EVERY:?}", args.base_url)
    } else {
        String::new()
    };
    format!(
        "diag llm: {how_many} of POST {url} (model {}), {pace}{health}\n",
        args.model
    )
}

/// `diag llm`'s result, as printed and as written by `--json` (schema in the README).
#[derive(Debug, Clone, Serialize)]
pub struct LlmReport {
    /// Always `llm`.
    pub kind: &'static str,
    pub base_url: String,
    pub model: String,
    /// `-c`; `null` under `-q`.
    pub concurrency: Option<u32>,
    /// `-q`, streams per second; `null` under `-c`.
    pub rate: Option<f64>,
    /// From the first stream started to the last one ended, seconds.
    pub duration_s: f64,
    pub streams: StreamCounts,
    pub ttft_ms: Spread,
    pub itl_ms: Spread,
    pub e2e_ms: Spread,
    /// The largest gap between two tokens of one stream, over all streams.
    pub max_gap_ms: Option<f64>,
    pub output_tokens: OutputTokens,
    /// `--health`'s probes of `{base}/health`; `null` without `--health`.
    pub health: Option<PollStats>,
    /// The pacing the gap rule used: `--pacing-ms`, else the median ITL; `null` if neither.
    pub pacing_ms: Option<f64>,
    pub sustained: bool,
    pub sustained_reason: String,
    /// One message per error kind, for the printed report.
    #[serde(skip)]
    error_examples: BTreeMap<String, String>,
}

/// What `--health`'s probes of `{base}/health` saw. Milliseconds, 3 decimals. The prober's
/// [`ProbeStats`] less what this report never carried (p95, the `/health` statuses).
#[derive(Debug, Clone, Serialize)]
pub struct PollStats {
    /// Probes answered or timed out: the percentiles' population.
    pub samples: u64,
    /// `null` when there were no samples.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Probes with no answer within the probe timeout (in the percentiles at that value).
    pub timeouts: u64,
    /// Probes with no usable answer (refused, an unexpected status): not in the percentiles.
    pub errors: u64,
}

impl From<&ProbeStats> for PollStats {
    fn from(stats: &ProbeStats) -> Self {
        Self {
            samples: stats.samples,
            p50_ms: stats.p50_ms,
            p99_ms: stats.p99_ms,
            max_ms: stats.max_ms,
            timeouts: stats.timeouts,
            errors: stats.errors,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamCounts {
    pub started: u64,
    /// Ended with `data: [DONE]`.
    pub completed: u64,
    /// Ended otherwise; by kind in `errors`.
    pub failed: u64,
    /// Still open at the end of `-z`, dropped by diag: neither completed nor failed.
    pub cancelled: u64,
    /// Failed streams by kind: `http_<status>`, `connect`, `timeout`, `cut`, `bad_event`,
    /// `api_error`, `other`.
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputTokens {
    /// Over all streams: usage tokens of those that reported them, else content events.
    pub total: u64,
    /// `total / duration_s`.
    pub per_s: f64,
    /// Median over completed streams of the stream's tokens / its E2E.
    pub per_stream_p50_per_s: Option<f64>,
}

impl LlmReport {
    fn new(args: &LlmArgs, elapsed: Duration, t: &Tally, health: Option<PollStats>) -> Self {
        let duration_s = elapsed.as_secs_f64();
        let itl = t.itl.spread();
        let pacing_ms = args.pacing_ms.or(itl.p50);
        let max_gap_ms = t.max_gap.map(|gap| round_ms(gap.as_secs_f64() * 1e3));
        let errors: BTreeMap<String, u64> = t
            .errors
            .iter()
            .map(|(kind, (count, _))| (kind.clone(), *count))
            .collect();
        let (sustained, sustained_reason) =
            judge(t.started, t.failed, &errors, max_gap_ms, pacing_ms);
        Self {
            kind: "llm",
            base_url: args.base_url.clone(),
            model: args.model.clone(),
            concurrency: match args.arrivals() {
                Arrivals::Closed(c) => Some(c),
                Arrivals::Open(_) => None,
            },
            rate: args.rate,
            duration_s: round_ms(duration_s),
            streams: StreamCounts {
                started: t.started,
                completed: t.completed,
                failed: t.failed,
                cancelled: t.cancelled,
                errors,
            },
            ttft_ms: t.ttft.spread(),
            itl_ms: itl,
            e2e_ms: t.e2e.spread(),
            max_gap_ms,
            output_tokens: OutputTokens {
                total: t.tokens,
                per_s: round_ms(t.tokens as f64 / duration_s.max(1e-9)),
                per_stream_p50_per_s: (!t.stream_rates.is_empty())
                    .then(|| round_ms(t.stream_rates.value_at_quantile(0.5) as f64 / 1e3)),
            },
            health,
            pacing_ms,
            sustained,
            sustained_reason,
            error_examples: t
                .errors
                .iter()
                .map(|(kind, (_, example))| (kind.clone(), example.clone()))
                .collect(),
        }
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        crate::write_json(path, self)
    }

    /// `SUSTAINED: <reason>` or `NOT SUSTAINED: <reason>`.
    pub fn sustained_line(&self) -> String {
        let word = if self.sustained {
            "SUSTAINED"
        } else {
            "NOT SUSTAINED"
        };
        format!("{word}: {}", self.sustained_reason)
    }
}

/// The sustained rule of the module docs. Returns the judgement and its reason, which always
/// names both numbers: the largest gap against its limit, and the failures against theirs.
pub fn judge(
    started: u64,
    failed: u64,
    errors: &BTreeMap<String, u64>,
    max_gap_ms: Option<f64>,
    pacing_ms: Option<f64>,
) -> (bool, String) {
    if started == 0 {
        return (false, "no stream started".to_owned());
    }
    let rate = failed as f64 / started as f64;
    let errors_ok = rate < MAX_ERROR_RATE;
    let kinds: Vec<String> = errors
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect();
    let errors_part = format!(
        "{failed} of {started} streams failed ({:.1}% {} {:.1}%{})",
        rate * 100.0,
        if errors_ok { "<" } else { ">=" },
        MAX_ERROR_RATE * 100.0,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(": {}", kinds.join(", "))
        }
    );
    let (gaps_ok, gaps_part) = match (max_gap_ms, pacing_ms) {
        (Some(gap), Some(pacing)) => {
            let limit = GAP_FACTOR * pacing.max(MIN_PACING_MS);
            let ok = gap <= limit;
            (
                ok,
                format!(
                    "largest gap {} {} {GAP_FACTOR} x {} pacing",
                    ms(gap),
                    if ok { "<=" } else { ">" },
                    ms(pacing.max(MIN_PACING_MS))
                ),
            )
        }
        (Some(gap), None) => (true, format!("largest gap {} (no pacing known)", ms(gap))),
        (None, _) => (true, "no gap between tokens to judge".to_owned()),
    };
    let sustained = errors_ok && gaps_ok;
    (sustained, format!("{gaps_part}; {errors_part}"))
}

/// A time in ms for a person: `0.4ms`, `21.3ms`, `2.013s`.
fn ms(ms: f64) -> String {
    seconds(Duration::from_secs_f64(ms.max(0.0) / 1e3))
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), ms)
}

impl fmt::Display for LlmReport {
    /// The human report; the README explains each line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.streams;
        writeln!(
            f,
            "streams   {} started | {} completed | {} failed | {} cancelled at the end",
            s.started, s.completed, s.failed, s.cancelled
        )?;
        for (kind, count) in &s.errors {
            let example = self.error_examples.get(kind).map_or("", String::as_str);
            writeln!(f, "          {count} x {kind}: {example}")?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<10}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p90", "p99", "max"
        )?;
        for (name, spread) in [
            ("TTFT", &self.ttft_ms),
            ("ITL", &self.itl_ms),
            ("E2E", &self.e2e_ms),
        ] {
            writeln!(
                f,
                "{name:<10}{:>10}{:>10}{:>10}{:>10}",
                cell(spread.p50),
                cell(spread.p90),
                cell(spread.p99),
                cell(spread.max)
            )?;
        }
        writeln!(f)?;
        let t = &self.output_tokens;
        writeln!(
            f,
            "tokens    {} output | {:.1} tokens/s over {:.2}s | {} tokens/s per stream (p50) | largest gap {}",
            t.total,
            t.per_s,
            self.duration_s,
            t.per_stream_p50_per_s
                .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.1}")),
            cell(self.max_gap_ms),
        )?;
        if let Some(h) = &self.health {
            writeln!(
                f,
                "health    {}/health: {} samples | p50 {} | p99 {} | max {} | {} timeouts | {} errors",
                self.base_url,
                h.samples,
                cell(h.p50_ms),
                cell(h.p99_ms),
                cell(h.max_ms),
                h.timeouts,
                h.errors
            )?;
        }
        writeln!(f)?;
        writeln!(f, "{}", self.sustained_line())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_errors() -> BTreeMap<String, u64> {
        BTreeMap::new()
    }

    #[test]
    fn steady_streams_are_sustained_with_both_numbers_named() {
        let (ok, reason) = judge(20, 0, &no_errors(), Some(21.3), Some(20.1));
        assert!(ok);
        assert_eq!(
            reason,
            "largest gap 21.3ms <= 10 x 20.1ms pacing; 0 of 20 streams failed (0.0% < 0.1%)"
        );
    }

    #[test]
    fn a_stall_or_a_failure_is_not_sustained() {
        let (ok, reason) = judge(20, 0, &no_errors(), Some(250.0), Some(20.0));
        assert!(!ok);
        assert!(
            reason.starts_with("largest gap 250.0ms > 10 x 20.0ms pacing"),
            "{reason}"
        );
        let errors = BTreeMap::from([("http_500".to_owned(), 1)]);
        let (ok, reason) = judge(20, 1, &errors, Some(21.0), Some(20.0));
        assert!(!ok);
        assert!(
            reason.ends_with("1 of 20 streams failed (5.0% >= 0.1%: 1 http_500)"),
            "{reason}"
        );
    }

    #[test]
    fn edge_cases_are_judged_plainly() {
        assert_eq!(
            judge(0, 0, &no_errors(), None, None),
            (false, "no stream started".to_owned())
        );
        // One token per stream: no gaps; only the failures decide.
        let (ok, reason) = judge(5, 0, &no_errors(), None, None);
        assert!(ok);
        assert!(
            reason.starts_with("no gap between tokens to judge"),
            "{reason}"
        );
        // Back-to-back tokens: a 0.01 ms median does not make a 0.1 ms limit.
        assert!(judge(5, 0, &no_errors(), Some(5.0), Some(0.01)).0);
        // 1 failure in 2000 is 0.05%: below the bar.
        assert!(judge(2000, 1, &no_errors(), Some(1.0), Some(1.0)).0);
    }

    #[test]
    fn health_stats_keep_their_own_json_fields() {
        let mut stats = ProbeStats {
            samples: 3,
            p95_ms: Some(2.0),
            last_status: Some("ok".into()),
            ..ProbeStats::default()
        };
        stats.statuses.insert("ok".into(), 3);
        let json = serde_json::to_value(PollStats::from(&stats)).expect("serialisable");
        let mut keys: Vec<&str> = json
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "errors", "max_ms", "p50_ms", "p99_ms", "samples", "timeouts"
            ]
        );
        assert_eq!(json["samples"], 3);
    }

    #[test]
    fn chunks_are_read_leniently() {
        let role: Chunk<'_> = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}"#,
        )
        .expect("role chunk");
        assert!(!role.has_content());
        let token: Chunk<'_> =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"Hi \"you\""}}]}"#)
                .expect("token chunk");
        assert!(token.has_content());
        let usage: Chunk<'_> =
            serde_json::from_str(r#"{"choices":[],"usage":{"completion_tokens":10}}"#)
                .expect("usage chunk");
        assert_eq!(usage.usage.and_then(|u| u.completion_tokens), Some(10));
        let error: Chunk<'_> =
            serde_json::from_str(r#"{"error":{"message":"overloaded"}}"#).expect("error chunk");
        assert!(error.error.is_some());
    }
}
