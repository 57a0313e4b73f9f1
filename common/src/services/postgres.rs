//! A throwaway Postgres cluster: `initdb` into a fresh directory under `target/services/`, started
//! with `pg_ctl` on a free loopback port (its Unix socket in the same directory, so it never
//! touches `/var/run/postgresql`), trust authentication, stopped and deleted on drop.
//!
//! Postgres refuses to run as root. When the tests run as root (CI does), the cluster belongs to
//! the `postgres` user the Debian package creates, and every server program runs through
//! `runuser -u postgres`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{DETACHED, Detached, Service, detach_marker, instance_dir, log_tail, skip, watchdog};

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`, or the directory of an
/// `initdb` on `PATH`.
pub(super) fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .or_else(|| super::on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A running cluster, stopped (immediately) and deleted when dropped.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

impl Postgres {
    /// Starts one for `test`, or reports the skip (see [`skip`]) and returns `None` when Postgres
    /// is not installed. One that is installed but fails to start panics.
    pub fn start_for(test: &str) -> Option<Postgres> {
        if !Service::Postgres.is_installed() {
            skip(test, Service::Postgres);
            return None;
        }
        Some(Postgres::start().unwrap_or_else(|error| panic!("{test}: {error}")))
    }

    /// `initdb` and start a cluster on a free port (about 2 s).
    pub fn start() -> Result<Postgres, String> {
        let bin = bin_dir().ok_or("postgres is not installed")?;
        let port = super::free_port().map_err(|e| format!("no free port: {e}"))?;
        let dir = instance_dir("postgres").map_err(|e| format!("no directory: {e}"))?;
        let as_postgres = running_as_root();
        if as_postgres {
            run(Command::new("chown").args(["postgres:postgres"]).arg(&dir))?;
        }
        let postgres = Postgres {
            port,
            dir,
            bin,
            as_postgres,
        };
        let data = postgres.data_dir();
        postgres.run_server_program(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8"],
        )?;
        watchdog(
            &postgres.dir,
            &format!(
                "{} ; rm -rf '{}'",
                postgres.command_line("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]),
                postgres.dir.display()
            ),
        );
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            postgres.dir.display()
        );
        let log = postgres.dir.join("postgres.log");
        let started = postgres.run_server_program(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-o",
                &options,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "30",
                "start",
            ],
        );
        started.map_err(|error| format!("{error}\n{}", log_tail(&log)))?;
        Ok(postgres)
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`, the cluster's default database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` on this cluster.
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a fresh database and returns its URL, so tests can share one cluster (started once
    /// per test binary) without sharing tables.
    pub fn create_database(&self, prefix: &str) -> Result<String, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let port = self.port.to_string();
        self.run_server_program(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", &name],
        )?;
        Ok(self.database_url(&name))
    }

    /// Leaves the cluster running after this handle is gone (its watchdog disarmed): the
    /// postmaster's pid (SIGTERM stops it, after its clients left) and the directory to delete
    /// then. Used by `cargo xtask fleet up`.
    pub fn detach(self) -> Result<Detached, String> {
        let pid_file = self.dir.join("data").join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .ok_or_else(|| format!("no pid in {}", pid_file.display()))?;
        detach_marker(&self.dir);
        Ok(Detached {
            service: Service::Postgres,
            pid,
            dir: self.dir.clone(),
        })
    }

    /// `pg_ctl stop -m immediate`: the server goes away as in a crash.
    pub fn stop(&self) {
        let data = self.data_dir();
        let _ = self.run_server_program("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }

    fn command_line(&self, program: &str, args: &[&str]) -> String {
        let program = self.bin.join(program);
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let line = format!("'{}' {}", program.display(), quoted.join(" "));
        if self.as_postgres {
            format!("runuser -u postgres -- {line}")
        } else {
            line
        }
    }

    fn run_server_program(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        command.args(args);
        // Run from a directory the postgres user can read, or initdb warns about the cwd.
        command.current_dir(&self.dir);
        run(&mut command)
    }
}

fn run(command: &mut Command) -> Result<(), String> {
    let output: Output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.dir.join(DETACHED).exists() {
            return;
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
