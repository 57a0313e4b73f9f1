//! `GET /v1/chat/ws`, driven by a real WebSocket client against real servers:
//!
//! - a chat streams one `token` frame per token, then `done` with the finish reason and usage;
//!   the tokens put together are the mock's completion; a second chat follows on the same socket;
//! - bad input (not JSON, no `messages`, an unknown model, a frame sent mid-chat, the upstream's
//!   own 429) is one `error` frame in OpenAI's shape, and the connection stays usable;
//! - past `--ws-max-connections` a socket is closed with 1013 and a reason naming the flag, and
//!   `gateway_ws_rejected_total` counts it;
//! - a client that leaves mid-stream (TCP dropped, or a Close frame) cancels the upstream (the
//!   mock's `chat.cancelled`) and frees its slot at once: the next socket is accepted;
//! - an idle socket is pinged every `--sse-keepalive-secs`;
//! - a frame over `--max-body-bytes` ends the connection;
//! - a drain closes an idle socket with 1001 once its grace is over, a busy one after its chat,
//!   and a chat still streaming at the drain deadline with 1001 too.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use support::{Mock, chat_body, client, gateway, gateway_with_file, metric};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `/v1/chat/ws` with extra headers on the upgrade request (the mock's pacing knobs).
async fn connect(base: &str, headers: &[(&'static str, &str)]) -> Ws {
    let url = format!("{}/v1/chat/ws", base.replacen("http://", "ws://", 1));
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let (ws, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("upgraded within 10 s")
    .expect("upgrade");
    assert_eq!(response.status(), 101);
    ws
}

/// The next message that is not a ping or pong, within 20 s.
async fn next_message(ws: &mut Ws) -> Message {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("a frame within 20 s")
            .expect("the socket is open")
            .expect("a valid frame");
        if !matches!(message, Message::Ping(_) | Message::Pong(_)) {
            return message;
        }
    }
}

/// The next text frame, as JSON.
async fn next_frame(ws: &mut Ws) -> Value {
    match next_message(ws).await {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// `message` is Close 1001 (Going Away) with a reason containing `reason`.
fn assert_going_away(message: Message, reason: &str) {
    match message {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Away);
            assert!(frame.reason.contains(reason), "{}", frame.reason);
        }
        other => panic!("expected Close 1001, got {other:?}"),
    }
}

/// Drops an embedded gateway off the test's runtime (the drop waits for its drain), bounded.
async fn stopped_within(gw: gateway::embed::Running, limit: Duration) {
    tokio::time::timeout(limit, tokio::task::spawn_blocking(move || drop(gw)))
        .await
        .expect("the drain ends once the socket is closed")
        .unwrap();
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
}

/// Sends one chat and reads it to its end: the tokens put together, and the last frame.
async fn chat(ws: &mut Ws, body: &Value) -> (String, Value) {
    send(ws, &body.to_string()).await;
    let mut text = String::new();
    let last = read_chat(ws, &mut text).await;
    (text, last)
}

/// Reads a chat's frames to its end: its tokens appended to `text`, and the last frame.
async fn read_chat(ws: &mut Ws, text: &mut String) -> Value {
    loop {
        let frame = next_frame(ws).await;
        match frame["type"].as_str() {
            Some("token") => text.push_str(frame["content"].as_str().unwrap()),
            _ => return frame,
        }
    }
}

/// `POST /admin/drain` on `gw`'s admin plane (open on loopback): 202.
async fn start_drain(gw: &gateway::embed::Running) {
    let response = client()
        .post(format!("{}/admin/drain", gw.admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

/// The completion the mock gives `body` when asked directly, without the gateway.
async fn mock_content(mock: &Mock, body: &Value) -> String {
    let answer: Value = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_chat_streams_tokens_then_done_and_another_follows() {
    let mock = Mock::fast();
    let expected = mock_content(&mock, &chat_body(false)).await;
    // The gateway forces `stream: true`, so `stream_options` is valid even with `stream: false`.
    let mut body = chat_body(false);
    body["stream_options"] = json!({"include_usage": true});
    for mode in support::MODES {
        let gw = gateway(mode, &mock.url(), &[]);
        let mut ws = connect(&gw.url(), &[]).await;
        for round in 1..=2 {
            let (text, done) = chat(&mut ws, &body).await;
            assert_eq!(done["type"], "done", "{mode} chat {round}: {done}");
            assert_eq!(done["finish_reason"], "stop", "{mode}: {done}");
            assert_eq!(done["usage"]["completion_tokens"], 4, "{mode}: {done}");
            assert_eq!(text, expected, "{mode} chat {round}");
        }
        // Without `include_usage` the upstream sends none, and `done` has none.
        let (_, done) = chat(&mut ws, &chat_body(false)).await;
        assert!(done.get("usage").is_none(), "{mode}: {done}");
        assert_eq!(
            metric(&gw.url(), "gateway_ws_connections").await,
            1.0,
            "{mode}"
        );
    }
}

#[tokio::test]
async fn bad_input_is_an_error_frame_and_the_connection_stays_open() {
    let mock = Mock::fast();
    let toml = format!(
        "[[providers]]\nname = \"only\"\nbase-url = \"{}\"\nmodels = [\"gpt-4o\"]\n",
        mock.url()
    );
    let gw = gateway_with_file("fixed", &toml, &[]);
    let mut ws = connect(&gw.url(), &[]).await;

    send(&mut ws, "this is not JSON").await;
    let frame = next_frame(&mut ws).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["status"], 400, "{frame}");
    assert_eq!(frame["error"]["code"], "invalid_json", "{frame}");
    assert_eq!(frame["error"]["type"], "invalid_request_error", "{frame}");
    assert!(frame["error"]["message"].is_string(), "{frame}");

    send(&mut ws, r#"{"model":"gpt-4o"}"#).await;
    let frame = next_frame(&mut ws).await;
    assert_eq!(
        frame["error"]["code"], "missing_required_parameter",
        "{frame}"
    );
    assert_eq!(frame["error"]["param"], "messages", "{frame}");

    let mut unknown = chat_body(false);
    unknown["model"] = json!("no-such-model");
    let (_, frame) = chat(&mut ws, &unknown).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["status"], 404, "{frame}");
    assert_eq!(frame["error"]["code"], "model_not_found", "{frame}");

    let (text, done) = chat(&mut ws, &chat_body(false)).await;
    assert_eq!(
        done["type"], "done",
        "still usable after three errors: {done}"
    );
    assert!(!text.is_empty());

    // One chat at a time: a frame sent mid-chat is refused, and the chat goes on to its end.
    let mut paced = connect(
        &gw.url(),
        &[("x-mock-itl-ms", "50"), ("x-mock-tokens", "10")],
    )
    .await;
    send(&mut paced, &chat_body(false).to_string()).await;
    assert_eq!(next_frame(&mut paced).await["type"], "token");
    send(&mut paced, &chat_body(false).to_string()).await;
    let mut frames = Vec::new();
    loop {
        let frame = next_frame(&mut paced).await;
        let kind = frame["type"].as_str().unwrap().to_owned();
        frames.push(frame);
        if kind == "done" {
            break;
        }
    }
    let busy: Vec<&Value> = frames.iter().filter(|f| f["type"] == "error").collect();
    assert_eq!(busy.len(), 1, "{frames:?}");
    assert_eq!(busy[0]["error"]["code"], "chat_in_progress", "{frames:?}");
    let tokens = frames.iter().filter(|f| f["type"] == "token").count();
    assert_eq!(tokens, 9, "the first chat's other 9 tokens: {frames:?}");

    // The upstream's own refusal: its status and its error object, as the HTTP route relays them.
    let mut refused = connect(&gw.url(), &[("x-mock-fault", "429")]).await;
    let (_, frame) = chat(&mut refused, &chat_body(false)).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["status"], 429, "{frame}");
    assert!(frame["error"]["message"].is_string(), "{frame}");
}

#[tokio::test]
async fn past_the_cap_a_socket_is_closed_with_1013() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &["--ws-max-connections", "1"]);
    let base = gw.url();
    let mut first = connect(&base, &[]).await;
    let mut second = connect(&base, &[]).await;
    match next_message(&mut second).await {
        Message::Close(Some(close)) => {
            assert_eq!(close.code, CloseCode::Again, "{close:?}");
            assert_eq!(u16::from(close.code), 1013);
            assert_eq!(
                close.reason.as_str(),
                "at capacity: 1 live connections (--ws-max-connections)"
            );
        }
        other => panic!("expected Close 1013, got {other:?}"),
    }
    assert_eq!(metric(&base, "gateway_ws_rejected_total").await, 1.0);
    assert_eq!(metric(&base, "gateway_ws_connections").await, 1.0);
    // The first socket is not disturbed by the refusal.
    let (_, done) = chat(&mut first, &chat_body(false)).await;
    assert_eq!(done["type"], "done", "{done}");
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_and_frees_its_slot() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &["--ws-max-connections", "1"]);
    let base = gw.url();
    // Tokens 3 s apart: a gateway that noticed the client only when a send failed would cancel
    // at the next token, seconds later; watching the socket, it cancels within milliseconds.
    let slow = [("x-mock-itl-ms", "3000"), ("x-mock-tokens", "10")];
    let at_once = Duration::from_millis(1500);

    // Leaves by dropping the TCP connection, without a Close frame.
    let mut ws = connect(&base, &slow).await;
    send(&mut ws, &chat_body(false).to_string()).await;
    assert_eq!(next_frame(&mut ws).await["type"], "token");
    let left = Instant::now();
    drop(ws);
    let seen = mock
        .wait_stats("mock chat.cancelled >= 1", Duration::from_secs(10), |s| {
            s.chat.cancelled >= 1
        })
        .await;
    assert!(seen - left < at_once, "cancelled after {:?}", seen - left);
    support::wait_for("the slot is free", at_once, || async {
        (metric(&base, "gateway_ws_connections").await == 0.0).then_some(())
    })
    .await;

    // Leaves with a Close frame: the slot came back, so this socket is accepted.
    let mut ws = connect(&base, &slow).await;
    assert_eq!(metric(&base, "gateway_ws_connections").await, 1.0);
    send(&mut ws, &chat_body(false).to_string()).await;
    assert_eq!(next_frame(&mut ws).await["type"], "token");
    let left = Instant::now();
    ws.close(None).await.unwrap();
    let seen = mock
        .wait_stats("mock chat.cancelled >= 2", Duration::from_secs(10), |s| {
            s.chat.cancelled >= 2
        })
        .await;
    assert!(seen - left < at_once, "cancelled after {:?}", seen - left);
    support::wait_for("the slot is free again", at_once, || async {
        (metric(&base, "gateway_ws_connections").await == 0.0).then_some(())
    })
    .await;

    let mut ws = connect(&base, &[]).await;
    let (_, done) = chat(&mut ws, &chat_body(false)).await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(metric(&base, "gateway_ws_rejected_total").await, 0.0);
    assert_eq!(mock.stats().await.chat.completed, 1);
}

#[tokio::test]
async fn an_idle_socket_is_pinged() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &["--sse-keepalive-secs", "1"]);
    let mut ws = connect(&gw.url(), &[]).await;
    let ping = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a frame within 5 s")
        .expect("open")
        .expect("valid");
    assert!(matches!(ping, Message::Ping(_)), "{ping:?}");
}

