//! Lesson: a relay forwards what it gets, as it gets it, errors included.
//!
//! `POST /v1/chat/completions` and `GET /v1/models` against a real `mock-llm`, in both modes:
//! every SSE event arrives, in order, unbuffered (the first token long before the last is even
//! produced); the non-streaming body is the upstream's; upstream 429/500/503 come back as sent,
//! with `Retry-After`; a stream the upstream cuts is cut for the client too; a dead upstream is
//! a 502, a silent one a 504 (or a cut stream); and bad input is refused by the gateway itself,
//! naming the problem, before the upstream sees anything.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    MODES, Mock, chat_body, client, dead_upstream, gateway, json_of, openai_error, post_chat,
    read_sse,
};

#[tokio::test]
async fn streaming_relays_every_event_in_order_and_ends_with_done() {
    let mock = Mock::fast();
    for mode in MODES {
        let gw = gateway(mode, &mock.url(), &[]);
        let response = post_chat(&gw.url(), &chat_body(true), &[("x-mock-tokens", "6")]).await;
        assert_eq!(response.status(), StatusCode::OK, "{mode}");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "{mode}"
        );
        let sse = read_sse(response, Duration::from_secs(10)).await;
        assert!(sse.error.is_none(), "{mode}: {:?}", sse.error);
        // Role chunk, 6 tokens, finish chunk, [DONE].
        assert_eq!(sse.events.len(), 9, "{mode}: {:?}", sse.events);
        assert_eq!(sse.events.last().unwrap().data, "[DONE]", "{mode}");
        assert_eq!(sse.text(), mock_llm::openai::text(6), "{mode}: in order");
        let finish: Value = serde_json::from_str(&sse.events[7].data).unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "stop", "{mode}");
    }
}

#[tokio::test]
async fn events_leave_the_gateway_as_they_arrive() {
    let mock = Mock::fast();
    for mode in MODES {
        let gw = gateway(mode, &mock.url(), &[]);
        // 6 tokens 200 ms apart: the last is produced 1 s after the first.
        let response = post_chat(
            &gw.url(),
            &chat_body(true),
            &[("x-mock-tokens", "6"), ("x-mock-itl-ms", "200")],
        )
        .await;
        let sse = read_sse(response, Duration::from_secs(10)).await;
        assert!(sse.error.is_none(), "{mode}: {:?}", sse.error);
        let first_token = &sse.events[1];
        let done = sse.events.last().unwrap();
        // A buffering relay would deliver everything at once, at the end.
        let gap = done.at - first_token.at;
        assert!(
            gap >= Duration::from_millis(500),
            "{mode}: the first token arrived only {gap:?} before [DONE]"
        );
    }
}

#[tokio::test]
async fn non_streaming_body_is_the_upstreams() {
    let mock = Mock::fast();
    for mode in MODES {
        let gw = gateway(mode, &mock.url(), &[]);
        let body = json!({
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": "three words here"}],
            // Unknown to the gateway: must reach the upstream untouched.
            "user": "u-1", "metadata": {"k": "v"}, "seed": 3,
        });
        let via_gateway = post_chat(&gw.url(), &body, &[("x-mock-tokens", "5")]).await;
        assert_eq!(
            via_gateway.headers()["content-type"],
            "application/json",
            "{mode}"
        );
        let (status, via_gateway) = json_of(via_gateway).await;
        assert_eq!(status, StatusCode::OK, "{mode}: {via_gateway}");
        let (_, direct) =
            json_of(post_chat(&mock.url(), &body, &[("x-mock-tokens", "5")]).await).await;
        // Ids and timestamps differ per request; everything else is the upstream's.
        for field in ["object", "model", "choices", "usage"] {
            assert_eq!(via_gateway[field], direct[field], "{mode}: {field}");
        }
        assert_eq!(
            via_gateway["choices"][0]["message"]["content"],
            mock_llm::openai::text(5)
        );
        assert_eq!(via_gateway["usage"]["prompt_tokens"], 3, "{mode}");
    }
}

