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
//! a user's demo report or picture), `target/compat/`, a fresh one per benchmark run, and
//! `target/fleet/` for `fleet up|down` and `make demo-scale`.
//!
//! A pid file is named after the *instance* (`gateway-2.pid`, `redis.pid`), which is the program's
//! name when there is one of it. Redis, Postgres and HAProxy are started by `common::services`
//! (the one way each is started, tests included); when the fleet leaves them running, [`adopt`]
//! gives each a pid file here that also names its executable and its directory, so `fleet down`
//! stops them the way `stop` stops the rest and then deletes what they left.

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

/// What a pid file says: the service's pid and, while a demo runs it, the demo's xtask pid;
/// for a service started by `common::services`, its executable and its directory too.
#[derive(Debug, Clone, Default)]
struct PidFile {
    pid: u32,
    owner: Option<u32>,
    /// The executable `/proc/PID/exe` showed when it started, when it is not our own binary
    /// named like the pid file (`redis-server` runs as `redis-check-rdb`).
    exe: Option<PathBuf>,
    /// A directory to delete once the process is gone (a Postgres cluster, a Redis dir).
    dir: Option<PathBuf>,
}

impl PidFile {
    /// `PID` on the first line; `owner XTASK_PID` while an xtask owns the service; `exe PATH`
    /// and `dir PATH` for an adopted one.
    fn render(&self) -> String {
        let mut text = format!("{}\n", self.pid);
        if let Some(owner) = self.owner {
            text.push_str(&format!("owner {owner}\n"));
        }
        if let Some(exe) = &self.exe {
            text.push_str(&format!("exe {}\n", exe.display()));
        }
        if let Some(dir) = &self.dir {
            text.push_str(&format!("dir {}\n", dir.display()));
        }
        text
    }

    fn read(dir: &Path, name: &str) -> Option<Self> {
        let text = std::fs::read_to_string(pid_file(dir, name)).ok()?;
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let mut file = Self {
            pid,
            ..Self::default()
        };
        for line in lines {
            if let Some(owner) = line.strip_prefix("owner ") {
                file.owner = owner.trim().parse().ok();
            } else if let Some(exe) = line.strip_prefix("exe ") {
                file.exe = Some(PathBuf::from(exe));
            } else if let Some(path) = line.strip_prefix("dir ") {
                file.dir = Some(PathBuf::from(path));
            }
        }
        Some(file)
    }

    /// Whether `pid` still runs what this file started: the recorded executable, else a binary
    /// named `program`.
    fn is_running(&self, program: &str) -> bool {
        match &self.exe {
            Some(exe) => exe_of(self.pid).is_some_and(|now| &now == exe),
            None => is_our_program(self.pid, program),
        }
    }

    /// The owning xtask, if it is still alive: then a demo is using this service right now.
    /// "Alive" means the pid runs this same program (by file name): pids get reused.
    fn live_owner(&self) -> Option<u32> {
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
    /// The instance's name, which names its pid file and log (the program's, unless several run).
    pub name: String,
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
            ..PidFile::default()
        };
        let _ = std::fs::write(&self.pid_file, unowned.render());
    }

    /// Its exit status if it has exited, without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `limit` for it to exit by itself (after `POST /admin/drain`, say).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline && !INTERRUPTED.load(Ordering::SeqCst) {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.exited()
    }

    /// `SIGKILL` at once, as a crash would: no drain, nothing handed back.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// What to start: `program` from `bin_dir` with `args` on `listen`, ready once `ready_url`
/// answers. `name` names its pid file and log (one of several instances: `gateway-2`); `env`
/// is set on the child (e.g. `RUST_LOG=off` for `bench observe`).
#[derive(Debug, Clone, Copy)]
pub struct Spec<'a> {
    pub bin_dir: &'a Path,
    pub program: &'static str,
    pub name: &'a str,
    pub listen: SocketAddr,
    pub args: &'a [String],
    pub ready_url: &'a str,
    pub env: &'a [(&'a str, &'a str)],
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
    launch(
        dir,
        &Spec {
            bin_dir,
            program,
            name: program,
            listen,
            args,
            ready_url,
            env: &[],
        },
    )
}

