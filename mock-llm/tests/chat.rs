//! `POST /v1/chat/completions` and `GET /v1/models` over real HTTP: what a client receives for
//! each knob and each fault, and what `/stats` counts.
//!
//! Each test starts its own mock on `127.0.0.1:0`, on its own thread and runtime, so its timers
//! keep their pace however busy the test's runtime is. Delays are a few milliseconds except where
//! timing is the point; timing is asserted as a lower bound (timers never fire early) or against
//! a wide margin, never a tight threshold.

use std::future::Future;
use std::time::{Duration, Instant};

use clap::Parser as _;
use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A `mock-llm` with the given flags, serving on its own thread and current-thread runtime.
#[derive(Debug)]
struct Mock {
    running: mock_llm::embed::Running,
    client: reqwest::Client,
}

impl Mock {
    fn start(flags: &[&str]) -> Self {
        let mut config = mock_llm::Config::try_parse_from(
            std::iter::once("mock-llm").chain(flags.iter().copied()),
        )
        .expect("flags parse");
        config.listen = ([127, 0, 0, 1], 0).into();
        Self {
            running: mock_llm::embed::start(config).expect("start the mock"),
            client: reqwest::Client::new(),
        }
    }

    /// A mock whose completions take a few milliseconds.
    fn fast(extra: &[&str]) -> Self {
        let mut flags = vec!["--ttft-ms", "5", "--itl-ms", "1", "--tokens", "5"];
        flags.extend_from_slice(extra);
        Self::start(&flags)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.addr())
    }

    /// `POST /v1/chat/completions` with `body` and `x-mock-*` headers.
    async fn chat(&self, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/v1/chat/completions"))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("mock answers")
    }

    /// Like [`Mock::chat`], for a response expected to be JSON: status and body.
    async fn chat_json(&self, body: &Value, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self.chat(body, headers).await;
        let status = response.status();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, json)
    }

    async fn stats(&self) -> Value {
        let response = self
            .client
            .get(self.url("/stats"))
            .send()
            .await
            .expect("stats");
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("stats json")
    }

    /// Polls `/stats` until `chat.<field>` reaches `at_least`, or panics after 5 s.
    async fn wait_chat(&self, field: &str, at_least: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stats = self.stats().await;
            if stats["chat"][field].as_u64() >= Some(at_least) {
                return stats;
            }
            assert!(
                Instant::now() < deadline,
                "chat.{field} never reached {at_least}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn request(stream: bool) -> Value {
    json!({
        "model": "gpt-test",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something slowly please"},
        ],
    })
}

/// Words in [`request`]'s messages: the mock's `prompt_tokens`.
const PROMPT_WORDS: u64 = 3 + 4;

/// One SSE event as received: when (since the request was sent) and its `data:` payload.
#[derive(Debug)]
struct Event {
    at: Duration,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// Reads SSE events until the body ends or `limit` events came. Returns the events and the body
/// error, if the body ended with one.
async fn read_events(
    response: reqwest::Response,
    sent: Instant,
    limit: usize,
) -> (Vec<Event>, Option<reqwest::Error>) {
    let mut body = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < limit {
        match body.next().await {
            None => break,
            Some(Err(e)) => return (events, Some(e)),
            Some(Ok(bytes)) => {
                buffer.push_str(std::str::from_utf8(&bytes).expect("utf-8"));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let data = frame
                        .trim_end()
                        .strip_prefix("data: ")
                        .unwrap_or_else(|| panic!("not an SSE data event: {frame:?}"));
                    events.push(Event {
                        at: sent.elapsed(),
                        data: data.to_owned(),
                    });
                }
            }
        }
    }
    assert!(buffer.is_empty(), "trailing partial event: {buffer:?}");
    (events, None)
}

/// The `content` deltas of the token chunks, in order.
fn contents(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .filter(|c| !c.is_empty())
        .collect()
}

async fn with_timeout<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} took more than 10 s"))
}

fn assert_openai_error(body: &Value, param: Option<&str>) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    assert!(error.get("code").is_some(), "{body}");
    assert_eq!(error["param"].as_str(), param, "{body}");
}

// ---------------------------------------------------------------------------------------------
// The happy path: wire shape.

#[tokio::test]
async fn non_streaming_completion_has_openai_shape_and_usage() {
    let mock = Mock::fast(&[]);
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

    let chat = &mock.stats().await["chat"];
    assert_eq!(chat["requests"], 1);
    assert_eq!(chat["started"], 1);
    assert_eq!(chat["streaming"], 0);
    assert_eq!(chat["completed"], 1);
    assert_eq!(chat["cancelled"], 0);
}

#[tokio::test]
async fn streaming_sends_role_then_tokens_then_finish_then_done() {
    let mock = Mock::fast(&[]);
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

    let chat = &mock.wait_chat("completed", 1).await["chat"];
    assert_eq!(chat["streaming"], 1);
    assert_eq!(chat["active"], 0);
}

