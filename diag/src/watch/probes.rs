//! `diag watch --probe`: any service's URLs, one line per `--interval`, until `--count` lines,
//! Ctrl-C or an alert; then a summary and an exit code.
//!
//! ```text
//! 12:00:03  health 0.3ms (p50 0.3ms p99 0.6ms max 0.6ms, 0/3 failed) | report 1.204s (p50 1.1s …) | starved: report waits while health answers
//! ```
//!
//! The probes are not sent by this loop. They fire open loop from the one prober
//! ([`crate::probe::Prober`]) on its own thread, every `--interval`, whether or not the last
//! one answered, and each result lands in its probe's [`Window`] as it finishes; this loop only
//! reads the windows once per interval and prints. So a stalled endpoint delays nothing: its
//! cell shows how long its oldest probe has waited (`>2.4s`) while the others keep their pace,
//! and when its probes time out they count at the timeout value. (The gateway's view,
//! [`super::gateway`], is a closed loop: a line waits for its slowest probe.)
//!
//! Each line, per probe: the latest result, then the window's p50, p99, max and failures (of
//! the probes that finished in it). Then each `--pair`'s verdict ([`super::pair`]) and any
//! threshold crossed ([`super::alert`]). The human lines go to stdout, or to stderr when
//! `--jsonl -` takes stdout for the JSON lines ([`super::jsonl`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use std::io::Write;
use tokio::time::MissedTickBehavior;

use super::alert::{self, End, Thresholds};
use super::clock::{clock, timestamp, unix_ms};
use super::downtime::Downtime;
use super::jsonl::{self, Interval, Latest, PairLine, ProbeLine, Record, Sink, Summary};
use super::pair;
use super::window::{Window, WindowStats};
use crate::cli::watch::DEFAULT_BUDGET;
use crate::cli::{Jsonl, Pair, WatchArgs, format_duration};
use crate::histogram::seconds;
use crate::live::named_probe_cell;
use crate::lock;
use crate::probe::{Outcome, Probed, Prober};
use crate::{Error, probe};

/// Why the lines stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Count,
    /// Ctrl-C or SIGTERM (`timeout`, a process manager): the summary is still printed.
    Signal(common::signal::Stop),
    Alert,
}

/// Runs the watch to its end and returns its verdict ([`alert::verdict`]).
pub fn run(args: &WatchArgs) -> Result<(), Error> {
    // One thread for the lines: they only read the windows. The probes have their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    runtime.block_on(watch(args))
}

/// Everything the lines have seen so far.
struct Lines<'a> {
    args: &'a WatchArgs,
    /// Where the human lines go.
    human: Box<dyn Write>,
    jsonl: Option<Sink>,
    printed: u64,
    downtime: Downtime,
    /// One per `--pair`, in order.
    pairs: Vec<pair::Tally>,
    /// The first threshold crossed: the line's clock and what crossed.
    alert: Option<(String, String)>,
    thresholds: Thresholds,
}

async fn watch(args: &WatchArgs) -> Result<(), Error> {
    let windows: Arc<Mutex<Vec<Window>>> = Arc::new(Mutex::new(
        args.probes
            .iter()
            .map(|_| Window::new(args.window, args.timeout, args.interval))
            .collect(),
    ));
    let targets: Vec<probe::Target> = args.probes.iter().map(|p| p.target.clone()).collect();
    // Every header is in each target's own request (the common ones merged in by the command
    // line), so the client sends none of its own.
    let prober = {
        let windows = Arc::clone(&windows);
        Prober::start(
            reqwest::header::HeaderMap::new(),
            &targets,
            args.interval,
            args.timeout,
            Some(Arc::new(move |index, _, sent, outcome: &Outcome| {
                if let Some(window) = lock(&windows).get_mut(index) {
                    window.record(sent, outcome);
                }
            })),
        )?
    };
    let started = Instant::now();
    eprintln!("{}", announce(args));
    let mut lines = Lines {
        args,
        human: match args.jsonl {
            Some(Jsonl::Stdout) => Box::new(std::io::stderr()),
            _ => Box::new(std::io::stdout()),
        },
        jsonl: args.jsonl.as_ref().map(Sink::open).transpose()?,
        printed: 0,
        downtime: Downtime::default(),
        pairs: vec![pair::Tally::default(); args.pairs.len()],
        alert: None,
        thresholds: Thresholds {
            fail_over: args.fail_over,
            fail_on_errors: args.fail_on_errors,
            window: args.window,
        },
    };

    // The first line after one interval, so that it has something to show.
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + args.interval, args.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut interrupted = std::pin::pin!(common::signal::stop_requested());
    let stop = loop {
        tokio::select! {
            _ = ticks.tick() => {}
            signal = &mut interrupted => break Stop::Signal(signal),
        }
        lines.print(&read(&prober, &windows))?;
        if lines.alert.is_some() && args.count.is_none() {
            break Stop::Alert;
        }
        if args.count.is_some_and(|count| lines.printed >= count) {
            break Stop::Count;
        }
    };
    // At `--count` every probe sent gets its answer or its timeout, so the summary has no
    // hole; a person pressing Ctrl-C, or an alert, should not wait up to a timeout for that.
    let probed = match stop {
        Stop::Count => prober.finish().await,
        Stop::Signal(_) | Stop::Alert => prober.so_far(),
    };
    let ever: Vec<_> = lock(&windows).iter().map(|w| w.ever.clone()).collect();
    let result = alert::verdict(&End {
        probes: &args.probes,
        ever: &ever,
        alert: lines.alert.clone(),
        stopped: lines.downtime.failure_of("the service"),
        timeout: args.timeout,
    });
    lines.summary(&probed, started.elapsed(), stop, &result)?;
    result
}

