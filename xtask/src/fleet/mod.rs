//! `cargo xtask fleet up|down|demo`: several gateways behind HAProxy, routed by readiness.
//!
//! The lesson of issue 16: one process cannot be restarted without dropping what it serves, and
//! state kept in one process's memory is wrong as soon as there are two. A fleet is the mock
//! upstream, N gateways (each with its own traffic port and admin port), the stores they share
//! (Redis, a Postgres cluster under `target/`) and HAProxy in front, from the shipped
//! `deploy/haproxy.cfg`, checking each gateway's `/readyz` once a second.
//!
//! One way to start each part: mock-llm and the gateways through [`crate::services`] (pid
//! files, logs, readiness polled), Redis, Postgres and HAProxy through `common::services` (the
//! same code the tests use); `fleet up` then detaches them all and gives every one a pid file
//! in `target/fleet/`, so `fleet down` stops exactly those ([`crate::services::stop_all`]).
//!
//! # Layout
//!
//! - this file: the flags' dispatch, the packages check (exit 2 with the `apt-get` line), the
//!   [`Layout`] of ports and the [`Fleet`] itself: start, restart one gateway, drain, kill,
//!   ask HAProxy, detach.
//! - [`watch`]: what the fleet looks like right now (per-instance `/metrics` and `/readyz`,
//!   HAProxy's `show stat`), sampled once a second and printed as one line.
//! - [`demo`] and [`steps`]: `make demo-scale`, its steps, their verdicts and its files.

mod demo;
pub mod steps;
pub mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use common::services::haproxy::{self, Haproxy};
use common::services::{Postgres, Redis, Service as Package};

use crate::cli::{FleetArgs, FleetCommand};
use crate::services::{self, Service};

/// `cargo xtask fleet ...`.
pub fn run(args: &FleetArgs) -> Result<ExitCode> {
    match &args.command {
        FleetCommand::Up { instances, debug } => up(*instances, *debug),
        FleetCommand::Down => services::stop_all(&fleet_dir()).map(|()| ExitCode::SUCCESS),
        FleetCommand::Demo(demo_args) => demo::run(demo_args),
    }
}

/// Pid files, logs and the demo's report: `target/fleet/`.
pub fn fleet_dir() -> PathBuf {
    services::target_dir().join("fleet")
}

/// `fleet up`: start everything, detach it, say where it is.
fn up(instances: usize, debug: bool) -> Result<ExitCode> {
    services::catch_ctrl_c();
    if let Some(code) = refuse_missing(Needs::ALL) {
        return Ok(code);
    }
    let bin_dir = services::build(debug)?;
    let fleet = Fleet::start(
        &fleet_dir(),
        &bin_dir,
        Layout::fixed(instances),
        Needs::ALL,
        &mock_flags(),
    )?;
    let listen = fleet.layout.listen;
    let stats = fleet.layout.stats;
    let socket = fleet.haproxy.socket();
    let shared = fleet.shared_summary();
    fleet.detach()?;
    println!(
        "xtask: a fleet of {instances} behind HAProxy on {listen} ({shared})\n\
         xtask: try   curl -N http://{listen}/v1/chat/completions -H 'content-type: application/json' \
         -d '{{\"model\":\"mock-1\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'\n\
         xtask: HAProxy's view: http://{stats}/, or  echo 'show stat' | socat - {}\n\
         xtask: stop with `cargo xtask fleet down`",
        socket.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Which shared services a fleet runs beside its gateways.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub redis: bool,
    pub postgres: bool,
}

impl Needs {
    /// What `fleet up` and the demo start: the whole picture.
    pub const ALL: Needs = Needs {
        redis: true,
        postgres: true,
    };
    /// What the benchmark starts: only HAProxy and the gateways.
    pub const NONE: Needs = Needs {
        redis: false,
        postgres: false,
    };

    fn packages(self) -> Vec<Package> {
        let mut packages = vec![Package::Haproxy];
        if self.redis {
            packages.push(Package::Redis);
        }
        if self.postgres {
            packages.push(Package::Postgres);
        }
        packages
    }
}

/// Prints the one `apt-get install` line for what is missing and returns exit code 2, or
/// `None` when everything `needs` is installed.
pub fn refuse_missing(needs: Needs) -> Option<ExitCode> {
    let message = missing_message(needs, Package::is_installed)?;
    eprintln!("{message}");
    Some(ExitCode::from(2))
}

/// What to tell a person whose machine lacks some of the packages `needs` (by `installed`):
/// which, and the one line that installs them all.
fn missing_message(needs: Needs, installed: impl Fn(Package) -> bool) -> Option<String> {
    let missing: Vec<&str> = needs
        .packages()
        .into_iter()
        .filter(|&package| !installed(package))
        .map(Package::package)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "xtask: the fleet needs {} (not installed). Install with:\n  sudo apt-get install -y {}",
            missing.join(", "),
            missing.join(" ")
        )
    })
}

