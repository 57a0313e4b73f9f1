//! `POST /v1/chat/completions` and `GET /v1/models` over real HTTP when all goes well: the wire
//! shape a client receives, each token-count and pacing knob, and what `/stats` counts. (Faults,
//! bad input and clients that leave are in `chat_faults.rs`.)
//!
//! Each test starts its own mock on `127.0.0.1:0`, on its own thread and runtime, so its timers
//! keep their pace however busy the test's runtime is. Delays are a few milliseconds except where
//! timing is the point; timing is asserted as a lower bound (timers never fire early) or against
//! a wide margin, never a tight threshold.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    Chat, Event, PROMPT_WORDS, assert_openai_error, contents, get_json, read_events, request,
    with_timeout,
};

// ---------------------------------------------------------------------------------------------
// The happy path: wire shape.

#[tokio::test]
async fn non_streaming_completion_has_openai_shape_and_usage() {
    let mock = Chat::fast(&[]);
    let response = mock.chat(&request(false), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("application/json")
    );
    let body: Value = response.json().await.expect("json");

    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-")),
        "{body}"
    );
    assert_eq!(body["object"], "chat.completion");
    assert!(
        body["created"].as_u64().is_some_and(|t| t > 1_600_000_000),
        "{body}"
    );
    assert_eq!(body["model"], "gpt-test");
    let choices = body["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    assert_eq!(
        choices[0]["message"]["content"],
        "This is a mock completion "
    );
    assert_eq!(choices[0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": PROMPT_WORDS, "completion_tokens": 5, "total_tokens": PROMPT_WORDS + 5})
    );

    let chat = mock.stats().await.chat;
    assert_eq!(chat.requests, 1);
    assert_eq!(chat.started, 1);
    assert_eq!(chat.streaming, 0);
    assert_eq!(chat.completed, 1);
    assert_eq!(chat.cancelled, 0);
}

#[tokio::test]
async fn streaming_sends_role_then_tokens_then_finish_then_done() {
    let mock = Chat::fast(&[]);
    let sent = Instant::now();
    let response = mock.chat(&request(true), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (events, error) = with_timeout("stream", read_events(response, sent, 100)).await;
    assert!(error.is_none(), "{error:?}");

    // role, 5 tokens, finish, [DONE]
    assert_eq!(events.len(), 8, "{events:#?}");
    let chunks: Vec<Value> = events[..7].iter().map(Event::json).collect();
    let id = chunks[0]["id"].as_str().expect("id");
    assert!(id.starts_with("chatcmpl-"));
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id, "one id for the whole stream");
        assert_eq!(chunk["model"], "gpt-test");
        assert!(
            chunk.get("usage").is_none(),
            "no usage unless asked: {chunk}"
        );
        assert_eq!(chunk["choices"][0]["index"], 0);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(
        contents(&events),
        ["This ", "is ", "a ", "mock ", "completion "]
    );
    for chunk in &chunks[1..6] {
        assert!(
            chunk["choices"][0]["delta"].get("role").is_none(),
            "{chunk}"
        );
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    assert_eq!(chunks[6]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert_eq!(events[7].data, "[DONE]");

    let chat = mock
        .wait_chat("chat.completed >= 1", |chat| chat.completed >= 1)
        .await
        .chat;
    assert_eq!(chat.streaming, 1);
    assert_eq!(chat.active, 0);
}

#[tokio::test]
async fn include_usage_adds_a_usage_chunk_and_null_usage_elsewhere() {
    let mock = Chat::fast(&[]);
    let mut body = request(true);
    body["stream_options"] = json!({"include_usage": true});
    let sent = Instant::now();
    let response = mock.chat(&body, &[]).await;
    let (events, error) = with_timeout("stream", read_events(response, sent, 100)).await;
    assert!(error.is_none(), "{error:?}");

    // role, 5 tokens, finish, usage, [DONE]
    assert_eq!(events.len(), 9, "{events:#?}");
    for event in &events[..7] {
        let chunk = event.json();
        assert_eq!(chunk["usage"], Value::Null, "{chunk}");
        assert!(
            chunk.get("usage").is_some(),
            "usage: null is present: {chunk}"
        );
    }
    let usage_chunk = events[7].json();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"],
        json!({"prompt_tokens": PROMPT_WORDS, "completion_tokens": 5, "total_tokens": PROMPT_WORDS + 5})
    );
    assert_eq!(events[8].data, "[DONE]");
}

#[tokio::test]
async fn stream_options_without_stream_is_rejected() {
    let mock = Chat::fast(&[]);
    let mut body = request(false);
    body["stream_options"] = json!({"include_usage": true});
    let (status, body) = mock.chat_json(&body, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_openai_error(&body, Some("stream_options"));
}

#[tokio::test]
async fn unknown_top_level_fields_are_accepted() {
    let mock = Chat::fast(&[]);
    let mut body = request(false);
    for (name, value) in [
        ("user", json!("user-1")),
        ("seed", json!(7)),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f"}}]),
        ),
        ("response_format", json!({"type": "text"})),
        ("temperature", json!(0.7)),
        ("n", json!(1)),
        ("metadata", json!({"k": "v"})),
    ] {
        body[name] = value;
    }
    let (status, body) = mock.chat_json(&body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
}

// ---------------------------------------------------------------------------------------------
// Token count knobs.

#[tokio::test]
async fn max_tokens_caps_the_completion_with_finish_reason_length() {
    let mock = Chat::fast(&["--tokens", "10"]);

    let mut body = request(false);
    body["max_tokens"] = json!(3);
    let (status, body) = mock.chat_json(&body, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "This is a ");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);

    // Streaming, with the newer name of the same cap.
    let mut body = request(true);
    body["max_completion_tokens"] = json!(2);
    let sent = Instant::now();
    let (events, _) = read_events(mock.chat(&body, &[]).await, sent, 100).await;
    assert_eq!(contents(&events), ["This ", "is "]);
    let finish = events[events.len() - 2].json();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");

    // A cap above the length does not bite.
    let mut body = request(false);
    body["max_tokens"] = json!(50);
    let (_, body) = mock.chat_json(&body, &[]).await;
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 10);
}

