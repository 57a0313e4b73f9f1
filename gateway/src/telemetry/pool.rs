//! Lesson 1: you cannot fix a pool you cannot see. A counting wrapper around `spawn_blocking`.
//!
//! Tokio's blocking pool has at most `max_blocking_threads` threads; past that, `spawn_blocking`
//! does not fail or push back, it queues the job, without bound. From outside, that looks like a
//! service that is up but no longer answers. Tokio can report the pool's state, but only when
//! built with `--cfg tokio_unstable`, so this module counts it itself: every blocking job in the
//! gateway goes through [`BlockingPool::spawn`], which records when a job is submitted, when a
//! thread picks it up and when it ends.
//!
//! What it cannot see: blocking work that bypasses it (`tokio::fs`, DNS lookups inside hyper's
//! resolver). The gateway keeps all of its own blocking work here and uses IP literals upstream.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

/// The `/debug/pool` JSON, shared with diag, which reads it.
pub use common::pool::PoolSnapshot;

/// Counters for the runtime's blocking pool, as seen through [`BlockingPool::spawn`].
#[derive(Debug)]
pub struct BlockingPool {
    /// The runtime's `max_blocking_threads`: the most jobs that can run at once.
    max_threads: usize,
    /// Submitted, not yet started. Some of these are only microseconds from starting; the
    /// reported `queued` counts just the ones no free thread can take (see [`Self::queued`]).
    pending: AtomicUsize,
    running: AtomicUsize,
    peak_running: AtomicUsize,
    peak_queued: AtomicUsize,
    completed: AtomicU64,
}

impl BlockingPool {
    pub fn new(max_threads: usize) -> Self {
        Self {
            max_threads,
            pending: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            peak_running: AtomicUsize::new(0),
            peak_queued: AtomicUsize::new(0),
            completed: AtomicU64::new(0),
        }
    }

    /// `tokio::task::spawn_blocking`, counted. The closure receives how long it waited for a
    /// thread, which is the number that explains a slow sync endpoint.
    pub fn spawn<F, R>(self: &std::sync::Arc<Self>, job: F) -> JoinHandle<R>
    where
        F: FnOnce(Duration) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.spawn_on(&tokio::runtime::Handle::current(), job)
    }

    /// [`Self::spawn`] on the pool of the runtime behind `runtime`, from any thread: the admin
    /// plane times the main runtime's pool this way, from its own thread (see
    /// `crate::admin::readiness`).
    pub fn spawn_on<F, R>(
        self: &std::sync::Arc<Self>,
        runtime: &tokio::runtime::Handle,
        job: F,
    ) -> JoinHandle<R>
    where
        F: FnOnce(Duration) -> R + Send + 'static,
        R: Send + 'static,
    {
        let submitted = Instant::now();
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.peak_queued.fetch_max(self.queued(), Ordering::Relaxed);
        let pool = std::sync::Arc::clone(self);
        runtime.spawn_blocking(move || {
            let running = pool.running.fetch_add(1, Ordering::SeqCst) + 1;
            pool.pending.fetch_sub(1, Ordering::SeqCst);
            pool.peak_running.fetch_max(running, Ordering::Relaxed);
            // A guard, so a panicking job still gives its thread back in the counts.
            let _running = RunningGuard(&pool);
            job(submitted.elapsed())
        })
    }

    /// Jobs beyond what the free threads can take: the real queue.
    fn queued(&self) -> usize {
        let running = self.running.load(Ordering::SeqCst);
        let pending = self.pending.load(Ordering::SeqCst);
        (running + pending).saturating_sub(self.max_threads)
    }

    pub fn max_threads(&self) -> usize {
        self.max_threads
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let running = self.running.load(Ordering::SeqCst);
        PoolSnapshot {
            max_threads: self.max_threads,
            running,
            queued: self.queued(),
            peak_running: self.peak_running.load(Ordering::Relaxed),
            peak_queued: self.peak_queued.load(Ordering::Relaxed),
            saturation: running as f64 / self.max_threads as f64,
            completed: self.completed.load(Ordering::Relaxed),
        }
    }
}

struct RunningGuard<'a>(&'a BlockingPool);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.completed.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::mpsc;

    use super::*;

    /// On a runtime with 2 blocking threads, 2 held jobs run and the third is counted as queued.
    #[test]
    fn counts_running_and_queued_jobs() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .enable_time()
            .build()
            .expect("runtime");
        let pool = Arc::new(BlockingPool::new(2));
        let (release, hold) = mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        rt.block_on(async {
            let jobs: Vec<_> = (0..3)
                .map(|_| {
                    let hold = Arc::clone(&hold);
                    pool.spawn(move |_| {
                        let _ = hold.lock().map(|rx| rx.recv());
                    })
                })
                .collect();
            // Wait until the pool has settled into "all threads busy, one waiting".
            for _ in 0..200 {
                let s = pool.snapshot();
                if s.running == 2 && s.queued == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The jobs serialise on the mutex: one holds it, one blocks on it, one is queued.
            let s = pool.snapshot();
            assert_eq!(s.max_threads, 2);
            assert_eq!(s.running, 2, "{s:?}");
            assert_eq!(s.queued, 1, "{s:?}");
            for _ in 0..3 {
                release.send(()).expect("job alive");
            }
            for job in jobs {
                job.await.expect("job ran");
            }
            let s = pool.snapshot();
            assert_eq!((s.running, s.queued, s.completed), (0, 0, 3), "{s:?}");
            assert_eq!((s.peak_running, s.peak_queued), (2, 1), "{s:?}");
        });
    }
}
