//! `POST /v1/chat/completions` over real HTTP when something goes wrong: each injected fault as a
//! client receives it, bad input refused with an OpenAI-shaped error naming the field, and a
//! client that leaves, as the mock counts it. (The happy path is in `chat.rs`.)
//!
//! Each test starts its own mock on `127.0.0.1:0`, on its own thread and runtime, so its timers
//! keep their pace however busy the test's runtime is. Timing is asserted as a lower bound
//! (timers never fire early) or against a wide margin, never a tight threshold.

mod support;

use std::time::{Duration, Instant};

use clap::Parser as _;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Chat, assert_openai_error, contents, read_events, request, with_timeout};
use tokio::io::AsyncWriteExt as _;

// ---------------------------------------------------------------------------------------------
// Faults.

/// Status and TTFT header of `count` sequential requests: a server's fault-and-delay sequence.
async fn sequence(mock: &Chat, count: usize) -> Vec<(u16, Option<String>)> {
    let mut seen = Vec::new();
    for _ in 0..count {
        let response = mock.chat(&request(false), &[]).await;
        let ttft = response
            .headers()
            .get("x-mock-ttft-ms")
            .map(|v| v.to_str().expect("ascii").to_owned());
        seen.push((response.status().as_u16(), ttft));
        response.bytes().await.expect("body");
    }
    seen
}

#[tokio::test]
async fn same_seed_gives_the_same_faults_and_delays() {
    let flags = |seed: &'static str| {
        [
            "--ttft-ms",
            "10",
            "--itl-ms",
            "0",
            "--tokens",
            "1",
            "--jitter",
            "0.5",
            "--fault",
            "500",
            "--fault-rate",
            "0.5",
            "--seed",
            seed,
        ]
    };
    let a = sequence(&Chat::start(&flags("42")), 24).await;
    let b = sequence(&Chat::start(&flags("42")), 24).await;
    let c = sequence(&Chat::start(&flags("43")), 24).await;

    assert_eq!(a, b, "same seed, same sequence");
    assert_ne!(a, c, "another seed, another sequence");
    let faults = a.iter().filter(|(status, _)| *status == 500).count();
    assert!(
        (3..=21).contains(&faults),
        "rate 0.5 gave {faults} faults of 24: {a:?}"
    );
}

#[tokio::test]
async fn fault_rate_zero_never_faults_and_header_can_force_or_suppress() {
    let mock = Chat::fast(&["--fault", "503", "--fault-rate", "0"]);
    assert!(
        sequence(&mock, 10)
            .await
            .iter()
            .all(|(status, _)| *status == 200)
    );
    let (status, _) = mock
        .chat_json(&request(false), &[("x-mock-fault", "503")])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let always = Chat::fast(&["--fault", "503"]);
    let (status, _) = always.chat_json(&request(false), &[]).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "--fault alone means every request"
    );
    let (status, _) = always
        .chat_json(&request(false), &[("x-mock-fault", "none")])
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn fault_429_has_retry_after_and_a_rate_limit_error() {
    let mock = Chat::fast(&[]);
    let response = mock.chat(&request(true), &[("x-mock-fault", "429")]).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["retry-after-ms"], "1000");
    assert_eq!(response.headers()["x-mock-fault"], "429");
    let body: Value = response.json().await.expect("json");
    assert_openai_error(&body, None);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let chat = mock.stats().await.chat;
    assert_eq!(chat.faults.rate_limited, 1);
    assert_eq!(chat.started, 0, "a 429 generates nothing");
}

#[tokio::test]
async fn fault_500_is_a_server_error() {
    let mock = Chat::fast(&[]);
    let (status, body) = mock
        .chat_json(&request(false), &[("x-mock-fault", "500")])
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_openai_error(&body, None);
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(mock.stats().await.chat.faults.internal, 1);
}

#[tokio::test]
async fn fault_503_is_overloaded() {
    let mock = Chat::fast(&[]);
    let (status, body) = mock
        .chat_json(&request(true), &[("x-mock-fault", "503")])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_openai_error(&body, None);
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(mock.stats().await.chat.faults.overloaded, 1);
}

