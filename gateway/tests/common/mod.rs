//! Shared helpers for the gateway's integration tests: real servers on `127.0.0.1:0`, real HTTP.
//!
//! - [`Mock`]: a `mock-llm` on its own thread and runtime, so its pacing never depends on how
//!   busy the test's runtime is, and dropping it cuts every stream it still serves.
//! - [`gateway`]: a gateway started with [`gateway::embed::start`], i.e. on its own runtime whose
//!   blocking pool has the size under test (never on the test's runtime: the pool size is a
//!   property of the runtime).
//! - [`Streams`]: N client streams read concurrently, each recording when its last chunk came,
//!   so a test can ask "how many streams are flowing right now?".
//! - [`wait_for`]: poll a condition against a deadline, instead of sleeping and hoping.
//!
//! Every test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use reqwest::StatusCode;
use serde_json::Value;

/// A `mock-llm` serving on its own thread and current-thread runtime.
#[derive(Debug)]
pub struct Mock {
    running: mock_llm::embed::Running,
}

impl Mock {
    pub fn start() -> Self {
        let mut config = mock_llm::Config::try_parse_from(["mock-llm"]).expect("config");
        config.listen = ([127, 0, 0, 1], 0).into();
        Self {
            running: mock_llm::embed::start(config).expect("start the mock"),
        }
    }

    /// `http://ADDR`, an IP literal, as the gateway's `--upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.running.addr())
    }

    /// The mock's `GET /stats`: what happened to every stream, seen from the upstream side.
    pub async fn stats(&self, client: &reqwest::Client) -> MockStats {
        let (status, body) = get_json(client, &format!("{}/stats", self.url())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let field = |name: &str| {
            body[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: {body}"))
        };
        MockStats {
            active_streams: field("active_streams"),
            started: field("started"),
            completed: field("completed"),
            cancelled: field("cancelled"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockStats {
    pub active_streams: u64,
    pub started: u64,
    pub completed: u64,
    pub cancelled: u64,
}

/// Starts a gateway in `mode` ("broken" or "fixed") with a blocking pool of `pool` threads,
/// relaying to `upstream`. `extra` flags are appended (a later flag wins over an earlier one).
///
/// The health threshold is 500 ms instead of the default 100 ms: a test machine busy compiling
/// may take a while to start a pool thread, and "fast" must not flake. The starved pool in
/// broken mode delays the check by seconds, so the two cases stay far apart.
pub fn gateway(mode: &str, pool: usize, upstream: &str, extra: &[&str]) -> gateway::embed::Running {
    let pool = pool.to_string();
    let mut args = vec![
        "gateway",
        "--mode",
        mode,
        "--blocking-threads",
        &pool,
        "--upstream",
        upstream,
        "--listen",
        "127.0.0.1:0",
        "--drain-secs",
        "0",
        "--health-threshold-ms",
        "500",
        "--health-timeout-ms",
        "1000",
    ];
    args.extend_from_slice(extra);
    let config = gateway::Config::try_parse_from(args).expect("valid gateway flags");
    gateway::embed::start(config).expect("gateway starts")
}

/// A client with no overall timeout (streams are long) but a connect timeout, so a test whose
/// server is gone fails fast instead of hanging.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

/// `GET url`, returning the status and the body parsed as JSON (panics if it is not JSON).
pub async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let response = tokio::time::timeout(Duration::from_secs(20), client.get(url).send())
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no answer in 20 s"))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("GET {url}: body is not JSON ({e}): {text:?}"));
    (status, json)
}

/// Polls `check` every 10 ms until it returns `Some`, or panics after `limit` naming `what`.
/// The deadline is generous on purpose: it bounds a broken test, it does not measure speed.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What one client stream has seen so far. Written by its reader task, read by the test.
#[derive(Debug, Default)]
pub struct Track {
    /// Status line arrived (in broken mode a queued stream has not even got its headers).
    headers: AtomicBool,
    /// Complete `chunk n/N` lines received.
    chunks: AtomicUsize,
    last_chunk: Mutex<Option<Instant>>,
    /// The body ended, cleanly or not.
    done: AtomicBool,
}

impl Track {
    pub fn chunks(&self) -> usize {
        self.chunks.load(Ordering::SeqCst)
    }

    pub fn has_headers(&self) -> bool {
        self.headers.load(Ordering::SeqCst)
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Flowing: still open, and a chunk arrived within `window`.
    pub fn is_flowing(&self, window: Duration) -> bool {
        let last = *self.last_chunk.lock().expect("track lock");
        !self.is_done() && last.is_some_and(|at| at.elapsed() <= window)
    }
}

/// How one stream ended.
#[derive(Debug)]
pub struct Finished {
    pub status: StatusCode,
    pub body: String,
    /// `Some` when the body broke off with an error rather than ending cleanly.
    pub error: Option<String>,
}

/// N streams, each read by its own task on the test's runtime.
#[derive(Debug)]
pub struct Streams {
    pub tracks: Vec<Arc<Track>>,
    tasks: Vec<tokio::task::JoinHandle<Finished>>,
}

impl Streams {
    /// Opens `n` concurrent `GET url` requests and reads them chunk by chunk.
    pub fn open(client: &reqwest::Client, url: &str, n: usize) -> Self {
        let mut tracks = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let track = Arc::new(Track::default());
            tracks.push(Arc::clone(&track));
            tasks.push(tokio::spawn(read_stream(
                client.clone(),
                url.to_owned(),
                track,
            )));
        }
        Self { tracks, tasks }
    }

    /// Streams still open that received a chunk within `window`.
    pub fn flowing_now(&self, window: Duration) -> usize {
        self.tracks.iter().filter(|t| t.is_flowing(window)).count()
    }

    /// Streams that have received at least one chunk.
    pub fn started(&self) -> usize {
        self.tracks.iter().filter(|t| t.chunks() > 0).count()
    }

    /// Samples [`Self::flowing_now`] every 20 ms for `duration`; returns the highest count seen.
    pub async fn max_flowing_during(&self, window: Duration, duration: Duration) -> usize {
        let end = Instant::now() + duration;
        let mut max = 0;
        while Instant::now() < end {
            max = max.max(self.flowing_now(window));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        max
    }

    /// Waits for every stream to end (bounded by `limit`) and returns how each ended.
    pub async fn finish(self, limit: Duration) -> Vec<Finished> {
        let all = futures_util::future::join_all(self.tasks);
        tokio::time::timeout(limit, all)
            .await
            .unwrap_or_else(|_| panic!("streams still open after {limit:?}"))
            .into_iter()
            .map(|joined| joined.expect("reader task"))
            .collect()
    }
}

async fn read_stream(client: reqwest::Client, url: String, track: Arc<Track>) -> Finished {
    let mut response = client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    track.headers.store(true, Ordering::SeqCst);
    let status = response.status();
    let mut body = String::new();
    let error = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                body.push_str(&String::from_utf8_lossy(&bytes));
                *track.last_chunk.lock().expect("track lock") = Some(Instant::now());
                track
                    .chunks
                    .store(body.matches('\n').count(), Ordering::SeqCst);
            }
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    track.done.store(true, Ordering::SeqCst);
    Finished {
        status,
        body,
        error,
    }
}

/// The `chunk n/N` lines a complete stream of `n` chunks consists of.
pub fn expected_body(n: usize) -> String {
    (1..=n).map(|i| format!("chunk {i}/{n}\n")).collect()
}

/// The number field `name` of a JSON object, or a panic that shows the whole body.
pub fn num(body: &Value, pointer: &str) -> f64 {
    body.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {body}"))
}