/// Where everything listens.
#[derive(Debug, Clone)]
pub struct Layout {
    /// HAProxy's public listener, where clients go.
    pub listen: SocketAddr,
    /// HAProxy's stats page.
    pub stats: SocketAddr,
    pub mock: SocketAddr,
    /// Each gateway's (traffic, admin) addresses.
    pub gateways: Vec<(SocketAddr, SocketAddr)>,
}

impl Layout {
    /// The demo's fixed ports, clear of the single-gateway demo's 8000-8002: HAProxy on 8080
    /// (stats 8081), the mock on 8090, gateway i on 8100+i with its admin plane on 8200+i.
    pub fn fixed(instances: usize) -> Self {
        let at = |port: usize| SocketAddr::from(([127, 0, 0, 1], port as u16));
        Layout {
            listen: at(8080),
            stats: at(8081),
            mock: at(8090),
            gateways: (0..instances)
                .map(|i| (at(8100 + i), at(8200 + i)))
                .collect(),
        }
    }

    /// Free ports, for the benchmark (beside a demo or a `fleet up`).
    pub fn free(instances: usize) -> Result<Self> {
        Ok(Layout {
            listen: services::free_addr()?,
            stats: services::free_addr()?,
            mock: services::free_addr()?,
            gateways: (0..instances)
                .map(|_| Ok((services::free_addr()?, services::free_addr()?)))
                .collect::<Result<_>>()?,
        })
    }
}

/// How a gateway is started: the fleet's default (fixed mode) or something to show (a starved
/// broken one, a rate limit).
#[derive(Debug, Clone, Default)]
pub struct How {
    /// `--mode`; `fixed` when `None`.
    pub mode: Option<&'static str>,
    pub blocking_threads: Option<u16>,
    /// More flags, after the fleet's own.
    pub extra: Vec<String>,
}

impl How {
    pub fn broken(blocking_threads: u16) -> Self {
        How {
            mode: Some("broken"),
            blocking_threads: Some(blocking_threads),
            extra: Vec::new(),
        }
    }
}

/// What the gateway binary accepts, read from its `--help`: the flags of issues 14, 15 and 16
/// (item 1) appear there once they are merged, and the fleet passes them only then.
#[derive(Debug, Clone, Copy, Default)]
pub struct Features {
    /// `--redis-url` (issue 15's shared cache; issue 16's shared rate limits).
    pub redis_url: bool,
    /// `--jobs-store` (issue 14's durable jobs; `postgres://` for a fleet).
    pub jobs_store: bool,
    /// `--instances-hint` (issue 16, item 1: shared rate limits with a local fallback).
    pub instances_hint: bool,
    /// `--job-lease-secs` (issue 14): shortened so a killed instance's jobs come back quickly.
    pub job_lease: bool,
}

impl Features {
    fn of(bin_dir: &Path) -> Result<Self> {
        let help = Command::new(bin_dir.join("gateway"))
            .arg("--help")
            .output()
            .context("cannot run gateway --help")?;
        Ok(Self::from_help(&String::from_utf8_lossy(&help.stdout)))
    }

    fn from_help(help: &str) -> Self {
        let has = |flag: &str| {
            help.split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                .any(|word| word == flag)
        };
        Features {
            redis_url: has("--redis-url"),
            jobs_store: has("--jobs-store"),
            instances_hint: has("--instances-hint"),
            job_lease: has("--job-lease-secs"),
        }
    }
}