#[tokio::test]
async fn tokens_flag_sets_the_default_and_header_overrides_it() {
    let mock = Chat::fast(&["--tokens", "7"]);
    let (_, body) = mock.chat_json(&request(false), &[]).await;
    assert_eq!(body["usage"]["completion_tokens"], 7);

    let (_, body) = mock
        .chat_json(&request(false), &[("x-mock-tokens", "2")])
        .await;
    assert_eq!(body["usage"]["completion_tokens"], 2);
    assert_eq!(body["choices"][0]["message"]["content"], "This is ");

    let sent = Instant::now();
    let response = mock.chat(&request(true), &[("x-mock-tokens", "30")]).await;
    let (events, _) = read_events(response, sent, 100).await;
    assert_eq!(contents(&events).len(), 30);
}

// ---------------------------------------------------------------------------------------------
// Pacing knobs.

#[tokio::test]
async fn ttft_and_itl_flags_pace_the_stream() {
    let mock = Chat::start(&["--ttft-ms", "300", "--itl-ms", "300", "--tokens", "4"]);
    let sent = Instant::now();
    let response = mock.chat(&request(true), &[]).await;
    assert_eq!(response.headers()["x-mock-ttft-ms"], "300");
    let (events, _) = with_timeout("stream", read_events(response, sent, 100)).await;
    // role, 4 tokens, finish, [DONE]
    assert_eq!(events.len(), 7, "{events:#?}");

    let ms = |event: &Event| event.at.as_millis();
    // Nothing before the first token is due; token k not before TTFT + k x ITL.
    assert!(ms(&events[0]) >= 300, "role chunk at {} ms", ms(&events[0]));
    for k in 0..4 {
        let at = ms(&events[1 + k]);
        let due = 300 + 300 * k as u128;
        assert!(at >= due, "token {k} at {at} ms, due at {due} ms");
    }
    // And the stream is paced, not held back and dumped at the end: the first token (due at
    // 300 ms) came well before the last one was due (1200 ms).
    assert!(
        ms(&events[1]) < 1000,
        "first token only at {} ms: {events:#?}",
        ms(&events[1])
    );
}

#[tokio::test]
async fn header_overrides_replace_the_pacing_defaults() {
    // Defaults that would take 10 s; the headers make it take about 50 ms.
    let mock = Chat::start(&["--ttft-ms", "10000", "--itl-ms", "10000", "--tokens", "3"]);
    let sent = Instant::now();
    let response = mock
        .chat(
            &request(true),
            &[("x-mock-ttft-ms", "20"), ("x-mock-itl-ms", "10")],
        )
        .await;
    assert_eq!(response.headers()["x-mock-ttft-ms"], "20");
    let (events, error) = with_timeout("stream", read_events(response, sent, 100)).await;
    assert!(error.is_none());
    assert_eq!(contents(&events).len(), 3);
    assert!(events[0].at >= Duration::from_millis(20));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "took {:?}: headers ignored?",
        sent.elapsed()
    );
}