/// `--fault slow --fault-first 1`: the first request's first token comes 10 times later, the
/// next ones on time: the one slow replica a hedged request is for. The delay itself is timed
/// (the header only says what the mock meant to do): at least 1 s for the slow one (timers
/// never fire early), and well under it for the next (100 ms asked, 800 ms allowed).
#[tokio::test]
async fn fault_slow_first_delays_only_the_first_request() {
    let mock = Chat::start(&[
        "--ttft-ms",
        "100",
        "--itl-ms",
        "1",
        "--tokens",
        "3",
        "--fault",
        "slow",
        "--fault-first",
        "1",
    ]);
    let first_token = |events: &[support::Event]| {
        events
            .iter()
            .find(|e| !contents(std::slice::from_ref(e)).is_empty())
            .map(|e| e.at)
            .expect("a token")
    };
    let sent = Instant::now();
    let first = mock.chat(&request(true), &[]).await;
    assert_eq!(first.headers()["x-mock-fault"], "slow");
    assert_eq!(first.headers()["x-mock-ttft-ms"], "1000");
    let (events, error) = with_timeout("the slow stream", read_events(first, sent, 100)).await;
    assert!(error.is_none(), "{error:?}");
    let slow = first_token(&events);
    assert!(
        slow >= Duration::from_millis(1000),
        "slow first token at {slow:?}"
    );

    let sent = Instant::now();
    let second = mock.chat(&request(true), &[]).await;
    assert!(second.headers().get("x-mock-fault").is_none());
    assert_eq!(second.headers()["x-mock-ttft-ms"], "100");
    let (events, error) = with_timeout("the next stream", read_events(second, sent, 100)).await;
    assert!(error.is_none(), "{error:?}");
    let on_time = first_token(&events);
    assert!(
        on_time >= Duration::from_millis(100) && on_time < Duration::from_millis(800),
        "the next request's first token at {on_time:?}"
    );
    assert_eq!(mock.stats().await.chat.faults.slow, 1);
}

#[tokio::test]
async fn fault_reset_cuts_a_stream_after_a_few_chunks() {
    let mock = Chat::fast(&["--tokens", "10"]);
    let sent = Instant::now();
    let response = mock
        .chat(&request(true), &[("x-mock-fault", "reset")])
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a reset strikes mid-body"
    );
    assert_eq!(response.headers()["x-mock-fault"], "reset");
    let (events, error) = with_timeout("stream", read_events(response, sent, 100)).await;

    assert!(
        error.is_some(),
        "the body must end in an error, got {events:#?}"
    );
    assert_eq!(events.len(), 4, "role + 3 tokens: {events:#?}");
    assert_eq!(contents(&events), ["This ", "is ", "a "]);
    assert!(events.iter().all(|e| e.data != "[DONE]"));

    let chat = mock
        .wait_chat("chat.aborted >= 1", |chat| chat.aborted >= 1)
        .await
        .chat;
    assert_eq!(chat.faults.reset, 1);
    assert_eq!(chat.cancelled, 0, "the mock cut it: not a client cancel");
    assert_eq!(chat.completed, 0);
}

#[tokio::test]
async fn fault_reset_closes_a_non_streaming_request_without_a_response() {
    let mock = Chat::fast(&[]);
    let error = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .header("x-mock-fault", "reset")
        .json(&request(false))
        .send()
        .await
        .expect_err("no response at all");
    assert!(!error.is_status() && !error.is_timeout(), "{error:?}");
    assert_eq!(
        mock.wait_chat("chat.aborted >= 1", |chat| chat.aborted >= 1)
            .await
            .chat
            .faults
            .reset,
        1
    );
}

