//! Lesson: a blocking client called inside the async handler blocks the runtime's *workers*.
//!
//! With `--worker-threads 2` and two open streams in inline mode, both workers sit in `read()`:
//! even `/debug/health-async`, which stays fast in broken mode, gets no answer (its connection is
//! not even accepted). Worse, the streams are no longer streams: hyper flushes a response only
//! when its body has nothing ready, and a body that blocks instead of returning `Pending` never
//! lets it, so the client gets the status line and all chunks at once, when the upstream is done.
//! Once the streams end, the workers are free and the probe answers at once.
//!
//! On 2 workers, 2 streams are not even needed: measured here, the second request does not reach
//! the upstream until the first stream ends, and nothing else runs meanwhile. Most likely a task
//! the blocked worker had just scheduled (the accept loop, a new connection) sits in its LIFO
//! slot, which other workers cannot steal, so one blocked worker can stall more than its share.
//! The test therefore asks only for "at least one stream upstream, the probe stalls".
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use support::{Mock, Streams, client, expected_body, get_json, pool_gateway};

const CHUNKS: usize = 10;
const INTERVAL_MS: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_inline_streams_on_two_workers_stall_even_the_async_probe() {
    let mock = Mock::start();
    // The admin plane, on its own thread, says when every worker is blocked.
    let gw = pool_gateway(
        "inline",
        4,
        &mock.url(),
        &["--worker-threads", "2", "--admin-listen", "127.0.0.1:0"],
    );
    let client = client();
    let url = format!(
        "{}/chat/stream?chunks={CHUNKS}&interval_ms={INTERVAL_MS}",
        gw.url()
    );
    let streams = Streams::block_every_worker(&client, &url, &mock, &gw.admin_url()).await;

    // Both workers are inside `read()` on an upstream socket: nothing else on the runtime runs.
    let probe = reqwest::Client::new();
    let health = format!("{}/debug/health-async", gw.url());
    let stalled = tokio::time::timeout(Duration::from_secs(1), probe.get(&health).send()).await;
    assert!(
        stalled.is_err(),
        "with every worker blocked, the async probe cannot answer: {stalled:?}"
    );
    assert!(
        streams.tracks.iter().all(|t| !t.has_headers()),
        "a blocked worker never flushes: not even the status line is out yet"
    );
    assert!(
        mock.stats().await.active_streams >= 1,
        "the upstream was still streaming while the probe waited"
    );

    for finished in streams.finish(Duration::from_secs(20)).await {
        assert_eq!(finished.status, StatusCode::OK);
        assert_eq!(finished.body, expected_body(CHUNKS), "{:?}", finished.error);
    }
    // Workers free again: the probe answers, and the stream said which client carried it.
    let (status, body) = get_json(&client, &health).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, health) = get_json(&client, &format!("{}/health", gw.url())).await;
    assert_eq!(health["mode"], "inline", "{health}");
    let response = client
        .get(format!("{}/chat/stream?chunks=1&interval_ms=10", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-stream-method"], "inline");
}
