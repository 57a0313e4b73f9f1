//! `POST /v1/chat/completions` and `GET /v1/models`: an OpenAI-compatible upstream that takes
//! its time, on purpose and on a schedule.
//!
//! Real providers are slow in a particular shape: a long wait for the first token (TTFT), then a
//! steady trickle (ITL), sometimes a stutter, sometimes a failure. The interesting bugs of a
//! gateway live in that shape: a timeout that fires during the first-token wait, a buffer that
//! holds the trickle back, a blocking read that keeps a thread through every gap, a retry that
//! ignores `Retry-After`. This module produces the shape; [`crate::knobs`] sets it,
//! [`crate::faults`] breaks it, [`crate::openai`] dresses it in the wire format.
//!
//! # The schedule
//!
//! Token 0 is due at arrival + TTFT, token k at token k−1 + ITL (each delay drawn through
//! [`Spread`], so with jitter every gap differs). Deadlines are absolute (`sleep_until`), so a busy
//! runtime cannot stretch a completion beyond its schedule.
//!
//! - Streaming: the role chunk and token 0 go out together at TTFT, each later token at its due
//!   time, then the finish chunk, the usage chunk (if asked for) and `[DONE]` at once.
//! - Non-streaming: the whole `chat.completion` is sent when the last token is due, i.e. at
//!   TTFT + (tokens − 1) × ITL: the moment a streaming client would have had the last token.
//!   Status and headers come then too, as with a real provider.
//!
//! # Seeing a client hang up
//!
//! A generation carries a [`ChatGuard`]; where it lives decides how a disconnect is seen.
//!
//! - Streaming: the guard is in the body stream. hyper drops the body when the peer's socket
//!   closes (it keeps reading the connection while the body is pending, and sees EOF), so the
//!   guard is dropped unfinished: `cancelled`.
//! - Non-streaming: the guard is in the handler future, which waits for the last token before it
//!   returns the response. The question was whether hyper notices a hang-up while the *service
//!   future* is still pending, before it has anything to write. It does (hyper 1.x, HTTP/1): once
//!   the request body has been read in full, the connection task goes on polling the socket for
//!   reads while it waits for the response (`poll_read_keep_alive` → `mid_message_detect_eof`); a
//!   read of 0 bytes (the client closed, or even only shut down its sending half, since axum does
//!   not enable half-close) ends the connection with "incomplete message" and drops the service
//!   future, and the guard with it. The test `non_streaming_disconnect_counts_as_cancelled`
//!   checks it: a client that sends a request and closes its socket after 100 ms moves
//!   `cancelled` within a few milliseconds, long before the response was due. Two limits: the
//!   request body must have been read (the handler reads it first, as `Bytes`), and if the client
//!   pipelined a further request on the connection, hyper stops reading and the hang-up is seen
//!   only when the response is written. So no body-stream trick (and no early `200`) is needed.
//!
//! # Faults
//!
//! `429`, `500` and `503` answer at once, before any generation. `reset` and `stall` strike when
//! token [`FAULT_AFTER_TOKENS`] (or the last one, for a shorter completion) is due: `reset` makes
//! the body stream yield an error, which makes hyper abort the connection mid-body (no terminating
//! chunk, so the client sees a truncated body; the stream yields once before the error so that
//! hyper flushes the tokens already produced: a write buffer still unflushed when the body fails
//! is discarded, which a test caught when a late runtime produced tokens and error in one poll);
//! before any response byte, the error is met on the
//! first poll of the body, and hyper closes the connection without flushing the status line, so a
//! non-streaming client sees the connection close with no response. `stall` simply never
//! continues, until the client hangs up (then `cancelled`).

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::time::{Instant, sleep_until};

use crate::AppState;
use crate::error::ApiError;
use crate::faults::{self, FAULT_AFTER_TOKENS, FAULT_RESPONSE_HEADER, Fault};
use crate::knobs::{Knobs, Spread};
use crate::openai::{
    ChatCompletion, ChatCompletionChunk, ChatRequest, Choice, ChunkChoice, Delta, FinishReason,
    Message, Model, ModelList, Usage,
};
use crate::stats::ChatGuard;

/// Largest accepted request body; larger is a 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Response header with this response's actual TTFT in milliseconds, after jitter and heavy
/// tail, so a client can compare what it measured with what the mock intended.
pub const TTFT_RESPONSE_HEADER: HeaderName = HeaderName::from_static("x-mock-ttft-ms");

/// The request headers a tracing client cares about, echoed back as `x-mock-saw-<name>`, so a
/// test of a gateway can see what reached the upstream (the gateway relays `x-mock-*`).
const ECHOED: [&str; 2] = ["x-request-id", "traceparent"];

