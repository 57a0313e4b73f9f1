//! `diag watch`: one line per interval with the three health probes and the pool counters,
//! for a gateway that something else is loading (a demo in another terminal, real traffic).
//!
//! ```text
//! 12:00:01  sync 2.1ms | async 0.8ms | health ok | pool 0/4 +0 queued
//! ```
//!
//! Each tick sends the four requests at once and prints when all have answered or timed out,
//! so with a stalled pool a line can take up to `--timeout` (the `sync` cell then reads
//! `timeout`). That is a closed loop, fine for watching; `diag demo` is the open-loop measurement.
//! A gateway that stops answering shows `down` and the watch goes on, so it is still watching
//! when the gateway comes back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::time::MissedTickBehavior;

use crate::Error;
use crate::cli::WatchArgs;
use crate::live;
use crate::pool;
use crate::probe::{Endpoint, Outcome, probe};

/// Runs `diag watch` until `--count` lines or Ctrl-C.
pub fn run(args: &WatchArgs) -> Result<(), Error> {
    // One thread is plenty: the watch only waits on sockets, and it loads nothing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = watch(args) => result,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

async fn watch(args: &WatchArgs) -> Result<(), Error> {
    let client = reqwest::Client::builder()
        .build()
        .context("cannot build the HTTP client")?;
    let gateway = args.gateway.as_str();
    let mut ticks = tokio::time::interval(args.interval);
    // After a slow tick, start the next one a full interval later instead of catching up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut printed = 0;
    while args.count.is_none_or(|count| printed < count) {
        ticks.tick().await;
        let (sync, async_, health, pool) = tokio::join!(
            probe(&client, gateway, Endpoint::HealthSync, args.timeout),
            probe(&client, gateway, Endpoint::HealthAsync, args.timeout),
            probe(&client, gateway, Endpoint::Health, args.timeout),
            pool::fetch(&client, gateway, args.timeout),
        );
        println!(
            "{}  {}",
            clock(SystemTime::now()),
            line(&sync, &async_, &health, pool.ok().as_ref(), args.interval)
        );
        printed += 1;
    }
    Ok(())
}

/// The readings, or `down (reason)` when no probe got any HTTP answer.
fn line(
    sync: &Outcome,
    async_: &Outcome,
    health: &Outcome,
    pool: Option<&pool::PoolSnapshot>,
    every: Duration,
) -> String {
    if let (Outcome::Failed(reason), Outcome::Failed(_), Outcome::Failed(_)) =
        (sync, async_, health)
    {
        return format!("down ({reason})");
    }
    live::readings(
        &live::latency_cell(Some(sync), None, every),
        &live::latency_cell(Some(async_), None, every),
        &live::health_cell(Some(health)),
        &live::pool_cell(pool),
    )
}

/// `HH:MM:SS` in UTC. (Local time would need a time-zone database, a dependency this one line
/// does not justify.)
fn clock(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_utc_time_of_day() {
        let at = UNIX_EPOCH + Duration::from_secs(19_000 * 86_400 + 12 * 3600 + 61);
        assert_eq!(clock(at), "12:01:01");
    }

    #[test]
    fn a_silent_gateway_is_down_and_a_missing_endpoint_is_a_dash() {
        let every = Duration::from_secs(1);
        let refused = Outcome::Failed("Connection refused".into());
        assert_eq!(
            line(&refused, &refused, &refused, None, every),
            "down (Connection refused)"
        );
        let answered = Outcome::Answered {
            latency: Duration::from_millis(1),
            status: None,
            mode: None,
        };
        assert_eq!(
            line(
                &Outcome::Status(404),
                &answered,
                &Outcome::Status(404),
                None,
                every
            ),
            "sync - | async 1.0ms | health - | pool -"
        );
    }
}
