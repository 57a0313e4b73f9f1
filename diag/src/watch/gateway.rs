//! `diag watch` without `--probe`: one line per interval with the gateway's three health probes
//! and its pool counters, for a gateway that something else is loading (a demo in another
//! terminal, real traffic); with an admin plane ([`crate::admin`]), its `/readyz` last:
//!
//! ```text
//! 12:00:01  sync 2.1ms | async 0.8ms | health ok | pool 0/4 +0 queued | readyz ready 0.5ms
//! ```
//!
//! Each tick sends its requests at once and prints when all have answered or timed out,
//! so with a stalled pool a line can take up to `--timeout` (the `sync` cell then reads
//! `timeout`). That is a closed loop, fine for watching; `diag demo` is the open-loop measurement.
//! A gateway that stops answering shows `down` and the watch goes on, so it is still watching
//! when the gateway comes back.
//!
//! The exit status says whether it did: a gateway that answered and later stopped (a `down`
//! line after one that was not) ends the watch with [`Error::Failed`] (exit 4), at `--count` or
//! Ctrl-C alike, even if it came back, because a script that watched a deploy needs to know
//! ([`Downtime`]). A gateway that never answered did not *stop*: the watch may have been started
//! first, waiting for it, so that exits 0 as before.
//!
//! The readiness cell takes no part in that: `down` means the main listener's three probes got
//! no answer. The admin plane is found once, at the start; an explicit `--admin` that does not
//! answer then stops the watch at once (exit 3), the guessed one is left out.
//!
//! A service that answers all three probes with 404 is not this gateway: its lines read
//! `sync - | async - | health - | pool -` as they always have, and diag says once, on stderr,
//! that `--probe` is the way to watch it (the view for any service, [`super::probes`]).

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::time::MissedTickBehavior;

use super::clock::clock;
use super::downtime::Downtime;
use crate::Error;
use crate::admin;
use crate::cli::WatchArgs;
use crate::live;
use crate::pool;
use crate::probe::{Endpoint, Outcome, Target, probe, probe_target};

/// Runs `diag watch` until `--count` lines, Ctrl-C or SIGTERM.
pub fn run(args: &WatchArgs) -> Result<(), Error> {
    // One thread is plenty: the watch only waits on sockets, and it loads nothing.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    let mut downtime = Downtime::default();
    runtime.block_on(async {
        tokio::select! {
            result = watch(args, &mut downtime) => result,
            _ = common::signal::stop_requested() => Ok(()),
        }
    })?;
    match downtime.failure() {
        Some(reason) => Err(Error::Failed { reason }),
        None => Ok(()),
    }
}

async fn watch(args: &WatchArgs, downtime: &mut Downtime) -> Result<(), Error> {
    // `--api-key` and `-H` on every probe, as the demo sends them.
    let client = reqwest::Client::builder()
        .default_headers(args.access.header_map()?)
        .build()
        .context("cannot build the HTTP client")?;
    let gateway = args.gateway.as_str();
    let readyz = admin::resolve(&client, args.admin.as_ref(), gateway, args.timeout)
        .await?
        .map(|admin| Target::at(&admin, Endpoint::Readyz));
    let mut ticks = tokio::time::interval(args.interval);
    // After a slow tick, start the next one a full interval later instead of catching up.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut printed = 0;
    let mut hinted = false;
    while args.count.is_none_or(|count| printed < count) {
        ticks.tick().await;
        let ready = async {
            match &readyz {
                Some(target) => Some(probe_target(&client, target, args.timeout).await),
                None => None,
            }
        };
        let (sync, async_, health, pool, ready) = tokio::join!(
            probe(&client, gateway, Endpoint::HealthSync, args.timeout),
            probe(&client, gateway, Endpoint::HealthAsync, args.timeout),
            probe(&client, gateway, Endpoint::Health, args.timeout),
            pool::fetch(&client, gateway, args.timeout),
            ready,
        );
        let now = clock(SystemTime::now());
        downtime.saw(&now, down(&sync, &async_, &health).is_some());
        if !hinted
            && [&sync, &async_, &health]
                .iter()
                .all(|o| **o == Outcome::Status(404))
        {
            hinted = true;
            eprintln!(
                "diag: nothing at {gateway} has the gateway's probe endpoints (all three answer \
                 404); to watch another service, name its URLs: --probe /healthz (see diag \
                 watch --help)"
            );
        }
        let line = line(&sync, &async_, &health, pool.ok().as_ref(), args.interval);
        let ready = ready.map(|ready| live::readyz_cell(Some(&ready), None, args.interval));
        println!("{now}  {}", live::with_readyz(line, ready.as_deref()));
        printed += 1;
    }
    Ok(())
}

/// Why the gateway is down: no probe got any HTTP answer. `None` when one did.
fn down<'a>(sync: &'a Outcome, async_: &Outcome, health: &Outcome) -> Option<&'a str> {
    match (sync, async_, health) {
        (Outcome::Failed(reason), Outcome::Failed(_), Outcome::Failed(_)) => Some(reason),
        _ => None,
    }
}

/// The readings, or `down (reason)` when no probe got any HTTP answer.
fn line(
    sync: &Outcome,
    async_: &Outcome,
    health: &Outcome,
    pool: Option<&pool::PoolSnapshot>,
    every: Duration,
) -> String {
    if let Some(reason) = down(sync, async_, health) {
        return format!("down ({reason})");
    }
    live::readings(
        &live::latency_cell(Some(sync), None, every),
        &live::latency_cell(Some(async_), None, every),
        &live::health_cell(Some(health)),
        &live::pool_cell(pool),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ready: None,
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