#[tokio::test]
async fn fault_stall_goes_silent_until_the_client_leaves() {
    let mock = Chat::fast(&["--tokens", "10"]);
    let sent = Instant::now();
    let response = mock
        .chat(&request(true), &[("x-mock-fault", "stall")])
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let mut body = response.bytes_stream();
    let mut received = String::new();
    // Role + 3 tokens arrive, then nothing for 500 ms.
    while received.matches("\n\n").count() < 4 {
        let chunk = with_timeout("first chunks", body.next()).await;
        received
            .push_str(std::str::from_utf8(&chunk.expect("chunk").expect("bytes")).expect("utf-8"));
    }
    assert!(received.contains("\"a \""), "{received}");
    let more = tokio::time::timeout(Duration::from_millis(500), body.next()).await;
    assert!(
        more.is_err(),
        "expected silence, got {more:?} after {:?}",
        sent.elapsed()
    );
    assert_eq!(mock.stats().await.chat.active, 1);

    drop(body);
    let chat = mock
        .wait_chat("chat.cancelled >= 1", |chat| chat.cancelled >= 1)
        .await
        .chat;
    assert_eq!(chat.faults.stall, 1);
    assert_eq!(chat.active, 0);
    let silence = chat.time_to_cancel_ms.last.expect("a cancel was timed");
    assert!(
        silence >= 500,
        "time to cancel {silence} ms < the 500 ms the client waited"
    );
    assert!(silence < 5_000, "time to cancel {silence} ms");
}

#[tokio::test]
async fn fault_stall_flag_holds_a_non_streaming_request_forever() {
    let mock = Chat::fast(&["--fault", "stall"]);
    let result = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .json(&request(false))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(
        result.as_ref().is_err_and(reqwest::Error::is_timeout),
        "{result:?}"
    );
    let chat = mock
        .wait_chat("chat.cancelled >= 1", |chat| chat.cancelled >= 1)
        .await
        .chat;
    assert_eq!(chat.faults.stall, 1);
}

// ---------------------------------------------------------------------------------------------
// Bad input.

/// `x-mock-*` request headers of a test case.
type Headers = &'static [(&'static str, &'static str)];

#[tokio::test]
async fn bad_requests_get_a_400_naming_the_field() {
    let mock = Chat::fast(&[]);
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(Value, Headers, &str)> = vec![
        (json!({"model": "m"}), &[], "messages"),
        (json!({"model": "m", "messages": []}), &[], "messages"),
        (json!({"model": "m", "messages": "hi"}), &[], "messages"),
        (json!({"messages": user}), &[], "model"),
        (json!({"model": 4, "messages": user}), &[], "model"),
        (
            json!({"model": "m", "messages": [{"content": "x"}]}),
            &[],
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
            &[],
            "messages[0].role",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
            &[],
            "messages[0].content",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user"}]}),
            &[],
            "messages[0].content",
        ),
        (json!({"model": "m", "messages": user, "n": 2}), &[], "n"),
        (
            json!({"model": "m", "messages": user, "max_tokens": 0}),
            &[],
            "max_tokens",
        ),
        (
            json!({"model": "m", "messages": user, "max_tokens": "10"}),
            &[],
            "max_tokens",
        ),
        (
            json!({"model": "m", "messages": user, "max_completion_tokens": 1.5}),
            &[],
            "max_completion_tokens",
        ),
        (
            json!({"model": "m", "messages": user, "temperature": 3}),
            &[],
            "temperature",
        ),
        (
            json!({"model": "m", "messages": user, "stream": "yes"}),
            &[],
            "stream",
        ),
        (
            json!({"model": "m", "messages": user}),
            &[("x-mock-tokens", "many")],
            "x-mock-tokens",
        ),
        (
            json!({"model": "m", "messages": user}),
            &[("x-mock-tokens", "0")],
            "x-mock-tokens",
        ),
        (
            json!({"model": "m", "messages": user}),
            &[("x-mock-ttft-ms", "9999999")],
            "x-mock-ttft-ms",
        ),
        (
            json!({"model": "m", "messages": user}),
            &[("x-mock-itl-ms", "-1")],
            "x-mock-itl-ms",
        ),
        (
            json!({"model": "m", "messages": user}),
            &[("x-mock-fault", "timeout")],
            "x-mock-fault",
        ),
    ];
    for (body, headers, param) in &cases {
        let (status, error) = mock.chat_json(body, headers).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{body} {headers:?}: {error}"
        );
        assert_openai_error(&error, Some(param));
        assert_eq!(error["error"]["type"], "invalid_request_error");
    }
    let chat = mock.stats().await.chat;
    assert_eq!(chat.bad_requests, cases.len() as u64);
    assert_eq!(chat.started, 0);
}

#[tokio::test]
async fn malformed_json_says_where() {
    let mock = Chat::fast(&[]);
    let response = mock
        .client
        .post(mock.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"model\": \"m\",\n \"messages\": [}")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_openai_error(&body, None);
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("line 2 column"), "{message}");
}

