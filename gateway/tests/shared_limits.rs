//! Rate limits shared by a fleet: two gateways, one Redis, one limit.
//!
//! Counted per instance, a key spread over two gateways gets twice its limit. With `--redis-url`
//! both count in the same GCRA bucket (one Lua script run by Redis per check), so the pair admits
//! the limit once. When Redis dies each instance falls back to its own share of the limit
//! (`--instances-hint 2`: half each), keeps serving, and says so in `/metrics`; when Redis comes
//! back they share again.
//!
//! The numbers are chosen so every count is exact whatever the machine's speed: 1 request per
//! minute with a burst of 30 means the bucket gains one request a minute, and each test runs in
//! seconds, so exactly the burst is admitted. (At `--rate-limit-rpm 30` the bucket would gain one
//! every 2 s: a slow run would see one or two more.)
//!
//! Real servers throughout: a mock, embedded gateways and a throwaway `redis-server`; each test
//! skips, loudly, without `redis-server` (a failure under `REQUIRE_SERVICES=1`).
#![allow(clippy::unwrap_used)]

mod support;

use std::cell::Cell;
use std::time::Duration;

use common::services::Redis;
use reqwest::StatusCode;
use serde_json::Value;
use support::{Mock, chat_body, gateway, gateway_with_file, json_of, metric, post_chat, wait_for};

const KEY: &str = "sk-shared-test-key";

/// A gateway with the one key `KEY` at 1 rpm, burst 30, counted in `redis`.
fn limited_gateway(mock: &Mock, redis: &Redis) -> gateway::embed::Running {
    gateway(
        "fixed",
        &mock.url(),
        &[
            "--api-key",
            KEY,
            "--rate-limit-rpm",
            "1",
            "--rate-limit-burst",
            "30",
            "--redis-url",
            &redis.url(),
            "--redis-timeout-ms",
            "300",
            "--instances-hint",
            "2",
        ],
    )
}

/// `n` requests of `KEY`, alternating between `bases`: how many each one admitted, in order. A
/// refusal must be the key's 429 and nothing else (never a 5xx because Redis is down).
async fn spread(bases: &[String], n: usize) -> Vec<usize> {
    let auth = format!("Bearer {KEY}");
    let headers = [("authorization", auth.as_str())];
    let mut admitted = vec![0; bases.len()];
    for i in 0..n {
        let which = i % bases.len();
        let response = post_chat(&bases[which], &chat_body(false), &headers).await;
        let status = response.status();
        let limit = response
            .headers()
            .get("x-ratelimit-limit-requests")
            .cloned();
        let retry_after = response.headers().get("retry-after").cloned();
        let (_, body) = json_of(response).await;
        match status {
            StatusCode::OK => admitted[which] += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
                assert!(retry_after.is_some(), "{body}");
            }
            other => panic!("request {i} to {}: {other} {body}", bases[which]),
        }
        assert_eq!(limit.unwrap(), "1", "the configured limit, shared or not");
    }
    admitted
}

async fn redis_keys(redis: &Redis) -> Vec<String> {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("KEYS")
        .arg("gateway:ratelimit:*")
        .query_async(&mut connection)
        .await
        .unwrap()
}

/// One series on each gateway.
async fn on_each(bases: &[String], series: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for base in bases {
        values.push(metric(base, series).await);
    }
    values
}

