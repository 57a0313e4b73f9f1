//! Lesson: a blocking client inside `spawn_blocking` turns the blocking pool into a stream limit.
//!
//! Same load, two modes. With a pool of 2 threads, broken mode lets exactly 2 of 4 streams flow;
//! the other 2 wait without even receiving headers, and so does every other job that needs the
//! pool: the sync health probe waits seconds, `/health` reports 503 degraded, while the async
//! probe still answers at once (which is why a liveness probe never notices). Fixed mode lets all
//! 4 flow and never touches the pool for a stream. Afterwards the pool counters return to rest.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{Mock, Streams, client, expected_body, get_json, num, pool_gateway, wait_for};

const CHUNKS: usize = 8;
const INTERVAL: Duration = Duration::from_millis(300);
/// A stream counts as flowing when its last chunk is at most this old.
const FLOWING: Duration = Duration::from_millis(2 * 300);

fn stream_url(gateway: &str) -> String {
    format!(
        "{gateway}/chat/stream?chunks={CHUNKS}&interval_ms={}",
        INTERVAL.as_millis()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_mode_lets_only_pool_size_streams_flow_and_starves_the_sync_probe() {
    let mock = Mock::start();
    let gw = pool_gateway("broken", 2, &mock.url(), &[]);
    let client = client();
    let streams = Streams::open(&client, &stream_url(&gw.url()), 4);
    let s = &streams;

    wait_for(
        "2 streams to flow",
        Duration::from_secs(5),
        move || async move { (s.flowing_now(FLOWING) == 2).then_some(()) },
    )
    .await;
    // Watch for three intervals: never more than the pool size flow at once. (Streams last
    // 2.4 s, so the first two are still running; a queued one only starts when one ends.)
    let max = streams.max_flowing_during(FLOWING, 3 * INTERVAL).await;
    assert_eq!(max, 2, "at most pool-size streams may flow in broken mode");
    assert_eq!(streams.started(), 2, "the queued streams got no chunk yet");
    let with_headers = streams.tracks.iter().filter(|t| t.has_headers()).count();
    assert_eq!(
        with_headers, 2,
        "a queued stream has not even received its status line"
    );

    let (status, pool) = get_json(&client, &format!("{}/debug/pool", gw.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(pool["max_threads"], 2, "{pool}");
    assert_eq!(
        pool["running"], 2,
        "both pool threads hold a stream: {pool}"
    );
    assert_eq!(pool["queued"], 2, "the other two streams wait: {pool}");
    assert_eq!(num(&pool, "/saturation"), 1.0, "{pool}");

    // The sync probe needs a pool thread; start it and, while it waits, ask the others.
    let sync_url = format!("{}/debug/health-sync", gw.url());
    let sync_client = client.clone();
    let sync_probe = tokio::spawn(async move {
        let started = Instant::now();
        let answer = get_json(&sync_client, &sync_url).await;
        (answer, started.elapsed())
    });

    let started = Instant::now();
    let (status, body) = get_json(&client, &format!("{}/debug/health-async", gw.url())).await;
    let async_latency = started.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["answered_on"], "async_worker");
    assert!(
        async_latency < Duration::from_secs(1),
        "the async probe does not need the pool and answers at once: {async_latency:?}"
    );
    assert!(
        !sync_probe.is_finished(),
        "the sync probe should still be waiting for a pool thread"
    );

    let (status, health) = get_json(&client, &format!("{}/health", gw.url())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");
    assert_eq!(health["mode"], "broken", "{health}");
    assert_eq!(
        health["checks"]["blocking_pool_timed_out"], true,
        "no thread freed within the 1 s health timeout: {health}"
    );
    assert!(
        num(&health, "/checks/blocking_pool_response_ms") >= 500.0,
        "{health}"
    );
    assert_eq!(health["pool"]["running"], 2, "{health}");
    assert_eq!(health["live_streams"], 2, "{health}");

    let ((status, sync), sync_latency) = tokio::time::timeout(Duration::from_secs(20), sync_probe)
        .await
        .expect("the sync probe answers once the streams end")
        .expect("sync probe task");
    assert_eq!(status, StatusCode::OK, "{sync}");
    assert_eq!(sync["answered_on"], "blocking_pool");
    // No thread frees before the first stream ends (seconds away): a wide margin over 1 s.
    let waited = num(&sync, "/waited_for_thread_ms");
    assert!(
        waited >= 1000.0,
        "the sync probe should wait for a stream to end, waited {waited} ms"
    );
    assert!(sync_latency >= Duration::from_secs(1), "{sync_latency:?}");

    // Nothing is lost, only delayed: the queued streams run once a thread frees.
    for (i, done) in streams
        .finish(Duration::from_secs(20))
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(done.status, StatusCode::OK, "stream {i}");
        assert_eq!(done.error, None, "stream {i}");
        assert_eq!(done.body, expected_body(CHUNKS), "stream {i}");
    }
    let (_, pool) = get_json(&client, &format!("{}/debug/pool", gw.url())).await;
    assert_eq!(pool["peak_running"], 2, "never more than the pool: {pool}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_mode_lets_every_stream_flow_and_leaves_the_pool_idle() {
    let mock = Mock::start();
    let gw = pool_gateway("fixed", 2, &mock.url(), &[]);
    let client = client();
    let streams = Streams::open(&client, &stream_url(&gw.url()), 4);
    let s = &streams;

    wait_for(
        "all 4 streams to flow at once",
        Duration::from_secs(5),
        move || async move { (s.flowing_now(FLOWING) == 4).then_some(()) },
    )
    .await;

    let (_, pool) = get_json(&client, &format!("{}/debug/pool", gw.url())).await;
    assert_eq!(pool["running"], 0, "streams hold no pool thread: {pool}");
    assert_eq!(pool["queued"], 0, "{pool}");

    let (status, sync) = get_json(&client, &format!("{}/debug/health-sync", gw.url())).await;
    assert_eq!(status, StatusCode::OK, "{sync}");
    let waited = num(&sync, "/waited_for_thread_ms");
    assert!(
        waited < 500.0,
        "a free pool answers the sync probe at once, waited {waited} ms"
    );

    let (status, health) = get_json(&client, &format!("{}/health", gw.url())).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["mode"], "fixed", "{health}");
    assert_eq!(
        health["checks"]["blocking_pool_timed_out"], false,
        "{health}"
    );
    assert_eq!(health["live_streams"], 4, "{health}");

    for (i, done) in streams
        .finish(Duration::from_secs(20))
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(done.status, StatusCode::OK, "stream {i}");
        assert_eq!(done.error, None, "stream {i}");
        assert_eq!(done.body, expected_body(CHUNKS), "stream {i}");
    }
    // The only pool jobs ever run were the two probes above, one at a time.
    let (_, pool) = get_json(&client, &format!("{}/debug/pool", gw.url())).await;
    assert_eq!(
        pool["completed"], 2,
        "only the probes used the pool: {pool}"
    );
    assert_eq!(pool["peak_running"], 1, "{pool}");
    assert_eq!(pool["peak_queued"], 0, "{pool}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_counters_return_to_rest_after_streams_finish() {
    let mock = Mock::start();
    let gw = pool_gateway("broken", 2, &mock.url(), &[]);
    let client = client();
    let url = format!("{}/chat/stream?chunks=3&interval_ms=100", gw.url());
    let streams = Streams::open(&client, &url, 3);
    for done in streams.finish(Duration::from_secs(20)).await {
        assert_eq!(done.body, expected_body(3));
    }

    // The last pool thread may still be returning from its job when the client sees the end.
    let pool_url = format!("{}/debug/pool", gw.url());
    let client_ref = &client;
    let url_ref = pool_url.as_str();
    let pool = wait_for(
        "the pool to be idle",
        Duration::from_secs(5),
        move || async move {
            let (_, pool) = get_json(client_ref, url_ref).await;
            (pool["running"] == 0 && pool["queued"] == 0).then_some(pool)
        },
    )
    .await;
    assert_eq!(pool["completed"], 3, "one job per stream: {pool}");
    assert_eq!(pool["saturation"], 0.0, "{pool}");
    // The peaks remember the load that is gone.
    assert_eq!(pool["peak_running"], 2, "{pool}");
    assert!(
        num(&pool, "/peak_queued") >= 1.0,
        "the third stream queued: {pool}"
    );

    let (status, health) = get_json(&client, &format!("{}/health", gw.url())).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "healthy again once the load is gone: {health}"
    );
    assert_eq!(health["live_streams"], 0, "{health}");
}
