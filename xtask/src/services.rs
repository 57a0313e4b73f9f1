//! Starting and stopping mock-llm and the gateway as background processes.
//!
//! Each service gets a pid file and a log under `target/demo/`. Three rules keep this honest:
//!
//! - **Readiness is polled, never slept for.** A service is up when it answers HTTP; if it dies
//!   first, the error shows the tail of its log.
//! - **Each service runs in its own process group,** so the Ctrl-C meant for the demo does not
//!   kill it behind our back: xtask stops it in order (SIGTERM, a grace period, then SIGKILL) and
//!   removes its pid file.
//! - **`stop` signals only what our pid files name,** and only after checking that the process
//!   behind the pid is still the program we started (pids get reused).
//! - **A pid file names its owner**: the xtask process that runs a demo writes its own pid beside
//!   the service's, so a second demo can tell "a demo is running right now" (leave it alone) from
//!   "left over by `up` or a crashed run" (`make stop` is the cure), and say which.
//!
//! Every function takes the directory its pid files and logs live in: `target/demo/` for the
//! demos and `up`/`stop`, `target/e2e/` for `make test`'s check (so a test run never overwrites
//! a user's demo report or picture), `target/compat/` and a fresh one per benchmark run.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::project_root;

/// The programs xtask starts, by binary name.
pub const PROGRAMS: [&str; 2] = ["mock-llm", "gateway"];

/// How long a service may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a service may take to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Set by the Ctrl-C handler; long waits check it so Ctrl-C always ends in an orderly stop.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the Ctrl-C handler (once). The terminal sends SIGINT to the whole foreground group:
/// cargo and diag, which are in it, stop by themselves; xtask survives to stop the services.
pub fn catch_ctrl_c() {
    // An error here means a handler is already installed, which is what we want anyway.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst));
}

/// `target/`, or wherever `CARGO_TARGET_DIR` points.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

/// A port the kernel just handed out and took back: free, unless someone races us for it.
/// Checks use these so they never collide with a demo someone left running on 8000/8001.
pub fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Pid files, logs and reports of the demos, `up` and `stop`.
pub fn demo_dir() -> PathBuf {
    target_dir().join("demo")
}

fn pid_file(dir: &Path, program: &str) -> PathBuf {
    dir.join(format!("{program}.pid"))
}

/// What a pid file says: the service's pid and, while a demo runs it, the demo's xtask pid.
#[derive(Debug, Clone, Copy)]
struct PidFile {
    pid: u32,
    owner: Option<u32>,
}

impl PidFile {
    /// `PID` on the first line; `owner XTASK_PID` on the second while an xtask owns the service.
    fn render(self) -> String {
        match self.owner {
            Some(owner) => format!("{}\nowner {owner}\n", self.pid),
            None => format!("{}\n", self.pid),
        }
    }

    fn read(dir: &Path, program: &str) -> Option<Self> {
        let text = std::fs::read_to_string(pid_file(dir, program)).ok()?;
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let owner = lines
            .find_map(|line| line.strip_prefix("owner "))
            .and_then(|owner| owner.trim().parse().ok());
        Some(Self { pid, owner })
    }

    /// The owning xtask, if it is still alive: then a demo is using this service right now.
    /// "Alive" means the pid runs this same program (by file name): pids get reused.
    fn live_owner(self) -> Option<u32> {
        let me = std::env::current_exe().ok()?;
        let me = me.file_name()?.to_str()?;
        self.owner.filter(|&owner| is_our_program(owner, me))
    }
}

/// Builds the three binaries and returns the directory they are in.
pub fn build(debug: bool) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(project_root()).args([
        "build", "--locked", "-p", "gateway", "-p", "mock-llm", "-p", "diag",
    ]);
    if !debug {
        command.arg("--release");
    }
    run(&mut command)?;
    Ok(target_dir().join(if debug { "debug" } else { "release" }))
}

/// Runs a command in the foreground and fails unless it exits with status 0.
pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}

