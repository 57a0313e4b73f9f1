//! The real `gateway` binary as a child process, for what only a process has: its own
//! environment (proxy variables, unknown `GATEWAY_*` names) and its own start-up log.
//!
//! Environment variables are process-global: a test that set `HTTP_PROXY` on itself would change
//! every other test running in the same binary. Setting them on a child changes nothing here.
//! (`tests/shutdown.rs` has its own copy of this helper, from before it was shared: it can take
//! this one, whose API is the same.)

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

/// A `gateway` binary listening on `127.0.0.1:0`, its log (stdout and stderr) collected.
pub struct GatewayProcess {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl GatewayProcess {
    /// Starts the binary with `args`; see [`GatewayProcess::start_with_env`].
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Starts the binary with `args` and exactly `env` on top of the test's environment minus
    /// every `GATEWAY_*` and proxy variable; waits for its "gateway listening on ADDR" line.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = command(env)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
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
        let Ok(addr) = addr_rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no 'gateway listening on' line; log:\n{}",
                log.lock().expect("log")
            );
        };
        Self { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGTERM, as an orchestrator stopping the gateway would.
    pub fn sigterm(&self) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM sent");
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("child status").is_none()
    }

    /// Waits for the process to exit; panics (showing the log) after `limit`.
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
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

    /// Everything logged so far.
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Appends every line of `output` to `log` on a thread of its own, so a full pipe never blocks
/// the gateway's logging. Sends the listening address when seen.
fn collect_lines(
    output: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<String>>,
    addr_tx: Option<std::sync::mpsc::Sender<SocketAddr>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            let addr = line
                .split("gateway listening on ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok());
            if let (Some(addr), Some(tx)) = (addr, &addr_tx) {
                let _ = tx.send(addr);
            }
            let mut log = log.lock().expect("log lock");
            log.push_str(&line);
            log.push('\n');
        }
    });
}
