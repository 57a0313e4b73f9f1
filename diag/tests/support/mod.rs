//! The one support module of diag's tests: real servers on `127.0.0.1:0` (a mock upstream, the
//! workspace's one [`Mock`] from `mock_llm::testing`, a gateway, and a plain service that is
//! neither: [`healthz_server`]), and a bounded way to run the `diag` binary against them (to
//! its end, or as a [`DiagChild`] the test can interrupt).
//!
//! The servers must keep running while the diag binary runs, and the gateway's blocking pool
//! must be its own (its size is the experiment), so each runs on its own thread and runtime,
//! never the test's.
//!
//! (Named `support`, not `common`: a `common` module would shadow the workspace's `common` crate.)

#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
pub use mock_llm::testing::Mock;

/// No diag run in these tests should come near this; past it the run is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A gateway in `mode` with a blocking pool of 2 threads, relaying to `mock`.
pub fn gateway(mode: &str, mock: &Mock) -> gateway::embed::Running {
    gateway_with(mode, mock, &[])
}

/// [`gateway`], plus `extra` gateway flags (e.g. `--api-key k1`).
pub fn gateway_with(mode: &str, mock: &Mock, extra: &[&str]) -> gateway::embed::Running {
    let upstream = mock.url();
    let mut flags = vec![
        "gateway",
        "--mode",
        mode,
        "--blocking-threads",
        "2",
        "--drain-secs",
        "0",
        "--upstream",
        &upstream,
    ];
    flags.extend_from_slice(extra);
    // A free port on loopback, no admin plane (its default port, 8002, would collide between
    // tests running side by side) and no drain grace (nobody needs to notice a test gateway
    // leave), unless asked for.
    for (flag, value) in [
        ("--listen", "127.0.0.1:0"),
        ("--admin-listen", "off"),
        ("--drain-grace-secs", "0"),
    ] {
        if !extra.contains(&flag) {
            flags.extend([flag, value]);
        }
    }
    let config = gateway::Config::try_parse_from(flags).expect("gateway flags");
    gateway::embed::start(config).expect("gateway starts")
}

/// A plain service of the kind `diag watch --probe` is for, knowing nothing of this project: an
/// axum app with `GET /healthz` and nothing else, on its own thread and runtime (as
/// `common::embed` starts every server of the tests). Stops when dropped.
pub fn healthz_server() -> common::embed::Running {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    common::embed::start(
        "healthz",
        runtime,
        listen,
        Duration::from_secs(1),
        |listener, shutdown| async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        },
    )
    .expect("the healthz server starts")
}

/// Waits (up to 10 s) until the admin plane at `admin` answers `/readyz` with `ready`: a
/// gateway just started says `starting` until its first probes come back, and on a busy machine
/// that can outlast the start of a short diag run.
pub fn wait_ready(admin: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime to poll /readyz");
    let (client, url) = (reqwest::Client::new(), format!("{admin}/readyz"));
    runtime.block_on(mock_llm::testing::wait_for(
        "the admin plane's /readyz to say ready",
        Duration::from_secs(10),
        || async {
            let (_, body) = mock_llm::testing::get_json(&client, &url).await;
            (body["status"] == "ready").then_some(())
        },
    ));
}

