//! What every benchmark runs inside: a [`Session`] (Ctrl-C handling, the release build, a work
//! directory `target/bench/<run>/`) and its [`Runner`], which starts the services (mock-llm, the
//! gateway, nginx) on free ports, runs diag, and records every command for the results.
//!
//! The lesson is the one `services` teaches for the demo, applied to measurements: every child's
//! exit status is checked, readiness is polled, ports are free ones (so a benchmark runs beside a
//! demo on 8000-8002), and a [`Service`] stops when it is dropped, so a run that fails or is
//! interrupted leaves nothing behind. Recording each command as it runs is what lets a results
//! file end with what to paste into a shell to do it again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::bench::results::{Clock, command_line};
use crate::services::{self, INTERRUPTED, Service};

/// Runs commands and remembers them, for the results' "commands" list.
pub struct Runner {
    bin_dir: PathBuf,
    /// Where diag's reports, the pid files and the services' logs of this run go.
    pub work_dir: PathBuf,
    /// Every command run so far, as it could be pasted into a shell.
    pub commands: Vec<String>,
}

impl Runner {
    /// A fresh run: the directory for its diag reports, pid files and logs, and no commands yet.
    fn new(bin_dir: PathBuf, work_dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&work_dir)?;
        Ok(Runner {
            bin_dir,
            work_dir,
            commands: Vec::new(),
        })
    }

    /// Where the release binaries are.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Records a command that is not run through the runner (a fleet's parts), for the results.
    pub fn note(&mut self, line: String) {
        self.commands.push(line);
    }

    /// Runs diag with `args`, recorded; fails if diag does.
    pub fn diag(&mut self, args: &[String]) -> Result<()> {
        let program = self.note_diag(args, "");
        run_diag(&program, args)
    }

    /// Records (and prints) a diag command line and returns diag's path, for a caller that runs
    /// it with [`run_diag`] itself, e.g. on another thread beside a second diag. `suffix` is
    /// appended to the recorded line (" &" for one that runs in the background).
    pub fn note_diag(&mut self, args: &[String], suffix: &str) -> PathBuf {
        let program = self.bin_dir.join("diag");
        let line = command_line(&program, args) + suffix;
        println!("xtask: {line}");
        self.commands.push(line);
        program
    }

    fn start(
        &mut self,
        bin_dir: &Path,
        program: &'static str,
        listen: SocketAddr,
        args: &[String],
        ready_url: &str,
    ) -> Result<Service> {
        self.start_env(bin_dir, program, listen, args, ready_url, &[])
    }

    /// [`Runner::start`] with `env` on the child, recorded in front of the command line.
    fn start_env(
        &mut self,
        bin_dir: &Path,
        program: &'static str,
        listen: SocketAddr,
        args: &[String],
        ready_url: &str,
        env: &[(&str, &str)],
    ) -> Result<Service> {
        let prefix: String = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        self.commands
            .push(prefix + &command_line(&bin_dir.join(program), args) + " &");
        services::launch(
            &self.work_dir,
            &services::Spec {
                bin_dir,
                program,
                name: program,
                listen,
                args,
                ready_url,
                env,
            },
        )
    }

    /// A mock-llm on a free port with `flags`; ready when its `/health` answers.
    pub fn start_mock(&mut self, flags: &[String]) -> Result<(Service, SocketAddr)> {
        let listen = services::free_addr()?;
        let mut args = strings(&["--listen", &listen.to_string()]);
        args.extend_from_slice(flags);
        let ready = format!("http://{listen}/health");
        let bin_dir = self.bin_dir.clone();
        Ok((
            self.start(&bin_dir, "mock-llm", listen, &args, &ready)?,
            listen,
        ))
    }

    /// A gateway on a free port in front of `upstream`, with `flags` (mode, limits, ...); ready
    /// when `/debug/health-async` answers. `--drain-secs 1` and `--drain-grace-secs 0` only
    /// bound how long its stop waits once diag is done: no effect on the numbers. Its admin
    /// plane gets a free port too, so a benchmark never collides with a demo's 8002.
    pub fn start_gateway(&mut self, upstream: SocketAddr, flags: &[String]) -> Result<Gateway> {
        self.start_gateway_env(upstream, flags, &[])
    }

    /// [`Runner::start_gateway`] with `env` on the gateway (`RUST_LOG`, say).
    pub fn start_gateway_env(
        &mut self,
        upstream: SocketAddr,
        flags: &[String],
        env: &[(&str, &str)],
    ) -> Result<Gateway> {
        let listen = services::free_addr()?;
        let admin = services::free_addr()?;
        let mut args = strings(&[
            "--listen",
            &listen.to_string(),
            "--upstream",
            &format!("http://{upstream}"),
            "--drain-secs",
            "1",
            "--drain-grace-secs",
            "0",
            "--admin-listen",
            &admin.to_string(),
        ]);
        args.extend_from_slice(flags);
        let ready = format!("http://{listen}/debug/health-async");
        let bin_dir = self.bin_dir.clone();
        Ok(Gateway {
            service: self.start_env(&bin_dir, "gateway", listen, &args, &ready, env)?,
            listen,
            admin,
        })
    }

    /// nginx as a plain reverse proxy in front of the mock: the limits of [`NGINX_LIMITS`],
    /// keep-alive upstream connections, no buffering, no access log, everything under the run's
    /// directory.
    pub fn start_nginx(&mut self, nginx: &Path, mock: SocketAddr) -> Result<(Service, String)> {
        let listen = services::free_addr()?;
        let dir = self.work_dir.join("nginx");
        std::fs::create_dir_all(dir.join("tmp"))?;
        let d = dir.display();
        let NginxLimits {
            worker_processes,
            worker_connections,
            worker_rlimit_nofile,
            upstream_keepalive,
        } = NGINX_LIMITS;
        let conf = format!(
            "daemon off;\nworker_processes {worker_processes};\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             worker_rlimit_nofile {worker_rlimit_nofile};\nevents {{ worker_connections {worker_connections}; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  \
             proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
             uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  \
             upstream mock {{ server {mock}; keepalive {upstream_keepalive}; }}\n  \
             server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://mock;\n      \
             proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      \
             proxy_buffering off;\n    }}\n  }}\n}}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let bin_dir = nginx.parent().context("nginx path has no directory")?;
        let service = self.start(
            bin_dir,
            "nginx",
            listen,
            &strings(&["-p", &format!("{d}/"), "-c", &conf_path.to_string_lossy()]),
            &format!("http://{listen}/health"),
        )?;
        Ok((service, format!("http://{listen}")))
    }
}