#[tokio::test]
async fn models_are_the_upstreams() {
    let mock = Mock::with_flags(&["--models", "mock-1,mock-2"]);
    let (_, direct) = json_of(
        client()
            .get(format!("{}/v1/models", mock.url()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    for mode in MODES {
        let gw = gateway(mode, &mock.url(), &[]);
        let response = client()
            .get(format!("{}/v1/models", gw.url()))
            .send()
            .await
            .unwrap();
        let (status, models) = json_of(response).await;
        assert_eq!(status, StatusCode::OK, "{mode}");
        assert_eq!(models, direct, "{mode}");
        assert_eq!(models["data"][1]["id"], "mock-2", "{mode}");
    }
}

#[tokio::test]
async fn upstream_errors_pass_through_with_retry_after() {
    let mock = Mock::fast();
    for mode in MODES {
        let gw = gateway(mode, &mock.url(), &[]);
        let response = post_chat(&gw.url(), &chat_body(false), &[("x-mock-fault", "429")]).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "{mode}");
        assert_eq!(response.headers()["retry-after"], "1", "{mode}");
        assert_eq!(response.headers()["retry-after-ms"], "1000", "{mode}");
        let (_, body) = json_of(response).await;
        assert_eq!(openai_error(&body)["code"], "rate_limit_exceeded", "{mode}");

        for (fault, status, code) in [
            ("500", StatusCode::INTERNAL_SERVER_ERROR, Value::Null),
            ("503", StatusCode::SERVICE_UNAVAILABLE, json!("overloaded")),
        ] {
            let response = post_chat(&gw.url(), &chat_body(true), &[("x-mock-fault", fault)]).await;
            let (got, body) = json_of(response).await;
            assert_eq!(got, status, "{mode} {fault}: {body}");
            let error = openai_error(&body);
            assert_eq!(error["type"], "server_error", "{mode} {fault}");
            assert_eq!(error["code"], code, "{mode} {fault}");
        }
    }
    // The upstream's own validation errors come back as they are, too.
    let gw = gateway("fixed", &mock.url(), &[]);
    let bad_role = json!({"model": "m", "messages": [{"role": "robot", "content": "x"}]});
    let (status, body) = json_of(post_chat(&gw.url(), &bad_role, &[]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(openai_error(&body)["param"], "messages[0].role");
}

#[tokio::test]
async fn a_stream_the_upstream_cuts_is_cut_for_the_client() {
    let mock = Mock::fast();
    for mode in MODES {
        let gw = gateway(mode, &mock.url(), &[]);
        let response = post_chat(
            &gw.url(),
            &chat_body(true),
            &[("x-mock-fault", "reset"), ("x-mock-tokens", "10")],
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{mode}");
        let sse = read_sse(response, Duration::from_secs(10)).await;
        assert!(
            sse.error.is_some(),
            "{mode}: the body must end in an error, not cleanly: {:?}",
            sse.events
        );
        // The role chunk and 3 tokens made it through before the cut; no [DONE].
        assert_eq!(sse.text(), mock_llm::openai::text(3), "{mode}");
        assert!(sse.events.iter().all(|e| e.data != "[DONE]"), "{mode}");

        // Non-streaming, the upstream closes the connection before any response byte: there is
        // still time for a status code, so the client gets a 502 rather than a cut connection.
        let response = post_chat(&gw.url(), &chat_body(false), &[("x-mock-fault", "reset")]).await;
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{mode}: {body}");
        assert_eq!(openai_error(&body)["type"], "upstream_error", "{mode}");
    }
}

#[tokio::test]
async fn dead_upstream_is_a_502_in_openai_shape() {
    let upstream = dead_upstream();
    for mode in MODES {
        let gw = gateway(mode, &upstream, &[]);
        for stream in [false, true] {
            let (status, body) = json_of(post_chat(&gw.url(), &chat_body(stream), &[]).await).await;
            assert_eq!(status, StatusCode::BAD_GATEWAY, "{mode}: {body}");
            let error = openai_error(&body);
            assert_eq!(error["type"], "upstream_error", "{mode}");
            assert!(
                error["message"].as_str().unwrap().contains("unreachable"),
                "{mode}: {body}"
            );
        }
        let response = client()
            .get(format!("{}/v1/models", gw.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{mode}");
    }
}

#[tokio::test]
async fn silent_upstream_is_a_504_or_a_cut_stream() {
    let mock = Mock::fast();
    for mode in MODES {
        let gw = gateway(mode, &mock.url(), &["--upstream-read-timeout-secs", "1"]);
        // Non-streaming: the head never comes.
        let (status, body) =
            json_of(post_chat(&gw.url(), &chat_body(false), &[("x-mock-fault", "stall")]).await)
                .await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{mode}: {body}");
        assert_eq!(openai_error(&body)["type"], "upstream_error", "{mode}");
        assert_eq!(openai_error(&body)["code"], Value::Null, "{mode}: {body}");

        // Streaming: 3 tokens, then silence; after 1 s the gateway gives up and cuts the body.
        let response = post_chat(
            &gw.url(),
            &chat_body(true),
            &[("x-mock-fault", "stall"), ("x-mock-tokens", "10")],
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{mode}");
        let sse = read_sse(response, Duration::from_secs(10)).await;
        assert!(sse.error.is_some(), "{mode}: {:?}", sse.events);
        assert_eq!(sse.text(), mock_llm::openai::text(3), "{mode}");
    }
    // Both stalled requests of both modes were given up by the gateway: the mock saw 4 cancels.
    mock.wait_stats("mock chat.cancelled >= 4", Duration::from_secs(5), |s| {
        s.chat.cancelled >= 4
    })
    .await;
}

#[tokio::test]
async fn bad_requests_are_refused_before_the_upstream_sees_them() {
    let mock = Mock::fast();
    for mode in MODES {
        let gw = gateway(mode, &mock.url(), &["--max-body-bytes", "1024"]);
        let url = format!("{}/v1/chat/completions", gw.url());
        let send = |body: Vec<u8>, content_type: Option<&'static str>| {
            let mut request = client().post(&url).body(body);
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            async move { json_of(request.send().await.unwrap()).await }
        };
        let json = Some("application/json");

        let (status, body) = send(br#"{"model":"m","messages":[}"#.to_vec(), json).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{mode}: {body}");
        let error = openai_error(&body);
        assert_eq!(error["code"], "invalid_json", "{mode}: {body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("not valid JSON"), "{mode}: {message}");
        assert!(message.contains("line 1 column"), "{mode}: {message}");

        // (body, code, param): each documented 400 by its code, over HTTP.
        let cases: [(&[u8], &str, Value); 7] = [
            (
                br#"{"model":"m"}"#,
                "missing_required_parameter",
                json!("messages"),
            ),
            (
                br#"{"messages":[]}"#,
                "missing_required_parameter",
                json!("model"),
            ),
            (b"[]", "invalid_type", Value::Null),
            (
                br#"{"model":5,"messages":[]}"#,
                "invalid_type",
                json!("model"),
            ),
            (
                br#"{"model":"m","messages":"hi"}"#,
                "invalid_type",
                json!("messages"),
            ),
            (
                br#"{"model":"","messages":[]}"#,
                "invalid_value",
                json!("model"),
            ),
            (
                br#"{"model":"m","messages":null}"#,
                "missing_required_parameter",
                json!("messages"),
            ),
        ];
        for (sent, code, param) in cases {
            let (status, body) = send(sent.to_vec(), json).await;
            let sent = String::from_utf8_lossy(sent);
            assert_eq!(status, StatusCode::BAD_REQUEST, "{mode} {sent}: {body}");
            let error = openai_error(&body);
            assert_eq!(
                error["type"], "invalid_request_error",
                "{mode} {sent}: {body}"
            );
            assert_eq!(error["code"], code, "{mode} {sent}: {body}");
            assert_eq!(error["param"], param, "{mode} {sent}: {body}");
        }

        let big = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
            "x".repeat(4096)
        );
        let (status, body) = send(big.into_bytes(), json).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{mode}: {body}");
        let error = openai_error(&body);
        assert_eq!(error["code"], "request_too_large", "{mode}");
        assert!(
            error["message"].as_str().unwrap().contains("1024"),
            "{mode}"
        );

        let valid = serde_json::to_vec(&chat_body(false)).unwrap();
        let (status, body) = send(valid.clone(), Some("application/x-www-form-urlencoded")).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{mode}: {body}");
        assert_eq!(
            openai_error(&body)["code"],
            "unsupported_media_type",
            "{mode}: {body}"
        );
        assert!(
            openai_error(&body)["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{mode}: {body}"
        );
        let (status, body) = send(valid, None).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{mode}");
        assert_eq!(openai_error(&body)["code"], "unsupported_media_type");

        let (status, body) = json_of(client().get(&url).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{mode}: {body}");
        assert_eq!(openai_error(&body)["code"], Value::Null, "{mode}: {body}");
    }
    let chat = mock.stats().await.chat;
    assert_eq!(chat.requests, 0, "nothing reached the upstream: {chat:?}");
}

#[tokio::test]
async fn the_404_lists_the_new_routes() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &[]);
    let response = client()
        .get(format!("{}/v1/completions", gw.url()))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let message = openai_error(&body)["message"].as_str().unwrap();
    for route in [
        "/v1/chat/completions",
        "/v1/models",
        "/chat/stream",
        "/health",
    ] {
        assert!(message.contains(route), "{message}");
    }
}
