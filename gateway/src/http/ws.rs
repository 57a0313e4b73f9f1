//! `GET /v1/chat/ws`: chat completions over a WebSocket, one frame per token.
//!
//! Why a WebSocket at all, when SSE already streams: a browser app or a voice client keeps one
//! connection open for a whole conversation and sends the next prompt on it without a new
//! request, and it reads small JSON frames instead of parsing SSE itself. The lesson is what a
//! long-lived socket costs a gateway, and how to bound it:
//!
//! - **Its own cap.** A socket lives for minutes, idle most of the time. The inbound limit
//!   ([`crate::policy::limits::admit`]) holds its place only until the `101 Switching Protocols`
//!   response's (empty) body ends, so it does not bound WebSockets at all. They are bounded by
//!   `--ws-max-connections` (a [`crate::admission::Admission`] without a queue), counted in `gateway_ws_connections`. Past it the
//!   upgrade completes and the socket is closed at once with code **1013** (Try Again Later)
//!   and a reason naming the flag, counted in `gateway_ws_rejected_total`: an HTTP error before
//!   the upgrade is shown by browsers only as a generic failure, a close code is readable.
//! - **A client that leaves frees everything at once.** While a chat streams, the gateway waits on
//!   the socket and the upstream together (`tokio::select!`). A Close frame, a dropped TCP
//!   connection or a failed send ends the chat: the upstream stream is dropped, which in `fixed`
//!   mode closes the upstream connection (the provider stops generating, and billing), and the
//!   socket's slot is given back.
//! - **Idle sockets are pinged** every `--sse-keepalive-secs` (unless 0) when nothing else was
//!   sent, so proxies with idle timeouts do not cut a conversation between two prompts.
//! - **Shutdown says so.** axum's graceful shutdown does not see upgraded connections. Once a
//!   drain's grace is over (`Phase::ShuttingDown`, see [`crate::lifecycle`]) an idle socket gets
//!   Close **1001** (Going Away) at once, a busy one after its chat, and the drain waits for
//!   them (see [`crate::http::shutdown`]); a chat still streaming at the drain deadline is cut
//!   and its socket closed with 1001 too. The client reconnects elsewhere instead of seeing an
//!   abnormal close.
//!
//! # Protocol
//!
//! The upgrade request carries the API key like any `/v1/*` request (`Authorization: Bearer` or
//! `X-API-Key`); its `x-mock-*`, `Accept` and `X-Request-Id` headers are forwarded upstream with
//! every chat of the connection. Then, on the socket:
//!
//! - the client sends a **text** frame holding an OpenAI chat-completions request body: a JSON
//!   object with `model` and `messages`; every other field is forwarded as is, and `"stream"` is
//!   forced to `true`. At most `--max-body-bytes`, like the HTTP route; a larger frame ends the
//!   connection (the WebSocket layer refuses to read it).
//! - the gateway answers with one text frame per token, `{"type":"token","content":"..."}`, then
//!   `{"type":"done","finish_reason":"stop"}`, with `"usage":{...}` too when the upstream sent
//!   usage (ask for it with `"stream_options":{"include_usage":true}`).
//! - anything wrong (not JSON, no `model` or `messages`, an unknown model, a busy provider, the
//!   upstream's own error status with its body, a stream broken off) is one frame
//!   `{"type":"error","status":N,"error":{"message","type","param","code"}}`: OpenAI's error
//!   shape, and the HTTP status the same failure has on `POST /v1/chat/completions`. The
//!   connection stays open for the next request.
//! - one chat at a time: a frame sent while a chat streams is answered with an error frame,
//!   code `chat_in_progress`, and the running chat goes on. Chats follow one another on one
//!   connection as often as the client likes.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use eventsource_stream::Eventsource as _;
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

use crate::admission::Admission;
use crate::config::Config;
use crate::error::ApiError;
use crate::lifecycle::{Lifecycle, Phase};
use crate::policy::resilience::{Plan, Resilience};
use crate::telemetry::log::Route;
use crate::telemetry::metrics::Metrics;
use crate::upstream::providers::Providers;
use crate::upstream::{UpstreamRequest, UpstreamResponse, forwarded_request_headers};