/// One gateway of the fleet.
#[derive(Debug)]
pub struct Instance {
    /// `gw1`, ...: its server name in HAProxy.
    pub server: String,
    /// `gateway-1`, ...: its pid file and log.
    pub name: String,
    pub main: SocketAddr,
    pub admin: SocketAddr,
    /// `None` while it is stopped (drained, killed) and not started again.
    pub service: Option<Service>,
    /// How it was last started.
    pub how: How,
}

/// The fleet's gateways and what starting one needs: its ports, the mock, the features of the
/// binary, the stores' URLs.
#[derive(Debug)]
pub struct Gateways {
    dir: PathBuf,
    bin_dir: PathBuf,
    mock: SocketAddr,
    pub features: Features,
    /// `--redis-url`, when there is a Redis and the binary takes the flag.
    redis_url: Option<String>,
    /// `--jobs-store`, when there is a Postgres and the binary takes the flag.
    jobs_store: Option<String>,
    pub list: Vec<Instance>,
}

/// How long a drained gateway may take to exit: its grace, then its streams.
pub const DRAIN_EXIT: Duration = Duration::from_secs(25);
/// `--drain-grace-secs` of the fleet's gateways: /readyz says `draining` and requests are still
/// served, for longer than HAProxy needs to mark it down (fall 2 x inter 1 s, plus a check's
/// time), so nothing is refused while HAProxy still sends.
pub const DRAIN_GRACE_SECS: u64 = 3;

impl Gateways {
    /// The flags of gateway `i` started `how`: its ports, the mock, a drain that outlasts
    /// HAProxy's checks, and the shared stores when the binary accepts them.
    pub fn args(&self, i: usize, how: &How) -> Vec<String> {
        let gateway = &self.list[i];
        let mut args: Vec<String> = [
            "--mode",
            how.mode.unwrap_or("fixed"),
            "--listen",
            &gateway.main.to_string(),
            "--admin-listen",
            &gateway.admin.to_string(),
            "--upstream",
            &format!("http://{}", self.mock),
            "--drain-grace-secs",
            &DRAIN_GRACE_SECS.to_string(),
            "--drain-secs",
            "15",
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(threads) = how.blocking_threads {
            args.extend(["--blocking-threads".into(), threads.to_string()]);
        }
        if let Some(url) = &self.redis_url {
            args.extend(["--redis-url".into(), url.clone()]);
        }
        if let Some(url) = &self.jobs_store {
            args.extend(["--jobs-store".into(), url.clone()]);
            if self.features.job_lease {
                // A killed instance's jobs come back after their lease: 5 s, not 30, for a demo.
                args.extend(["--job-lease-secs".into(), "5".into()]);
            }
        }
        if self.features.instances_hint {
            args.extend(["--instances-hint".into(), self.list.len().to_string()]);
        }
        args.extend(how.extra.iter().cloned());
        args
    }

    /// Starts gateway `i` `how`, and waits until its `/readyz` says ready.
    pub fn start(&mut self, i: usize, how: How) -> Result<()> {
        let args = self.args(i, &how);
        let gateway = &self.list[i];
        let ready = format!("http://{}/readyz", gateway.admin);
        let service = services::launch(
            &self.dir,
            &services::Spec {
                bin_dir: &self.bin_dir,
                program: "gateway",
                name: &gateway.name,
                listen: gateway.main,
                args: &args,
                ready_url: &ready,
                env: &[],
            },
        )?;
        let gateway = &mut self.list[i];
        gateway.service = Some(service);
        gateway.how = how;
        Ok(())
    }

    /// `POST /admin/drain` on gateway `i`: `/readyz` turns 503 `draining` at once.
    pub fn drain(&self, i: usize) -> Result<()> {
        let url = format!("http://{}/admin/drain", self.list[i].admin);
        watch::agent()
            .post(&url)
            .send_empty()
            .with_context(|| format!("POST {url}"))?;
        Ok(())
    }

    /// Waits for gateway `i` to exit by itself (after a drain); fails past `limit`.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        let gateway = &mut self.list[i];
        let Some(service) = gateway.service.as_mut() else {
            return Ok(Duration::ZERO);
        };
        match service.wait_exit(limit) {
            Some(_) => {
                gateway.service = None;
                Ok(started.elapsed())
            }
            None => bail!("{} did not exit within {limit:?}", gateway.name),
        }
    }