/// The one way a service is started ([`start`] is the common case): pid file `spec.name` in
/// `dir`, its log beside it.
pub fn launch(dir: &Path, spec: &Spec<'_>) -> Result<Service> {
    let Spec {
        bin_dir,
        program,
        name,
        listen,
        args,
        ready_url,
        env,
    } = *spec;
    refuse_if_running(dir, name, program)?;
    // Fail with a sentence rather than a bind error buried in a log file.
    if let Err(e) = TcpListener::bind(listen) {
        bail!(
            "{listen} is not free ({e}): a previous demo may still be running (`make stop`), \
             or another program uses the port"
        );
    }
    std::fs::create_dir_all(dir)?;
    let log_path = dir.join(format!("{name}.log"));
    let pid_path = pid_file(dir, name);
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
        name: name.to_owned(),
        child,
        pid_file: pid_path,
        owned: true,
    };
    let owned = PidFile {
        pid: service.pid(),
        owner: Some(std::process::id()),
        ..PidFile::default()
    };
    std::fs::write(&service.pid_file, owned.render())?;
    wait_ready(&mut service, ready_url, &log_path)?;
    println!(
        "xtask: {name} is up (pid {}, log {})",
        service.pid(),
        log_path.display()
    );
    Ok(service)
}

/// Gives a service that `common::services` started and then detached a pid file `name` in
/// `dir`, with its executable (as `/proc` shows it now) and its directory, so [`stop_all`]
/// stops it like the others and then deletes that directory.
pub fn adopt(dir: &Path, name: &str, detached: &common::services::Detached) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = PidFile {
        pid: detached.pid,
        owner: None,
        exe: exe_of(detached.pid),
        dir: Some(detached.dir.clone()),
    };
    std::fs::write(pid_file(dir, name), file.render())?;
    Ok(())
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
                service.name,
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
                service.name,
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

/// Refuses to start instance `name` over one that is still up, and says whose it is: a demo
/// running right now (stopping it would cut that demo short) or a leftover that `make stop`
/// (or `cargo xtask fleet down`, for the fleet's directory) clears.
fn refuse_if_running(dir: &Path, name: &str, program: &str) -> Result<()> {
    let Some(file) = PidFile::read(dir, name) else {
        return Ok(());
    };
    if !file.is_running(program) {
        return Ok(());
    }
    let (stop, up) = stop_hint(dir);
    match file.live_owner() {
        Some(owner) => bail!(
            "{name} (pid {}) belongs to a demo that is running right now (xtask pid {owner}): \
             wait for it to finish or press Ctrl-C in its terminal; `{stop}` would cut it \
             short. To run a second one beside it, give other ports (--gateway-listen, \
             --mock-listen)",
            file.pid
        ),
        None => bail!(
            "{name} (pid {}) was left running by `{up}` or an interrupted run: `{stop}` stops it",
            file.pid
        ),
    }
}

/// The command that stops what a directory's pid files name, and the one that leaves them.
fn stop_hint(dir: &Path) -> (&'static str, &'static str) {
    if dir.file_name().is_some_and(|name| name == "fleet") {
        ("cargo xtask fleet down", "cargo xtask fleet up")
    } else {
        ("make stop", "cargo xtask up")
    }
}

/// What `/proc/PID/exe` points at, without the " (deleted)" of a rebuilt binary.
fn exe_of(pid: u32) -> Option<PathBuf> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = exe.to_string_lossy();
    Some(PathBuf::from(text.trim_end_matches(" (deleted)")))
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

/// `cargo xtask stop` (and `fleet down`): stops what the pid files in `dir` name, after checking
/// each is still what was started, and says when a stopped service was in use by a running
/// demo (that demo will now fail). The order is the reverse of a start: the load balancer, the
/// gateways, the upstream, then the stores the gateways were using.
pub fn stop_all(dir: &Path) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.strip_suffix(".pid")?.to_owned();
            Some(name)
        })
        .collect();
    names.sort_by_key(|name| (stop_rank(name), name.clone()));
    for name in names {
        stop_one(dir, &name)?;
    }
    Ok(())
}