/// What the WebSocket route needs: its own cap and drain signal, and the gateway's providers
/// and retries for each chat.
#[derive(Debug)]
pub struct Sockets {
    /// `--ws-max-connections` live sockets, no queue.
    cap: Admission,
    /// From `ShuttingDown` on, idle sockets close with 1001, busy ones after their chat; at
    /// `Stopped` (the drain deadline) a chat still streaming is cut (see
    /// [`crate::http::shutdown`]).
    lifecycle: Lifecycle,
    /// `--sse-keepalive-secs`, `None` when 0: the idle period before a ping.
    ping: Option<Duration>,
    /// `--max-body-bytes`: the largest frame read.
    max_frame_bytes: usize,
    providers: Arc<Providers>,
    resilience: Arc<Resilience>,
    metrics: Arc<Metrics>,
}

impl Sockets {
    pub fn new(
        config: &Config,
        providers: Arc<Providers>,
        resilience: Arc<Resilience>,
        metrics: Arc<Metrics>,
        lifecycle: Lifecycle,
    ) -> Self {
        Self {
            cap: Admission::new(config.ws_max_connections, 0, Duration::ZERO),
            lifecycle,
            ping: (config.sse_keepalive_secs > 0)
                .then(|| Duration::from_secs(config.sse_keepalive_secs)),
            max_frame_bytes: config.max_body_bytes,
            providers,
            resilience,
            metrics,
        }
    }

    /// Live sockets now.
    pub fn in_use(&self) -> usize {
        self.cap.in_use()
    }
}

/// The upgrade. The slot is taken here, before the `101`, so two sockets racing for the last
/// slot are decided in arrival order, and a socket counts as soon as its client sees it open.
pub async fn chat_ws(
    State(sockets): State<Arc<Sockets>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        // Not a WebSocket handshake (a plain GET, say): OpenAI's error shape, not axum's text.
        Err(rejection) => {
            return ApiError {
                status: rejection.status(),
                ..ApiError::bad_request(None, rejection.body_text())
            }
            .into_response();
        }
    };
    // Retries and hedging apply to each chat as on POST, set by the upgrade's headers.
    let plan = match sockets.resilience.plan(PATH, &headers) {
        Ok(plan) => plan,
        Err(error) => return error.into_response(),
    };
    // No queue: a socket past the cap is refused with 1013 at once, never kept waiting.
    let slot = sockets.cap.admit().await.ok();
    let mut forwarded = forwarded_request_headers(&headers);
    forwarded.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // axum runs the socket on a task of its own: it keeps the request's span (the gateway's
    // root span, with the mode) only if given it.
    let span = tracing::Span::current();
    upgrade
        .max_message_size(sockets.max_frame_bytes)
        .on_upgrade(move |socket| {
            async move {
                match slot {
                    Some(slot) => session(socket, &sockets, &forwarded, plan, slot).await,
                    None => refuse(socket, &sockets).await,
                }
            }
            .instrument(span)
        })
}

/// Past the cap: Close 1013 with a reason a person can act on, then wait briefly for the
/// client's Close reply, as the protocol asks, before dropping the connection.
async fn refuse(mut socket: WebSocket, sockets: &Sockets) {
    sockets.metrics.ws_rejected.inc();
    let reason = format!(
        "at capacity: {} live connections (--ws-max-connections)",
        sockets.cap.limit()
    );
    tracing::info!(
        path = PATH,
        outcome = "rejected",
        "websocket closed: {reason}"
    );
    close(&mut socket, close_code::AGAIN, reason).await;
}

/// Sends a Close frame, then waits briefly for the client's Close reply, as the protocol asks,
/// before the connection is dropped.
async fn close(socket: &mut WebSocket, code: u16, reason: String) {
    let close = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if socket.send(close).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
}

/// `GET /v1/chat/ws`, for the route table.
pub const ROUTE: Route = Route {
    method: Method::GET,
    path: "/v1/chat/ws",
};

/// The route, in logs and as `--hedge-routes` names it.
const PATH: &str = ROUTE.path;

/// The client left (Close frame, dropped TCP, failed send): nothing more to do.
#[derive(Debug)]
struct Gone;