#[tokio::test]
async fn two_gateways_admit_a_keys_limit_once_fall_back_without_redis_and_share_again() {
    let test = "two_gateways_admit_a_keys_limit_once_fall_back_without_redis_and_share_again";
    let Some(mut redis) = Redis::start_for(test) else {
        return;
    };
    let mock = Mock::fast();
    let one = limited_gateway(&mock, &redis);
    let two = limited_gateway(&mock, &redis);
    let bases = [one.url(), two.url()];

    // Shared: 60 requests over both, the burst of 30 admitted once, not once per gateway.
    let admitted = spread(&bases, 60).await;
    assert_eq!(admitted.iter().sum::<usize>(), 30, "{admitted:?}");
    assert!(admitted.iter().all(|&n| n > 0), "both served: {admitted:?}");
    assert_eq!(mock.stats().await.chat.requests, 30);
    assert_eq!(
        on_each(&bases, "gateway_rate_limit_shared").await,
        [1.0, 1.0]
    );
    assert_eq!(
        on_each(&bases, "gateway_rate_limited_total{scope=\"key\"}")
            .await
            .iter()
            .sum::<f64>(),
        30.0
    );
    let fallback = "gateway_rate_limit_fallback_total{scope=\"key\"}";
    assert_eq!(on_each(&bases, fallback).await, [0.0, 0.0]);
    // One bucket in Redis, named by a digest: never the key itself.
    let keys = redis_keys(&redis).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let name = keys[0].strip_prefix("gateway:ratelimit:v1:key:").unwrap();
    assert!(
        name.len() == 32 && name.bytes().all(|b| b.is_ascii_hexdigit()),
        "{name}"
    );
    assert!(!keys[0].contains(KEY));

    // Redis gone: each gateway counts locally at half the limit (burst 15 each), serves, counts.
    redis.kill();
    let admitted = spread(&bases, 40).await;
    assert_eq!(admitted, [15, 15], "half the burst on each");
    assert_eq!(
        on_each(&bases, fallback).await,
        [20.0, 20.0],
        "every check, counted"
    );
    assert_eq!(
        on_each(&bases, "gateway_rate_limit_shared").await,
        [0.0, 0.0]
    );

    // Redis back (empty): shared again once each gateway asks it again. The local buckets are
    // spent, so a request admitted from here on was admitted by Redis.
    redis.restart().unwrap();
    let by_redis = Cell::new(0);
    for base in &bases {
        let by_redis = &by_redis;
        wait_for(
            "shared again",
            Duration::from_secs(20),
            move || async move {
                by_redis.set(by_redis.get() + spread(std::slice::from_ref(base), 1).await[0]);
                (metric(base, "gateway_rate_limit_shared").await == 1.0).then_some(())
            },
        )
        .await;
    }
    let admitted_by_redis = by_redis.get();
    let admitted = spread(&bases, 60).await;
    assert_eq!(
        admitted.iter().sum::<usize>() + admitted_by_redis,
        30,
        "one burst since Redis came back: {admitted:?} + {admitted_by_redis}"
    );
}

#[tokio::test]
async fn a_providers_rpm_is_shared_by_two_gateways() {
    let Some(redis) = Redis::start_for("a_providers_rpm_is_shared_by_two_gateways") else {
        return;
    };
    let mock = Mock::fast();
    let toml = format!(
        "[[providers]]\nname = \"metered\"\nbase-url = \"{}\"\nmodels = [\"*\"]\n\
         requests-per-minute = 1\nburst = 10\n",
        mock.url()
    );
    let shared = ["--redis-url", &redis.url(), "--redis-timeout-ms", "1000"];
    let one = gateway_with_file("fixed", &toml, &shared);
    let two = gateway_with_file("fixed", &toml, &shared);
    let bases = [one.url(), two.url()];

    let mut codes: Vec<Value> = Vec::new();
    for i in 0..20 {
        let (status, body) = json_of(post_chat(&bases[i % 2], &chat_body(false), &[]).await).await;
        match status {
            StatusCode::OK => codes.push(Value::Null),
            StatusCode::TOO_MANY_REQUESTS => codes.push(body["error"]["code"].clone()),
            other => panic!("{other} {body}"),
        }
    }
    let refused = codes
        .iter()
        .filter(|c| **c == "provider_rate_limited")
        .count();
    assert_eq!((20 - refused, refused), (10, 10), "{codes:?}");
    assert_eq!(
        mock.stats().await.chat.requests,
        10,
        "the refused never left"
    );
    let scope = "gateway_rate_limited_total{scope=\"provider\"}";
    assert_eq!(on_each(&bases, scope).await.iter().sum::<f64>(), 10.0);
    assert_eq!(
        redis_keys(&redis).await,
        ["gateway:ratelimit:v1:provider:metered"]
    );
}