/// One service we started. Dropping it stops it: a demo that fails or is interrupted half way
/// cleans up like one that succeeded.
#[derive(Debug)]
pub struct Service {
    pub program: &'static str,
    child: Child,
    pid_file: PathBuf,
    /// False once [`Service::detach`] hands the process over to a later `xtask stop`.
    owned: bool,
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Leaves the process running after xtask exits; its pid file lets `stop` find it, and no
    /// longer names an owner (nothing runs a demo on it).
    pub fn detach(mut self) {
        self.owned = false;
        let unowned = PidFile {
            pid: self.pid(),
            owner: None,
        };
        let _ = std::fs::write(&self.pid_file, unowned.render());
    }
}

impl Service {
    /// SIGKILL: the process dies at once, without a drain, as in a crash (`bench jobs` measures
    /// how long its jobs take to come back).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
        self.owned = false;
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let pid = self.child.id();
        let _ = terminate(pid, || matches!(self.child.try_wait(), Ok(Some(_))));
        // Reaps the child so no zombie is left behind, whichever signal ended it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// Starts `program` from `bin_dir` with `args`, then polls `ready_url` until it answers. Its pid
/// file and log go in `dir`; the pid file names this xtask as the owner until [`Service::detach`].
pub fn start(
    dir: &Path,
    bin_dir: &Path,
    program: &'static str,
    listen: SocketAddr,
    args: &[String],
    ready_url: &str,
) -> Result<Service> {
    start_with_env(dir, bin_dir, program, listen, args, ready_url, &[])
}

/// [`start`], with `env` set on the child (e.g. `RUST_LOG=off` for `bench observe`).
pub fn start_with_env(
    dir: &Path,
    bin_dir: &Path,
    program: &'static str,
    listen: SocketAddr,
    args: &[String],
    ready_url: &str,
    env: &[(&str, &str)],
) -> Result<Service> {
    refuse_if_running(dir, program)?;
    // Fail with a sentence rather than a bind error buried in a log file.
    if let Err(e) = TcpListener::bind(listen) {
        bail!(
            "{listen} is not free ({e}): a previous demo may still be running (`make stop`), \
             or another program uses the port"
        );
    }
    std::fs::create_dir_all(dir)?;
    let log_path = dir.join(format!("{program}.log"));
    let pid_path = pid_file(dir, program);
    let log = File::create(&log_path).with_context(|| format!("cannot create {log_path:?}"))?;
    let binary = bin_dir.join(program);
    let child = Command::new(&binary)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {binary:?}"))?;
    let mut service = Service {
        program,
        child,
        pid_file: pid_path,
        owned: true,
    };
    let owned = PidFile {
        pid: service.pid(),
        owner: Some(std::process::id()),
    };
    std::fs::write(&service.pid_file, owned.render())?;
    wait_ready(&mut service, ready_url, &log_path)?;
    println!(
        "xtask: {program} is up (pid {}, log {})",
        service.pid(),
        log_path.display()
    );
    Ok(service)
}

fn wait_ready(service: &mut Service, url: &str, log_path: &Path) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(500)))
        .build()
        .into();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = service.child.try_wait()? {
            bail!(
                "{} exited during start-up ({status}); end of {}:\n{}",
                service.program,
                log_path.display(),
                log_tail(log_path)
            );
        }
        if agent.get(url).call().is_ok() {
            return Ok(());
        }
        if INTERRUPTED.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer {url} within {READY_TIMEOUT:?}; end of {}:\n{}",
                service.program,
                log_path.display(),
                log_tail(log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Refuses to start `program` over one that is still up, and says whose it is: a demo running
/// right now (stopping it would cut that demo short) or a leftover that `make stop` clears.
fn refuse_if_running(dir: &Path, program: &str) -> Result<()> {
    let Some(file) = PidFile::read(dir, program) else {
        return Ok(());
    };
    if !is_our_program(file.pid, program) {
        return Ok(());
    }
    match file.live_owner() {
        Some(owner) => bail!(
            "{program} (pid {}) belongs to a demo that is running right now (xtask pid {owner}): \
             wait for it to finish or press Ctrl-C in its terminal; `make stop` would cut it \
             short. To run a second one beside it, give other ports (--gateway-listen, \
             --mock-listen)",
            file.pid
        ),
        None => bail!(
            "{program} (pid {}) was left running by `cargo xtask up` or an interrupted run: \
             `make stop` stops it",
            file.pid
        ),
    }
}

/// True when `pid` is alive and runs a binary called `program`. Pids are reused: a stale pid
/// file may name some unrelated process, which must never be signalled.
fn is_our_program(pid: u32, program: &str) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
        exe.file_name()
            .and_then(|name| name.to_str())
            // A rebuilt binary shows as "gateway (deleted)".
            .is_some_and(|name| name.split(' ').next() == Some(program))
    })
}