#[tokio::test]
async fn include_usage_adds_a_usage_chunk_and_null_usage_elsewhere() {
    let mock = Mock::fast(&[]);
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
    let mock = Mock::fast(&[]);
    let mut body = request(false);
    body["stream_options"] = json!({"include_usage": true});
    let (status, body) = mock.chat_json(&body, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_openai_error(&body, Some("stream_options"));
}

#[tokio::test]
async fn unknown_top_level_fields_are_accepted() {
    let mock = Mock::fast(&[]);
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
    let mock = Mock::fast(&["--tokens", "10"]);

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
    let mock = Mock::fast(&["--tokens", "7"]);
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
    let mock = Mock::start(&["--ttft-ms", "300", "--itl-ms", "300", "--tokens", "4"]);
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
    let mock = Mock::start(&["--ttft-ms", "10000", "--itl-ms", "10000", "--tokens", "3"]);
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
    let mock = Mock::start(&["--ttft-ms", "200", "--itl-ms", "50", "--tokens", "5"]);
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
async fn ttfts(mock: &Mock, count: usize) -> Vec<u64> {
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
    let mock = Mock::start(&["--ttft-ms", "40", "--jitter", "0.5", "--seed", "3"]);
    let ttfts = ttfts(&mock, 12).await;
    assert!(ttfts.iter().all(|t| (20..=60).contains(t)), "{ttfts:?}");
    let first = ttfts[0];
    assert!(ttfts.iter().any(|t| *t != first), "no jitter: {ttfts:?}");
}

#[tokio::test]
async fn heavy_tail_makes_some_delays_ten_times_longer() {
    let always = Mock::start(&["--ttft-ms", "20", "--heavy-tail", "1"]);
    assert_eq!(ttfts(&always, 2).await, [200, 200]);

    let sometimes = Mock::start(&["--ttft-ms", "10", "--heavy-tail", "0.5", "--seed", "11"]);
    let ttfts = ttfts(&sometimes, 12).await;
    assert!(ttfts.iter().all(|t| *t == 10 || *t == 100), "{ttfts:?}");
    assert!(ttfts.contains(&10) && ttfts.contains(&100), "{ttfts:?}");
}

// ---------------------------------------------------------------------------------------------
// Faults.

/// Status and TTFT header of `count` sequential requests: a server's fault-and-delay sequence.
async fn sequence(mock: &Mock, count: usize) -> Vec<(u16, Option<String>)> {
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
    let a = sequence(&Mock::start(&flags("42")), 24).await;
    let b = sequence(&Mock::start(&flags("42")), 24).await;
    let c = sequence(&Mock::start(&flags("43")), 24).await;

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
    let mock = Mock::fast(&["--fault", "503", "--fault-rate", "0"]);
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

    let always = Mock::fast(&["--fault", "503"]);
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
    let mock = Mock::fast(&[]);
    let response = mock.chat(&request(true), &[("x-mock-fault", "429")]).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["retry-after-ms"], "1000");
    assert_eq!(response.headers()["x-mock-fault"], "429");
    let body: Value = response.json().await.expect("json");
    assert_openai_error(&body, None);
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let chat = &mock.stats().await["chat"];
    assert_eq!(chat["faults"]["429"], 1);
    assert_eq!(chat["started"], 0, "a 429 generates nothing");
}

#[tokio::test]
async fn fault_500_is_a_server_error() {
    let mock = Mock::fast(&[]);
    let (status, body) = mock
        .chat_json(&request(false), &[("x-mock-fault", "500")])
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_openai_error(&body, None);
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(mock.stats().await["chat"]["faults"]["500"], 1);
}

#[tokio::test]
async fn fault_503_is_overloaded() {
    let mock = Mock::fast(&[]);
    let (status, body) = mock
        .chat_json(&request(true), &[("x-mock-fault", "503")])
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_openai_error(&body, None);
    assert_eq!(body["error"]["code"], "overloaded");
    assert_eq!(mock.stats().await["chat"]["faults"]["503"], 1);
}

/// `--fault slow --fault-first 1`: the first request's first token comes 10 times later, the
/// next ones on time: the one slow replica a hedged request is for.
#[tokio::test]
async fn fault_slow_first_delays_only_the_first_request() {
    let mock = Mock::start(&[
        "--ttft-ms",
        "20",
        "--itl-ms",
        "1",
        "--tokens",
        "3",
        "--fault",
        "slow",
        "--fault-first",
        "1",
    ]);
    let first = mock.chat(&request(true), &[]).await;
    assert_eq!(first.headers()["x-mock-fault"], "slow");
    assert_eq!(first.headers()["x-mock-ttft-ms"], "200");
    drop(first.text().await);
    let second = mock.chat(&request(true), &[]).await;
    assert!(second.headers().get("x-mock-fault").is_none());
    assert_eq!(second.headers()["x-mock-ttft-ms"], "20");
    drop(second.text().await);
    assert_eq!(mock.stats().await["chat"]["faults"]["slow"], 1);
}

#[tokio::test]
async fn fault_reset_cuts_a_stream_after_a_few_chunks() {
    let mock = Mock::fast(&["--tokens", "10"]);
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

    let chat = &mock.wait_chat("aborted", 1).await["chat"];
    assert_eq!(chat["faults"]["reset"], 1);
    assert_eq!(chat["cancelled"], 0, "the mock cut it: not a client cancel");
    assert_eq!(chat["completed"], 0);
}

#[tokio::test]
async fn fault_reset_closes_a_non_streaming_request_without_a_response() {
    let mock = Mock::fast(&[]);
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
        mock.wait_chat("aborted", 1).await["chat"]["faults"]["reset"],
        1
    );
}