    /// `SIGKILL` to gateway `i`: a crash, no drain.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut service) = self.list[i].service.take() {
            service.kill_now();
        }
    }
}

/// A running fleet. Dropping it stops everything (each part's handle does), so a demo that fails
/// half way leaves nothing behind; `fleet up` detaches it instead.
pub struct Fleet {
    pub layout: Layout,
    // Field order is drop order: HAProxy first, then the gateways, the mock, the stores.
    pub haproxy: Haproxy,
    pub gateways: Gateways,
    mock: Service,
    redis: Option<Redis>,
    postgres: Option<Postgres>,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("layout", &self.layout)
            .field("gateways", &self.gateways.list.len())
            .finish()
    }
}

impl Fleet {
    /// Starts the stores `needs`, the mock with `mock_flags`, one gateway per `layout` entry,
    /// then HAProxy in front, and waits until HAProxy counts every gateway `UP`.
    pub fn start(
        dir: &Path,
        bin_dir: &Path,
        layout: Layout,
        needs: Needs,
        mock_flags: &[String],
    ) -> Result<Fleet> {
        std::fs::create_dir_all(dir)?;
        let features = Features::of(bin_dir)?;
        let redis = needs
            .redis
            .then(Redis::start)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let postgres = needs
            .postgres
            .then(Postgres::start)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let mut args = vec!["--listen".to_owned(), layout.mock.to_string()];
        args.extend_from_slice(mock_flags);
        let mock = services::start(
            dir,
            bin_dir,
            "mock-llm",
            layout.mock,
            &args,
            &format!("http://{}/health", layout.mock),
        )?;
        let mut gateways = Gateways {
            dir: dir.to_owned(),
            bin_dir: bin_dir.to_owned(),
            mock: layout.mock,
            features,
            redis_url: redis
                .as_ref()
                .filter(|_| features.redis_url)
                .map(Redis::url),
            jobs_store: postgres
                .as_ref()
                .filter(|_| features.jobs_store)
                .map(Postgres::url),
            list: layout
                .gateways
                .iter()
                .enumerate()
                .map(|(i, &(main, admin))| Instance {
                    server: format!("gw{}", i + 1),
                    name: format!("gateway-{}", i + 1),
                    main,
                    admin,
                    service: None,
                    how: How::default(),
                })
                .collect(),
        };
        for i in 0..gateways.list.len() {
            gateways.start(i, How::default())?;
        }
        // HAProxy last: it starts counting every server UP, and its checks find them ready.
        let config = haproxy::Config {
            listen: layout.listen,
            stats: layout.stats,
            servers: gateways
                .list
                .iter()
                .map(|g| haproxy::Server {
                    name: g.server.clone(),
                    main: g.main,
                    admin: g.admin,
                })
                .collect(),
        };
        let haproxy = Haproxy::start(config).map_err(anyhow::Error::msg)?;
        let fleet = Fleet {
            layout,
            haproxy,
            gateways,
            mock,
            redis,
            postgres,
        };
        for i in 0..fleet.gateways.list.len() {
            fleet.wait_haproxy(i, true, Duration::from_secs(15))?;
        }
        println!(
            "xtask: haproxy is up on {} (stats http://{}/, config {})",
            fleet.layout.listen,
            fleet.layout.stats,
            fleet.haproxy.config_file().display()
        );
        Ok(fleet)
    }

    /// `http://LISTEN`: HAProxy, where the clients go.
    pub fn url(&self) -> String {
        self.haproxy.url()
    }

    pub fn features(&self) -> Features {
        self.gateways.features
    }

    /// Which stores the gateways share, and which ran but could not be passed yet.
    pub fn shared_summary(&self) -> String {
        let redis = match (&self.redis, &self.gateways.redis_url) {
            (Some(_), Some(url)) => format!("Redis {url} shared"),
            (Some(redis), None) => format!(
                "Redis {} running, not passed: this gateway has no --redis-url yet",
                redis.url()
            ),
            (None, _) => "no Redis".to_owned(),
        };
        let jobs = match (&self.postgres, &self.gateways.jobs_store) {
            (Some(_), Some(url)) => format!("jobs in Postgres {url}"),
            (Some(pg), None) => format!(
                "Postgres {} running, not passed: this gateway has no --jobs-store yet",
                pg.url()
            ),
            (None, _) => "no Postgres".to_owned(),
        };
        format!("{redis}; {jobs}")
    }

