//! Lesson: a test double is only useful if it is honest. The mock paces its chunks for real,
//! refuses bad parameters with a JSON error naming them, and counts on its own side whether each
//! stream was read to the end (`completed`) or abandoned (`cancelled`), which is how the gateway's
//! tests prove what happened upstream.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use support::{Mock, get_json, streams, wait_for};

#[tokio::test]
async fn slow_stream_sends_n_numbered_chunks_no_sooner_than_paced() {
    let mock = Mock::start();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut response = client
        .get(format!(
            "{}/slow_stream?chunks=3&interval_ms=200",
            mock.url()
        ))
        .send()
        .await
        .expect("stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[reqwest::header::CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    let mut body = String::new();
    let mut first_at = None;
    while let Some(chunk) = response.chunk().await.expect("readable") {
        first_at.get_or_insert_with(|| started.elapsed());
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(body, "chunk 1/3\nchunk 2/3\nchunk 3/3\n");
    // Lower bounds only: timers never fire early, however loaded the machine is.
    let first_at = first_at.expect("at least one chunk");
    assert!(
        first_at >= Duration::from_millis(200),
        "first chunk after one interval: {first_at:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn stats_count_a_completed_and_an_abandoned_stream() {
    let mock = Mock::start();
    let client = reqwest::Client::new();
    assert_eq!(streams(&mock.stats().await), (0, 0, 0, 0));

    let body = client
        .get(format!("{}/slow_stream?chunks=2&interval_ms=0", mock.url()))
        .send()
        .await
        .expect("stream opens")
        .text()
        .await
        .expect("whole body");
    assert_eq!(body, "chunk 1/2\nchunk 2/2\n");

    let mut abandoned = client
        .get(format!(
            "{}/slow_stream?chunks=100&interval_ms=100",
            mock.url()
        ))
        .send()
        .await
        .expect("stream opens");
    abandoned
        .chunk()
        .await
        .expect("readable")
        .expect("first chunk");
    let (active, started, completed, cancelled) = streams(&mock.stats().await);
    assert_eq!(
        (active, started, completed, cancelled),
        (1, 2, 1, 0),
        "one still open"
    );
    drop(abandoned);

    let stats = wait_for(
        "the abandoned stream to count as cancelled",
        Duration::from_secs(2),
        || async {
            let stats = streams(&mock.stats().await);
            (stats.3 == 1).then_some(stats)
        },
    )
    .await;
    // (active, started, completed, cancelled): every start is accounted for exactly once.
    assert_eq!(stats, (0, 2, 1, 1));
}

#[tokio::test]
async fn bad_parameters_get_a_400_naming_the_parameter() {
    let mock = Mock::start();
    let client = reqwest::Client::new();
    let cases = [
        // (query, expected error.param, words the message must contain)
        ("chunks=abc", None, vec!["chunks", "invalid digit"]),
        ("chunk=5", None, vec!["unknown field", "chunk"]),
        (
            "chunks=0",
            Some("chunks"),
            vec!["chunks must be between 1 and 100000", "got 0"],
        ),
        (
            "chunks=100001",
            Some("chunks"),
            vec!["chunks must be between", "100001"],
        ),
        (
            "interval_ms=60001",
            Some("interval_ms"),
            vec!["interval_ms must be between"],
        ),
        ("interval_ms=-1", None, vec!["interval_ms"]),
    ];
    for (query, param, words) in cases {
        let url = format!("{}/slow_stream?{query}", mock.url());
        let (status, body) = get_json(&client, &url).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(
            body["error"]["type"], "invalid_request_error",
            "{query}: {body}"
        );
        assert_eq!(body["error"]["param"].as_str(), param, "{query}: {body}");
        let message = body["error"]["message"].as_str().expect("message");
        for word in words {
            assert!(
                message.contains(word),
                "{query}: {message:?} lacks {word:?}"
            );
        }
    }
    let stats = mock.stats().await;
    assert_eq!(
        stats.started, 0,
        "no bad request started a stream: {stats:?}"
    );
    assert_eq!(
        stats.bad_requests, 6,
        "each one counted as refused: {stats:?}"
    );
}

#[tokio::test]
async fn unknown_path_gets_a_json_404_and_health_answers() {
    let mock = Mock::start();
    let client = reqwest::Client::new();
    let (status, body) = get_json(&client, &format!("{}/v1/nope", mock.url())).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains("/v1/nope") && message.contains("/slow_stream"),
        "{message}"
    );

    let (status, body) = get_json(&client, &format!("{}/health", mock.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
}
