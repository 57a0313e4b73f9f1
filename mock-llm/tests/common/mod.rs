//! Shared helpers for the mock's integration tests: a real `mock-llm` on `127.0.0.1:0`, real HTTP.
//!
//! The mock runs on its own thread and runtime, so its timers keep their pace however busy the
//! test's own runtime (the clients) gets, and dropping [`Mock`] cuts every stream it still serves.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser as _;
use reqwest::StatusCode;
use serde_json::Value;

#[derive(Debug)]
pub struct Mock {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Mock {
    pub fn start() -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mock-llm".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("mock runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind mock");
                    bound_tx
                        .send(listener.local_addr().expect("mock addr"))
                        .expect("test waits for the address");
                    let config = mock_llm::Config::try_parse_from(["mock-llm"]).expect("config");
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    mock_llm::serve(listener, config, shutdown)
                        .await
                        .expect("mock serves");
                });
            })
            .expect("spawn mock thread");
        let addr = bound_rx.recv().expect("mock bound");
        Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET /stats` as `(active_streams, started, completed, cancelled)`.
    pub async fn stats(&self, client: &reqwest::Client) -> (u64, u64, u64, u64) {
        let (status, body) = get_json(client, &format!("{}/stats", self.url())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let field = |name: &str| {
            body[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: {body}"))
        };
        (
            field("active_streams"),
            field("started"),
            field("completed"),
            field("cancelled"),
        )
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `GET url` (bounded to 20 s), returning the status and the body parsed as JSON.
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

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit` naming `what`.
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