    /// Waits until HAProxy counts gateway `i` as up (`UP`) or not (`DOWN`, `MAINT`); returns how
    /// long that took. Polled every 50 ms on the stats socket.
    pub fn wait_haproxy(&self, i: usize, up: bool, limit: Duration) -> Result<Duration> {
        let started = Instant::now();
        let server = &self.gateways.list[i].server;
        loop {
            let status = self.haproxy.server_status(server).unwrap_or_default();
            if !status.is_empty() && status.starts_with("UP") == up {
                return Ok(started.elapsed());
            }
            if started.elapsed() > limit {
                bail!(
                    "HAProxy still says {server} is {status:?} after {limit:?} (waiting for {})",
                    if up { "UP" } else { "DOWN" }
                );
            }
            if services::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
                bail!("interrupted");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Leaves everything running for `fleet down`: each part's pid file in the fleet's directory.
    pub fn detach(self) -> Result<()> {
        let Fleet {
            haproxy,
            gateways,
            mock,
            redis,
            postgres,
            ..
        } = self;
        let dir = gateways.dir.clone();
        services::adopt(&dir, "haproxy", &haproxy.detach())?;
        for gateway in gateways.list {
            if let Some(service) = gateway.service {
                service.detach();
            }
        }
        mock.detach();
        if let Some(redis) = redis {
            services::adopt(&dir, "redis", &redis.detach())?;
        }
        if let Some(postgres) = postgres {
            let detached = postgres.detach().map_err(anyhow::Error::msg)?;
            services::adopt(&dir, "postgres", &detached)?;
        }
        Ok(())
    }
}

/// The mock's pace for the fleet: a stream is 200 ms to its first token, then 30 tokens 100 ms
/// apart, about 3 s: long enough to be caught by a drain, short enough to end within one.
pub fn mock_flags() -> Vec<String> {
    ["--ttft-ms", "200", "--itl-ms", "100", "--tokens", "30"]
        .map(str::to_owned)
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_read_from_the_gateways_help() {
        let before = Features::from_help("      --listen <LISTEN>\n      --admin-token <TOKEN>\n");
        assert!(!before.redis_url && !before.jobs_store && !before.instances_hint);
        let after = Features::from_help(
            "      --redis-url <URL>\n          Redis...\n      --jobs-store <URL>\n      \
             --instances-hint <N>\n      --job-lease-secs <S>\n",
        );
        assert!(after.redis_url && after.jobs_store && after.instances_hint && after.job_lease);
        // A flag that merely starts the same way is not the flag.
        assert!(!Features::from_help("--redis-url-file <P>").redis_url);
    }

    #[test]
    fn missing_packages_make_one_apt_get_line() {
        let none_missing = missing_message(Needs::ALL, |_| true);
        assert!(none_missing.is_none());
        let message = missing_message(Needs::ALL, |p| p == Package::Redis).expect("a message");
        assert!(
            message.ends_with("\n  sudo apt-get install -y haproxy postgresql"),
            "{message}"
        );
        // The benchmark needs only HAProxy.
        let bench = missing_message(Needs::NONE, |p| p != Package::Haproxy).expect("a message");
        assert!(
            bench.ends_with("sudo apt-get install -y haproxy"),
            "{bench}"
        );
    }

    #[test]
    fn the_fixed_layout_stays_clear_of_the_single_demo() {
        let layout = Layout::fixed(3);
        let ports: Vec<u16> = [layout.listen, layout.stats, layout.mock]
            .into_iter()
            .chain(layout.gateways.iter().flat_map(|&(m, a)| [m, a]))
            .map(|a| a.port())
            .collect();
        assert_eq!(
            ports,
            [8080, 8081, 8090, 8100, 8200, 8101, 8201, 8102, 8202]
        );
        assert!(ports.iter().all(|p| !(8000..=8002).contains(p)));
    }
}
