//! Lesson: a stream that waits on a timer costs a task, not a thread. One mock process holds a
//! thousand concurrent slow streams on a single-threaded runtime, keeps answering `/health`
//! meanwhile, and delivers every stream whole, so the mock is never the bottleneck of a
//! gateway measurement.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{Mock, get_json, streams};

const STREAMS: usize = 1000;
const CHUNKS: usize = 4;

/// Client and server ends of every stream live in this one process: make sure the open-file
/// limit allows them (the soft limit is often 1024; raising it up to the hard limit is allowed).
fn ensure_file_limit(needed: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < needed {
        let raised = needed.min(hard);
        setrlimit(Resource::RLIMIT_NOFILE, raised, hard).expect("setrlimit");
        assert!(
            raised >= needed,
            "open-file hard limit {hard} is below {needed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_slow_streams_while_health_still_answers() {
    ensure_file_limit(2 * STREAMS as u64 + 256);
    let mock = Mock::start();
    let client = reqwest::Client::new();
    // 4 chunks, 1 s apart: every stream stays open long enough for all of them to overlap.
    let url = format!(
        "{}/slow_stream?chunks={CHUNKS}&interval_ms=1000",
        mock.url()
    );
    let readers: Vec<_> = (0..STREAMS)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let response = client.get(&url).send().await.expect("stream opens");
                assert_eq!(response.status(), StatusCode::OK);
                response.text().await.expect("whole body")
            })
        })
        .collect();

    mock.wait_stats(
        "all streams open at once",
        Duration::from_secs(10),
        |stats| stats.active_streams == STREAMS as u64,
    )
    .await;

    let asked = Instant::now();
    let (status, body) = get_json(&client, &format!("{}/health", mock.url())).await;
    let latency = asked.elapsed();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        latency < Duration::from_secs(2),
        "health must answer while {STREAMS} streams wait on timers: {latency:?}"
    );

    let expected: String = (1..=CHUNKS)
        .map(|i| format!("chunk {i}/{CHUNKS}\n"))
        .collect();
    let bodies = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(readers),
    )
    .await
    .expect("every stream ends");
    for body in bodies {
        assert_eq!(body.expect("reader task"), expected);
    }
    let stats = streams(&mock.stats().await);
    let n = STREAMS as u64;
    assert_eq!(
        stats,
        (0, n, n, 0),
        "(active, started, completed, cancelled)"
    );
}