#[tokio::test]
async fn oversized_body_is_413_and_a_large_one_is_fine() {
    let mock = Chat::fast(&[]);
    let words = "word ".repeat(150_000); // 750 KB: under the 1 MiB limit
    let large = json!({"model": "m", "messages": [{"role": "user", "content": words}]});
    let (status, body) = mock.chat_json(&large, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 150_000);

    let words = "word ".repeat(300_000); // 1.5 MB
    let huge = json!({"model": "m", "messages": [{"role": "user", "content": words}]});
    let (status, body) = mock.chat_json(&huge, &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_openai_error(&body, None);
    assert_eq!(body["error"]["code"], "request_too_large");
    assert_eq!(mock.stats().await.chat.bad_requests, 1);
}

#[tokio::test]
async fn wrong_method_is_a_json_405() {
    let mock = Chat::fast(&[]);
    let response = mock
        .client
        .get(mock.url("/v1/chat/completions"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.expect("json");
    assert_openai_error(&body, None);
}

#[test]
fn bad_flags_are_refused() {
    let parse = |flags: &[&str]| {
        mock_llm::Config::try_parse_from(std::iter::once("mock-llm").chain(flags.iter().copied()))
    };
    assert!(parse(&[]).is_ok());
    assert!(parse(&["--fault", "reset", "--fault-rate", "0.1", "--seed", "1"]).is_ok());
    assert!(
        parse(&["--fault-rate", "0.5"]).is_err(),
        "a rate without a fault"
    );
    assert!(parse(&["--fault", "timeout"]).is_err());
    assert!(parse(&["--jitter", "1.5"]).is_err());
    assert!(parse(&["--heavy-tail", "-0.1"]).is_err());
    assert!(parse(&["--tokens", "0"]).is_err());
    assert!(parse(&["--ttft-ms", "60001"]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Cancellation, seen from the mock.

#[tokio::test]
async fn streaming_disconnect_counts_as_cancelled() {
    let mock = Chat::start(&["--ttft-ms", "5", "--itl-ms", "100", "--tokens", "50"]);
    let sent = Instant::now();
    let response = mock.chat(&request(true), &[]).await;
    let (events, _) = read_events(response, sent, 3).await; // role + 2 tokens, then hang up
    assert_eq!(events.len(), 3);

    let stats = mock
        .wait_chat("chat.cancelled >= 1", |chat| chat.cancelled >= 1)
        .await;
    let chat = &stats.chat;
    assert_eq!(chat.completed, 0);
    assert_eq!(chat.active, 0);
    assert!(chat.time_to_cancel_ms.last < Some(5_000), "{chat:?}");
    // `/slow_stream`'s counters are its own.
    assert_eq!(stats.started, 0);
    assert_eq!(stats.cancelled, 0);
}

#[tokio::test]
async fn non_streaming_disconnect_counts_as_cancelled() {
    // The answer is due in 5 s; the client hangs up after 100 ms, before any response byte.
    let mock = Chat::start(&["--ttft-ms", "5000", "--tokens", "1"]);
    let body = serde_json::to_vec(&request(false)).expect("json");
    let mut socket = tokio::net::TcpStream::connect(mock.addr())
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        mock.addr(),
        body.len()
    );
    socket.write_all(head.as_bytes()).await.expect("write head");
    socket.write_all(&body).await.expect("write body");
    mock.wait_chat("chat.started >= 1", |chat| chat.started >= 1)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed = Instant::now();
    drop(socket);

    let chat = mock
        .wait_chat("chat.cancelled >= 1", |chat| chat.cancelled >= 1)
        .await
        .chat;
    assert!(
        closed.elapsed() < Duration::from_secs(3),
        "cancel seen only after {:?}, i.e. not before the response was due",
        closed.elapsed()
    );
    assert_eq!(chat.completed, 0);
    assert_eq!(chat.active, 0);
    let waited = chat.time_to_cancel_ms.last.expect("timed");
    assert!((100..3_000).contains(&waited), "time to cancel {waited} ms");
    assert_eq!(chat.time_to_cancel_ms.max, Some(waited));
}