/// One connection: chats one after another until the client leaves. `_slot` is given back when
/// this returns, i.e. the moment the client is gone.
async fn session(
    mut socket: WebSocket,
    sockets: &Sockets,
    headers: &HeaderMap,
    plan: Plan,
    _slot: OwnedSemaphorePermit,
) {
    let ping = sockets.ping;
    loop {
        // Between chats the socket waits for the client, and for the drain's grace to end (see
        // `shutdown`).
        let shutdown = sockets.lifecycle.reached(Phase::ShuttingDown);
        let text = match watch(&mut socket, shutdown, ping).await {
            Watched::Message(Message::Text(text)) => text,
            Watched::Message(_) => {
                let error = ApiError::bad_request(
                    None,
                    "send the chat request as a text frame holding JSON, not a binary frame",
                );
                if send(&mut socket, error_frame(&error)).await.is_err() {
                    return;
                }
                continue;
            }
            Watched::Idle => {
                if socket.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
                continue;
            }
            Watched::Done(()) => {
                let reason = "the gateway is shutting down; reconnect".to_owned();
                return close(&mut socket, close_code::AWAY, reason).await;
            }
            Watched::Gone => return,
        };
        // The drain deadline ends a chat still streaming: the chat (and its upstream stream)
        // is dropped, and the client told to reconnect.
        let deadline = sockets.lifecycle.reached(Phase::Stopped);
        tokio::select! {
            ended = chat(&mut socket, sockets, headers, plan, &text) => {
                if ended.is_err() {
                    return;
                }
            }
            () = deadline => {
                tracing::info!(path = PATH, outcome = "drain_cut", "chat ended at the drain deadline");
                let reason = "the gateway is shutting down (drain deadline); reconnect".to_owned();
                return close(&mut socket, close_code::AWAY, reason).await;
            }
        }
    }
}

/// One chat: the request, the upstream's stream as frames, then `done` or `error`. `Err` only
/// when the client left; the upstream request is dropped with this future.
async fn chat(
    socket: &mut WebSocket,
    sockets: &Sockets,
    headers: &HeaderMap,
    plan: Plan,
    text: &str,
) -> Result<(), Gone> {
    let mut log = ChatLog::new();
    let (provider, body) = match request_body(text)
        .and_then(|(model, body)| Ok((Arc::clone(sockets.providers.route(&model)?), body)))
    {
        Ok(routed) => routed,
        Err(error) => return log.refused(send(socket, error_frame(&error)).await),
    };
    let request = UpstreamRequest {
        method: Method::POST,
        url: provider.chat_url.clone(),
        headers: headers.clone(),
        body: Some(body),
    };
    let mut sent = pin!(async {
        let outcome = sockets.resilience.send(&provider, request, plan).await;
        outcome.result
    });
    let upstream = loop {
        match watch(socket, &mut sent, sockets.ping).await {
            Watched::Done(result) => break result,
            other => log.gone(busy(socket, other).await)?,
        }
    };
    let upstream = match upstream {
        Ok(upstream) if upstream.status.is_success() => upstream,
        Ok(upstream) => {
            let frame = upstream_error(upstream).await;
            return log.refused(send(socket, frame).await);
        }
        Err(error) => {
            let error = ApiError::from(error);
            return log.refused(send(socket, error_frame(&error)).await);
        }
    };
    let mut events = upstream.body.eventsource();
    let mut done = json!({"type": "done", "finish_reason": null});
    loop {
        let event = match watch(socket, events.next(), sockets.ping).await {
            Watched::Done(event) => event,
            other => {
                log.gone(busy(socket, other).await)?;
                continue;
            }
        };
        let data = match event {
            // A stream that ends without `[DONE]` ended cleanly all the same (reqwest reports a
            // cut connection as an error, below).
            None => break,
            Some(Ok(event)) if event.data == "[DONE]" => break,
            Some(Ok(event)) => event.data,
            Some(Err(e)) => {
                let error =
                    ApiError::bad_gateway(format!("the upstream broke off mid-stream: {e}"));
                return log.failed(send(socket, error_frame(&error)).await);
            }
        };
        match read_chunk(&data, &mut done) {
            Ok(Some(token)) => {
                log.tokens += 1;
                let frame = json!({"type": "token", "content": token});
                log.gone(send(socket, frame).await)?;
            }
            Ok(None) => {}
            Err(error) => return log.failed(send(socket, error_frame(&error)).await),
        }
    }
    log.completed(send(socket, done).await)
}