/// Each probe's window and latest result, read at one instant, so that a cell's `>2.4s` and
/// the waiting probes in its window agree.
fn read(prober: &Prober, windows: &Mutex<Vec<Window>>) -> Vec<(WindowStats, probe::Latest)> {
    let now = Instant::now();
    let mut windows = lock(windows);
    windows
        .iter_mut()
        .enumerate()
        .map(|(index, window)| {
            let waiting = prober.waiting_of(index);
            let latest = probe::Latest {
                outcome: prober.latest_of(index).outcome,
                oldest_waiting: waiting
                    .first()
                    .map(|sent| now.saturating_duration_since(*sent)),
            };
            (window.stats(now, &waiting), latest)
        })
        .collect()
}

impl Lines<'_> {
    /// Prints one line (and writes its JSON line) from the windows' `stats`.
    fn print(&mut self, readings: &[(WindowStats, probe::Latest)]) -> Result<(), Error> {
        let args = self.args;
        let stats: Vec<WindowStats> = readings.iter().map(|(stats, _)| stats.clone()).collect();
        let now = SystemTime::now();
        let at = clock(now);
        let mut cells = Vec::new();
        let mut probes = std::collections::BTreeMap::new();
        let mut crossed = Vec::new();
        let (mut responded, mut all_failed) = (false, true);
        for (probe, (stats, latest)) in args.probes.iter().zip(readings) {
            let outcome = latest.outcome.as_ref();
            responded |= matches!(outcome, Some(Outcome::Answered { .. } | Outcome::Status(_)));
            all_failed &= matches!(outcome, Some(Outcome::Failed(_)));
            let now = named_probe_cell(outcome, latest.oldest_waiting, args.interval);
            cells.push(format!("{} {now} ({})", probe.name, window_cell(stats)));
            crossed.extend(self.thresholds.crossed(&probe.name, stats));
            let waiting_ms = latest
                .oldest_waiting
                .filter(|_| now.starts_with('>'))
                .map(ms);
            probes.insert(
                probe.name.clone(),
                probe_line(probe, outcome, waiting_ms, stats, args.timeout),
            );
        }
        let mut pairs = Vec::new();
        for (pair, tally) in args.pairs.iter().zip(&mut self.pairs) {
            let of = |name: &str| {
                let index = args.probes.iter().position(|probe| probe.name == name);
                index
                    .and_then(|index| stats.get(index))
                    .cloned()
                    .unwrap_or_default()
            };
            let budgets = budgets(args, pair);
            let verdict = pair::judge(&of(&pair.fast), &of(&pair.slow), budgets);
            tally.saw(&at, verdict);
            let says = pair::says(verdict, pair, budgets);
            cells.push(says.clone());
            pairs.push(PairLine {
                fast: pair.fast.clone(),
                slow: pair.slow.clone(),
                verdict,
                says,
            });
        }
        cells.extend(crossed.iter().map(|reason| format!("ALERT {reason}")));
        if let Some(first) = crossed.first() {
            self.alert
                .get_or_insert_with(|| (at.clone(), first.clone()));
        }
        if all_failed {
            self.downtime.saw(&at, true);
        } else if responded {
            self.downtime.saw(&at, false);
        } else {
            self.downtime.waited();
        }
        self.printed += 1;
        writeln!(self.human, "{at}  {}", cells.join(" | ")).context("cannot print a line")?;
        let verdict = pairs.iter().map(|pair| pair.verdict).max();
        self.write(&Record::Interval(Interval {
            timestamp: timestamp(now),
            unix_ms: unix_ms(now),
            line: self.printed,
            window_s: args.window.as_secs_f64(),
            probes,
            verdict,
            pairs,
            alerts: crossed,
        }))
    }

    /// The summary: a table of the whole watch per probe, each pair's worst verdict, and the
    /// JSON line that says the same with the exit code.
    fn summary(
        &mut self,
        probed: &Probed,
        elapsed: Duration,
        stop: Stop,
        result: &Result<(), Error>,
    ) -> Result<(), Error> {
        let args = self.args;
        let how = match stop {
            Stop::Count => String::new(),
            Stop::Signal(signal) => format!(
                ", stopped by {} (probes still in flight are not counted)",
                signal.as_str()
            ),
            Stop::Alert => {
                ", stopped by the alert (probes still in flight are not counted)".to_owned()
            }
        };
        let mut text = format!(
            "\nsummary: {} lines in {:.1}s{how}; probes every {}, timeouts at {}\n",
            self.printed,
            elapsed.as_secs_f64(),
            format_duration(args.interval),
            format_duration(args.timeout),
        );
        let rows: Vec<[String; 8]> = args
            .probes
            .iter()
            .enumerate()
            .map(|(index, probe)| {
                let stats = probed.stats_of(index);
                [
                    probe.name.clone(),
                    format!("{} {}", probe.target.ask.method, probe.target.url),
                    (stats.samples + stats.errors).to_string(),
                    stats.timeouts.to_string(),
                    stats.errors.to_string(),
                    ms_cell(stats.p50_ms),
                    ms_cell(stats.p99_ms),
                    ms_cell(stats.max_ms),
                ]
            })
            .collect();
        let head = [
            "probe", "request", "sent", "timeouts", "errors", "p50", "p99", "max",
        ]
        .map(str::to_owned);
        text.push_str(&table(&head, &rows));
        let pairs: Vec<PairLine> = args
            .pairs
            .iter()
            .zip(&self.pairs)
            .map(|(pair, tally)| PairLine {
                fast: pair.fast.clone(),
                slow: pair.slow.clone(),
                verdict: tally.worst(),
                says: tally.says(pair, budgets(args, pair)),
            })
            .collect();
        for pair in &pairs {
            text.push_str(&format!("{}={}: {}\n", pair.fast, pair.slow, pair.says));
        }
        write!(self.human, "{text}").context("cannot print the summary")?;
        let now = SystemTime::now();
        self.write(&Record::Summary(Summary {
            timestamp: timestamp(now),
            unix_ms: unix_ms(now),
            lines: self.printed,
            elapsed_s: elapsed.as_secs_f64(),
            interrupted: matches!(stop, Stop::Signal(_)),
            probes: args
                .probes
                .iter()
                .enumerate()
                .map(|(index, probe)| {
                    let summary = jsonl::ProbeSummary {
                        method: probe.target.ask.method.to_string(),
                        url: probe.target.url.clone(),
                        stats: probed.stats_of(index),
                    };
                    (probe.name.clone(), summary)
                })
                .collect(),
            pairs,
            exit_code: result.as_ref().map_or_else(Error::exit_code, |()| 0),
            reason: result.as_ref().err().map(ToString::to_string),
        }))
    }

    fn write(&mut self, record: &Record) -> Result<(), Error> {
        if let Some(sink) = &mut self.jsonl {
            sink.write(record)?;
        }
        Ok(())
    }
}

