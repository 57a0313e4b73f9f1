//! The one way every test suite of the workspace starts a mock and reads what it saw.
//!
//! Behind the `testing` feature (tests enable it through their dev-dependency), so the binary
//! carries none of it. A [`Mock`] runs on its own thread and current-thread runtime (see
//! [`crate::embed`]): its pacing never depends on how busy the test's runtime is, and dropping it
//! cuts every stream it still serves. [`Mock::stats`] is the typed `/stats` body, so a test that
//! reads a counter the mock stopped keeping fails to compile instead of reading a zero.

use std::future::Future;
use std::time::{Duration, Instant};

use clap::Parser as _;

use crate::stats::Snapshot;

/// A `mock-llm` serving on `127.0.0.1:0`. Dropping it stops it.
#[derive(Debug)]
pub struct Mock {
    running: crate::embed::Running,
}

impl Mock {
    /// The binary's defaults (its documented pacing).
    pub fn start() -> Self {
        Self::with_flags(&[])
    }

    /// Started as `mock-llm <flags>` (e.g. `["--ttft-ms", "50"]`); `--listen` is always port 0.
    pub fn with_flags(flags: &[&str]) -> Self {
        let argv = std::iter::once("mock-llm").chain(flags.iter().copied());
        let mut config = crate::Config::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("mock flags {flags:?}: {e}"));
        config.listen = ([127, 0, 0, 1], 0).into();
        Self {
            running: crate::embed::start(config).expect("start the mock"),
        }
    }

    /// Fast chat defaults: TTFT and ITL 5 ms, 4 tokens, seed 1. Slow cases set `x-mock-*` headers.
    pub fn fast() -> Self {
        Self::fast_with(&[])
    }

    /// The fast defaults plus `extra` flags (a fault, say); a later flag wins.
    pub fn fast_with(extra: &[&str]) -> Self {
        let mut flags = vec![
            "--ttft-ms",
            "5",
            "--itl-ms",
            "5",
            "--tokens",
            "4",
            "--seed",
            "1",
        ];
        flags.extend_from_slice(extra);
        Self::with_flags(&flags)
    }

    /// `http://ADDR`, an IP literal, as a gateway's `--upstream`.
    pub fn url(&self) -> String {
        self.running.url()
    }

    /// The mock's `GET /stats`: what happened to every stream, seen from the upstream side.
    pub async fn stats(&self) -> Snapshot {
        let url = format!("{}/stats", self.url());
        let response = tokio::time::timeout(Duration::from_secs(20), reqwest::get(&url))
            .await
            .unwrap_or_else(|_| panic!("GET {url}: no answer in 20 s"))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        response
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not the /stats shape: {e}"))
    }

    /// Polls `/stats` until `check` holds; returns when that was seen.
    pub async fn wait_stats(
        &self,
        what: &str,
        limit: Duration,
        check: impl Fn(&Snapshot) -> bool,
    ) -> Instant {
        wait_for(what, limit, || async {
            check(&self.stats().await).then(Instant::now)
        })
        .await
    }
}

/// `GET url` (bounded to 20 s), returning the status and the body parsed as JSON (panics,
/// naming the URL, if there is no answer or it is not JSON).
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
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
