//! `diag watch`: one line per interval with the three health probes and the pool counters,
//! for a gateway that something else is loading (a demo in another terminal, real traffic);
//! with an admin plane ([`crate::admin`]), its `/readyz` last:
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
//! Ctrl-C alike, even if it came back, because a script that watched a deploy needs to know. A
//! gateway that never answered did not *stop*: the watch may have been started first, waiting
//! for it, so that exits 0 as before.
//!
//! The readiness cell takes no part in that: `down` means the main listener's three probes got
//! no answer. The admin plane is found once, at the start; an explicit `--admin` that does not
//! answer then stops the watch at once (exit 3), the guessed one is left out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::time::MissedTickBehavior;

use crate::Error;
use crate::admin;
use crate::cli::WatchArgs;
use crate::live;
use crate::pool;
use crate::probe::{Endpoint, Outcome, Target, probe, probe_target};

/// Runs `diag watch` until `--count` lines or Ctrl-C.
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
            _ = tokio::signal::ctrl_c() => Ok(()),
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

/// The lines so far, as the exit status needs them: did the gateway stop answering after it
/// had answered (see the module docs)?
#[derive(Debug, Default)]
struct Downtime {
    lines: u64,
    answered: bool,
    /// The clock of the first `down` line after an answered one.
    stopped_at: Option<String>,
    /// `down` lines, all of them (as the reader counts them on the screen).
    down_lines: u64,
    /// Whether the latest line was `down`.
    down_now: bool,
}

impl Downtime {
    /// Notes one line, printed at `clock`, `down` or not.
    fn saw(&mut self, clock: &str, down: bool) {
        self.lines += 1;
        self.down_now = down;
        self.down_lines += u64::from(down);
        if !down {
            self.answered = true;
        } else if self.answered {
            self.stopped_at.get_or_insert_with(|| clock.to_owned());
        }
    }

    /// The reason the watch failed, if the gateway stopped answering.
    fn failure(&self) -> Option<String> {
        let at = self.stopped_at.as_ref()?;
        let end = if self.down_now {
            "still down at the end"
        } else {
            "answering again at the end"
        };
        Some(format!(
            "the gateway stopped answering at {at} ({} of {} lines down; {end})",
            self.down_lines, self.lines
        ))
    }
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
    fn a_gateway_fails_the_watch_only_once_it_had_answered() {
        let mut never = Downtime::default();
        never.saw("12:00:00", true);
        never.saw("12:00:01", true);
        assert_eq!(
            never.failure(),
            None,
            "started before the gateway: no failure"
        );

        let mut died = Downtime::default();
        died.saw("12:00:00", true);
        died.saw("12:00:01", false);
        died.saw("12:00:02", true);
        died.saw("12:00:03", true);
        assert_eq!(
            died.failure().as_deref(),
            Some(
                "the gateway stopped answering at 12:00:02 (3 of 4 lines down; still down at the end)"
            )
        );
        died.saw("12:00:04", false);
        assert_eq!(
            died.failure().as_deref(),
            Some(
                "the gateway stopped answering at 12:00:02 (3 of 5 lines down; answering again at \
                 the end)"
            )
        );
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