/// The limits nginx runs under in the benchmarks, written into its config and, word for word,
/// into the results' limits line.
pub struct NginxLimits {
    /// One worker, as the issue measured: on 2 cores shared with the mock and diag, a second
    /// worker only competes for them, and one worker is one process to read CPU time from.
    pub worker_processes: u32,
    /// Two per stream (client and upstream): room for the 8,000-stream level.
    pub worker_connections: u32,
    pub worker_rlimit_nofile: u32,
    /// Idle upstream connections kept per worker, so a request reuses one as the gateway's pool does.
    pub upstream_keepalive: u32,
}

pub const NGINX_LIMITS: NginxLimits = NginxLimits {
    worker_processes: 1,
    worker_connections: 20_000,
    worker_rlimit_nofile: 65_536,
    upstream_keepalive: 256,
};

impl NginxLimits {
    /// The results' line: every limit, and what is off.
    pub fn describe(&self) -> String {
        format!(
            "`worker_processes {}`, `worker_connections {}`, `worker_rlimit_nofile {}`, upstream \
             `keepalive {}` (HTTP/1.1), `proxy_buffering off`, `access_log off`, `listen` with \
             nginx's default accept queue (backlog 511 on Linux)",
            self.worker_processes,
            self.worker_connections,
            self.worker_rlimit_nofile,
            self.upstream_keepalive
        )
    }
}

/// Runs diag with `args`; fails if it exits with a status other than 0 or Ctrl-C was pressed.
pub fn run_diag(program: &Path, args: &[String]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program:?}"))?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    if !output.status.success() {
        bail!(
            "{} failed ({}):\n{}{}",
            command_line(program, args),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A gateway a benchmark started: its process, its main listener and its admin plane.
pub struct Gateway {
    pub service: Service,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// What every benchmark does first: Ctrl-C handling, the release build, a work directory
/// `target/bench/<unix time><suffix>` for diag's reports and the services' logs.
pub struct Session {
    pub clock: Clock,
    pub runner: Runner,
}

impl Session {
    /// `suffix` ends the work directory's name: "" for the ramp (as it always was), "-quick",
    /// "-shed" and so on for the others.
    pub fn begin(suffix: &str) -> Result<Self> {
        services::catch_ctrl_c();
        let started = SystemTime::now();
        let bin_dir = services::build(false)?;
        let build_time = started.elapsed().unwrap_or_default();
        let stamp = started.duration_since(UNIX_EPOCH)?.as_secs();
        let work_dir = services::target_dir()
            .join("bench")
            .join(format!("{stamp}{suffix}"));
        let runner = Runner::new(bin_dir, work_dir)?;
        Ok(Session {
            clock: Clock {
                started,
                build_time,
            },
            runner,
        })
    }
}

/// `diag load` of a timed run: `body` POSTed as JSON to `url`, `concurrency` at a time for
/// `duration`, diag's report written to `report`.
pub fn post_load_args(
    url: &str,
    body: &str,
    concurrency: &str,
    duration: &str,
    report: &Path,
) -> Vec<String> {
    strings(&[
        "load",
        url,
        "-m",
        "POST",
        "-T",
        "application/json",
        "-d",
        body,
        "-c",
        concurrency,
        "-z",
        duration,
        "--no-progress",
        "--json",
        &report.to_string_lossy(),
    ])
}

/// Owned arguments from string slices, for the command lines built here.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_string()).collect()
}
