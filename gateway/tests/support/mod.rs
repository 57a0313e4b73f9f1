//! The one set of helpers for the gateway's integration tests: real servers on `127.0.0.1:0`,
//! real HTTP.
//!
//! - [`Mock`], [`wait_for`] and [`get_json`] are `mock_llm::testing`'s, the one way every test
//!   suite starts a mock, polls and reads a JSON answer: a `mock-llm` on its own thread and runtime (its pacing never depends on how
//!   busy the test's runtime is, and dropping it cuts every stream it still serves), with typed
//!   `/stats`.
//! - [`gateway`] and [`pool_gateway`]: a gateway started with `gateway::embed::start`, i.e. on
//!   its own runtime whose blocking pool has the size under test (never on the test's runtime:
//!   the pool size is a property of the runtime).
//! - [`streams`]: N plain streams (`/chat/stream`) read concurrently, each recording when its
//!   last chunk came, so a test can ask "how many streams are flowing right now?".
//! - [`chat`]: OpenAI chat requests, SSE read event by event with arrival times, OpenAI's error
//!   shape.
//! - [`jobs`]: a fresh job store of each kind (SQLite, Postgres) and a `/v1/jobs` client.
//! - [`process`]: the `gateway` binary as a child ([`process::GatewayProcess`]), for exit
//!   statuses, signals, its environment and its log (read to EOF once it exited).
//! - [`scripted`]: upstreams that fail in ways the mock cannot (a 502 or 504 of their own, a
//!   body that breaks off before its first byte, a connect that never completes).
//! - [`metric`] and [`series`]: one `/metrics` series, or a loud failure when it or `/metrics`
//!   is missing (never a default of 0).
//!
//! Every test binary includes this module and uses only part of it. (It is called `support`, not
//! `common`, so that `common::prometheus` is the workspace's `common` crate.)
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

pub mod chat;
pub mod jobs;
pub mod process;
pub mod scripted;
pub mod streams;

use std::time::Duration;

pub use chat::{Sse, chat_body, json_of, openai_error, post_chat, read_sse};
pub use mock_llm::testing::{Mock, get_json, wait_for};
pub use process::GatewayProcess;
use serde_json::Value;
pub use streams::{Streams, expected_body};

/// The modes in which relaying behaves the same from the outside.
pub const MODES: [&str; 2] = ["broken", "fixed"];

/// A gateway in `mode` in front of `upstream`, on its own runtime with a pool of 4. `extra`
/// flags are appended (a later flag wins over an earlier one).
pub fn gateway(mode: &str, upstream: &str, extra: &[&str]) -> gateway::embed::Running {
    start(mode, 4, upstream, &[], extra)
}

/// A gateway for the pool lessons: a blocking pool of `pool` threads, and `/health` judged
/// against 500 ms instead of the default 100 ms: a test machine busy compiling may take a while
/// to start a pool thread, and "fast" must not flake. The starved pool in broken mode delays the
/// check by seconds, so the two cases stay far apart.
pub fn pool_gateway(
    mode: &str,
    pool: usize,
    upstream: &str,
    extra: &[&str],
) -> gateway::embed::Running {
    let health = [
        "--health-threshold-ms",
        "500",
        "--health-timeout-ms",
        "1000",
    ];
    start(mode, pool, upstream, &health, extra)
}

fn start(
    mode: &str,
    pool: usize,
    upstream: &str,
    preset: &[&str],
    extra: &[&str],
) -> gateway::embed::Running {
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
    ];
    args.extend_from_slice(preset);
    args.extend_from_slice(extra);
    with_test_defaults(&mut args, extra);
    let config =
        <gateway::Config as clap::Parser>::try_parse_from(args).expect("valid gateway flags");
    gateway::embed::start(config).expect("gateway starts")
}

/// A gateway in front of `upstream` whose drain lasts up to 10 s (the others drain for 0 s), for
/// the tests that stop it: dropping it starts the drain and waits for it, so drop it off the
/// test's runtime (`spawn_blocking`).
pub fn draining_gateway(upstream: &str) -> gateway::embed::Running {
    let config = gateway::Config::load([
        "gateway",
        "--upstream",
        upstream,
        "--listen",
        "127.0.0.1:0",
        "--drain-secs",
        "10",
        "--drain-grace-secs",
        "0",
        "--admin-listen",
        "off",
    ])
    .expect("valid gateway flags");
    gateway::embed::start(config).expect("gateway starts")
}

/// Flags every test gateway gets unless the test gives its own: no admin plane (its default
/// port, 8002, would collide between tests running side by side; a test that wants it passes
/// `--admin-listen 127.0.0.1:0`), and no drain (nobody needs to notice an embedded gateway
/// leave, nor wait for its streams; a test of the drain passes `--drain-grace-secs` or
/// `--drain-secs`).
fn with_test_defaults(args: &mut Vec<&str>, extra: &[&str]) {
    let defaults = [
        ("--admin-listen", "off"),
        ("--drain-grace-secs", "0"),
        ("--drain-secs", "0"),
    ];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
}

/// A gateway whose settings come from a `--config` file holding `toml` (e.g. `[[providers]]`),
/// plus `extra` flags.
pub fn gateway_with_file(mode: &str, toml: &str, extra: &[&str]) -> gateway::embed::Running {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let n = FILES.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("gateway-test-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, toml).expect("write the config file");
    let path = path.to_str().expect("UTF-8 temp path").to_owned();
    let mut args = vec![
        "gateway",
        "--config",
        &path,
        "--mode",
        mode,
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    with_test_defaults(&mut args, extra);
    let config = gateway::Config::load(args).expect("valid gateway settings");
    gateway::embed::start(config).expect("gateway starts")
}

/// No overall timeout (streams are long), a connect timeout so a dead server fails fast, and no
/// connection reuse, so that dropping a response always closes its socket.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// The number at JSON `pointer` in `body`, or a panic that shows the whole body.
pub fn num(body: &Value, pointer: &str) -> f64 {
    body.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {body}"))
}

/// `GET {base}/metrics` as text; panics unless it answers 200 within 20 s. A failed scrape must
/// fail the test, not read as an empty text in which every series is "absent".
pub async fn metrics_text(base: &str) -> String {
    let url = format!("{base}/metrics");
    let response = tokio::time::timeout(Duration::from_secs(20), client().get(&url).send())
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no answer in 20 s"))
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let text = response.text().await.expect("metrics text");
    assert_eq!(status, reqwest::StatusCode::OK, "GET {url}: {text}");
    text
}

/// The value of `series` (`name{labels}`, written as `/metrics` writes it) in `text`, or a
/// panic naming it and showing the whole text. Never a default: a renamed series or label
/// must fail the test, not read as 0.
pub fn series(text: &str, series: &str) -> f64 {
    common::prometheus::sample(text, series)
        .unwrap_or_else(|| panic!("no series {series} in /metrics:\n{text}"))
}

/// One series of `{base}/metrics` (see [`series`]): panics when `/metrics` fails or the series
/// is not there. Every series a test reads exists from the start (every known label value is
/// created at 0, see `gateway::telemetry::metrics`), so "absent" is always a bug.
pub async fn metric(base: &str, name: &str) -> f64 {
    series(&metrics_text(base).await, name)
}

/// A port that was free a moment ago and that nobody listens on now.
pub fn dead_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", listener.local_addr().expect("addr"))
}
