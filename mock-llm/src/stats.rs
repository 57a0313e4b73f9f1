//! `GET /stats`: what happened to every stream, counted on the upstream side.
//!
//! A gateway test cannot see whether the gateway really hung up on its upstream when the client
//! went away; the upstream can. Each stream carries a [`StreamGuard`]. If the stream is dropped
//! after its last chunk it counts as `completed`; dropped earlier (hyper drops the body as soon as
//! the peer's socket closes) it counts as `cancelled`. Drop runs on every path, so the counts add
//! up: `started == active_streams + completed + cancelled`.
//!
//! The five top-level counters are `/slow_stream`'s only (`bad_requests`: refused with a 400,
//! so a test can tell "the upstream refused it" from "it never reached the upstream"). Chat completions are counted apart,
//! under `chat` ([`ChatStats`], guarded by [`ChatGuard`]), so tests of either endpoint read their
//! own numbers.
//!
//! # `chat` counters
//!
//! - `requests`: every `POST /v1/chat/completions` that reached the handler.
//! - `bad_requests`: of those, rejected with a 4xx (bad JSON, bad field, bad header, too large).
//! - `faults.{429,500,503}`: of those, answered with an injected error instead of a completion.
//! - `started`: of those, generation began (all the others); `streaming`: how many of `started`
//!   asked for `stream: true`. `faults.{reset,stall}` count the started ones that got those faults.
//! - Each started generation ends as exactly one of `completed` (the last byte, `[DONE]` or the
//!   whole JSON body, was handed to the connection), `cancelled` (the client went away first:
//!   hyper dropped the body stream or the handler future), or `aborted` (the mock cut the
//!   connection itself: the `reset` fault); until then it is `active`. So
//!   `started == active + completed + cancelled + aborted`, and
//!   `requests == bad_requests + faults.429 + faults.500 + faults.503 + started`.
//!   A stalled stream stays `active` until its client gives up, then counts as `cancelled`.
//! - `time_to_cancel_ms.{last,max}`: for cancelled generations, the milliseconds from the mock's
//!   last progress towards the client (the last chunk handed to hyper, or the request's arrival
//!   when nothing had been sent yet, which is always the case for a non-streaming request) to the
//!   moment the mock saw the cancellation (the drop). It is the silence the client sat through
//!   before it gave up, plus however long the disconnect took to reach the mock: a gateway that
//!   gives up on a stalled upstream after 30 s shows about 30000 here. `null` until the first
//!   cancellation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::faults::Fault;

/// Stream counters since start-up. Relaxed atomics: each is an independent tally, read for display.
#[derive(Debug, Default)]
pub struct Stats {
    /// `/slow_stream` requests refused with a 400 (bad query, value out of range): they reached
    /// the mock, which answered them, and started no stream.
    bad_requests: AtomicU64,
    started: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    /// `/v1/chat/completions`, counted apart from `/slow_stream`.
    chat: ChatStats,
}

/// A consistent-enough copy of [`Stats`] for the JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub active_streams: u64,
    pub bad_requests: u64,
    pub started: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub chat: ChatSnapshot,
}

impl Stats {
    /// Counts a new stream; the returned guard counts its end.
    pub fn stream_started(self: &Arc<Self>) -> StreamGuard {
        self.started.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            stats: Arc::clone(self),
            finished: false,
        }
    }

    /// Counts a `/slow_stream` request refused before any stream began.
    pub fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        // Read the ends before the starts so `active_streams` never underflows.
        let completed = self.completed.load(Ordering::Relaxed);
        let cancelled = self.cancelled.load(Ordering::Relaxed);
        let started = self.started.load(Ordering::Relaxed);
        Snapshot {
            active_streams: started.saturating_sub(completed + cancelled),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
            started,
            completed,
            cancelled,
            chat: self.chat.snapshot(),
        }
    }

    pub fn chat(&self) -> &ChatStats {
        &self.chat
    }
}

/// Lives inside a stream's state; its drop is the stream's end.
#[derive(Debug)]
pub struct StreamGuard {
    stats: Arc<Stats>,
    finished: bool,
}

