//! What the benchmarks read from the machine and from the processes they run, besides diag's
//! reports: a process's memory, CPU time and children and the open files limit from `/proc`, a
//! program on `PATH`, and the gateway's `/metrics`.
//!
//! The lesson here is to read the numbers where the kernel and the gateway keep them, not to
//! estimate them: `VmRSS` is what the gateway holds now, `VmHWM` its peak, and
//! `gateway_shed_total` is the gateway's own count of what it turned away (diag only sees 503s).
//! Each reader answers `None` (or 0 for a counter) rather than failing, because a process that
//! just exited or a counter not yet exposed is a blank in the table, not a failed benchmark.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};

/// The Prometheus reader shared with the gateway's tests.
pub use common::prometheus::samples as metric_samples;

/// The soft `RLIMIT_NOFILE` this process (and so its children) runs with, from /proc.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `program` in the first directory of `PATH` that has it; the benchmarks install nothing.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Resident memory of `pid` in KiB (`VmRSS`), or `None` if it cannot be read.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A KiB field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), or `None` if it cannot be read.
pub fn status_kib(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, name)
}

/// The number after `name` in a `/proc` text of `Name:   1234 kB` lines.
pub fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time `pid` has used so far (user + system, `/proc/PID/stat`), or `None` once it is gone.
/// The lesson of the guide's "measure CPU time, not only wall time": on a shared machine, CPU
/// per request holds steady where requests per second wander.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    cpu_split(pid).map(CpuTime::total)
}

/// CPU time as `/proc` splits it: in user space, and in the kernel on the process's behalf
/// (system calls, the TCP stack). Two relays that make the same system calls per token differ in
/// the first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn total(self) -> Duration {
        self.user + self.system
    }

    /// What was spent between `before` and `self`.
    pub fn since(self, before: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(before.user),
            system: self.system.saturating_sub(before.system),
        }
    }
}

/// [`cpu_time`], user and system apart.
pub fn cpu_split(pid: u32) -> Option<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| -> Option<Duration> {
        let ticks = fields.get(i)?.parse::<u64>().ok()?;
        Some(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
    };
    Some(CpuTime {
        user: ticks(11)?,
        system: ticks(12)?,
    })
}

/// The processes whose parent is `pid`, from the `ppid` field of every `/proc/*/stat`: nginx's
/// workers are its master's children, and it is a worker that relays, so a worker is what the
/// benchmarks read CPU time and memory of. Scanning `/proc` works on every kernel, where
/// `/proc/PID/task/TID/children` needs `CONFIG_PROC_CHILDREN`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<u32> = dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // ppid is the second field after the command name's closing parenthesis.
                    let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
                    ppid.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect();
    found.sort_unstable();
    found
}

/// `getconf CLK_TCK`: the unit of `/proc`'s CPU times (100 on Linux almost everywhere). Asked
/// once per process: it cannot change, and every CPU reading (two fields each) needs it.
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// The body of `GET url`; a non-2xx answer is an error.
pub fn http_get(url: &str) -> Result<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?
        .body_mut()
        .read_to_string()
        .with_context(|| format!("GET {url}: cannot read the body"))
}

/// The samples of the `/metrics` served at `listen` whose names start with `prefix`: read before
/// the process stops, since the counts live in it.
pub fn samples_at(listen: SocketAddr, prefix: &str) -> Result<Vec<(String, f64)>> {
    Ok(metric_samples(
        &http_get(&format!("http://{listen}/metrics"))?,
        prefix,
    ))
}

/// The value of the sample named exactly `name`, 0 when the gateway has not exposed it yet.
pub fn metric(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0.0, |(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_used_some_cpu() {
        let spent = cpu_time(std::process::id()).expect("our own /proc/PID/stat");
        assert!(spent < Duration::from_secs(3600));
        assert!(cpu_time(u32::MAX).is_none());
    }

    #[test]
    fn a_child_is_found_by_its_parent() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        assert!(children(std::process::id()).contains(&child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn metrics_are_read_by_prefix() {
        let text = "# HELP gateway_shed_total x\n\
                    gateway_shed_total{reason=\"queue_full\"} 6100\n\
                    gateway_shed_total{reason=\"queue_timeout\"} 900\n\
                    gateway_hedges_fired_total 77\n";
        let shed = metric_samples(text, "gateway_shed_total{");
        assert_eq!(shed.len(), 2);
        assert_eq!(
            metric(&shed, "gateway_shed_total{reason=\"queue_timeout\"}"),
            900.0
        );
        let hedges = metric_samples(text, "gateway_hedges_");
        assert_eq!(metric(&hedges, "gateway_hedges_fired_total"), 77.0);
        assert_eq!(metric(&hedges, "gateway_hedges_won_total"), 0.0);
    }
}
