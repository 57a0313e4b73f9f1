//! Lesson 9: retries and hedges, each driven by the mock's fault and latency knobs, with the
//! exact response, the `x-gateway-attempts` header, the mock's counters (what the upstream
//! really saw) and the metric that moved.
//!
//! Retries: retry then success; the retry budget exhausted; a `Retry-After` longer than the cap
//! relayed as is; a dead upstream retried, then 502; never a retry after the first byte.
//! Hedges: a hedge wins and the loser is cancelled; the deadline answers 504; the budget stops
//! hedging; invalid per-request values are a 400 naming the range.
//!
//! Each failure by its documented answer: an upstream 502 and 504 retried; a connection broken
//! after the request was sent a 502 with a null code, not retried; a body broken off before its
//! first byte retried, then 502 `upstream_broke_off`; a connect timeout a 504
//! `upstream_unreachable`, retried; `x-gateway-deadline-ms` on an unhedged request a 504
//! `deadline_exceeded`; `x-gateway-hedge-delay-ms: 0` no hedge on a hedged route.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use support::scripted::{Reply, Scripted, Unanswering};
use support::{
    MODES, Mock, chat_body, dead_upstream, gateway, json_of, metric, metrics_text, openai_error,
    post_chat, read_sse,
};

/// Fast backoff, so retry tests take milliseconds; the policy under test is the count and the
/// budget, not the wait.
const FAST_BACKOFF: [&str; 4] = ["--retry-backoff-ms", "5", "--retry-backoff-max-ms", "20"];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut flags = FAST_BACKOFF.to_vec();
    flags.extend_from_slice(extra);
    flags
}

/// `/v1/chat/completions` hedged after `delay_ms`, with a hedge budget of `budget` %.
fn hedged(delay_ms: &'static str, budget: &'static str) -> [&'static str; 6] {
    [
        "--hedge-routes",
        "/v1/chat/completions",
        "--hedge-delay-ms",
        delay_ms,
        "--hedge-budget-percent",
        budget,
    ]
}

