//! Samples the gateway process from the outside: threads, resident memory, CPU.
//!
//! This is the evidence that tells a stall from overload. A starved blocking pool shows a fixed
//! thread count (the pool cannot grow past its limit) and *idle* CPU while requests wait: the
//! threads are parked in blocking reads, not working. A busy server would show the opposite.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// One look at the process.
#[derive(Debug, Clone, Copy)]
pub struct ProcessSample {
    /// `None` where sysinfo cannot list threads (it can on Linux).
    pub threads: Option<usize>,
    pub rss_bytes: u64,
    /// Percent of one core (200% = two cores busy); `None` on the first sample, because CPU usage
    /// is a difference between two readings.
    pub cpu_percent: Option<f32>,
}

/// Keeps the `System` between samples: CPU usage is computed against the previous refresh.
#[derive(Debug)]
pub struct ProcessSampler {
    system: System,
    pid: Pid,
    refreshed_before: bool,
}

impl ProcessSampler {
    /// Fails only where sysinfo does not support the platform.
    pub fn new(pid: u32) -> Result<Self, sysinfo::Error> {
        Ok(Self {
            system: System::new()?,
            pid: Pid::from_u32(pid),
            refreshed_before: false,
        })
    }

    /// Reads `/proc` for this one process. Blocking (file reads), but short.
    /// `None` once the process is gone or cannot be read.
    pub fn sample(&mut self) -> Option<ProcessSample> {
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[self.pid]),
            true,
            ProcessRefreshKind::nothing()
                .with_memory()
                .with_cpu()
                .with_tasks(),
        );
        let process = self.system.process(self.pid)?;
        let cpu_percent = self.refreshed_before.then(|| process.cpu_usage());
        self.refreshed_before = true;
        Some(ProcessSample {
            // sysinfo lists the other threads (Linux tasks) and leaves out the main one.
            threads: process.tasks().map(|tasks| tasks.len() + 1),
            rss_bytes: process.memory(),
            cpu_percent,
        })
    }
}

/// What the run saw of the gateway process. Every field is `None` (JSON null) when no pid was
/// given or the process could not be read.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessStats {
    pub pid: Option<u32>,
    /// Most threads at once. Flat at "workers + pool size" in broken mode: the pool cannot grow.
    pub threads_max: Option<usize>,
    pub rss_max_bytes: Option<u64>,
    /// Mean CPU over the run, in percent of one core. Near zero while the pool starves: the
    /// threads are parked in blocking reads, not working.
    pub cpu_percent_avg: Option<f64>,
    pub samples: u64,
}

/// Samples one process on a period, from a plain thread: sysinfo reads `/proc` with blocking
/// file I/O, which does not belong on an async worker.
#[derive(Debug)]
pub struct ProcessWatch {
    /// Dropping it wakes the thread from its sleep and ends it.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<ProcessStats>>,
}

impl ProcessWatch {
    /// Takes a first sample (so a wrong pid is reported now, not at the end), then samples
    /// every `every` on a new thread.
    pub fn start(pid: u32, every: Duration) -> Result<Self, String> {
        let mut sampler = ProcessSampler::new(pid)
            .map_err(|e| format!("cannot sample processes on this system: {e}"))?;
        let first = sampler
            .sample()
            .ok_or_else(|| format!("no process with pid {pid} is visible"))?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("diag-process".into())
            .spawn(move || {
                let mut tally = Tally::new(pid);
                tally.record(first);
                // `recv_timeout` is a sleep that ends early when `stop` is dropped.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    match sampler.sample() {
                        Some(sample) => tally.record(sample),
                        None => break, // The process is gone; keep what was seen.
                    }
                }
                tally.stats()
            })
            .map_err(|e| format!("cannot start the process sampler thread: {e}"))?;
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops sampling and returns what was seen.
    pub async fn finish(mut self) -> ProcessStats {
        drop(self.stop.take());
        let Some(thread) = self.thread.take() else {
            return ProcessStats::default();
        };
        match tokio::task::spawn_blocking(move || thread.join()).await {
            Ok(Ok(stats)) => stats,
            _ => ProcessStats::default(),
        }
    }
}

#[derive(Debug)]
struct Tally {
    pid: u32,
    samples: u64,
    threads_max: Option<usize>,
    rss_max_bytes: u64,
    cpu_sum: f64,
    cpu_samples: u32,
}

impl Tally {
    fn new(pid: u32) -> Self {
        Self {
            pid,
            samples: 0,
            threads_max: None,
            rss_max_bytes: 0,
            cpu_sum: 0.0,
            cpu_samples: 0,
        }
    }

    fn record(&mut self, sample: ProcessSample) {
        self.samples += 1;
        self.threads_max = self.threads_max.max(sample.threads);
        self.rss_max_bytes = self.rss_max_bytes.max(sample.rss_bytes);
        if let Some(cpu) = sample.cpu_percent {
            // Each reading covers the time since the previous one, and readings are evenly
            // spaced, so their mean is the CPU use over the run.
            self.cpu_sum += f64::from(cpu);
            self.cpu_samples += 1;
        }
    }

    fn stats(&self) -> ProcessStats {
        ProcessStats {
            pid: Some(self.pid),
            threads_max: self.threads_max,
            rss_max_bytes: Some(self.rss_max_bytes),
            cpu_percent_avg: (self.cpu_samples > 0)
                .then(|| (self.cpu_sum / f64::from(self.cpu_samples) * 10.0).round() / 10.0),
            samples: self.samples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_very_process() {
        let mut sampler = ProcessSampler::new(std::process::id()).expect("sysinfo works here");
        let first = sampler.sample().expect("we are alive");
        assert!(first.rss_bytes > 0);
        assert!(first.cpu_percent.is_none());
        let second = sampler.sample().expect("still alive");
        assert!(second.cpu_percent.is_some());
        if cfg!(target_os = "linux") {
            assert!(second.threads.is_some_and(|n| n >= 1));
        }
    }

    #[test]
    fn a_missing_process_is_reported_at_start() {
        // Linux pids stay below 2^22; this one cannot exist.
        let error = ProcessWatch::start(u32::MAX - 1, Duration::from_millis(10))
            .expect_err("no such process");
        assert!(error.contains("no process with pid"), "{error}");
    }
}