/// The budgets of `pair`'s two probes.
fn budgets(args: &WatchArgs, pair: &Pair) -> pair::Budgets {
    let of = |name: &str| {
        args.probes
            .iter()
            .find(|probe| probe.name == name)
            .map_or(DEFAULT_BUDGET, |probe| probe.budget)
    };
    (of(&pair.fast), of(&pair.slow))
}

/// The line on stderr that says what is probed, how often, and what the lines mean.
fn announce(args: &WatchArgs) -> String {
    let probes: Vec<String> = args
        .probes
        .iter()
        .map(|probe| {
            let ask = &probe.target.ask;
            let expect = ask.expect.clone().unwrap_or_default();
            // The budget matters only to a pair's verdict: said only then.
            let budget = if args.pairs.is_empty() {
                String::new()
            } else {
                format!(", budget {}", format_duration(probe.budget))
            };
            format!(
                "{} = {} {} ({expect}{budget})",
                probe.name, ask.method, probe.target.url
            )
        })
        .collect();
    format!(
        "diag watch: {}; every {}, open loop, timeouts at {}; p50/p99/max and failures over the \
         last {}",
        probes.join(", "),
        format_duration(args.interval),
        format_duration(args.timeout),
        format_duration(args.window)
    )
}

/// `p50 0.3ms p99 0.6ms max 0.6ms, 0/3 failed`: the window, after the latest result; with
/// `, 4 waiting` when probes still waiting past one interval are in the percentiles.
fn window_cell(stats: &WindowStats) -> String {
    let waiting = match stats.waiting {
        0 => String::new(),
        n => format!(", {n} waiting"),
    };
    format!(
        "p50 {} p99 {} max {}, {}/{} failed{waiting}",
        ms_cell(stats.seen.p50_ms),
        ms_cell(stats.seen.p99_ms),
        ms_cell(stats.seen.max_ms),
        stats.failures(),
        stats.finished()
    )
}