impl StreamGuard {
    /// Marks that the last chunk was handed to the client.
    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.stats.completed
        } else {
            &self.stats.cancelled
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Chat completion counters (see the module docs for what each means).
#[derive(Debug, Default)]
pub struct ChatStats {
    requests: AtomicU64,
    bad_requests: AtomicU64,
    started: AtomicU64,
    streaming: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    aborted: AtomicU64,
    /// Indexed by [`Fault::index`].
    faults: [AtomicU64; Fault::ALL.len()],
    ttc_last_ms: AtomicU64,
    ttc_max_ms: AtomicU64,
}

/// The `chat` object of `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatSnapshot {
    pub requests: u64,
    pub bad_requests: u64,
    pub started: u64,
    pub streaming: u64,
    pub active: u64,
    pub completed: u64,
    pub cancelled: u64,
    pub aborted: u64,
    pub faults: FaultCounts,
    pub time_to_cancel_ms: TimeToCancel,
}

/// Injected faults by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    #[serde(rename = "429")]
    pub rate_limited: u64,
    #[serde(rename = "500")]
    pub internal: u64,
    #[serde(rename = "503")]
    pub overloaded: u64,
    pub reset: u64,
    pub stall: u64,
    pub slow: u64,
}

/// Milliseconds from the last progress to the drop, over cancelled generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeToCancel {
    pub last: Option<u64>,
    pub max: Option<u64>,
}

impl ChatStats {
    /// Counts a request and returns its ordinal (0 for the first), which seeds its PRNG.
    pub fn request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    pub fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn fault(&self, fault: Fault) {
        self.faults[fault.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ChatSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        // Ends before starts, so `active` never underflows.
        let completed = load(&self.completed);
        // Acquire pairs with the Release in `ChatGuard::drop`: the times are stored first.
        let cancelled = self.cancelled.load(Ordering::Acquire);
        let aborted = load(&self.aborted);
        let started = load(&self.started);
        let fault = |f: Fault| load(&self.faults[f.index()]);
        let seen = |counter: &AtomicU64| (cancelled > 0).then(|| load(counter));
        ChatSnapshot {
            requests: load(&self.requests),
            bad_requests: load(&self.bad_requests),
            started,
            streaming: load(&self.streaming),
            active: started.saturating_sub(completed + cancelled + aborted),
            completed,
            cancelled,
            aborted,
            faults: FaultCounts {
                rate_limited: fault(Fault::RateLimited),
                internal: fault(Fault::Internal),
                overloaded: fault(Fault::Overloaded),
                reset: fault(Fault::Reset),
                stall: fault(Fault::Stall),
                slow: fault(Fault::Slow),
            },
            time_to_cancel_ms: TimeToCancel {
                last: seen(&self.ttc_last_ms),
                max: seen(&self.ttc_max_ms),
            },
        }
    }
}

impl Stats {
    /// Counts a generation that begins now; the returned guard counts how it ends.
    pub fn chat_started(self: &Arc<Self>, streaming: bool) -> ChatGuard {
        self.chat.started.fetch_add(1, Ordering::Relaxed);
        if streaming {
            self.chat.streaming.fetch_add(1, Ordering::Relaxed);
        }
        ChatGuard {
            stats: Arc::clone(self),
            outcome: Outcome::Running,
            last_progress: Instant::now(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Running,
    Completed,
    Aborted,
}

/// Lives in a chat generation (the body stream, or the handler future of a non-streaming
/// request); its drop is the generation's end, classified by what was marked before it.
#[derive(Debug)]
pub struct ChatGuard {
    stats: Arc<Stats>,
    outcome: Outcome,
    last_progress: Instant,
}

impl ChatGuard {
    /// Marks that a chunk was just handed to the client (restarts the time-to-cancel clock).
    pub fn progress(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Marks that the last byte was handed to the client.
    pub fn finish(&mut self) {
        self.outcome = Outcome::Completed;
    }

    /// Marks that the mock is cutting the connection itself (the `reset` fault).
    pub fn abort(&mut self) {
        self.outcome = Outcome::Aborted;
    }
}

impl Drop for ChatGuard {
    fn drop(&mut self) {
        let chat = &self.stats.chat;
        match self.outcome {
            Outcome::Completed => {
                chat.completed.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Aborted => {
                chat.aborted.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Running => {
                let waited =
                    u64::try_from(self.last_progress.elapsed().as_millis()).unwrap_or(u64::MAX);
                // The times before the count, so a reader who sees the count sees them.
                chat.ttc_last_ms.store(waited, Ordering::Relaxed);
                chat.ttc_max_ms.fetch_max(waited, Ordering::Relaxed);
                chat.cancelled.fetch_add(1, Ordering::Release);
            }
        }
    }
}

pub async fn handler(State(state): State<AppState>) -> Json<Snapshot> {
    Json(state.stats.snapshot())
}