/// The client's frame as the upstream's body, checked by the same rules (and with the same
/// error codes) as `POST /v1/chat/completions`, with `"stream": true`. Returns the model too.
fn request_body(text: &str) -> Result<(String, Bytes), ApiError> {
    let model = crate::http::openai::validate(text.as_bytes())?;
    let mut fields: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        ApiError::bad_request(None, format!("the message is not valid JSON: {e}"))
            .with_code("invalid_json")
    })?;
    // Frames are the only way back: a non-streaming answer would arrive whole, at the end.
    fields.insert("stream".to_owned(), Value::Bool(true));
    let body = serde_json::to_vec(&fields)
        .map_err(|e| ApiError::internal(format!("cannot encode the request: {e}")))?;
    Ok((model, Bytes::from(body)))
}

/// One SSE chunk of a chat completion: its token, if any; its `finish_reason` and `usage`, when
/// present, are kept in `done`, the frame sent at the end.
fn read_chunk(data: &str, done: &mut Value) -> Result<Option<String>, ApiError> {
    let chunk: Value = serde_json::from_str(data).map_err(|e| {
        ApiError::bad_gateway(format!("the upstream sent an event that is not JSON: {e}"))
    })?;
    let choice = &chunk["choices"][0];
    if !choice["finish_reason"].is_null() {
        done["finish_reason"] = choice["finish_reason"].clone();
    }
    if chunk["usage"].is_object() {
        done["usage"] = chunk["usage"].clone();
    }
    Ok(choice["delta"]["content"]
        .as_str()
        .filter(|token| !token.is_empty())
        .map(str::to_owned))
}

/// The upstream refused (429, 400, 5xx): its status and its own error object, as the HTTP route
/// would have relayed them. Its body is small; 64 KiB of it at most are read.
async fn upstream_error(upstream: UpstreamResponse) -> Value {
    const LIMIT: usize = 64 * 1024;
    let status = upstream.status;
    let mut body = Vec::new();
    let mut chunks = upstream.body;
    while let Some(Ok(chunk)) = chunks.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= LIMIT {
            body.truncate(LIMIT);
            break;
        }
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut fields)) if fields.get("error").is_some_and(Value::is_object) => {
            let error = fields.remove("error").unwrap_or(Value::Null);
            json!({"type": "error", "status": status.as_u16(), "error": error})
        }
        _ => {
            let text = String::from_utf8_lossy(&body);
            error_frame(&ApiError {
                status,
                ..ApiError::bad_gateway(format!("the upstream answered {status}: {text}"))
            })
        }
    }
}

/// What happened first: the work finished, the client sent a frame, left, or nothing happened
/// for the keep-alive period.
enum Watched<T> {
    Done(T),
    Message(Message),
    Gone,
    Idle,
}

/// Waits for `work` and, at the same time, for the client. Both sides are cancel-safe: a frame
/// or a chunk not yet read when the other side wins stays buffered for the next call.
async fn watch<T>(
    socket: &mut WebSocket,
    work: impl Future<Output = T>,
    ping: Option<Duration>,
) -> Watched<T> {
    let mut work = pin!(work);
    let idle = async {
        match ping {
            Some(every) => tokio::time::sleep(every).await,
            None => std::future::pending().await,
        }
    };
    let mut idle = pin!(idle);
    loop {
        tokio::select! {
            output = &mut work => return Watched::Done(output),
            () = &mut idle => return Watched::Idle,
            incoming = socket.recv() => match incoming {
                // tungstenite answers pings itself; a pong is the answer to ours.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => return Watched::Gone,
                Some(Ok(message)) => return Watched::Message(message),
            },
        }
    }
}

