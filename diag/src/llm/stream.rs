//! One `diag llm` stream's own state, and the tally all streams add to as they go.
//!
//! A `Stream` records its TTFT and each gap between tokens the moment it sees them, so a
//! stream cancelled at the end of `-z` still counts what it received: dropping it before
//! `Stream::end` counts it as cancelled, with its tokens.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::histogram::Latencies;
use crate::llm::sse::{self, Data, Failure};
use crate::lock;

/// Counts and histograms over all streams.
#[derive(Debug)]
pub(super) struct Tally {
    pub(super) ttft: Latencies,
    pub(super) itl: Latencies,
    pub(super) e2e: Latencies,
    /// Per completed stream: output tokens / E2E, in thousandths of a token per second.
    pub(super) stream_rates: Histogram<u64>,
    pub(super) max_gap: Option<Duration>,
    pub(super) tokens: u64,
    pub(super) started: u64,
    pub(super) completed: u64,
    pub(super) failed: u64,
    pub(super) cancelled: u64,
    /// Failures by kind: how many, and the first message.
    pub(super) errors: BTreeMap<String, (u64, String)>,
}

impl Tally {
    pub(super) fn new() -> anyhow::Result<Self> {
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
pub(super) struct Shared {
    pub(super) client: reqwest::Client,
    pub(super) url: String,
    pub(super) body: Bytes,
    /// No response, or no event, for this long: a timeout.
    pub(super) timeout: Duration,
    /// Closed loop with `-n`: streams handed out so far.
    pub(super) tickets: AtomicU64,
    pub(super) tally: Mutex<Tally>,
}

/// One stream's own state. Dropping it before [`Stream::end`] (the run's end cancelled the
/// stream) counts it as cancelled, with the tokens it had received.
#[derive(Debug)]
pub(super) struct Stream<'a> {
    shared: &'a Shared,
    sent: Instant,
    last_token: Option<Instant>,
    content_events: u64,
    usage_tokens: Option<u64>,
    ended: bool,
}

impl<'a> Stream<'a> {
    pub(super) fn start(shared: &'a Shared) -> Self {
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

    pub(super) fn end(mut self, result: Result<(), Failure>) {
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
    pub(super) async fn run(&mut self) -> Result<(), Failure> {
        let shared = self.shared;
        let request = shared
            .client
            .post(&shared.url)
            .body(shared.body.clone())
            .send();
        self.sent = Instant::now();
        let response = sse::response(request, shared.timeout).await?;
        let mut events = response.bytes_stream().eventsource();
        loop {
            let data = sse::next_data(&mut events, shared.timeout, self.content_events).await?;
            match sse::read(&data)? {
                Data::Done => return Ok(()),
                Data::Chunk {
                    content,
                    usage_tokens,
                } => {
                    if usage_tokens.is_some() {
                        self.usage_tokens = usage_tokens;
                    }
                    if content {
                        self.token();
                    }
                }
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