/// SIGTERM, then up to [`STOP_GRACE`] for `exited()` to turn true, then SIGKILL.
fn terminate(pid: u32, mut exited: impl FnMut() -> bool) -> Result<()> {
    let pid = Pid::from_raw(i32::try_from(pid)?);
    kill(pid, Signal::SIGTERM)?;
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if exited() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    kill(pid, Signal::SIGKILL)?;
    Ok(())
}

/// `cargo xtask stop`: stops what the pid files in `dir` name, after checking each is still ours,
/// and says when a stopped service was in use by a running demo (that demo will now fail).
pub fn stop_all(dir: &Path) -> Result<()> {
    for program in PROGRAMS {
        let Some(file) = PidFile::read(dir, program) else {
            continue;
        };
        let pid = file.pid;
        if is_our_program(pid, program) {
            let owner = file.live_owner();
            // Not our child (an earlier xtask started it): it is gone when /proc says so.
            terminate(pid, || !is_our_program(pid, program))?;
            match owner {
                Some(owner) => println!(
                    "xtask: stopped {program} (pid {pid}), which the demo in xtask pid {owner} \
                     was using: that demo ends with an error"
                ),
                None => println!("xtask: stopped {program} (pid {pid})"),
            }
        } else {
            println!("xtask: {program} (pid {pid}) had already exited");
        }
        std::fs::remove_file(pid_file(dir, program))?;
    }
    Ok(())
}

/// Processes running one of our binaries from this target directory, as `(pid, exe)`.
/// The e2e check uses it to prove that nothing outlived a demo or a stop.
pub fn leftover_processes() -> Vec<(u32, PathBuf)> {
    let ours: Vec<PathBuf> = ["debug", "release"]
        .iter()
        .flat_map(|profile| {
            ["gateway", "mock-llm", "diag"].map(|name| target_dir().join(profile).join(name))
        })
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            let exe_text = exe.to_string_lossy();
            let live_path = PathBuf::from(exe_text.trim_end_matches(" (deleted)"));
            ours.contains(&live_path).then_some((pid, exe))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real process stands in for a service; the pid file decides what we are told.
    #[test]
    fn a_running_demo_is_told_from_a_leftover() {
        let dir = std::env::temp_dir().join(format!("xtask-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut service = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = service.id();
        let write = |owner| {
            let file = PidFile { pid, owner };
            std::fs::write(pid_file(&dir, "sleep"), file.render()).expect("pid file")
        };

        // Owned by a live xtask (this test process plays it): a demo is running right now.
        write(Some(std::process::id()));
        let error = refuse_if_running(&dir, "sleep")
            .expect_err("refused")
            .to_string();
        assert!(error.contains("running right now"), "{error}");
        assert!(!error.contains("`make stop` stops it"), "{error}");

        // No owner (as `up` leaves it), or an owner that is gone: a leftover.
        write(None);
        let error = refuse_if_running(&dir, "sleep")
            .expect_err("refused")
            .to_string();
        assert!(error.contains("left running"), "{error}");
        write(Some(u32::MAX - 1));
        let error = refuse_if_running(&dir, "sleep")
            .expect_err("refused")
            .to_string();
        assert!(error.contains("left running"), "{error}");

        // The service is gone: nothing to refuse.
        let _ = service.kill();
        let _ = service.wait();
        assert!(refuse_if_running(&dir, "sleep").is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