fn attempts(response: &reqwest::Response) -> u32 {
    response.headers()["x-gateway-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A fast mock whose first `first` requests get `fault`, the rest none.
fn mock_with(fault: &str, first: &str) -> Mock {
    Mock::fast_with(&["--fault", fault, "--fault-first", first])
}

#[tokio::test]
async fn a_failed_attempt_is_retried_and_the_client_sees_only_the_success() {
    for mode in MODES {
        let mock = mock_with("503", "1");
        let gw = gateway(mode, &mock.url(), &with(&[]));
        let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{mode}");
        assert_eq!(attempts(&response), 2, "{mode}");
        let (_, body) = json_of(response).await;
        assert_eq!(body["object"], "chat.completion", "{mode}: {body}");
        let chat = mock.stats().await.chat;
        assert_eq!(chat.requests, 2, "{mode}: {chat:?}");
        assert_eq!(chat.faults.overloaded, 1, "{mode}: {chat:?}");
        let retries = "gateway_upstream_attempts_total{provider=\"default\",kind=\"retry\"}";
        assert_eq!(metric(&gw.url(), retries).await, 1.0, "{mode}");
    }
}

#[tokio::test]
async fn the_retry_budget_runs_out_and_the_upstream_error_goes_through() {
    let mock = mock_with("500", "1000");
    // 20 %: the first request may retry once (the bucket starts with one token), then each
    // request earns a fifth of one, so the next ones fail at once.
    let gw = gateway("fixed", &mock.url(), &with(&["--retries", "2"]));
    let first = post_chat(&gw.url(), &chat_body(false), &[]).await;
    assert_eq!(first.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(attempts(&first), 2, "one retry, then the budget is empty");
    for _ in 0..3 {
        let next = post_chat(&gw.url(), &chat_body(false), &[]).await;
        assert_eq!(next.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(attempts(&next), 1, "no budget, no retry");
        let (_, body) = json_of(next).await;
        assert_eq!(
            openai_error(&body)["type"],
            "server_error",
            "the upstream's own error"
        );
    }
    assert_eq!(mock.stats().await.chat.requests, 5);
    let text = metrics_text(&gw.url()).await;
    let sample = |s: &str| common::prometheus::sample(&text, s);
    assert_eq!(
        sample("gateway_retries_given_up_total{reason=\"budget\"}"),
        Some(4.0),
        "{text}"
    );
}

/// Budgets are per provider: a provider that is down spends its own, not its neighbour's.
#[tokio::test]
async fn one_providers_outage_does_not_spend_anothers_retries() {
    let down = mock_with("500", "1000");
    let flaky = mock_with("503", "1");
    let toml = format!(
        "[[providers]]\nname = \"down\"\nbase-url = \"{}\"\nmodels = [\"model-a\"]\n\n\
         [[providers]]\nname = \"flaky\"\nbase-url = \"{}\"\nmodels = [\"model-b\"]\n",
        down.url(),
        flaky.url()
    );
    let gw = support::gateway_with_file("fixed", &toml, &with(&[]));
    let model = |name: &str| {
        let mut body = chat_body(false);
        body["model"] = serde_json::json!(name);
        body
    };
    for expected in [2, 1, 1] {
        let response = post_chat(&gw.url(), &model("model-a"), &[]).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(attempts(&response), expected, "down's budget runs out");
    }
    let response = post_chat(&gw.url(), &model("model-b"), &[]).await;
    assert_eq!(response.status(), StatusCode::OK, "flaky still has its own");
    assert_eq!(attempts(&response), 2);
}

#[tokio::test]
async fn max_retries_then_the_last_answer_goes_through() {
    let mock = mock_with("503", "1000");
    let gw = gateway(
        "fixed",
        &mock.url(),
        &with(&["--retries", "2", "--retry-budget-percent", "100"]),
    );
    let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&response), 3);
    assert_eq!(mock.stats().await.chat.requests, 3);
    assert_eq!(
        metric(
            &gw.url(),
            "gateway_retries_given_up_total{reason=\"max_retries\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_the_cap_and_relayed_past_it() {
    // The mock's 429 asks for 1 s. Under a 5 s cap the gateway waits and retries ...
    let mock = mock_with("429", "1");
    let gw = gateway("fixed", &mock.url(), &with(&[]));
    let started = std::time::Instant::now();
    let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(attempts(&response), 2);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After: {:?}",
        started.elapsed()
    );
    // ... under a 500 ms cap it passes the 429 on, with the upstream's Retry-After.
    let mock = mock_with("429", "1");
    let gw = gateway(
        "fixed",
        &mock.url(),
        &with(&["--retry-after-max-ms", "500"]),
    );
    let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(attempts(&response), 1);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(
        metric(
            &gw.url(),
            "gateway_retries_given_up_total{reason=\"retry_after_too_long\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_retried_then_502() {
    for mode in MODES {
        let gw = gateway(
            mode,
            &dead_upstream(),
            &with(&["--retry-budget-percent", "100"]),
        );
        let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{mode}");
        assert_eq!(attempts(&response), 3, "{mode}");
        let (_, body) = json_of(response).await;
        assert_eq!(
            openai_error(&body)["code"],
            "upstream_unreachable",
            "{mode}: {body}"
        );
    }
}

#[tokio::test]
async fn a_stream_cut_after_its_first_byte_is_never_retried() {
    for mode in MODES {
        let mock = mock_with("reset", "1");
        let gw = gateway(mode, &mock.url(), &with(&["--retry-budget-percent", "100"]));
        let response = post_chat(&gw.url(), &chat_body(true), &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{mode}");
        assert_eq!(attempts(&response), 1, "{mode}");
        let sse = read_sse(response, Duration::from_secs(10)).await;
        assert!(sse.error.is_some(), "{mode}: the client sees the cut");
        assert!(!sse.text().is_empty(), "{mode}: after some tokens");
        assert_eq!(
            mock.stats().await.chat.requests,
            1,
            "{mode}: no second attempt"
        );
    }
}

/// `--fault slow --fault-first 1`: the first attempt's first token comes 10 x 100 ms later;
/// the hedge, sent after 150 ms, answers in 100 ms and wins. Tokens 300 ms apart: in broken
/// mode the loser's pool thread learns it lost at the slow first token, and must find the
/// upstream still generating then (5 ms apart, a starved thread once found it done).
#[tokio::test]
async fn a_hedge_wins_and_the_slow_attempt_is_cancelled() {
    for mode in MODES {
        let mock = Mock::with_flags(&[
            "--ttft-ms",
            "100",
            "--itl-ms",
            "300",
            "--tokens",
            "4",
            "--fault",
            "slow",
            "--fault-first",
            "1",
        ]);
        let gw = gateway(
            mode,
            &mock.url(),
            &[
                "--hedge-routes",
                "/v1/chat/completions",
                "--hedge-delay-ms",
                "150",
            ],
        );
        let response = post_chat(&gw.url(), &chat_body(true), &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{mode}");
        assert_eq!(attempts(&response), 2, "{mode}");
        assert!(
            response.headers().get("x-mock-fault").is_none(),
            "{mode}: the fast attempt's answer"
        );
        let sse = read_sse(response, Duration::from_secs(10)).await;
        assert!(sse.error.is_none(), "{mode}: {:?}", sse.error);
        assert_eq!(
            sse.events.last().map(|e| e.data.as_str()),
            Some("[DONE]"),
            "{mode}"
        );
        // The loser's upstream request is cancelled (in broken mode at its first token).
        mock.wait_stats("mock chat.cancelled >= 1", Duration::from_secs(10), |s| {
            s.chat.cancelled >= 1
        })
        .await;
        let text = metrics_text(&gw.url()).await;
        let sample = |s: &str| common::prometheus::sample(&text, s);
        assert_eq!(
            sample("gateway_hedges_fired_total"),
            Some(1.0),
            "{mode}: {text}"
        );
        assert_eq!(sample("gateway_hedges_won_total"), Some(1.0), "{mode}");
        assert_eq!(
            sample("gateway_hedges_cancelled_total"),
            Some(1.0),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn a_hedged_request_past_its_deadline_is_a_504() {
    let mock = Mock::fast();
    // Enough budget for both hedges; the budget has its own test.
    let gw = gateway("fixed", &mock.url(), &hedged("100", "100"));
    let slow = [("x-mock-ttft-ms", "5000"), ("x-gateway-deadline-ms", "400")];
    let response = post_chat(&gw.url(), &chat_body(true), &slow).await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(attempts(&response), 3, "the first and two hedges");
    let (_, body) = json_of(response).await;
    let error = openai_error(&body);
    assert_eq!(error["code"], "deadline_exceeded", "{body}");
    assert!(
        error["message"].as_str().unwrap().contains("400 ms"),
        "{body}"
    );
    mock.wait_stats("mock chat.cancelled >= 3", Duration::from_secs(10), |s| {
        s.chat.cancelled >= 3
    })
    .await;
    assert_eq!(
        metric(&gw.url(), "gateway_deadline_exceeded_total").await,
        1.0
    );
}

#[tokio::test]
async fn the_hedge_budget_stops_hedging_when_every_request_is_slow() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &hedged("20", "10"));
    // Every request is slower than the hedge delay: an overloaded upstream.
    let slow = [("x-mock-ttft-ms", "120")];
    for _ in 0..10 {
        let response = post_chat(&gw.url(), &chat_body(false), &slow).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let text = metrics_text(&gw.url()).await;
    let sample = |s: &str| support::series(&text, s);
    let fired = sample("gateway_hedges_fired_total");
    // One token to start with, a tenth of one per request: at most 2 hedges in 10 requests,
    // where unbounded hedging would have sent 20.
    assert!((1.0..=2.0).contains(&fired), "{text}");
    assert!(
        sample("gateway_hedges_skipped_total{reason=\"budget\"}") >= 8.0,
        "{text}"
    );
    assert_eq!(mock.stats().await.chat.requests, 10 + fired as u64);
}

#[tokio::test]
async fn invalid_hedge_and_deadline_values_are_a_400_naming_the_range() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &[]);
    for (header, value, range) in [
        ("x-gateway-hedge-delay-ms", "5", "10..=60000"),
        ("x-gateway-hedge-delay-ms", "soon", "10..=60000"),
        ("x-gateway-deadline-ms", "50", "100..=600000"),
        ("x-gateway-deadline-ms", "-1", "100..=600000"),
    ] {
        let response = post_chat(&gw.url(), &chat_body(false), &[(header, value)]).await;
        let (status, body) = json_of(response).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header}: {value}");
        let error = openai_error(&body);
        assert_eq!(error["param"], header, "{body}");
        assert_eq!(error["code"], "invalid_header", "{body}");
        assert!(error["message"].as_str().unwrap().contains(range), "{body}");
    }
    assert_eq!(
        mock.stats().await.chat.requests,
        0,
        "refused before any upstream call"
    );
    // Per request, hedging can be turned on for an unhedged route.
    let response = post_chat(
        &gw.url(),
        &chat_body(false),
        &[
            ("x-gateway-hedge-delay-ms", "20"),
            ("x-mock-ttft-ms", "300"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(attempts(&response) >= 2, "hedged on request");
}

/// "The upstream answered 429, 500, 502, 503 or 504": a 502 and a 504 of the upstream's own
/// (the mock has no such fault: a scripted upstream answers them) are retried, and the client
/// sees only the success that followed.
#[tokio::test]
async fn an_upstream_502_and_504_are_retried() {
    for mode in MODES {
        let upstream =
            Scripted::start(&[Reply::Status(502), Reply::Status(504), Reply::Completion]);
        let gw = gateway(
            mode,
            &upstream.url(),
            &with(&["--retries", "2", "--retry-budget-percent", "100"]),
        );
        let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
        assert_eq!(response.status(), StatusCode::OK, "{mode}");
        assert_eq!(attempts(&response), 3, "{mode}");
        let (_, body) = json_of(response).await;
        assert_eq!(body["object"], "chat.completion", "{mode}: {body}");
        assert_eq!(upstream.requests(), 3, "{mode}: three attempts reached it");
        let retries = "gateway_upstream_attempts_total{provider=\"default\",kind=\"retry\"}";
        assert_eq!(metric(&gw.url(), retries).await, 2.0, "{mode}");
    }
}

/// A connection that breaks after the request was sent (the mock's `reset`: closed before any
/// answer) is a 502 with a null `code`, and is not retried: the upstream may have acted on it.
#[tokio::test]
async fn a_502_with_a_null_code_is_not_retried() {
    for mode in MODES {
        let mock = mock_with("reset", "1000");
        let gw = gateway(mode, &mock.url(), &with(&["--retry-budget-percent", "100"]));
        let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{mode}");
        assert_eq!(attempts(&response), 1, "{mode}");
        let (_, body) = json_of(response).await;
        let error = openai_error(&body);
        assert_eq!(error["type"], "upstream_error", "{mode}: {body}");
        assert_eq!(error["code"], serde_json::Value::Null, "{mode}: {body}");
        let chat = mock.stats().await.chat;
        assert_eq!(chat.requests, 1, "{mode}: sent once: {chat:?}");
    }
}

/// A hedged request whose every attempt gets a 200 head and then a body that breaks off before
/// its first byte: each break-off is retried (nothing reached the client), and when they run
/// out the answer is 502 `upstream_broke_off`.
#[tokio::test]
async fn a_body_broken_off_before_its_first_byte_is_retried_then_502_upstream_broke_off() {
    for mode in MODES {
        let upstream = Scripted::start(&[Reply::HeadThenClose]);
        let gw = gateway(
            mode,
            &upstream.url(),
            &with(&["--retries", "2", "--retry-budget-percent", "100"]),
        );
        // Hedged (success is the first byte), with a delay no attempt reaches: retries only.
        let hedged = [("x-gateway-hedge-delay-ms", "60000")];
        let response = post_chat(&gw.url(), &chat_body(true), &hedged).await;
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{mode}");
        assert_eq!(attempts(&response), 3, "{mode}");
        let (_, body) = json_of(response).await;
        let error = openai_error(&body);
        assert_eq!(error["code"], "upstream_broke_off", "{mode}: {body}");
        assert_eq!(error["type"], "upstream_error", "{mode}: {body}");
        assert_eq!(upstream.requests(), 3, "{mode}");
    }
}

/// An upstream that never completes a connection: after `--upstream-connect-timeout-secs`, a
/// 504 `upstream_unreachable`, retried like a 502 (the request never left).
#[tokio::test]
async fn a_connect_timeout_is_a_504_upstream_unreachable_and_retried() {
    let upstream = Unanswering::start();
    for mode in MODES {
        let gw = gateway(
            mode,
            &upstream.url(),
            &with(&[
                "--upstream-connect-timeout-secs",
                "1",
                "--retries",
                "1",
                "--retry-budget-percent",
                "100",
            ]),
        );
        let started = std::time::Instant::now();
        let response = post_chat(&gw.url(), &chat_body(false), &[]).await;
        let waited = started.elapsed();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT, "{mode}");
        assert_eq!(attempts(&response), 2, "{mode}");
        let (_, body) = json_of(response).await;
        let error = openai_error(&body);
        assert_eq!(error["code"], "upstream_unreachable", "{mode}: {body}");
        assert_eq!(error["type"], "upstream_error", "{mode}: {body}");
        // Two connect timeouts of 1 s each: timers never fire early.
        assert!(waited >= Duration::from_millis(1900), "{mode}: {waited:?}");
    }
}

/// `x-gateway-deadline-ms` bounds an unhedged request too: no hedge, one attempt, 504
/// `deadline_exceeded` when its head has not come by then.
#[tokio::test]
async fn an_unhedged_request_past_its_deadline_header_is_a_504() {
    let mock = Mock::fast();
    for mode in MODES {
        let gw = gateway(mode, &mock.url(), &[]);
        let headers = [("x-mock-ttft-ms", "5000"), ("x-gateway-deadline-ms", "300")];
        let response = post_chat(&gw.url(), &chat_body(false), &headers).await;
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT, "{mode}");
        assert_eq!(attempts(&response), 1, "{mode}");
        let (_, body) = json_of(response).await;
        let error = openai_error(&body);
        assert_eq!(error["code"], "deadline_exceeded", "{mode}: {body}");
        assert!(
            error["message"].as_str().unwrap().contains("300 ms"),
            "{body}"
        );
        let text = metrics_text(&gw.url()).await;
        assert_eq!(
            support::series(&text, "gateway_deadline_exceeded_total"),
            1.0
        );
        assert_eq!(support::series(&text, "gateway_hedges_fired_total"), 0.0);
    }
}

/// `x-gateway-hedge-delay-ms: 0` turns hedging off for one request on a hedged route: the same
/// slow request is hedged without it and sent once with it.
#[tokio::test]
async fn hedge_delay_zero_turns_hedging_off_on_a_hedged_route() {
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &hedged("20", "100"));
    let slow = ("x-mock-ttft-ms", "300");
    let response = post_chat(&gw.url(), &chat_body(false), &[slow]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(attempts(&response) >= 2, "the route is hedged");
    let fired = metric(&gw.url(), "gateway_hedges_fired_total").await;
    let sent = mock.stats().await.chat.requests;

    let off = [slow, ("x-gateway-hedge-delay-ms", "0")];
    let response = post_chat(&gw.url(), &chat_body(false), &off).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(attempts(&response), 1, "not hedged");
    assert_eq!(metric(&gw.url(), "gateway_hedges_fired_total").await, fired);
    assert_eq!(mock.stats().await.chat.requests, sent + 1);
}
