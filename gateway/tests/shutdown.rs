//! Lesson: graceful shutdown keeps answering (a refused connection tells a load balancer "dead
//! host", not "draining"), lets in-flight streams finish, and still cannot hang: after the drain deadline the remaining streams are cut and the process exits,
//! even in broken mode, where a pool thread sits in a blocking `read()` that nothing can abort.
//!
//! These tests run the real `gateway` binary and send it a real SIGTERM.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use support::{Mock, client, expected_body, wait_for};

/// The `gateway` binary as a child process, with its stderr log collected.
struct GatewayProcess {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl GatewayProcess {
    /// Starts the binary on `127.0.0.1:0` and waits for its "gateway listening on ADDR" line.
    fn start(args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("GATEWAY_") {
                command.env_remove(name);
            }
        }
        // The binary logs with tracing's default writer, stdout; panics and clap go to stderr.
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gateway binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        collect_lines(stdout, Arc::clone(&log), Some(addr_tx));
        collect_lines(stderr, Arc::clone(&log), None);
        let addr = match addr_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "no 'gateway listening on' line; log:\n{}",
                    log.lock().expect("log lock")
                );
            }
        };
        Self { child, addr, log }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn sigterm(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM sent");
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("child status").is_none()
    }

    /// Waits for the process to exit; panics (showing the log) after `limit`.
    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway still running {limit:?} after SIGTERM; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }
}

impl Drop for GatewayProcess {
    /// A failed test must not leave its gateway running: kill our own child, by its handle.
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Appends every line of `output` to `log` on a thread of its own, until the process exits, so
/// a full pipe can never block the gateway's logging. Sends the listening address when seen.
fn collect_lines(
    output: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<String>>,
    addr_tx: Option<std::sync::mpsc::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if let (Some(addr), Some(tx)) = (listening_addr(&line), &addr_tx) {
                let _ = tx.send(addr);
            }
            let mut log = log.lock().expect("log lock");
            log.push_str(&line);
            log.push('\n');
        }
    });
}

/// Parses `ADDR` out of the start-up line `... gateway listening on ADDR mode=...`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = line.split("gateway listening on ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// A request on a new connection to `addr`, asking to close it after the answer: the answer's
/// status line, once the gateway closed the connection.
async fn status_line_of_a_new_connection(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the listener stays open during the drain");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answered and closed within 5 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_answering_and_lets_the_in_flight_stream_finish() {
    let mock = Mock::start();
    let mut gw = GatewayProcess::start(&[
        "--mode",
        "fixed",
        "--drain-secs",
        "5",
        "--upstream",
        &mock.url(),
    ]);
    let client = client();
    let url = format!("{}/chat/stream?chunks=6&interval_ms=200", gw.url());
    let mut response = client.get(&url).send().await.expect("stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = String::new();
    let first = response
        .chunk()
        .await
        .expect("readable")
        .expect("first chunk");
    body.push_str(&String::from_utf8_lossy(&first));

    gw.sigterm();
    wait_for("the drain to begin", Duration::from_secs(5), || async {
        gw.log().contains("shutdown requested").then_some(())
    })
    .await;
    // Whatever the status (served during a grace, or 503 after it), an HTTP answer.
    let status = status_line_of_a_new_connection(gw.addr).await;
    assert!(status.starts_with("HTTP/1.1 "), "{status:?}");
    assert!(
        gw.is_running(),
        "answered while draining, not after exiting"
    );

    // The in-flight stream runs on to its last chunk.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = response.chunk().await.expect("stream not cut") {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(rest.is_ok(), "stream did not end; log:\n{}", gw.log());
    assert_eq!(body, expected_body(6));

    let status = gw.exit_within(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}; log:\n{}", gw.log());
    let log = gw.log();
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(
        log.contains("drained; exiting"),
        "exited because drained: {log}"
    );
    assert!(!log.contains("deadline passed"), "{log}");
    assert_eq!(mock.stats().await.completed, 1);
}

/// Opens a stream that will not finish for a long time and returns its response once the
/// headers are in.
async fn open_long_stream(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let response = client.get(url).send().await.expect("stream opens");
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// Reads what is left of `response`; it must end (cut) within `limit`. Returns the lines read.
async fn read_until_cut(mut response: reqwest::Response, limit: Duration) -> usize {
    let mut body = String::new();
    let read = tokio::time::timeout(limit, async {
        // Ends at the cut: an error (truncated body) or, if the cut fell between chunks, EOF.
        while let Ok(Some(chunk)) = response.chunk().await {
            body.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    assert!(read.is_ok(), "the stream was not cut");
    body.lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cuts_a_long_stream_and_exits() {
    let mock = Mock::start();
    let mut gw = GatewayProcess::start(&[
        "--mode",
        "fixed",
        "--drain-secs",
        "1",
        "--upstream",
        &mock.url(),
    ]);
    let client = client();
    // 100 chunks x 100 ms: 10 s, far beyond the 1 s drain.
    let url = format!("{}/chat/stream?chunks=100&interval_ms=100", gw.url());
    let response = open_long_stream(&client, &url).await;

    let signalled = Instant::now();
    gw.sigterm();
    let status = gw.exit_within(Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert!(
        status.success(),
        "a cut at the deadline is by design: {status}"
    );
    assert!(
        took >= Duration::from_millis(900),
        "it drained first: {took:?}"
    );
    let log = gw.log();
    assert!(log.contains("drain deadline passed"), "{log}");

    let lines = read_until_cut(response, Duration::from_secs(5)).await;
    assert!(lines < 100, "the stream was cut, got {lines} of 100 chunks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_exits_even_with_a_pool_thread_stuck_in_a_blocking_read() {
    let mock = Mock::start();
    let mut gw = GatewayProcess::start(&[
        "--mode",
        "broken",
        "--blocking-threads",
        "2",
        "--drain-secs",
        "1",
        "--upstream",
        &mock.url(),
    ]);
    let client = client();
    // The next chunk is 30 s away: the pool thread sits in `read()` for all of that. Dropping the
    // runtime plainly would wait for it; the binary's `shutdown_timeout` must not.
    let url = format!("{}/chat/stream?chunks=2&interval_ms=30000", gw.url());
    let response = open_long_stream(&client, &url).await;

    gw.sigterm();
    let status = gw.exit_within(Duration::from_secs(6)).await;
    assert!(status.success(), "{status}; log:\n{}", gw.log());
    assert!(gw.log().contains("drain deadline passed"), "{}", gw.log());
    assert_eq!(read_until_cut(response, Duration::from_secs(5)).await, 0);
}
