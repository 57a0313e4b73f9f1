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

/// Pid files, logs and reports.
pub fn demo_dir() -> PathBuf {
    target_dir().join("demo")
}

fn pid_file(program: &str) -> PathBuf {
    demo_dir().join(format!("{program}.pid"))
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

    /// Leaves the process running after xtask exits; its pid file lets `stop` find it.
    pub fn detach(mut self) {
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

/// Starts `program` from `bin_dir` with `args`, then polls `ready_url` until it answers.
pub fn start(
    bin_dir: &Path,
    program: &'static str,
    listen: SocketAddr,
    args: &[String],
    ready_url: &str,
) -> Result<Service> {
    refuse_if_running(program)?;
    start_in(&demo_dir(), bin_dir, program, listen, args, ready_url)
}

/// [`start`], with the pid file and log in `dir` instead of `target/demo/` (the benchmark keeps
/// its own, so it runs beside a demo; `stop` does not see these: they stop when dropped).
pub fn start_in(
    dir: &Path,
    bin_dir: &Path,
    program: &'static str,
    listen: SocketAddr,
    args: &[String],
    ready_url: &str,
) -> Result<Service> {
    // Fail with a sentence rather than a bind error buried in a log file.
    if let Err(e) = TcpListener::bind(listen) {
        bail!(
            "{listen} is not free ({e}): a previous demo may still be running (`make stop`), \
             or another program uses the port"
        );
    }
    std::fs::create_dir_all(dir)?;
    let log_path = dir.join(format!("{program}.log"));
    let pid_path = dir.join(format!("{program}.pid"));
    let log = File::create(&log_path).with_context(|| format!("cannot create {log_path:?}"))?;
    let binary = bin_dir.join(program);
    let child = Command::new(&binary)
        .args(args)
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
    std::fs::write(&service.pid_file, format!("{}\n", service.pid()))?;
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

fn refuse_if_running(program: &str) -> Result<()> {
    if let Some(pid) = read_pid(program)
        && is_our_program(pid, program)
    {
        bail!("{program} from an earlier run is still up (pid {pid}): run `make stop` first");
    }
    Ok(())
}

fn read_pid(program: &str) -> Option<u32> {
    std::fs::read_to_string(pid_file(program))
        .ok()?
        .trim()
        .parse()
        .ok()
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

/// `cargo xtask stop`: stops what the pid files name, after checking each is still ours.
pub fn stop_all() -> Result<()> {
    for program in PROGRAMS {
        let Some(pid) = read_pid(program) else {
            continue;
        };
        if is_our_program(pid, program) {
            // Not our child (an earlier xtask started it): it is gone when /proc says so.
            terminate(pid, || !is_our_program(pid, program))?;
            println!("xtask: stopped {program} (pid {pid})");
        } else {
            println!("xtask: {program} (pid {pid}) had already exited");
        }
        std::fs::remove_file(pid_file(program))?;
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
