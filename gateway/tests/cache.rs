//! Lesson: the response cache. A repeated question is answered once per caller, in either form
//! (JSON or stream), never across API keys, as the request's `Cache-Control` allows; identical
//! misses in flight make one upstream request; Redis shares answers between instances and its
//! outage is a miss, never an error; memory stays within `--cache-max-bytes`.
//!
//! Real servers throughout: a mock, embedded gateways, and a throwaway `redis-server` from
//! `common::services` (skipped loudly when it is not installed).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use common::services::Redis;
use futures_util::future::join_all;
use serde_json::{Value, json};
use support::{Mock, gateway, json_of, metric, openai_error, post_chat, read_sse, wait_for};

const KEY_A: &str = "key-a";
const KEY_B: &str = "key-b";
const BEARER_A: (&str, &str) = ("authorization", "Bearer key-a");
const BEARER_B: (&str, &str) = ("authorization", "Bearer key-b");

/// A gateway with the cache `mode`, two API keys, and `extra` flags.
fn cached_gateway(mock: &Mock, mode: &str, extra: &[&str]) -> gateway::embed::Running {
    let mut flags = vec!["--cache-mode", mode, "--api-key", KEY_A, "--api-key", KEY_B];
    flags.extend_from_slice(extra);
    gateway("fixed", &mock.url(), &flags)
}

/// A chat request for `prompt` at temperature 0, plus `extra` fields.
fn ask(prompt: &str, extra: &Value) -> Value {
    let mut body = json!({
        "model": "gpt-4o",
        "temperature": 0,
        "messages": [{"role": "user", "content": prompt}],
    });
    for (name, value) in extra.as_object().into_iter().flatten() {
        body[name] = value.clone();
    }
    body
}

/// One answer: status, `x-gateway-cache`, `Age`, and the body as text.
#[derive(Debug)]
struct Answer {
    status: u16,
    cache: String,
    age: Option<u64>,
    method: String,
    text: String,
}

async fn send(base: &str, body: &Value, headers: &[(&str, &str)]) -> Answer {
    let response = post_chat(base, body, headers).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let cache = header("x-gateway-cache").unwrap_or_default();
    let age = header("age").and_then(|a| a.parse().ok());
    let method = header("x-stream-method").unwrap_or_default();
    let status = response.status().as_u16();
    // A body cut by the upstream is an answer too (the test of faults reads it).
    let text = match response.text().await {
        Ok(text) => text,
        Err(e) => format!("<cut: {e}>"),
    };
    Answer {
        status,
        cache,
        age,
        method,
        text,
    }
}

async fn upstream_requests(mock: &Mock) -> u64 {
    mock.stats().await.chat.requests
}