pub async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let chat = state.stats.chat();
    let ordinal = chat.request();
    let plan = match Plan::new(&state, ordinal, arrived, &headers, body) {
        Ok(plan) => plan,
        Err(error) => {
            chat.bad_request();
            return error.into_response();
        }
    };
    if let Some(fault) = plan.fault {
        chat.fault(fault);
        if let Some(response) = fault.error_response() {
            return response;
        }
    }
    let guard = state.stats.chat_started(plan.request.stream);
    if plan.request.stream {
        stream(plan, guard)
    } else {
        complete(plan, guard).await
    }
}

pub async fn models(State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .config
        .models
        .iter()
        .map(|id| Model {
            id: id.clone(),
            object: "model",
            created: state.started_unix,
            owned_by: "mock-llm",
        })
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

/// Everything decided about a request before generation starts.
#[derive(Debug)]
struct Plan {
    request: ChatRequest,
    fault: Option<Fault>,
    id: String,
    created: u64,
    /// Tokens to generate, after the `max_tokens` cap; at least 1.
    tokens: u32,
    finish: FinishReason,
    ttft: Duration,
    schedule: Schedule,
    /// The [`ECHOED`] request headers that came, as response headers.
    echoed: HeaderMap,
}

impl Plan {
    fn new(
        state: &AppState,
        ordinal: u64,
        arrived: Instant,
        headers: &HeaderMap,
        body: Result<Bytes, BytesRejection>,
    ) -> Result<Self, ApiError> {
        let config = &state.config;
        let knobs = Knobs::from_headers(config, headers)?;
        let mut echoed = HeaderMap::new();
        for name in ECHOED {
            if let (Some(value), Ok(saw)) = (
                headers.get(name),
                HeaderName::try_from(format!("x-mock-saw-{name}")),
            ) {
                echoed.insert(saw, value.clone());
            }
        }
        let request = ChatRequest::parse(&body.map_err(body_error)?)?;
        // The draw order is part of the reproducibility contract (see `faults`).
        let mut rng = faults::request_rng(state.seed, ordinal);
        let fault = faults::decide(
            config.fault,
            config.fault_rate,
            config.fault_first,
            ordinal,
            knobs.forced_fault,
            &mut rng,
        );
        let id = format!(
            "chatcmpl-{}",
            (0..24).map(|_| rng.alphanumeric()).collect::<String>()
        );
        let (tokens, finish) = match request.max_tokens {
            Some(cap) if cap < knobs.tokens => (cap, FinishReason::Length),
            _ => (knobs.tokens, FinishReason::Stop),
        };
        let spread = Spread::from_config(config);
        let mut ttft = spread.apply(knobs.ttft, &mut rng);
        if fault == Some(Fault::Slow) {
            ttft *= faults::SLOW_FACTOR;
        }
        Ok(Self {
            request,
            fault,
            id,
            created: unix_now(),
            tokens,
            finish,
            ttft,
            schedule: Schedule {
                due: arrived + ttft,
                itl: knobs.itl,
                spread,
                rng,
            },
            echoed,
        })
    }

    /// The token at which a `reset` or `stall` strikes.
    fn strike_at(&self) -> Option<u32> {
        match self.fault {
            Some(Fault::Reset | Fault::Stall) => {
                Some(FAULT_AFTER_TOKENS.min(self.tokens.saturating_sub(1)))
            }
            _ => None,
        }
    }

    fn usage(&self, completion_tokens: u32) -> Usage {
        Usage::new(self.request.prompt_tokens, completion_tokens)
    }

    /// Headers of a response that goes ahead: its actual TTFT and its fault, if any.
    fn headers(&self) -> HeaderMap {
        let mut headers = self.echoed.clone();
        let ttft_ms = u64::try_from(self.ttft.as_millis()).unwrap_or(u64::MAX);
        headers.insert(TTFT_RESPONSE_HEADER, HeaderValue::from(ttft_ms));
        if let Some(fault) = self.fault {
            headers.insert(
                FAULT_RESPONSE_HEADER,
                HeaderValue::from_static(fault.name()),
            );
        }
        headers
    }
}

/// When each token is due (see the module docs).
#[derive(Debug)]
struct Schedule {
    due: Instant,
    itl: Duration,
    spread: Spread,
    rng: fastrand::Rng,
}

impl Schedule {
    /// Moves `due` on to the next token.
    fn advance(&mut self) {
        self.due += self.spread.apply(self.itl, &mut self.rng);
    }
}

/// A non-streaming request: wait for the last token, then answer with the whole completion.
async fn complete(mut plan: Plan, mut guard: ChatGuard) -> Response {
    let last = plan.strike_at().unwrap_or(plan.tokens - 1);
    for _ in 0..last {
        plan.schedule.advance();
    }
    sleep_until(plan.schedule.due).await;
    match plan.fault {
        Some(Fault::Reset) => {
            guard.abort();
            return reset_body().into_response();
        }
        Some(Fault::Stall) => std::future::pending::<()>().await,
        _ => {}
    }
    guard.finish();
    let completion = ChatCompletion {
        id: plan.id.clone(),
        object: "chat.completion",
        created: plan.created,
        model: plan.request.model.clone(),
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: crate::openai::text(plan.tokens),
                refusal: None,
            },
            logprobs: None,
            finish_reason: plan.finish,
        }],
        usage: plan.usage(plan.tokens),
    };
    (plan.headers(), Json(completion)).into_response()
}