/// On shutdown an idle socket is told to go elsewhere (Close 1001) instead of being cut, and
/// the drain waits for it.
#[tokio::test]
async fn shutdown_closes_an_idle_socket_with_1001() {
    let mock = Mock::fast();
    let gw = support::draining_gateway(&mock.url());
    let mut ws = connect(&gw.url(), &[]).await;
    let (text, _) = chat(&mut ws, &chat_body(true)).await;
    assert!(!text.is_empty(), "the socket works before the shutdown");
    // Dropping the embedded gateway starts its drain and waits for it: off the test's runtime.
    let stopping = tokio::spawn(stopped_within(gw, Duration::from_secs(10)));
    assert_going_away(next_message(&mut ws).await, "shutting down");
    drop(ws);
    stopping.await.unwrap();
}

/// A chat still streaming at the drain deadline is cut, and its socket told to go elsewhere
/// with Close 1001, not dropped.
#[tokio::test]
async fn the_drain_deadline_closes_a_busy_socket_with_1001() {
    let mock = Mock::fast();
    let gw = gateway(
        "fixed",
        &mock.url(),
        &["--admin-listen", "127.0.0.1:0", "--drain-secs", "1"],
    );
    // 100 tokens 100 ms apart: 10 s, far beyond the 1 s drain.
    let slow = [("x-mock-itl-ms", "100"), ("x-mock-tokens", "100")];
    let mut ws = connect(&gw.url(), &slow).await;
    send(&mut ws, &chat_body(true).to_string()).await;
    assert_eq!(next_frame(&mut ws).await["type"], "token");
    let drained = Instant::now();
    start_drain(&gw).await;
    let close = loop {
        match next_message(&mut ws).await {
            Message::Text(_) => {}
            other => break other,
        }
    };
    assert_going_away(close, "drain deadline");
    let waited = drained.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed at the 1 s deadline: {waited:?}"
    );
}

