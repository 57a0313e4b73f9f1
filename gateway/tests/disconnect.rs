//! Lesson: who notices that the client went away, and when.
//!
//! Fixed mode: the client hangs up, hyper drops the response body, which drops the reqwest
//! stream, which closes the upstream connection: the mock counts the stream `cancelled` at once,
//! long before its next chunk was due. Broken mode: the pool thread sits in `read()` on the
//! upstream socket and can only notice when the next chunk arrives and `blocking_send` fails. Until
//! then the upstream keeps streaming to nobody and the thread stays pinned; after it, both are
//! released. Either way nothing leaks for good.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{Mock, client, get_json, pool_gateway, wait_for};

/// Opens a long stream through the gateway, reads its first chunk, then hangs up; returns when
/// the first chunk arrived (the mock's next chunk is due one interval after it, or a little
/// less: the first one took a moment to come through).
async fn read_one_chunk_and_hang_up(client: &reqwest::Client, url: &str) -> Instant {
    let mut response = client.get(url).send().await.expect("stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    let first = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("first chunk in time")
        .expect("body readable")
        .expect("a first chunk");
    let arrived = Instant::now();
    assert!(first.starts_with(b"chunk 1/"), "{first:?}");
    drop(response); // Closes the client connection mid-stream.
    arrived
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_mode_cancels_the_upstream_stream_as_soon_as_the_client_leaves() {
    let mock = Mock::start();
    let gw = pool_gateway("fixed", 2, &mock.url(), &[]);
    let client = client();
    // Chunks 2 s apart: the cancel must arrive well before the next chunk would have.
    let url = format!("{}/chat/stream?chunks=100&interval_ms=2000", gw.url());
    read_one_chunk_and_hang_up(&client, &url).await;

    let mock_ref = &mock;
    let stats = wait_for(
        "the mock to see the stream cancelled (within half an interval)",
        Duration::from_secs(1),
        move || async move {
            let stats = mock_ref.stats().await;
            (stats.cancelled == 1).then_some(stats)
        },
    )
    .await;
    assert_eq!(
        (
            stats.active_streams,
            stats.started,
            stats.completed,
            stats.cancelled
        ),
        (0, 1, 0, 1),
        "active, started, completed, cancelled: {stats:?}"
    );
    let (_, pool) = get_json(&client, &format!("{}/debug/pool", gw.url())).await;
    assert_eq!(
        pool["completed"], 0,
        "fixed mode never used the pool: {pool}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_mode_holds_the_thread_until_the_next_chunk_then_cancels() {
    let mock = Mock::start();
    let gw = pool_gateway("broken", 2, &mock.url(), &[]);
    let client = client();
    // 2 s between chunks: long enough to look at the gateway between hang-up and next chunk,
    // and to tell "at the next chunk" (2 s) from "at once" (0 s) and "a chunk later" (4 s).
    let interval = Duration::from_secs(2);
    let url = format!(
        "{}/chat/stream?chunks=100&interval_ms={}",
        gw.url(),
        interval.as_millis()
    );
    let first = read_one_chunk_and_hang_up(&client, &url).await;

    // Right after the hang-up the thread is still inside `read()`: nothing has noticed yet.
    let (_, pool) = get_json(&client, &format!("{}/debug/pool", gw.url())).await;
    assert_eq!(pool["running"], 1, "the thread is still pinned: {pool}");
    let stats = mock.stats().await;
    assert_eq!(
        (stats.active_streams, stats.cancelled),
        (1, 0),
        "the upstream still streams to nobody: {stats:?}"
    );

    // At the next chunk `blocking_send` fails, the job returns and drops the upstream response.
    let mock_ref = &mock;
    let (stats, seen) = wait_for(
        "the mock to see the stream cancelled after the next chunk",
        Duration::from_secs(6),
        move || async move {
            let stats = mock_ref.stats().await;
            (stats.cancelled == 1).then(|| (stats, Instant::now()))
        },
    )
    .await;
    // Tied to the next chunk, with wide margins: not before half an interval (a cancel at the
    // hang-up would be ~0), and before the chunk after it (a gateway that needed a second
    // failed send would be at ~2 intervals).
    let after = seen - first;
    assert!(
        after >= interval / 2 && after < interval * 7 / 4,
        "the cancel came {after:?} after the first chunk; the next was due at {interval:?}"
    );
    assert_eq!(stats.active_streams, 0, "{stats:?}");
    assert_eq!(stats.completed, 0, "{stats:?}");

    let client_ref = &client;
    let pool_url = format!("{}/debug/pool", gw.url());
    let pool_url = pool_url.as_str();
    let pool = wait_for(
        "the pool thread to be released",
        Duration::from_secs(3),
        move || async move {
            let (_, pool) = get_json(client_ref, pool_url).await;
            (pool["running"] == 0).then_some(pool)
        },
    )
    .await;
    assert_eq!(pool["completed"], 1, "{pool}");
    assert_eq!(pool["queued"], 0, "{pool}");
}
