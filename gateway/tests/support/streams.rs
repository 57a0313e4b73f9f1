//! Plain streams (`GET /chat/stream`) read by many clients at once, each recording when its last
//! chunk came, so a test can ask "how many streams are flowing right now?".

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

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
    /// Two streams of `url` on an `inline` gateway with two workers, returned once nothing else
    /// on that runtime runs: the gateway's admin plane (`admin`, its URL), which lives on its
    /// own thread, has had a probe task waiting on the main runtime for 300 ms without a worker
    /// polling it. (The second stream may never get a worker of its own: see tests/inline.rs.
    /// A fixed sleep here once stood for "long enough for both to block".) From then on the
    /// workers sit inside a blocking `read()`.
    pub async fn block_every_worker(
        client: &reqwest::Client,
        url: &str,
        mock: &mock_llm::testing::Mock,
        admin: &str,
    ) -> Self {
        let streams = Self::open(client, url, 2);
        mock.wait_stats(
            "an inline stream to reach the upstream",
            Duration::from_secs(10),
            |s| s.active_streams >= 1,
        )
        .await;
        let readyz = format!("{admin}/readyz");
        super::wait_for(
            "every worker blocked: the admin plane's runtime probe pending for 300 ms",
            Duration::from_secs(10),
            || async {
                let (_, body) = super::get_json(client, &readyz).await;
                let runtime = &body["checks"]["runtime"];
                let blocked = runtime["pending"] == true
                    && runtime["delay_ms"].as_f64().is_some_and(|ms| ms >= 300.0);
                blocked.then_some(())
            },
        )
        .await;
        streams
    }

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
