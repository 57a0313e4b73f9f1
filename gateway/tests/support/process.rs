//! The real `gateway` binary as a child process, for what only a process shows: its exit status,
//! its reaction to a real SIGTERM, its own environment (proxy variables, unknown `GATEWAY_*`
//! names) and its log.
//!
//! Environment variables are process-global: a test that set `HTTP_PROXY` on itself would change
//! every other test running in the same binary. Setting them on a child changes nothing here.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Every variable that could route a request through a proxy, in both cases, as the HTTP
/// clients read them. A test starts from none of them, then sets the ones it is about.
pub const PROXY_VARIABLES: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The `gateway` binary as a child process, with its log collected.
pub struct GatewayProcess {
    child: Child,
    pub addr: SocketAddr,
    /// The admin plane's address, when the test asked for one.
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<String>>,
    /// One message per output pipe when its reader saw EOF: after the process exited, the log
    /// is whole only once both came (a read right after `wait` can miss the last lines).
    eof: std::sync::mpsc::Receiver<()>,
    /// How many of the two pipes reached EOF so far.
    pipes_at_eof: usize,
}

impl GatewayProcess {
    /// Starts the binary on `127.0.0.1:0` and waits for its "gateway listening on ADDR" line
    /// (and "admin plane listening on ADDR", when `args` turn the admin plane on). Unless `args`
    /// say otherwise, the admin plane is off (its default port would collide between tests) and
    /// the drain has no grace.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`GatewayProcess::start`] with exactly `env` on top of the test's environment minus every
    /// `GATEWAY_*` and proxy variable.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = command(env);
        let mut defaults = Vec::new();
        for (flag, value) in [("--admin-listen", "off"), ("--drain-grace-secs", "0")] {
            if !args.contains(&flag) {
                defaults.extend([flag, value]);
            }
        }
        let admin_wanted = args
            .iter()
            .position(|a| *a == "--admin-listen")
            .is_some_and(|i| args.get(i + 1).is_some_and(|v| *v != "off"));
        // The binary logs with tracing's default writer, stdout; panics and clap go to stderr.
        let mut child = command
            .args(["--listen", "127.0.0.1:0"])
            .args(&defaults)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gateway binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (eof_tx, eof) = std::sync::mpsc::channel();
        collect_lines(stdout, Arc::clone(&log), Some(addr_tx), eof_tx.clone());
        collect_lines(stderr, Arc::clone(&log), None, eof_tx);
        let mut addr = None;
        let mut admin = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while addr.is_none() || (admin_wanted && admin.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match addr_rx.recv_timeout(left) {
                Ok(Listening::Main(a)) => addr = Some(a),
                Ok(Listening::Admin(a)) => admin = Some(a),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "no 'listening on' line; log:\n{}",
                        log.lock().expect("log lock")
                    );
                }
            }
        }
        Self {
            child,
            addr: addr.expect("main address"),
            admin,
            log,
            eof,
            pipes_at_eof: 0,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT` of the admin plane (also when it listens on `0.0.0.0`).
    pub fn admin_url(&self) -> String {
        let admin = self.admin.expect("started with --admin-listen");
        format!("http://127.0.0.1:{}", admin.port())
    }

    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Sends `signal` to our own child, by its pid.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        kill(pid, signal).unwrap_or_else(|e| panic!("{signal} not sent: {e}"));
    }

    /// SIGKILL: the process dies at once, mid-write if it was writing, with no drain.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("child status").is_none()
    }

    /// Waits for the process to exit, then for its stdout and stderr to reach EOF, so that
    /// [`Self::log`] is whole from here on; panics (showing the log) after `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway still running {limit:?} after SIGTERM; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.read_to_eof();
        status
    }

    /// Waits (up to 5 s) until both output pipes reached EOF, i.e. every line the process
    /// wrote is in the log. Only meaningful once the process has exited.
    fn read_to_eof(&mut self) {
        while self.pipes_at_eof < 2 {
            self.eof
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("the log did not reach EOF; so far:\n{}", self.log()));
            self.pipes_at_eof += 1;
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits (up to 5 s) for a log line containing `needle`; the whole log either way.
    pub fn log_once_it_has(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.log();
            if log.contains(needle) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// The binary with a clean environment: no `GATEWAY_*` or proxy variable from the caller, plain
/// log lines, then `env`.
pub fn command(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GATEWAY_") {
            command.env_remove(name);
        }
    }
    for name in PROXY_VARIABLES {
        command.env_remove(name);
    }
    command
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied());
    command
}

enum Listening {
    Main(SocketAddr),
    Admin(SocketAddr),
}

/// Appends every line of `output` to `log` on a thread of its own, until the process exits, so
/// a full pipe can never block the gateway's logging. Sends the listening addresses when seen,
/// and `eof` once the pipe is read to its end.
fn collect_lines(
    output: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<String>>,
    addr_tx: Option<std::sync::mpsc::Sender<Listening>>,
    eof: std::sync::mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &addr_tx {
                if let Some(addr) = listening_addr(&line, "gateway listening on ") {
                    let _ = tx.send(Listening::Main(addr));
                }
                if let Some(addr) = listening_addr(&line, "admin plane listening on ") {
                    let _ = tx.send(Listening::Admin(addr));
                }
            }
            let mut log = log.lock().expect("log lock");
            log.push_str(&line);
            log.push('\n');
        }
        let _ = eof.send(());
    });
}

/// Parses `ADDR` out of a start-up line `... {prefix}ADDR ...` (or `ADDR:`), in text or in
/// `--log-format json` (where the line goes on as `\n...` or ends with `"`).
fn listening_addr(line: &str, prefix: &str) -> Option<SocketAddr> {
    let rest = line.split(prefix).nth(1)?;
    let word = rest
        .split(|c: char| c.is_whitespace() || c == '\\' || c == '"')
        .next()?;
    word.trim_end_matches([':', ',']).parse().ok()
}