/// During a chat: a ping when idle, and an error frame for a frame sent before the chat ended.
async fn busy<T>(socket: &mut WebSocket, watched: Watched<T>) -> Result<(), Gone> {
    match watched {
        Watched::Idle => socket
            .send(Message::Ping(Bytes::new()))
            .await
            .map_err(|_| Gone),
        Watched::Message(_) => {
            let error = ApiError::bad_request(
                None,
                "a chat is still streaming on this connection: wait for its `done` or `error` \
                 frame, or open another connection",
            )
            .with_code("chat_in_progress");
            send(socket, error_frame(&error)).await
        }
        Watched::Gone => Err(Gone),
        Watched::Done(_) => Ok(()),
    }
}

fn error_frame(error: &ApiError) -> Value {
    json!({"type": "error", "status": error.status.as_u16(), "error": {
        "message": error.message,
        "type": error.kind,
        "param": error.param,
        "code": error.code,
    }})
}

async fn send(socket: &mut WebSocket, frame: Value) -> Result<(), Gone> {
    socket
        .send(Message::Text(Utf8Bytes::from(frame.to_string())))
        .await
        .map_err(|_| Gone)
}

/// One log line per chat, like [`crate::telemetry::log::LoggedStream`]'s per stream: never the prompt.
struct ChatLog {
    received: Instant,
    tokens: u64,
}

impl ChatLog {
    fn new() -> Self {
        Self {
            received: Instant::now(),
            tokens: 0,
        }
    }

    fn end(&self, outcome: &str) {
        tracing::info!(
            path = PATH,
            outcome,
            tokens = self.tokens,
            duration_ms = self.received.elapsed().as_millis() as u64,
            "chat ended"
        );
    }

    fn gone(&self, sent: Result<(), Gone>) -> Result<(), Gone> {
        if sent.is_err() {
            self.end("client_gone");
        }
        sent
    }

    fn refused(&self, sent: Result<(), Gone>) -> Result<(), Gone> {
        self.end("rejected");
        sent
    }

    fn failed(&self, sent: Result<(), Gone>) -> Result<(), Gone> {
        self.end("upstream_failed");
        sent
    }

    fn completed(&self, sent: Result<(), Gone>) -> Result<(), Gone> {
        self.gone(sent)?;
        self.end("completed");
        Ok(())
    }
}

impl std::fmt::Debug for ChatLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatLog")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_checked_and_forced_to_stream() {
        let (model, body) =
            request_body(r#"{"model":"m","messages":[],"stream":false,"temperature":0.5}"#)
                .expect("valid");
        assert_eq!(model, "m");
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["stream"], true);
        assert_eq!(body["temperature"], 0.5, "other fields are forwarded");
        let code = |text: &str| request_body(text).expect_err(text).code;
        assert_eq!(code("{"), Some("invalid_json"));
        assert_eq!(code("[]"), Some("invalid_type"));
        assert_eq!(
            code(r#"{"messages":[]}"#),
            Some("missing_required_parameter")
        );
        assert_eq!(
            code(r#"{"model":"m","messages":"hi"}"#),
            Some("invalid_type")
        );
    }

    #[test]
    fn chunks_give_tokens_finish_reason_and_usage() {
        let mut done = json!({"type": "done", "finish_reason": null});
        let token = r#"{"choices":[{"index":0,"delta":{"content":"Hi "},"finish_reason":null}]}"#;
        assert_eq!(
            read_chunk(token, &mut done).expect("ok").as_deref(),
            Some("Hi ")
        );
        let role = r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#;
        assert_eq!(read_chunk(role, &mut done).expect("ok"), None);
        let finish = r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#;
        assert_eq!(read_chunk(finish, &mut done).expect("ok"), None);
        let usage = r#"{"choices":[],"usage":{"total_tokens":3}}"#;
        assert_eq!(read_chunk(usage, &mut done).expect("ok"), None);
        assert_eq!(done["finish_reason"], "stop");
        assert_eq!(done["usage"]["total_tokens"], 3);
        assert!(read_chunk("nope", &mut done).is_err());
    }

    #[test]
    fn error_frames_carry_openai_shape_and_status() {
        let frame = error_frame(&ApiError::bad_request(Some("model"), "x").with_code("c"));
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["error"]["param"], "model");
        assert_eq!(frame["error"]["code"], "c");
        assert_eq!(frame["status"], 400);
    }
}