/// Waits until the gateway has written `n` answers to `tier` (a streamed answer is stored by
/// a task of its own, after its client had its last byte).
async fn stored(base: &str, tier: &str, n: f64) {
    let series = format!("gateway_cache_stores_total{{tier=\"{tier}\"}}");
    wait_for(&series, Duration::from_secs(10), || async {
        (metric(base, &series).await >= n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_same_request_twice_is_one_upstream_request_and_never_shared_across_keys() {
    let mock = Mock::fast();
    let gw = cached_gateway(&mock, "all", &[]);
    let body = ask("What is the capital of France?", &json!({}));

    let first = send(&gw.url(), &body, &[BEARER_A]).await;
    assert_eq!(
        (first.status, first.cache.as_str()),
        (200, "miss"),
        "{first:?}"
    );
    assert_eq!(first.age, None);
    stored(&gw.url(), "memory", 1.0).await;
    let second = send(&gw.url(), &body, &[BEARER_A]).await;
    assert_eq!(
        (second.status, second.cache.as_str()),
        (200, "hit"),
        "{second:?}"
    );
    assert_eq!(second.age, Some(0));
    assert_eq!(second.method, "cache");
    assert_eq!(
        second.text, first.text,
        "a hit is the stored answer, byte for byte"
    );
    let choices = |text: &str| serde_json::from_str::<Value>(text).unwrap()["choices"].to_string();
    assert_eq!(choices(&second.text), choices(&first.text));
    assert_eq!(upstream_requests(&mock).await, 1);

    // Another key asking the very same question is another caller: its own miss.
    let other = send(&gw.url(), &body, &[BEARER_B]).await;
    assert_eq!(other.cache, "miss", "{other:?}");
    assert_eq!(upstream_requests(&mock).await, 2);
    assert_eq!(
        metric(&gw.url(), "gateway_cache_hits_total{source=\"memory\"}").await,
        1.0
    );
    assert_eq!(metric(&gw.url(), "gateway_cache_misses_total").await, 2.0);
}

#[tokio::test]
async fn cache_control_no_store_no_cache_and_max_age_are_honoured() {
    let mock = Mock::fast();
    let gw = cached_gateway(&mock, "all", &[]);
    let base = gw.url();

    // no-store: answered, not kept.
    let a = ask("no-store", &json!({}));
    let cache = |answer: Answer| answer.cache;
    assert_eq!(
        cache(send(&base, &a, &[BEARER_A, ("cache-control", "no-store")]).await),
        "miss"
    );
    assert_eq!(cache(send(&base, &a, &[BEARER_A]).await), "miss");
    stored(&base, "memory", 1.0).await;
    assert_eq!(cache(send(&base, &a, &[BEARER_A]).await), "hit");
    assert_eq!(
        metric(&base, "gateway_cache_not_stored_total{reason=\"no_store\"}").await,
        1.0
    );

    // no-cache: not read (goes upstream), still kept.
    let b = ask("no-cache", &json!({}));
    assert_eq!(cache(send(&base, &b, &[BEARER_A]).await), "miss");
    stored(&base, "memory", 2.0).await;
    let before = upstream_requests(&mock).await;
    assert_eq!(
        cache(send(&base, &b, &[BEARER_A, ("cache-control", "no-cache")]).await),
        "miss"
    );
    assert_eq!(upstream_requests(&mock).await, before + 1);
    assert_eq!(cache(send(&base, &b, &[BEARER_A]).await), "hit");

    // Both: the cache is bypassed.
    let both = send(
        &base,
        &b,
        &[BEARER_A, ("cache-control", "no-cache, no-store")],
    )
    .await;
    assert_eq!(both.cache, "bypass");
    assert_eq!(
        metric(
            &base,
            "gateway_cache_bypasses_total{reason=\"cache_control\"}"
        )
        .await,
        1.0
    );

    // max-age: an answer older than the bound is not served; a fresh one replaces it.
    let c = ask("max-age", &json!({}));
    assert_eq!(cache(send(&base, &c, &[BEARER_A]).await), "miss");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let old = send(&base, &c, &[BEARER_A]).await;
    assert_eq!(old.cache, "hit");
    assert!(old.age.is_some_and(|age| age >= 1), "{old:?}");
    assert_eq!(
        cache(send(&base, &c, &[BEARER_A, ("cache-control", "max-age=0")]).await),
        "miss"
    );
    stored(&base, "memory", 5.0).await;
    let fresh = send(&base, &c, &[BEARER_A, ("cache-control", "max-age=5")]).await;
    assert_eq!(
        (fresh.cache.as_str(), fresh.age),
        ("hit", Some(0)),
        "{fresh:?}"
    );

    // A bound that is not a number is the client's mistake, named.
    let response = post_chat(&base, &c, &[BEARER_A, ("cache-control", "max-age=soon")]).await;
    let (status, error) = json_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(openai_error(&error)["code"], "invalid_cache_control");
}

#[tokio::test]
async fn deterministic_mode_bypasses_sampled_requests() {
    let mock = Mock::fast();
    let gw = cached_gateway(&mock, "deterministic", &[]);
    let base = gw.url();
    let sampled = ask("a poem", &json!({"temperature": 0.7}));
    for _ in 0..2 {
        assert_eq!(send(&base, &sampled, &[BEARER_A]).await.cache, "bypass");
    }
    assert_eq!(upstream_requests(&mock).await, 2);
    assert_eq!(
        metric(
            &base,
            "gateway_cache_bypasses_total{reason=\"not_deterministic\"}"
        )
        .await,
        2.0
    );
    let seeded = ask("a poem", &json!({"temperature": 0.7, "seed": 42}));
    assert_eq!(send(&base, &seeded, &[BEARER_A]).await.cache, "miss");
    stored(&base, "memory", 1.0).await;
    assert_eq!(send(&base, &seeded, &[BEARER_A]).await.cache, "hit");

    // With the cache off there is no header at all.
    let off = cached_gateway(&mock, "off", &[]);
    assert_eq!(send(&off.url(), &seeded, &[BEARER_A]).await.cache, "");
}

/// The `delta.content` pieces of a replayed stream, checking its shape on the way: a role
/// chunk first, one finish chunk, a usage chunk when asked, `[DONE]` last.
fn stream_pieces(events: &[String], usage: bool) -> (Vec<String>, Value) {
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["choices"][0]["finish_reason"], "stop");
    let last = chunks.last().unwrap();
    if usage {
        assert_eq!(last["choices"], json!([]));
    }
    let pieces = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    (pieces, last["usage"].clone())
}

#[tokio::test]
async fn a_stream_is_served_from_a_json_answer_and_the_reverse() {
    let mock = Mock::fast_with(&["--tokens", "6"]);
    let gw = cached_gateway(&mock, "all", &[]);
    let base = gw.url();

    // JSON first, then a stream with usage: a hit, replayed word by word.
    let body = ask("json then stream", &json!({}));
    let json_answer = send(&base, &body, &[BEARER_A]).await;
    let completion: Value = serde_json::from_str(&json_answer.text).unwrap();
    stored(&base, "memory", 1.0).await;
    let streamed = ask(
        "json then stream",
        &json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let response = post_chat(&base, &streamed, &[BEARER_A]).await;
    assert_eq!(response.headers()["x-gateway-cache"], "hit");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let sse = read_sse(response, Duration::from_secs(10)).await;
    assert!(sse.error.is_none(), "{sse:?}");
    let events: Vec<String> = sse.events.iter().map(|e| e.data.clone()).collect();
    let (pieces, usage) = stream_pieces(&events, true);
    let content = completion["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert_eq!(pieces.concat(), content);
    assert_eq!(pieces.len(), 6, "one delta per word: {pieces:?}");
    assert_eq!(usage, completion["usage"]);

    // A stream first (with usage), then JSON: a hit with the same content.
    let streamed = ask(
        "stream then json",
        &json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let first = send(&base, &streamed, &[BEARER_A]).await;
    assert_eq!(first.cache, "miss");
    stored(&base, "memory", 2.0).await;
    let hit = send(&base, &ask("stream then json", &json!({})), &[BEARER_A]).await;
    assert_eq!(hit.cache, "hit", "{hit:?}");
    let completion: Value = serde_json::from_str(&hit.text).unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(
        completion["choices"][0]["message"]["content"],
        mock_llm_text(6)
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "stop");
    assert_eq!(completion["usage"]["completion_tokens"], 6);

    // A stream without usage cannot answer a request that wants usage: a miss, not a lie.
    let bare = ask("no usage", &json!({"stream": true}));
    assert_eq!(send(&base, &bare, &[BEARER_A]).await.cache, "miss");
    stored(&base, "memory", 3.0).await;
    assert_eq!(send(&base, &bare, &[BEARER_A]).await.cache, "hit");
    assert_eq!(
        send(&base, &ask("no usage", &json!({})), &[BEARER_A])
            .await
            .cache,
        "miss"
    );
}

/// The tee keeps a copy of a streamed miss without holding it back: the first token reaches
/// the client long before the last one is even produced, and the whole stream is stored after.
#[tokio::test]
async fn a_streamed_miss_reaches_its_client_as_it_arrives() {
    let mock = Mock::fast_with(&["--itl-ms", "200", "--tokens", "5"]);
    let gw = cached_gateway(&mock, "all", &[]);
    let body = ask("as it arrives", &json!({"stream": true}));
    let response = post_chat(&gw.url(), &body, &[BEARER_A]).await;
    assert_eq!(response.headers()["x-gateway-cache"], "miss");
    let sse = read_sse(response, Duration::from_secs(10)).await;
    let first_token = sse
        .events
        .iter()
        .find(|e| e.data.contains("\"content\":\"") && !e.data.contains("\"content\":\"\""))
        .expect("a token");
    let done = sse.events.last().expect("events");
    assert_eq!(done.data, "[DONE]");
    // Tokens 200 ms apart: the first came at least ~800 ms before the end (600 ms: a wide margin).
    assert!(
        done.at.duration_since(first_token.at) >= Duration::from_millis(600),
        "the stream was held back: first token {:?} before the end",
        done.at.duration_since(first_token.at)
    );
    stored(&gw.url(), "memory", 1.0).await;
    assert_eq!(send(&gw.url(), &body, &[BEARER_A]).await.cache, "hit");
}

/// What mock-llm's answer of `n` tokens says.
fn mock_llm_text(n: u32) -> String {
    mock_llm::openai::text(n)
}

#[tokio::test]
async fn fifty_identical_misses_in_flight_make_one_upstream_request() {
    let mock = Mock::fast_with(&["--ttft-ms", "400"]);
    let gw = cached_gateway(&mock, "all", &[]);
    let base = gw.url();
    // All in one form: which of the fifty leads is luck on a busy machine, and a streamed leader
    // fetched without `include_usage` cannot answer followers that want usage (a JSON answer
    // always carries it), so they would each go upstream. Replays across forms are tested above.
    let body = ask("thundering herd", &json!({}));
    let answers = join_all((0..50).map(|_| send(&base, &body, &[BEARER_A]))).await;
    assert_eq!(
        upstream_requests(&mock).await,
        1,
        "one upstream request for 50"
    );
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    let misses = answers.iter().filter(|a| a.cache == "miss").count();
    let hits = answers.iter().filter(|a| a.cache == "hit").count();
    assert_eq!((misses, hits), (1, 49), "{answers:?}");
    // Most waited for the first one; on a busy machine a late one may find its answer already
    // stored. Either way, no second upstream request.
    let in_flight = metric(&base, "gateway_cache_hits_total{source=\"in_flight\"}").await;
    let memory = metric(&base, "gateway_cache_hits_total{source=\"memory\"}").await;
    assert!(in_flight >= 1.0, "{in_flight} followers");
    assert_eq!(in_flight + memory, 49.0);
}

/// `--cache-ttl-secs`: an answer older than the TTL is gone, and the next request is a miss.
#[tokio::test]
async fn an_answer_expires_after_the_ttl() {
    let mock = Mock::fast();
    let gw = cached_gateway(&mock, "all", &["--cache-ttl-secs", "1"]);
    let body = ask("expires", &json!({}));
    assert_eq!(send(&gw.url(), &body, &[BEARER_A]).await.cache, "miss");
    stored(&gw.url(), "memory", 1.0).await;
    assert_eq!(send(&gw.url(), &body, &[BEARER_A]).await.cache, "hit");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(send(&gw.url(), &body, &[BEARER_A]).await.cache, "miss");
    assert_eq!(upstream_requests(&mock).await, 2);
}

/// A request waiting for an identical one in flight waits at most its own deadline.
#[tokio::test]
async fn a_follower_waits_no_longer_than_its_deadline() {
    let mock = Mock::fast_with(&["--ttft-ms", "1500"]);
    let gw = cached_gateway(&mock, "all", &[]);
    let body = ask("slow", &json!({}));
    let base = gw.url();
    let leader = tokio::spawn({
        let (base, body) = (base.clone(), body.clone());
        async move { send(&base, &body, &[BEARER_A]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = post_chat(&base, &body, &[BEARER_A, ("x-gateway-deadline-ms", "300")]).await;
    let (status, error) = json_of(response).await;
    assert_eq!(status, 504);
    let error = openai_error(&error);
    assert_eq!(error["code"], "deadline_exceeded");
    assert!(
        error["message"].as_str().unwrap().contains("in flight"),
        "{error}"
    );
    let leader = leader.await.unwrap();
    assert_eq!((leader.status, leader.cache.as_str()), (200, "miss"));
    assert_eq!(upstream_requests(&mock).await, 1);
}

#[tokio::test]
async fn a_failed_or_cut_answer_is_not_stored() {
    let mock = Mock::fast();
    let gw = cached_gateway(&mock, "all", &["--retries", "0"]);
    let base = gw.url();
    let cut = ask("cut", &json!({"stream": true}));
    let reset = [BEARER_A, ("x-mock-fault", "reset"), ("x-mock-tokens", "10")];
    for _ in 0..2 {
        assert_eq!(send(&base, &cut, &reset).await.cache, "miss");
    }
    let limited = [BEARER_A, ("x-mock-fault", "429")];
    for _ in 0..2 {
        let answer = send(&base, &ask("limited", &json!({})), &limited).await;
        assert_eq!((answer.status, answer.cache.as_str()), (429, "miss"));
    }
    wait_for("not stored", Duration::from_secs(10), || async {
        let incomplete = metric(
            &base,
            "gateway_cache_not_stored_total{reason=\"incomplete\"}",
        )
        .await;
        let status = metric(&base, "gateway_cache_not_stored_total{reason=\"status\"}").await;
        (incomplete == 2.0 && status == 2.0).then_some(())
    })
    .await;
    assert_eq!(
        metric(&base, "gateway_cache_stores_total{tier=\"memory\"}").await,
        0.0
    );
}

#[tokio::test]
async fn two_gateways_share_answers_through_redis() {
    let Some(redis) = Redis::start_for("two_gateways_share_answers_through_redis") else {
        return;
    };
    let mock = Mock::fast();
    let shared = ["--redis-url", &redis.url(), "--redis-timeout-ms", "1000"];
    let one = cached_gateway(&mock, "all", &shared);
    let two = cached_gateway(&mock, "all", &shared);
    let body = ask("shared", &json!({}));
    let first = send(&one.url(), &body, &[BEARER_A]).await;
    assert_eq!(first.cache, "miss");
    stored(&one.url(), "redis", 1.0).await;
    let second = send(&two.url(), &body, &[BEARER_A]).await;
    assert_eq!(
        (second.cache.as_str(), second.age),
        ("hit", Some(0)),
        "{second:?}"
    );
    assert_eq!(second.text, first.text);
    assert_eq!(
        metric(&two.url(), "gateway_cache_hits_total{source=\"redis\"}").await,
        1.0
    );
    // Kept in process on the second instance too: its next hit does not ask Redis.
    assert_eq!(send(&two.url(), &body, &[BEARER_A]).await.cache, "hit");
    assert_eq!(
        metric(&two.url(), "gateway_cache_hits_total{source=\"memory\"}").await,
        1.0
    );
    // The other key is not served the shared answer either.
    assert_eq!(send(&two.url(), &body, &[BEARER_B]).await.cache, "miss");
    assert_eq!(upstream_requests(&mock).await, 2);
}

#[tokio::test]
async fn a_dead_redis_is_a_miss_and_never_an_error() {
    let Some(mut redis) = Redis::start_for("a_dead_redis_is_a_miss_and_never_an_error") else {
        return;
    };
    let mock = Mock::fast();
    // Redis only (no in-process tier), so every lookup asks it.
    let flags = [
        "--redis-url",
        &redis.url(),
        "--cache-max-bytes",
        "0",
        "--redis-timeout-ms",
        "200",
    ];
    let gw = cached_gateway(&mock, "all", &flags);
    let base = gw.url();
    let body = ask("outage", &json!({}));
    assert_eq!(send(&base, &body, &[BEARER_A]).await.cache, "miss");
    stored(&base, "redis", 1.0).await;
    assert_eq!(send(&base, &body, &[BEARER_A]).await.cache, "hit");

    redis.kill();
    let errors = |base: String| async move {
        let text = support::metrics_text(&base).await;
        common::prometheus::samples(&text, "gateway_cache_redis_errors_total")
            .iter()
            .map(|(_, v)| *v)
            .sum::<f64>()
    };
    for _ in 0..3 {
        let answer = send(&base, &body, &[BEARER_A]).await;
        assert_eq!(
            (answer.status, answer.cache.as_str()),
            (200, "miss"),
            "{answer:?}"
        );
    }
    assert_eq!(upstream_requests(&mock).await, 4);
    wait_for("redis errors counted", Duration::from_secs(10), || async {
        (errors(base.clone()).await >= 3.0).then_some(())
    })
    .await;

    // Back, empty: the cache fills again without a restart of the gateway.
    redis.restart().unwrap();
    wait_for(
        "a store after the restart",
        Duration::from_secs(20),
        || async {
            let answer = send(&base, &body, &[BEARER_A]).await;
            assert_eq!(answer.status, 200);
            (answer.cache == "hit").then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn memory_stays_within_cache_max_bytes() {
    const MAX: f64 = 256.0 * 1024.0;
    // About 4 KB per answer, instantly: 10,000 distinct answers are 40 MB through a 256 KiB cache.
    let mock = Mock::with_flags(&["--ttft-ms", "0", "--itl-ms", "0", "--tokens", "600"]);
    let gw = cached_gateway(&mock, "all", &["--cache-max-bytes", "262144"]);
    let base = gw.url();
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let workers = (0..16).map(|w| {
        let client = client.clone();
        let url = format!("{base}/v1/chat/completions");
        async move {
            for i in (w..10_000).step_by(16) {
                let response = client
                    .post(&url)
                    .bearer_auth(KEY_A)
                    .json(&ask(&format!("question {i}"), &json!({})))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                response.bytes().await.unwrap();
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(240), join_all(workers))
        .await
        .expect("10,000 requests within 4 minutes");
    eprintln!("10,000 distinct answers in {:?}", started.elapsed());
    let bytes = metric(&base, "gateway_cache_bytes").await;
    let entries = metric(&base, "gateway_cache_entries").await;
    let evicted = metric(&base, "gateway_cache_evictions_total{cause=\"size\"}").await;
    assert_eq!(metric(&base, "gateway_cache_max_bytes").await, MAX);
    assert!(bytes <= MAX, "{bytes} bytes held, more than {MAX}");
    assert!(bytes > MAX / 2.0, "the cache is used: {bytes} bytes");
    assert!(
        entries < 200.0,
        "{entries} entries of ~6 KB cannot fit in 512 KiB"
    );
    assert!(evicted >= 9_000.0, "{evicted} evictions");
}
