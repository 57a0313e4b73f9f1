//! When `diag llm`'s streams start and when the run ends: `-c N` keeps N workers each running
//! one stream after another (a closed loop), `-q R` starts a stream every 1/R s on schedule
//! however many are still open (an open loop); `-n` stops after that many streams, `-z` at a
//! deadline, cancelling the streams still open then.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cli::{Arrivals, StreamsUntil};
use crate::llm::stream::{Shared, Stream};

/// Runs the streams to the end of the run and returns how long it took.
pub(super) async fn run(shared: &Arc<Shared>, arrivals: Arrivals, until: StreamsUntil) -> Duration {
    let start = Instant::now();
    let deadline = match until {
        StreamsUntil::Elapsed(duration) => Some(start + duration),
        StreamsUntil::Count(_) => None,
    };
    let mut streams = JoinSet::new();
    match arrivals {
        Arrivals::Closed(concurrency) => {
            let workers = match until {
                StreamsUntil::Count(n) => u64::from(concurrency).min(n),
                StreamsUntil::Elapsed(_) => u64::from(concurrency),
            };
            for _ in 0..workers {
                streams.spawn(worker(Arc::clone(shared), until));
            }
        }
        Arrivals::Open(rate) => {
            for k in 0u64.. {
                if let StreamsUntil::Count(n) = until
                    && k >= n
                {
                    break;
                }
                let due = start + Duration::from_secs_f64(k as f64 / rate);
                if deadline.is_some_and(|deadline| due >= deadline) {
                    break;
                }
                tokio::time::sleep_until(due).await;
                streams.spawn(one_stream(Arc::clone(shared)));
                // Reap the streams that ended, so the set holds only open ones.
                while streams.try_join_next().is_some() {}
            }
        }
    }
    match deadline {
        Some(deadline) => {
            let drain = async { while streams.join_next().await.is_some() {} };
            if tokio::time::timeout_at(deadline, drain).await.is_err() {
                // Dropping the streams counts them as cancelled (see `Stream`'s `Drop`).
                streams.abort_all();
                while streams.join_next().await.is_some() {}
            }
        }
        None => while streams.join_next().await.is_some() {},
    }
    start.elapsed()
}

/// One stream, start to end.
async fn one_stream(shared: Arc<Shared>) {
    let mut stream = Stream::start(&shared);
    let result = stream.run().await;
    stream.end(result);
}

/// A closed-loop worker: one stream after another until the tickets are gone (with `-n`) or
/// the run is cancelled (with `-z`).
async fn worker(shared: Arc<Shared>, until: StreamsUntil) {
    loop {
        if let StreamsUntil::Count(n) = until
            && shared.tickets.fetch_add(1, Ordering::Relaxed) >= n
        {
            break;
        }
        one_stream(Arc::clone(&shared)).await;
    }
}
