//! # Throwaway instances of the real services a user would run beside the gateway
//!
//! Where a user runs Redis, Postgres, HAProxy, nginx or Prometheus, the tests and the fleet use the
//! real one, from Debian's packages, never a mock of it. Each test starts its own instance on a free
//! loopback port, under the workspace's `target/`, and stops it when the handle is dropped. A
//! watchdog process stops it too if the test process dies first (a panic that aborts, a `SIGKILL`,
//! a handle kept in a `static`), so no stray `postgres` outlives a run.
//!
//! A machine without the package still passes `make test` on the embedded defaults (SQLite, the
//! in-process cache), but never silently: [`skip`] prints which test skipped and the one `apt-get`
//! line that enables it, and records it in `target/services-skipped.txt`, which `make test` prints
//! at the end. Under `REQUIRE_SERVICES=1` (what `.ci/run` sets, after installing the packages) a
//! missing service fails the test instead.
//!
//! `Haproxy` puts the shipped `deploy/haproxy.cfg` in front of gateways ([`haproxy`]). For
//! `cargo xtask fleet up`, whose services must outlive it, each handle can `detach()`: the
//! instance keeps running, its watchdog disarmed, and [`Detached`] says how to stop it later.
//!
//! ```no_run
//! use common::services::Redis;
//! let Some(redis) = Redis::start_for("shared_cache") else { return };
//! let url = redis.url(); // redis://127.0.0.1:PORT
//! ```
//!
//! [`Prometheus`] scrapes the targets a test names and evaluates its rules;
//! [`prometheus::check_rules`] runs `promtool check rules` (same package).

pub mod haproxy;
mod postgres;
pub mod prometheus;
mod redis;

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use haproxy::Haproxy;
pub use postgres::Postgres;
pub use prometheus::Prometheus;
pub use redis::Redis;

/// The environment variable under which a missing service fails the run instead of skipping.
pub const REQUIRE_VARIABLE: &str = "REQUIRE_SERVICES";

/// The services the tests use, each from one Debian package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Redis,
    Postgres,
    Haproxy,
    Nginx,
    Prometheus,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Redis,
        Service::Postgres,
        Service::Haproxy,
        Service::Nginx,
        Service::Prometheus,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Redis => "redis-server",
            Service::Postgres => "postgres",
            Service::Haproxy => "haproxy",
            Service::Nginx => "nginx",
            Service::Prometheus => "prometheus",
        }
    }

    /// The Debian package that provides it.
    pub fn package(self) -> &'static str {
        match self {
            Service::Redis => "redis-server",
            Service::Postgres => "postgresql",
            Service::Haproxy => "haproxy",
            Service::Nginx => "nginx-light",
            Service::Prometheus => "prometheus",
        }
    }

    /// The line a person types to get it.
    pub fn install_line(self) -> String {
        format!("sudo apt-get install -y {}", self.package())
    }

    /// The main program of the service, if installed. Postgres's server programs live in a
    /// versioned directory that is not on `PATH` (`/usr/lib/postgresql/15/bin`); the newest wins.
    pub fn program(self) -> Option<PathBuf> {
        match self {
            Service::Postgres => postgres::bin_dir().map(|dir| dir.join("postgres")),
            Service::Prometheus => on_path("prometheus"),
            other => on_path(other.name()),
        }
    }

    pub fn is_installed(self) -> bool {
        self.program().is_some()
    }
}

/// Finds `program` on `PATH`, then in the sbin directories a non-root `PATH` often lacks.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether a missing service must fail the run (`REQUIRE_SERVICES=1`).
pub fn required() -> bool {
    std::env::var(REQUIRE_VARIABLE).is_ok_and(|value| value == "1" || value == "true")
}

/// Reports that `test` did not run because `service` is not installed: loudly on stderr, and in
/// `target/services-skipped.txt` for `make test`'s summary. Panics under `REQUIRE_SERVICES=1`.
pub fn skip(test: &str, service: Service) {
    let line = format!(
        "SKIPPED {test}: needs {} (not installed). Enable it with: {}",
        service.name(),
        service.install_line()
    );
    if required() {
        panic!("{line}\n({REQUIRE_VARIABLE}=1: a missing service is a failure here)");
    }
    eprintln!("\n*** {line} ***\n");
    let log = skipped_log();
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&log) {
        let _ = writeln!(
            file,
            "{test}\t{}\t{}",
            service.name(),
            service.install_line()
        );
    }
}

/// Where [`skip`] records skipped tests: `target/services-skipped.txt`.
pub fn skipped_log() -> PathBuf {
    target_dir().join("services-skipped.txt")
}

/// The workspace's target directory: `CARGO_TARGET_DIR`, else the nearest ancestor of the running
/// program that holds cargo's `CACHEDIR.TAG` (test binaries run from `target/debug/deps`), else
/// the system's temporary directory.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// A fresh directory for one instance: `target/services/<name>-<pid>-<n>`.
fn instance_dir(name: &str) -> std::io::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = target_dir().join("services").join(format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A loopback port nobody listens on right now. The port is released before the service binds
/// it, so another process could take it in between; on loopback in a test run that is rare, and a
/// service that fails to bind says so in its log.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Waits until something accepts connections on `port`, or `timeout` passes.
fn wait_listening(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

/// Starts a detached shell that runs `cleanup` once this process has gone: the last line of
/// defence against instances outliving a test binary that could not drop their handles. It
/// does nothing if the instance in `dir` was detached meanwhile ([`detach_marker`]).
fn watchdog(dir: &Path, cleanup: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; [ -e '{marker}' ] || {{ {cleanup} ; }}",
        pid = std::process::id(),
        marker = dir.join(DETACHED).display()
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

/// The file whose presence in an instance's directory disarms its watchdog.
const DETACHED: &str = "detached";

/// Marks the instance in `dir` as detached: its watchdog will leave it running.
fn detach_marker(dir: &Path) {
    let _ = std::fs::write(dir.join(DETACHED), "left running on purpose (detach)\n");
}

/// An instance left running on purpose after its handle is gone (`Redis::detach`,
/// `Postgres::detach`, `Haproxy::detach`): what another process needs to stop it later, as
/// `cargo xtask fleet down` does. The tests never detach: their instances die with them.
#[derive(Debug, Clone)]
pub struct Detached {
    pub service: Service,
    /// The server's process (Postgres: the postmaster). Stop it with SIGTERM.
    pub pid: u32,
    /// Its directory (data, log, socket): delete it once the process is gone.
    pub dir: PathBuf,
}

/// The last lines of a log, for an error message that says why a service did not start.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