/// A bare HTTP/1.1 server that answers every request with a `404` and keeps its head (request
/// line and headers), so a test can check what diag sent: every path, every header. A `404`
/// because it is the one answer every diag request understands (something listens; no such
/// endpoint). Stops when dropped.
pub struct Recorder {
    addr: std::net::SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Recorder {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let (heads, stop) = (
            Arc::<Mutex<Vec<String>>>::default(),
            Arc::<AtomicBool>::default(),
        );
        let (recorded, stopped) = (Arc::clone(&heads), Arc::clone(&stop));
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(connection) = connection else { continue };
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || answer_404(connection, &recorded));
            }
        });
        Self { addr, heads, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request head received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads").clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Reads one request head from `connection`, records it, answers `404` and closes.
fn answer_404(mut connection: TcpStream, recorded: &Mutex<Vec<String>>) {
    let _ = connection.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match connection.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    recorded
        .lock()
        .expect("heads")
        .push(String::from_utf8_lossy(&head).into_owned());
    let _ = connection
        .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
}

/// What a diag run left behind.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs the `diag` binary with `args`, killing it if it outlives [`RUN_LIMIT`].
///
/// With `DIAG_ADMIN=off`: a test that wants an admin plane names it with `--admin` (a flag
/// wins over the environment), and no other test finds one by chance on `127.0.0.1:8002`,
/// where a gateway someone left running would answer. [`diag_guessing_admin`] leaves the guess on.
pub fn diag(args: &[&str]) -> Run {
    run_diag(args, &[("DIAG_ADMIN", "off")])
}

/// [`diag`] with `--admin` left to its default: the gateway's host, port 8002, if it answers.
pub fn diag_guessing_admin(args: &[&str]) -> Run {
    run_diag(args, &[])
}

/// `diag <args>` with its output piped, `env` set and no other `DIAG_*` variable: the flags
/// under test, not whatever the developer's shell exports.
fn diag_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_diag"));
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars() {
        if name.starts_with("DIAG_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// Waits for `child`, started at `started`, to exit; kills it and panics past [`RUN_LIMIT`].
fn wait_bounded(
    child: &mut std::process::Child,
    started: Instant,
    what: &dyn std::fmt::Debug,
) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().expect("wait for diag") {
            return status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("diag {what:?} ran longer than {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_diag(args: &[&str], env: &[(&str, &str)]) -> Run {
    let started = Instant::now();
    let mut child = diag_command(args, env).spawn().expect("diag starts");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let status = wait_bounded(&mut child, started, &args);
    Run {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        took: started.elapsed(),
    }
}

/// `diag <args>` running as a child process, its stdout read line by line as it comes, so a
/// test can wait for lines and then do what a person would: press Ctrl-C ([`Self::interrupt`]).
pub struct DiagChild {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    stdout: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
    started: Instant,
}

impl DiagChild {
    /// Starts `diag <args>` with `DIAG_ADMIN=off` and no other `DIAG_*`, as [`diag`] does.
    pub fn start(args: &[&str]) -> Self {
        let mut child = diag_command(args, &[("DIAG_ADMIN", "off")])
            .spawn()
            .expect("diag starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Self {
            child,
            lines,
            stdout: Vec::new(),
            stderr,
            started: Instant::now(),
        }
    }

    /// Waits until the child has printed `n` lines on stdout (at most [`RUN_LIMIT`]).
    pub fn wait_for_lines(&mut self, n: usize) {
        while self.stdout.len() < n {
            let left = RUN_LIMIT.saturating_sub(self.started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("diag printed {:?}, not {n} lines", self.stdout);
                }
            }
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub fn interrupt(&self) {
        self.signal("-INT");
    }

    /// Sends SIGTERM, as `timeout`, `kill` or a process manager does.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {which} {}", self.child.id());
    }

    /// Waits for the child to exit (killing it past [`RUN_LIMIT`]) and returns the run.
    pub fn wait(mut self) -> Run {
        let status = wait_bounded(&mut self.child, self.started, &self.stdout);
        // The reader thread ends at the pipe's end, after the last line.
        self.stdout.extend(self.lines.iter());
        Run {
            code: status.code(),
            stdout: self.stdout.join("\n"),
            stderr: self.stderr.join().expect("stderr reader"),
            took: self.started.elapsed(),
        }
    }
}

/// Runs `diag <args>` as [`diag`] does, on a thread of its own, so that the test can act on the
/// servers while diag measures them (stop one mid-run, say). Join the handle for the run.
pub fn diag_in_background(args: &[&str]) -> std::thread::JoinHandle<Run> {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        diag(&args)
    })
}

/// The query of the demos in these tests: 6 chunks, 300 ms apart, so a stream lasts ~1.8 s.
pub const STREAM_QUERY: &str = "chunks=6&interval_ms=300";

/// The tests' demo of `url`: 4 streams of [`STREAM_QUERY`] for 3 s, probes every 100 ms, plus
/// `extra` flags; the run, and the report file it was told to write (named after `name`).
pub fn demo_at(url: &str, name: &str, extra: &[&str]) -> (Run, PathBuf) {
    let json = json_path(name);
    let mut args = vec![
        "demo",
        "--gateway",
        url,
        "--streams",
        "4",
        "--duration",
        "3s",
        "--stream-query",
        STREAM_QUERY,
        "--probe-interval",
        "100ms",
        "--json",
        json.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    (diag(&args), json)
}

/// Each `(args, message)`: `diag <args>` is refused with exit code 2 and `message` on stderr.
pub fn refuses(cases: &[(&[&str], &str)]) {
    for (args, message) in cases {
        let run = diag(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(
            run.stderr.contains(message),
            "{args:?}: no {message:?} in {}",
            run.stderr
        );
    }
}

/// A loopback address other than `127.0.0.1` whose port 8002 is free (bound, then released),
/// so a test can put a gateway's admin plane where diag guesses it, or make sure nothing is
/// there, without meeting another test or a gateway left running on `127.0.0.1:8002`. `None`
/// where only `127.0.0.1` is configured (macOS): the test then has nothing to check.
pub fn spare_loopback() -> Option<std::net::IpAddr> {
    use std::sync::atomic::AtomicU8;
    // Distinct addresses for the tests of one process, and likely distinct between processes.
    // From 1: the last octet is `n.max(1)`, so a counter from 0 gave its first two callers the
    // same address, and one test's gateway then answered on the port another test needed empty.
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let pid = std::process::id();
    (0..32).find_map(|_| {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let ip = std::net::Ipv4Addr::new(127, (pid >> 8) as u8 | 1, pid as u8, n.max(1));
        TcpListener::bind((ip, 8002)).ok().map(|_| ip.into())
    })
}

/// A port nothing listens on: bound, then released.
pub fn dead_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    format!("http://{addr}")
}

/// A fresh path for a JSON report under Cargo's scratch directory for integration tests.
pub fn json_path(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("diag-{name}-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A `--json` path that cannot be written, because its directory is a file: `(that file, the
/// path)`.
pub fn unwritable_json(name: &str) -> (PathBuf, PathBuf) {
    let blocker = json_path(name);
    std::fs::write(&blocker, "not a directory").expect("blocker file");
    let report = blocker.join("report.json");
    (blocker, report)
}

/// `run` exited 1 and its stderr names the directory it could not create.
pub fn assert_unwritable(run: &Run, blocker: &Path) {
    assert_eq!(run.code, Some(1), "{run:#?}");
    let named = blocker.to_str().expect("utf-8 path");
    assert!(
        run.stderr.contains("cannot create") && run.stderr.contains(named),
        "{}",
        run.stderr
    );
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("the report was written");
    serde_json::from_str(&text).expect("the report is JSON")
}

/// Runs `diag <args> --json <a fresh path named after name>`, asserts that it exited 0, and
/// returns the run and the report it wrote.
pub fn diag_json(name: &str, args: &[&str]) -> (Run, serde_json::Value) {
    let json = json_path(name);
    let mut args = args.to_vec();
    args.extend(["--json", json.to_str().expect("utf-8 path")]);
    let run = diag(&args);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let report = read_json(&json);
    (run, report)
}