/// Where `name` comes in [`stop_all`]'s order.
fn stop_rank(name: &str) -> u8 {
    match name.split('-').next().unwrap_or(name) {
        "haproxy" | "nginx" => 0,
        "gateway" => 1,
        "mock" => 2,
        _ => 3,
    }
}

/// Stops the instance whose pid file in `dir` is `name.pid`, removes the pid file, and deletes
/// the directory it names, if any.
fn stop_one(dir: &Path, name: &str) -> Result<()> {
    let Some(file) = PidFile::read(dir, name) else {
        return Ok(());
    };
    let pid = file.pid;
    // The program a pid file without an `exe` line must run: the instance's name without its
    // number (`gateway-2` runs `gateway`).
    let program = PROGRAMS
        .into_iter()
        .find(|program| name == *program || name.starts_with(&format!("{program}-")))
        .unwrap_or(name);
    if file.is_running(program) {
        let owner = file.live_owner();
        // Not our child (an earlier xtask started it): it is gone when /proc says so.
        terminate(pid, || !file.is_running(program))?;
        match owner {
            Some(owner) => println!(
                "xtask: stopped {name} (pid {pid}), which the demo in xtask pid {owner} \
                 was using: that demo ends with an error"
            ),
            None => println!("xtask: stopped {name} (pid {pid})"),
        }
    } else {
        println!("xtask: {name} (pid {pid}) had already exited");
    }
    if let Some(data) = &file.dir {
        let _ = std::fs::remove_dir_all(data);
    }
    std::fs::remove_file(pid_file(dir, name))?;
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
            let file = PidFile {
                pid,
                owner,
                ..PidFile::default()
            };
            std::fs::write(pid_file(&dir, "sleep"), file.render()).expect("pid file")
        };

        // Owned by a live xtask (this test process plays it): a demo is running right now.
        write(Some(std::process::id()));
        let error = refuse_if_running(&dir, "sleep", "sleep")
            .expect_err("refused")
            .to_string();
        assert!(error.contains("running right now"), "{error}");
        assert!(!error.contains("`make stop` stops it"), "{error}");

        // No owner (as `up` leaves it), or an owner that is gone: a leftover.
        write(None);
        let error = refuse_if_running(&dir, "sleep", "sleep")
            .expect_err("refused")
            .to_string();
        assert!(error.contains("left running"), "{error}");
        write(Some(u32::MAX - 1));
        let error = refuse_if_running(&dir, "sleep", "sleep")
            .expect_err("refused")
            .to_string();
        assert!(error.contains("left running"), "{error}");

        // The service is gone: nothing to refuse.
        let _ = service.kill();
        let _ = service.wait();
        assert!(refuse_if_running(&dir, "sleep", "sleep").is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What `fleet down` relies on: an adopted service (here `sleep`, as `common::services`
    /// would hand over Redis) is stopped by its pid file, its directory deleted, and a pid file
    /// whose process is gone, or is another program now, is only cleared.
    #[test]
    fn stop_all_stops_adopted_services_and_deletes_their_directories() {
        let dir = std::env::temp_dir().join(format!("xtask-adopt-{}", std::process::id()));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("temp dirs");
        let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
        let detached = common::services::Detached {
            service: common::services::Service::Redis,
            pid: sleeper.id(),
            dir: data.clone(),
        };
        adopt(&dir, "redis", &detached).expect("adopted");
        // A stale file naming a pid that runs something else must not be signalled.
        let stranger = PidFile {
            pid: std::process::id(),
            exe: Some(PathBuf::from("/usr/bin/not-this-one")),
            ..PidFile::default()
        };
        std::fs::write(pid_file(&dir, "postgres"), stranger.render()).expect("pid file");

        stop_all(&dir).expect("stopped");
        let status = sleeper.wait().expect("reaped");
        assert!(!status.success(), "sleep was signalled: {status}");
        assert!(!data.exists(), "its directory is deleted");
        assert!(!pid_file(&dir, "redis").exists());
        assert!(
            !pid_file(&dir, "postgres").exists(),
            "a stale pid file is cleared"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