#[tokio::test]
async fn fault_stall_goes_silent_until_the_client_leaves() {
    let mock = Mock::fast(&["--tokens", "10"]);
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
    assert_eq!(mock.stats().await["chat"]["active"], 1);

    drop(body);
    let chat = &mock.wait_chat("cancelled", 1).await["chat"];
    assert_eq!(chat["faults"]["stall"], 1);
    assert_eq!(chat["active"], 0);
    let silence = chat["time_to_cancel_ms"]["last"]
        .as_u64()
        .expect("a cancel was timed");
    assert!(
        silence >= 500,
        "time to cancel {silence} ms < the 500 ms the client waited"
    );
    assert!(silence < 5_000, "time to cancel {silence} ms");
}

#[tokio::test]
async fn fault_stall_flag_holds_a_non_streaming_request_forever() {
    let mock = Mock::fast(&["--fault", "stall"]);
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
    let chat = &mock.wait_chat("cancelled", 1).await["chat"];
    assert_eq!(chat["faults"]["stall"], 1);
}

// ---------------------------------------------------------------------------------------------
// Bad input.

/// `x-mock-*` request headers of a test case.
type Headers = &'static [(&'static str, &'static str)];

#[tokio::test]
async fn bad_requests_get_a_400_naming_the_field() {
    let mock = Mock::fast(&[]);
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
    let chat = &mock.stats().await["chat"];
    assert_eq!(chat["bad_requests"], cases.len());
    assert_eq!(chat["started"], 0);
}

#[tokio::test]
async fn malformed_json_says_where() {
    let mock = Mock::fast(&[]);
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
    let mock = Mock::fast(&[]);
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
    assert_eq!(mock.stats().await["chat"]["bad_requests"], 1);
}

#[tokio::test]
async fn wrong_method_is_a_json_405() {
    let mock = Mock::fast(&[]);
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
    let mock = Mock::start(&["--ttft-ms", "5", "--itl-ms", "100", "--tokens", "50"]);
    let sent = Instant::now();
    let response = mock.chat(&request(true), &[]).await;
    let (events, _) = read_events(response, sent, 3).await; // role + 2 tokens, then hang up
    assert_eq!(events.len(), 3);

    let stats = mock.wait_chat("cancelled", 1).await;
    let chat = &stats["chat"];
    assert_eq!(chat["completed"], 0);
    assert_eq!(chat["active"], 0);
    assert!(
        chat["time_to_cancel_ms"]["last"].as_u64() < Some(5_000),
        "{chat}"
    );
    // `/slow_stream`'s counters are its own.
    assert_eq!(stats["started"], 0);
    assert_eq!(stats["cancelled"], 0);
}

#[tokio::test]
async fn non_streaming_disconnect_counts_as_cancelled() {
    // The answer is due in 5 s; the client hangs up after 100 ms, before any response byte.
    let mock = Mock::start(&["--ttft-ms", "5000", "--tokens", "1"]);
    let body = serde_json::to_vec(&request(false)).expect("json");
    let mut socket = tokio::net::TcpStream::connect(mock.running.addr())
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        mock.running.addr(),
        body.len()
    );
    socket.write_all(head.as_bytes()).await.expect("write head");
    socket.write_all(&body).await.expect("write body");
    mock.wait_chat("started", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let closed = Instant::now();
    drop(socket);

    let chat = &mock.wait_chat("cancelled", 1).await["chat"];
    assert!(
        closed.elapsed() < Duration::from_secs(3),
        "cancel seen only after {:?}, i.e. not before the response was due",
        closed.elapsed()
    );
    assert_eq!(chat["completed"], 0);
    assert_eq!(chat["active"], 0);
    let waited = chat["time_to_cancel_ms"]["last"].as_u64().expect("timed");
    assert!((100..3_000).contains(&waited), "time to cancel {waited} ms");
    assert_eq!(chat["time_to_cancel_ms"]["max"].as_u64(), Some(waited));
}

// ---------------------------------------------------------------------------------------------
// Models and /stats.

#[tokio::test]
async fn models_lists_the_configured_models() {
    let default = Mock::fast(&[]);
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

    let two = Mock::fast(&["--models", "small,large"]);
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
    let mock = Mock::fast(&[]);
    let stats = mock.stats().await;
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
    let chat = mock.wait_chat("aborted", 1).await["chat"].clone();
    let n = |field: &str| chat[field].as_u64().expect(field);
    assert_eq!(n("requests"), 4, "{chat}");
    assert_eq!(
        n("requests"),
        n("bad_requests") + chat["faults"]["429"].as_u64().expect("429") + n("started")
    );
    assert_eq!(
        n("started"),
        n("active") + n("completed") + n("cancelled") + n("aborted")
    );
    assert_eq!(n("streaming"), 1);
}