/// A probe's JSON on one line.
fn probe_line(
    probe: &crate::cli::Probe,
    outcome: Option<&Outcome>,
    waiting_ms: Option<f64>,
    stats: &WindowStats,
    timeout: Duration,
) -> ProbeLine {
    ProbeLine {
        method: probe.target.ask.method.to_string(),
        url: probe.target.url.clone(),
        budget_ms: ms(probe.budget),
        latest: outcome.map(|outcome| match outcome {
            Outcome::Answered { latency, .. } => Latest::Answered { ms: ms(*latency) },
            Outcome::TimedOut => Latest::Timeout { ms: ms(timeout) },
            Outcome::Status(status) => Latest::Status { status: *status },
            Outcome::Failed(error) => Latest::Failed {
                error: error.clone(),
            },
        }),
        waiting_ms,
        window: stats.seen.clone(),
        failures: stats.failures(),
        waiting: stats.waiting,
    }
}

/// Milliseconds to 3 decimals, as every number in diag's JSON.
fn ms(duration: Duration) -> f64 {
    crate::histogram::round_ms(duration.as_secs_f64() * 1e3)
}

/// A latency in milliseconds as a line shows it (`0.3ms`, `1.204s`), or `-`.
fn ms_cell(ms: Option<f64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| seconds(Duration::from_secs_f64(ms / 1e3)),
    )
}

/// Left-aligned text columns (the first two), right-aligned numbers (the rest).
fn table<const N: usize>(head: &[String; N], rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|column| {
            std::iter::once(head)
                .chain(rows)
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in std::iter::once(head).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(column, (cell, width))| match column {
                0 | 1 => format!("{cell:<width$}"),
                _ => format!("{cell:>width$}"),
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProbeStats;

    #[test]
    fn a_window_cell_reads_left_to_right() {
        let stats = WindowStats {
            seen: ProbeStats {
                samples: 3,
                p50_ms: Some(0.3),
                p99_ms: Some(1204.0),
                max_ms: Some(1204.0),
                errors: 1,
                ..ProbeStats::default()
            },
            waiting: 0,
        };
        assert_eq!(
            window_cell(&stats),
            "p50 0.3ms p99 1.204s max 1.204s, 1/4 failed"
        );
        let stats = WindowStats {
            seen: ProbeStats {
                samples: 5,
                ..stats.seen
            },
            waiting: 2,
        };
        assert_eq!(
            window_cell(&stats),
            "p50 0.3ms p99 1.204s max 1.204s, 1/4 failed, 2 waiting"
        );
        assert_eq!(
            window_cell(&WindowStats::default()),
            "p50 - p99 - max -, 0/0 failed"
        );
    }

    #[test]
    fn the_summary_table_aligns_its_columns() {
        let head = ["probe", "request", "p99"].map(str::to_owned);
        let rows = [
            ["a".into(), "GET http://x/a".into(), "0.3ms".into()],
            ["long".into(), "GET /b".into(), "1.204s".into()],
        ];
        assert_eq!(
            table(&head, &rows),
            "probe  request            p99\n\
             a      GET http://x/a   0.3ms\n\
             long   GET /b          1.204s\n"
        );
    }
}
