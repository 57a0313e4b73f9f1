//! `diag demo`: put a known load on the gateway and measure, from the side, what it does to
//! everyone else.
//!
//! The run, in order:
//!
//! 1. one `/debug/health-async` probe: is anything listening? If not, stop with exit code 3
//!    rather than report a "verdict" about a gateway that is not there; then one `/readyz` of
//!    the admin plane, to know whether to probe it ([`crate::admin`]);
//! 2. a baseline of `/debug/pool`, then sampling every 250 ms ([`crate::pool`]);
//! 3. the process sampler, if a pid was given ([`crate::process`]);
//! 4. the prober, on its own thread ([`crate::probe`]): the three health endpoints, and the
//!    admin plane's `/readyz` when there is one;
//! 5. the N streams ([`streams`]), then, for `--duration`: count flowing streams every
//!    100 ms and print a live line every second;
//! 6. drop the remaining streams *first* (in broken mode that frees the pool threads, so the
//!    probes still waiting for one can answer), then stop the probes and samplers;
//! 7. the table, the verdict ([`report`]), the JSON file, the picture (`--plot`, [`plot`]), and the
//!    exit status: a `FAILED` run exits with [`Error::Failed`]'s code whatever `--expect` said
//!    (a failed run matches neither verdict), otherwise the `--expect` check.
//!
//! Along the way the probes, the pool sampler and the flowing count also record each point
//! with its time in a [`Timeline`], which the picture is drawn from.
//!
//! The demo's own pieces sit in this folder; what it shares with `diag watch` and `diag llm`
//! (the prober, the pool sampler, the live line, the process sampler) sits beside it.

pub mod plot;
pub mod report;
pub mod streams;
pub mod timeline;
pub mod verdict;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::{Instant, MissedTickBehavior};

use crate::Error;
use crate::admin;
use crate::cli::{DemoArgs, Expect};
use crate::live;
use crate::pool::PoolWatch;
use crate::probe::{self, Endpoint, Prober, Target};
use crate::process::ProcessWatch;
use crate::readiness::ReadinessReport;
use plot::PlotInfo;
use report::{Measurements, Outage, ProbeReport, Report, Verdict};
use streams::Streams;
use timeline::{Series, Timeline};

/// How often the flowing streams are counted: well under the chunk interval of any sensible
/// query, so a stream's flowing period cannot fall between two samples.
const FLOWING_EVERY: Duration = Duration::from_millis(100);
const POOL_EVERY: Duration = Duration::from_millis(250);
const PROCESS_EVERY: Duration = Duration::from_millis(250);
const LIVE_EVERY: Duration = Duration::from_secs(1);

/// Runs `diag demo` to the end: measure, print, write JSON, check `--expect`.
pub fn run(args: &DemoArgs) -> Result<(), Error> {
    // A multi-thread runtime for the load: the streams and samplers share it. The probes do
    // not; they bring their own (see `probe`).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot build the tokio runtime")?;
    let (report, series) = runtime.block_on(measure(args))?;
    print!("\n{report}");
    if let Some(path) = &args.json {
        report.write_json(path)?;
        println!("report written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        let info = PlotInfo {
            mode: report.mode.clone(),
            streams: args.streams,
            duration: args.duration,
            verdict: report.verdict,
            reason: report.verdict_reason.clone(),
            probe_interval: args.probe_interval,
            probe_timeout: args.probe_timeout,
            sync_budget: args.sync_budget,
        };
        plot::write(path, &series, &info)?;
        println!("plot written to {}", path.display());
    }
    let expected = args.expect.map(|expect| match expect {
        Expect::Exhausted => Verdict::Exhausted,
        Expect::Healthy => Verdict::Healthy,
    });
    if report.verdict == Verdict::Failed {
        let mut reason = report.verdict_reason;
        if let Some(expected) = expected {
            reason.push_str(&format!(" (so not `{expected}`, as --expect asked)"));
        }
        return Err(Error::Failed { reason });
    }
    if let Some(expected) = expected
        && report.verdict != expected
    {
        return Err(Error::UnexpectedVerdict {
            expected,
            got: report.verdict,
            reason: report.verdict_reason,
        });
    }
    Ok(())
}