/// A frame larger than `--max-body-bytes` ends the connection (it is not an error frame on a
/// socket that stays open): the client's next read finds the socket closed, the slot is free
/// and nothing went upstream.
#[tokio::test]
async fn a_frame_over_the_size_limit_ends_the_connection() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &["--max-body-bytes", "1024"]);
    let base = gw.url();
    let mut ws = connect(&base, &[]).await;
    let mut body = chat_body(true);
    body["messages"][0]["content"] = json!("x".repeat(4096));
    // The send itself may already fail if the gateway closed first.
    let _ = ws.send(Message::text(body.to_string())).await;
    let next = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the socket ends within 5 s");
    match next {
        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => {}
        Some(Ok(other)) => panic!("the connection should have ended, got {other:?}"),
    }
    support::wait_for("the slot is free", Duration::from_secs(5), || async {
        (metric(&base, "gateway_ws_connections").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(mock.stats().await.chat.requests, 0, "nothing went upstream");
}

/// In a drain, a socket busy with a chat when the grace ends finishes that chat, then gets
/// Close 1001 with the reason to reconnect (an idle one gets it at once: above).
#[tokio::test]
async fn a_busy_socket_gets_1001_after_its_chat_in_a_drain() {
    let mock = Mock::fast();
    let gw = gateway(
        "fixed",
        &mock.url(),
        &[
            "--admin-listen",
            "127.0.0.1:0",
            "--drain-grace-secs",
            "0",
            "--drain-secs",
            "10",
        ],
    );
    // 10 tokens 150 ms apart: the chat is still streaming well after the drain begins.
    let paced = [("x-mock-itl-ms", "150"), ("x-mock-tokens", "10")];
    let mut ws = connect(&gw.url(), &paced).await;
    send(&mut ws, &chat_body(true).to_string()).await;
    let mut text = String::new();
    let first = next_frame(&mut ws).await;
    assert_eq!(first["type"], "token", "{first}");
    text.push_str(first["content"].as_str().unwrap());
    start_drain(&gw).await;
    // The chat goes on to its end ...
    let done = read_chat(&mut ws, &mut text).await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(text, mock_llm::openai::text(10), "the whole chat");
    // ... and only then the socket is closed, with 1001 and the reason to reconnect.
    assert_going_away(next_message(&mut ws).await, "shutting down");
    drop(ws);
    stopped_within(gw, Duration::from_secs(15)).await;
}

/// An upstream stream that breaks off mid-chat is one error frame, status 502, after the
/// tokens that made it through: the client knows the chat is incomplete.
#[tokio::test]
async fn a_stream_the_upstream_breaks_off_is_a_502_error_frame() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &[]);
    let cut = [("x-mock-fault", "reset"), ("x-mock-tokens", "10")];
    let mut ws = connect(&gw.url(), &cut).await;
    let (text, frame) = chat(&mut ws, &chat_body(false)).await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["status"], 502, "{frame}");
    assert_eq!(frame["error"]["type"], "upstream_error", "{frame}");
    assert_eq!(text, mock_llm::openai::text(3), "the tokens before the cut");
}