/// A streaming request: an SSE body paced by the schedule.
fn stream(plan: Plan, guard: ChatGuard) -> Response {
    let headers = plan.headers();
    let events = Events {
        plan,
        guard,
        next: Step::Role,
    };
    let body = Body::from_stream(futures_util::stream::unfold(events, Events::next));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        headers,
        body,
    )
        .into_response()
}

/// The SSE body's state: what comes next, and the guard that counts how the stream ends.
#[derive(Debug)]
struct Events {
    plan: Plan,
    guard: ChatGuard,
    next: Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `delta: {role: "assistant", content: ""}`, at TTFT.
    Role,
    /// `delta: {content: token k}`, when token k is due.
    Token(u32),
    /// `delta: {}` with `finish_reason`.
    Finish,
    /// `choices: []` with `usage` (only with `stream_options.include_usage`).
    Usage,
    /// `data: [DONE]`.
    Done,
    End,
}

impl Events {
    async fn next(mut self) -> Option<(io::Result<Bytes>, Self)> {
        let event = match self.next {
            Step::Role => {
                sleep_until(self.plan.schedule.due).await;
                self.next = Step::Token(0);
                let delta = Delta {
                    role: Some("assistant"),
                    content: Some(""),
                };
                self.chunk(delta, None)
            }
            Step::Token(k) => {
                if k > 0 {
                    self.plan.schedule.advance();
                    sleep_until(self.plan.schedule.due).await;
                }
                if self.plan.strike_at() == Some(k) {
                    self.next = Step::End;
                    if self.plan.fault == Some(Fault::Reset) {
                        // Chunks hyper has buffered but not flushed are discarded with the
                        // connection when the body fails. When the runtime ran late, several due
                        // tokens and this error come in one poll of the body; pending once lets
                        // hyper flush them first, so the client always gets its tokens.
                        tokio::task::yield_now().await;
                        self.guard.abort();
                        return Some((Err(reset_error()), self));
                    }
                    // Stall: hold the connection open, silent, until the client hangs up.
                    std::future::pending::<()>().await;
                }
                self.next = if k + 1 < self.plan.tokens {
                    Step::Token(k + 1)
                } else {
                    Step::Finish
                };
                let token = crate::openai::token(k);
                let delta = Delta {
                    role: None,
                    content: Some(&token),
                };
                self.chunk(delta, None)
            }
            Step::Finish => {
                self.next = if self.plan.request.include_usage {
                    Step::Usage
                } else {
                    Step::Done
                };
                self.chunk(Delta::default(), Some(self.plan.finish))
            }
            Step::Usage => {
                self.next = Step::Done;
                self.event(Vec::new(), Some(self.plan.usage(self.plan.tokens)))
            }
            Step::Done => {
                self.next = Step::End;
                self.guard.finish();
                Ok(Bytes::from_static(b"data: [DONE]\n\n"))
            }
            Step::End => return None,
        };
        self.guard.progress();
        Some((event, self))
    }

    fn chunk(&self, delta: Delta<'_>, finish_reason: Option<FinishReason>) -> io::Result<Bytes> {
        let choice = ChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        };
        self.event(vec![choice], None)
    }

    /// One `data: {chunk}\n\n` event. `usage` is `null` unless this is the usage chunk, and
    /// absent unless the client asked for usage.
    fn event(&self, choices: Vec<ChunkChoice<'_>>, usage: Option<Usage>) -> io::Result<Bytes> {
        let chunk = ChatCompletionChunk {
            id: &self.plan.id,
            object: "chat.completion.chunk",
            created: self.plan.created,
            model: &self.plan.request.model,
            choices,
            usage: self.plan.request.include_usage.then_some(usage),
        };
        let mut bytes = b"data: ".to_vec();
        serde_json::to_writer(&mut bytes, &chunk).map_err(io::Error::other)?;
        bytes.extend_from_slice(b"\n\n");
        Ok(Bytes::from(bytes))
    }
}

fn reset_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "mock-llm: injected reset fault",
    )
}

/// A body whose first poll fails: hyper aborts the connection before writing the response head.
fn reset_body() -> Body {
    Body::from_stream(futures_util::stream::once(async {
        Err::<Bytes, _>(reset_error())
    }))
}

fn body_error(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            format!("The request body is larger than the limit of {MAX_BODY_BYTES} bytes."),
        )
        .with_code("request_too_large")
    } else {
        ApiError::new(status, rejection.body_text())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