async fn measure(args: &DemoArgs) -> Result<(Report, Series), Error> {
    // `--api-key` and `-H` on every request: the first probe, the pool samples, the streams,
    // and (through the prober's own client) every probe.
    let headers = args.access.header_map()?;
    let client = reqwest::Client::builder()
        .default_headers(headers.clone())
        .build()
        .context("cannot build the HTTP client")?;
    let gateway = args.gateway.clone();

    match probe::probe(&client, &gateway, Endpoint::HealthAsync, args.probe_timeout).await {
        probe::Outcome::Failed(reason) => {
            return Err(Error::Unreachable {
                url: gateway,
                reason,
            });
        }
        probe::Outcome::TimedOut => {
            let reason = format!("no answer within {:?}", args.probe_timeout);
            return Err(Error::Unreachable {
                url: gateway,
                reason,
            });
        }
        // Any HTTP answer, even a 404, means something is listening; the run will tell what.
        probe::Outcome::Answered { .. } | probe::Outcome::Status(_) => {}
    }
    let admin = admin::resolve(&client, args.admin.as_ref(), &gateway, args.probe_timeout).await?;

    let timeline = Timeline::new();
    let pool = {
        let timeline = timeline.clone();
        PoolWatch::start(
            client.clone(),
            gateway.clone(),
            POOL_EVERY,
            args.probe_timeout,
            Some(Box::new(move |at, snapshot| {
                timeline.record_pool(at, snapshot);
            })),
        )
        .await
    };
    let process = match args.gateway_pid() {
        None => None,
        Some(pid) => match ProcessWatch::start(pid, PROCESS_EVERY) {
            Ok(watch) => Some(watch),
            Err(reason) => {
                eprintln!("diag: warning: {reason}; the process row stays empty");
                None
            }
        },
    };
    let prober = {
        let (timeline, timeout) = (timeline.clone(), args.probe_timeout);
        let mut targets: Vec<Target> = Endpoint::ALL
            .iter()
            .map(|endpoint| Target::at(&gateway, *endpoint))
            .collect();
        // Beside the others, on the same thread and schedule: what differs is only where it
        // is answered.
        targets.extend(
            admin
                .iter()
                .map(|admin| Target::at(admin, Endpoint::Readyz)),
        );
        Prober::start(
            headers,
            &targets,
            args.probe_interval,
            args.probe_timeout,
            Some(Arc::new(move |_, endpoint, sent, outcome| {
                timeline.record_probe(endpoint, sent, outcome, timeout);
            })),
        )?
    };

    let url = match args.stream_query.raw.as_str() {
        "" => format!("{gateway}{}", args.stream_path),
        query => format!("{gateway}{}?{query}", args.stream_path),
    };
    let readiness = match &admin {
        Some(admin) => format!(" and {admin}/readyz"),
        None => String::new(),
    };
    println!(
        "diag demo: {} streams of GET {url} for {:?}; probing health{readiness} every {:?}",
        args.streams, args.duration, args.probe_interval
    );
    let mut streams = Streams::start(&client, &url, args.streams, args.stream_query.interval);

    let started = Instant::now();
    let deadline = started + args.duration;
    let mut flowing_ticks = tokio::time::interval(FLOWING_EVERY);
    flowing_ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first live line after one second, not at zero, when nothing has happened yet.
    let mut live_ticks = tokio::time::interval_at(started + LIVE_EVERY, LIVE_EVERY);
    live_ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut flowing = 0;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            _ = flowing_ticks.tick() => {
                flowing = streams.sample_flowing();
                timeline.record_flowing(std::time::Instant::now(), flowing);
            }
            _ = live_ticks.tick() => {
                let [sync, async_, health] = live::prober_cells(&prober);
                let pool_cell = live::pool_cell(pool.latest().as_ref());
                let line = format!(
                    "{:>3}s  {} | streams {flowing}/{} flowing",
                    started.elapsed().as_secs_f64().round() as u64,
                    live::readings(&sync, &async_, &health, &pool_cell),
                    streams.requested(),
                );
                let readyz = admin.as_ref().map(|_| live::prober_readyz_cell(&prober));
                println!("{}", live::with_readyz(line, readyz.as_deref()));
            }
        }
    }

    let streams = streams.finish().await;
    let probed = prober.finish().await;
    let outage = Outage::new(&probed.unanswered, started.into_std());
    let readiness = admin.map(|admin| {
        ReadinessReport::new(
            format!("{admin}/readyz"),
            &probed.readiness,
            started.into_std(),
        )
    });
    let probes = ProbeReport::from(probed);
    let pool = pool.finish().await;
    let process = match process {
        Some(watch) => watch.finish().await,
        None => Default::default(),
    };
    let report = Report::new(Measurements {
        gateway,
        stream_path: args.stream_path.clone(),
        stream_query: args.stream_query.raw.clone(),
        duration: args.duration,
        sync_budget: args.sync_budget,
        streams,
        probes,
        pool,
        process,
        outage,
        readiness,
    });
    // After the probes have drained: every probe sent during the run is in the timeline.
    Ok((report, timeline.series()))
}
