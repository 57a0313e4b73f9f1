//! Lesson: API keys guard the routes that spend upstream capacity, and never leak.
//!
//! With keys configured, `/v1/*` and `/chat/stream` need `Authorization: Bearer <key>` or
//! `X-API-Key: <key>`; a missing key is a 401 `missing_api_key`, a wrong one `invalid_api_key`.
//! `/health` and `/debug/*` stay open so that probes work without secrets. Keys come from flags,
//! the environment or a file, and appear in no log line. The client's key is never forwarded
//! upstream; the gateway's own `--upstream-api-key` is.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use axum::Json;
use axum::http::HeaderMap;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    GatewayProcess, MODES, Mock, chat_body, client, gateway, json_of, openai_error, post_chat,
};

const KEY: &str = "sk-gw-test-0123456789";

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_a_401_in_openai_shape() {
    let mock = Mock::fast();
    for mode in MODES {
        let gw = gateway(mode, &mock.url(), &["--api-key", KEY]);

        let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{mode}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{mode}");
        // The gateway's own errors name the request, as its `x-request-id` header does.
        let request_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let (_, body) = json_of(response).await;
        assert_eq!(
            body,
            json!({"error": {
                "message": "missing API key: send Authorization: Bearer <key> or X-API-Key",
                "type": "invalid_request_error",
                "param": null,
                "code": "missing_api_key",
                "request_id": request_id,
            }}),
            "{mode}"
        );

        for header in [
            ("authorization", "Bearer sk-gw-test-0123456788"),
            ("x-api-key", "sk-gw-test"),
            ("authorization", "Basic c2stZ3c="),
        ] {
            let response = post_chat(&gw.url(), &chat_body(false), &[header]).await;
            let (status, body) = json_of(response).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{mode} {header:?}");
            let error = openai_error(&body);
            assert_eq!(error["code"], "invalid_api_key", "{mode} {header:?}");
            assert!(
                !body.to_string().contains("sk-gw-test"),
                "the key is not echoed: {body}"
            );
        }

        // The check comes first: a bad body without a key is still a 401, not a 400.
        let response = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{mode}");

        for path in ["/v1/models", "/chat/stream?chunks=1&interval_ms=0"] {
            let response = get(&format!("{}{path}", gw.url()), &[]).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{mode} {path}");
        }
    }
    assert_eq!(
        mock.stats().await.chat.requests,
        0,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn a_good_key_works_as_bearer_or_x_api_key() {
    let mock = Mock::fast();
    for mode in MODES {
        let gw = gateway(
            mode,
            &mock.url(),
            &["--api-key", "other-key", "--api-key", KEY],
        );
        let bearer = format!("Bearer {KEY}");
        for header in [("authorization", bearer.as_str()), ("x-api-key", KEY)] {
            let (status, body) =
                json_of(post_chat(&gw.url(), &chat_body(false), &[header]).await).await;
            assert_eq!(status, StatusCode::OK, "{mode} {}: {body}", header.0);
            assert_eq!(body["object"], "chat.completion", "{mode}");

            let response = get(&format!("{}/v1/models", gw.url()), &[header]).await;
            assert_eq!(response.status(), StatusCode::OK, "{mode} {}", header.0);
            let response = get(
                &format!("{}/chat/stream?chunks=1&interval_ms=0", gw.url()),
                &[header],
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK, "{mode} {}", header.0);
        }
    }
}

#[tokio::test]
async fn probes_stay_open_without_a_key() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &["--api-key", KEY]);
    for path in [
        "/health",
        "/debug/pool",
        "/debug/health-sync",
        "/debug/health-async",
    ] {
        let response = get(&format!("{}{path}", gw.url()), &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // An unknown path is still a 404, not a 401: the check runs on matched routes only.
    let response = get(&format!("{}/nope", gw.url()), &[]).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_keys_authentication_is_off() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &[]);
    let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn keys_file_is_read_with_comments_and_blank_lines() {
    let mock = Mock::fast();
    let path = std::env::temp_dir().join(format!("gateway-auth-keys-{}.txt", std::process::id()));
    std::fs::write(&path, format!("# ops team\n\n  {KEY}  \nsecond-key\n")).unwrap();
    let path_text = path.to_string_lossy().into_owned();
    let gw = gateway("fixed", &mock.url(), &["--api-keys-file", &path_text]);
    for key in [KEY, "second-key"] {
        let response = post_chat(&gw.url(), &chat_body(false), &[("x-api-key", key)]).await;
        assert_eq!(response.status(), StatusCode::OK, "{key}");
    }
    let response = post_chat(&gw.url(), &chat_body(false), &[("x-api-key", "# ops team")]).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    drop(gw);

    // A file with no key would turn authentication off without a word: refused at start-up.
    std::fs::write(&path, "# nobody yet\n\n").unwrap();
    let config = <gateway::Config as clap::Parser>::try_parse_from([
        "gateway",
        "--api-keys-file",
        &path_text,
    ])
    .unwrap();
    let error = gateway::AppState::new(&config).unwrap_err().to_string();
    assert!(error.contains("holds no key"), "{error}");
    std::fs::remove_file(&path).unwrap();
    let error = gateway::AppState::new(&config).unwrap_err().to_string();
    assert!(error.contains("cannot read --api-keys-file"), "{error}");
}

#[test]
fn empty_keys_are_refused_and_debug_redacts_keys() {
    use clap::Parser as _;
    let error = gateway::Config::try_parse_from(["gateway", "--api-key", " "]).unwrap_err();
    assert!(error.to_string().contains("must not be empty"), "{error}");
    let config = gateway::Config::try_parse_from([
        "gateway",
        "--api-key",
        KEY,
        "--upstream-api-key",
        "sk-upstream-secret",
    ])
    .unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains(KEY), "{debug}");
    assert!(!debug.contains("sk-upstream-secret"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
}

/// `GATEWAY_API_KEYS=` (or a doubled comma) is a usage error, not "no keys": turning
/// authentication off must be a deliberate absence, not an empty template variable.
#[test]
fn an_empty_key_in_the_environment_is_a_usage_error() {
    for keys in ["", "a,,b"] {
        let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--listen", "127.0.0.1:0"])
            .env("GATEWAY_API_KEYS", keys)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{keys:?}: {stderr}");
        assert!(stderr.contains("must not be empty"), "{keys:?}: {stderr}");
    }
}

/// An upstream that answers with the headers it received, to see what the gateway forwards.
async fn echo_upstream() -> String {
    async fn echo(headers: HeaderMap) -> Json<Value> {
        let seen = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        Json(json!({
            "authorization": seen("authorization"),
            "x-api-key": seen("x-api-key"),
            "cookie": seen("cookie"),
            "x-request-id": seen("x-request-id"),
            "x-mock-tokens": seen("x-mock-tokens"),
            "content-type": seen("content-type"),
        }))
    }
    // The gateway reads an upstream's model list, so the headers come back as a model's fields.
    async fn echo_models(headers: HeaderMap) -> Json<Value> {
        let Json(seen) = echo(headers).await;
        Json(json!({"object": "list", "data": [{"id": "echo", "seen": seen}]}))
    }
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(echo))
        .route("/v1/models", axum::routing::get(echo_models));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn the_upstream_gets_the_gateways_key_never_the_clients() {
    let upstream = echo_upstream().await;
    for mode in MODES {
        for (extra, expected) in [
            (vec!["--api-key", KEY], Value::Null),
            (
                vec!["--api-key", KEY, "--upstream-api-key", "sk-provider"],
                json!("Bearer sk-provider"),
            ),
        ] {
            let gw = gateway(mode, &upstream, &extra);
            let bearer = format!("Bearer {KEY}");
            let headers = [
                ("authorization", bearer.as_str()),
                ("x-api-key", KEY),
                ("cookie", "session=1"),
                ("x-request-id", "req-42"),
                ("x-mock-tokens", "2"),
            ];
            let (status, seen) =
                json_of(post_chat(&gw.url(), &chat_body(false), &headers).await).await;
            assert_eq!(status, StatusCode::OK, "{mode}: {seen}");
            assert_eq!(seen["authorization"], expected, "{mode}: {seen}");
            assert_eq!(seen["x-api-key"], Value::Null, "{mode}: {seen}");
            assert_eq!(seen["cookie"], Value::Null, "{mode}: {seen}");
            assert_eq!(seen["x-request-id"], "req-42", "{mode}: {seen}");
            assert_eq!(seen["x-mock-tokens"], "2", "{mode}: {seen}");
            assert_eq!(seen["content-type"], "application/json", "{mode}: {seen}");

            let (_, models) =
                json_of(get(&format!("{}/v1/models", gw.url()), &headers).await).await;
            let seen = &models["data"][0]["seen"];
            assert_eq!(seen["authorization"], expected, "{mode} models: {models}");
        }
    }
}

/// The real binary, keys from `GATEWAY_API_KEYS`: they work, and no log line contains them.
///
/// The log is read whole: the gateway is stopped (SIGTERM, a clean exit that writes its last
/// words) and both its stdout and stderr are read to EOF before anything is checked, so the
/// check cannot pass on a log cut short by a kill or a reader that had not caught up.
#[tokio::test]
async fn keys_from_the_environment_work_and_never_reach_the_log() {
    let upstream = support::dead_upstream();
    let mut gw = GatewayProcess::start_with_env(
        &["--upstream", &upstream, "--drain-secs", "5"],
        &[
            ("GATEWAY_API_KEYS", "env-key-alpha,env-key-beta"),
            ("GATEWAY_UPSTREAM_API_KEY", "env-upstream-secret"),
            ("RUST_LOG", "debug"),
        ],
    );
    let models = format!("{}/v1/models", gw.url());
    // A good key passes the check (and meets the dead upstream: 502).
    let response = get(&models, &[("authorization", "Bearer env-key-beta")]).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let response = get(&models, &[("x-api-key", "env-key-alpha")]).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let response = get(&models, &[("x-api-key", "env-key-gamma")]).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    gw.sigterm();
    let status = gw.exit_within(Duration::from_secs(15)).await;
    let log = gw.log();
    assert!(status.success(), "{status}; log:\n{log}");
    // The last line the gateway writes is in: the log was read to its end.
    assert!(log.contains("drained; exiting"), "{log}");
    assert!(log.contains("2 API keys configured"), "{log}");
    assert!(
        log.contains("invalid_api_key"),
        "the rejection is logged: {log}"
    );
    for secret in ["env-key", "env-upstream-secret"] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

/// The real binary writing JSON lines at `RUST_LOG=debug`, with keys and a live upstream: the
/// access lines are there (so the check is not vacuous), and no key, upstream key or prompt.
#[tokio::test]
async fn prompts_and_keys_never_reach_the_json_log() {
    const PROMPT: &str = "my-secret-prompt-text-93c1";
    let mock = Mock::fast();
    let mut gw = support::GatewayProcess::start_with_env(
        &[
            "--upstream",
            &mock.url(),
            "--log-format",
            "json",
            "--cache-mode",
            "all",
        ],
        &[
            ("GATEWAY_API_KEYS", "env-key-json-1"),
            ("GATEWAY_UPSTREAM_API_KEY", "env-upstream-json-secret"),
            ("RUST_LOG", "debug"),
        ],
    );
    for stream in [false, true] {
        let mut body = chat_body(stream);
        body["messages"][0]["content"] = Value::from(PROMPT);
        let id = format!("leak-check-{stream}");
        let response = post_chat(
            &gw.url(),
            &body,
            &[
                ("authorization", "Bearer env-key-json-1"),
                ("x-request-id", &id),
            ],
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.bytes().await.unwrap();
    }
    let refused = post_chat(
        &gw.url(),
        &chat_body(false),
        &[("authorization", "Bearer env-key-json-wrong")],
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    gw.sigterm();
    assert!(gw.exit_within(Duration::from_secs(20)).await.success());
    let log = gw.log_once_it_has("drained");
    for id in ["leak-check-false", "leak-check-true"] {
        assert!(
            log.lines()
                .any(|line| line.contains(id) && line.contains("\"outcome\"")),
            "no access line for {id}:\n{log}"
        );
    }
    for secret in [
        "env-key-json",
        "env-upstream-json-secret",
        PROMPT,
        "my-secret-prompt",
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}
