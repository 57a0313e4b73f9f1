//! The job queue's test helpers: a store of each kind (a fresh SQLite file, or a fresh database
//! on the one Postgres cluster this test binary starts), and a small `/v1/jobs` client.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::services::Postgres;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::client;

/// The two stores every job test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// One Postgres cluster for the whole test binary, started on first use; `None` (after a loud
/// skip, or a failure under `REQUIRE_SERVICES=1`) when Postgres is not installed. It is never
/// dropped: the watchdog of `common::services` stops it when the test binary exits.
fn cluster(test: &str) -> Option<&'static Postgres> {
    static CLUSTER: OnceLock<Option<Postgres>> = OnceLock::new();
    CLUSTER.get_or_init(|| Postgres::start_for(test)).as_ref()
}

/// A fresh, empty store of `kind` for `test`, as a `--jobs-store` URL; `None` when the test must
/// skip (Postgres not installed; already reported).
pub fn store(kind: Kind, test: &str) -> Option<String> {
    match kind {
        Kind::Sqlite => Some(format!("sqlite://{}", sqlite_path(test).display())),
        Kind::Postgres => {
            let cluster = match cluster(test) {
                Some(cluster) => cluster,
                None => {
                    // The first skip was reported by `start_for`; report this test's too.
                    common::services::skip(test, common::services::Service::Postgres);
                    return None;
                }
            };
            Some(
                cluster
                    .create_database("jobs")
                    .unwrap_or_else(|e| panic!("{test}: createdb: {e}")),
            )
        }
    }
}

/// A path for a SQLite store no other test uses (under the target directory, removed first).
pub fn sqlite_path(test: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = common::services::target_dir().join("jobs-tests");
    std::fs::create_dir_all(&dir).expect("jobs test dir");
    let path = dir.join(format!(
        "{test}-{}-{}.db",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// A chat body for a job, with a `tag` the test can find it by in lists.
pub fn job_body(tag: &str) -> Value {
    json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": format!("job {tag}")}],
    })
}

/// `/v1/jobs` as one API key (or none) sees it.
#[derive(Debug, Clone)]
pub struct Jobs {
    pub base: String,
    pub key: Option<String>,
    client: reqwest::Client,
}

impl Jobs {
    pub fn new(base: &str, key: Option<&str>) -> Self {
        Self {
            base: base.to_owned(),
            key: key.map(str::to_owned),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
        }
    }

    fn with_key(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn answer(
        request: reqwest::RequestBuilder,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let response = request.send().await.expect("an answer");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        (status, headers, body)
    }

    /// `POST /v1/jobs` with `body` and extra headers.
    pub async fn submit_with(
        &self,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .with_key(self.client.post(format!("{}/v1/jobs", self.base)))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::answer(request).await
    }

    /// Submits `body` and returns the new job's id (asserting the 202).
    pub async fn submit(&self, body: &Value, headers: &[(&str, &str)]) -> String {
        let (status, _, job) = self.submit_with(body, headers).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        job["id"].as_str().expect("an id").to_owned()
    }

    pub async fn get(&self, id: &str) -> (StatusCode, Value) {
        let request = self.with_key(self.client.get(format!("{}/v1/jobs/{id}", self.base)));
        let (status, _, body) = Self::answer(request).await;
        (status, body)
    }

    pub async fn cancel(&self, id: &str) -> (StatusCode, Value) {
        let url = format!("{}/v1/jobs/{id}/cancel", self.base);
        let (status, _, body) = Self::answer(self.with_key(self.client.post(url))).await;
        (status, body)
    }

    /// `GET /v1/jobs?{query}`.
    pub async fn list(&self, query: &str) -> (StatusCode, Value) {
        let url = format!("{}/v1/jobs?{query}", self.base);
        let (status, _, body) = Self::answer(self.with_key(self.client.get(url))).await;
        (status, body)
    }

    pub async fn stats(&self) -> Value {
        let url = format!("{}/v1/jobs/stats", self.base);
        let (status, _, body) = Self::answer(self.with_key(self.client.get(url))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Polls job `id` until `done` holds for it, or panics after `limit` showing the last answer.
    pub async fn wait_until(
        &self,
        id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let (status, job) = self.get(id).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            if done(&job) {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} after {limit:?}: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for job `id` to reach `status`.
    pub async fn wait_status(&self, id: &str, status: &str, limit: Duration) -> Value {
        self.wait_until(id, limit, |job| job["status"] == status)
            .await
    }
}