#[tokio::test]
async fn non_streaming_answers_when_the_last_token_is_due() {
    let mock = Chat::start(&["--ttft-ms", "200", "--itl-ms", "50", "--tokens", "5"]);
    let sent = Instant::now();
    let (status, _) = mock.chat_json(&request(false), &[]).await;
    assert_eq!(status, StatusCode::OK);
    // TTFT + 4 x ITL.
    assert!(
        sent.elapsed() >= Duration::from_millis(400),
        "answered after {:?}",
        sent.elapsed()
    );
}

/// The `x-mock-ttft-ms` response header of `count` sequential one-token requests.
async fn ttfts(mock: &Chat, count: usize) -> Vec<u64> {
    let mut ttfts = Vec::new();
    for _ in 0..count {
        let sent = Instant::now();
        let response = mock.chat(&request(false), &[("x-mock-tokens", "1")]).await;
        assert_eq!(response.status(), StatusCode::OK);
        let ttft: u64 = response.headers()["x-mock-ttft-ms"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("integer");
        response.bytes().await.expect("body");
        assert!(
            sent.elapsed() >= Duration::from_millis(ttft),
            "answered after {:?}, before its TTFT of {ttft} ms",
            sent.elapsed()
        );
        ttfts.push(ttft);
    }
    ttfts
}

#[tokio::test]
async fn jitter_spreads_delays_within_the_band() {
    let mock = Chat::start(&["--ttft-ms", "40", "--jitter", "0.5", "--seed", "3"]);
    let ttfts = ttfts(&mock, 12).await;
    assert!(ttfts.iter().all(|t| (20..=60).contains(t)), "{ttfts:?}");
    let first = ttfts[0];
    assert!(ttfts.iter().any(|t| *t != first), "no jitter: {ttfts:?}");
}

#[tokio::test]
async fn heavy_tail_makes_some_delays_ten_times_longer() {
    let always = Chat::start(&["--ttft-ms", "20", "--heavy-tail", "1"]);
    assert_eq!(ttfts(&always, 2).await, [200, 200]);

    let sometimes = Chat::start(&["--ttft-ms", "10", "--heavy-tail", "0.5", "--seed", "11"]);
    let ttfts = ttfts(&sometimes, 12).await;
    assert!(ttfts.iter().all(|t| *t == 10 || *t == 100), "{ttfts:?}");
    assert!(ttfts.contains(&10) && ttfts.contains(&100), "{ttfts:?}");
}

// ---------------------------------------------------------------------------------------------
// Models and /stats.

#[tokio::test]
async fn models_lists_the_configured_models() {
    let default = Chat::fast(&[]);
    let body: Value = default
        .client
        .get(default.url("/v1/models"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().expect("data");
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], "mock-1");
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["owned_by"], "mock-llm");
    assert!(data[0]["created"].is_u64());

    let two = Chat::fast(&["--models", "small,large"]);
    let body: Value = two
        .client
        .get(two.url("/v1/models"))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["small", "large"]);
}

#[tokio::test]
async fn stats_keep_the_slow_stream_fields_and_add_a_chat_object() {
    let mock = Chat::fast(&[]);
    // The wire shape, field by field, as JSON: the typed snapshot would not see an extra field.
    let (status, stats) = get_json(&mock.client, &mock.url("/stats")).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    for field in ["active_streams", "started", "completed", "cancelled"] {
        assert_eq!(stats[field], 0, "{field}: {stats}");
    }
    assert_eq!(
        stats["chat"],
        json!({
            "requests": 0, "bad_requests": 0, "started": 0, "streaming": 0, "active": 0,
            "completed": 0, "cancelled": 0, "aborted": 0,
            "faults": {"429": 0, "500": 0, "503": 0, "reset": 0, "stall": 0, "slow": 0},
            "time_to_cancel_ms": {"last": null, "max": null},
        })
    );

    // One of each ending; the identities of the module docs hold.
    mock.chat_json(&request(false), &[]).await;
    mock.chat_json(&json!({"model": "m"}), &[]).await;
    mock.chat_json(&request(false), &[("x-mock-fault", "429")])
        .await;
    let sent = Instant::now();
    let reset = mock
        .chat(&request(true), &[("x-mock-fault", "reset")])
        .await;
    let _ = read_events(reset, sent, 100).await;
    let chat = mock
        .wait_chat("chat.aborted >= 1", |chat| chat.aborted >= 1)
        .await
        .chat;
    assert_eq!(chat.requests, 4, "{chat:?}");
    assert_eq!(
        chat.requests,
        chat.bad_requests + chat.faults.rate_limited + chat.started
    );
    assert_eq!(
        chat.started,
        chat.active + chat.completed + chat.cancelled + chat.aborted
    );
    assert_eq!(chat.streaming, 1);
}
