//! `make demo-scale` (`cargo xtask fleet demo`): a fleet of three gateways behind HAProxy, under
//! a steady load of streams from `diag llm`, taken through the steps of [`super::steps`] while
//! a line of numbers per second shows each instance's streams, its requests served, its
//! `/readyz` and HAProxy's view of it. It ends with a verdict table (like `diag demo`'s), and
//! writes `target/fleet/demo-scale.json` and `target/fleet/demo-scale.svg`.
//!
//! The per-second view is sampled here, not by a diag subcommand, because the steps wait on the
//! same readings (HAProxy's `show stat`, each `/readyz`) to move on, and the verdicts come from
//! the numbers that were printed. The picture is drawn by diag's library
//! ([`diag::fleet_plot`]), where plotters and the style of `diag demo --plot` already live; xtask
//! only hands it the timeline.

use std::process::ExitCode;

use anyhow::Result;
use serde_json::json;

use super::steps::{self, Outcome, Stage, Verdict};
use super::watch::{Sample, Targets, Watcher};
use super::{Fleet, Layout, Needs, fleet_dir, mock_flags, refuse_missing};
use crate::cli::ScaleArgs;
use crate::services;

/// `cargo xtask fleet demo`.
pub fn run(args: &ScaleArgs) -> Result<ExitCode> {
    services::catch_ctrl_c();
    if let Some(code) = refuse_missing(Needs::ALL) {
        return Ok(code);
    }
    let bin_dir = services::build(args.debug)?;
    let dir = fleet_dir();
    let mut fleet = Fleet::start(&dir, &bin_dir, Layout::fixed(3), Needs::ALL, &mock_flags())?;
    println!(
        "xtask: {}\nxtask: diag llm starts {} streams a second through HAProxy at {} (stats page \
         http://{}/)\n",
        fleet.shared_summary(),
        args.rate,
        fleet.url(),
        fleet.layout.stats
    );
    let targets = Targets::of(&fleet);
    let watcher = Watcher::start(targets.clone());
    let outcomes = {
        let mut stage = Stage {
            fleet: &mut fleet,
            targets,
            origin: watcher.origin,
            diag: bin_dir.join("diag"),
            dir: dir.clone(),
            rate: args.rate,
        };
        run_steps(&mut stage, &watcher)
    };
    let samples = watcher.finish();
    drop(fleet);
    println!("xtask: the fleet is stopped");
    let outcomes = outcomes?;

    println!("\n{}", table(&outcomes));
    let report = dir.join("demo-scale.json");
    let picture = dir.join("demo-scale.svg");
    let json = json!({"kind": "demo-scale", "steps": outcomes, "samples": samples});
    std::fs::write(&report, serde_json::to_string_pretty(&json)? + "\n")?;
    diag::fleet_plot::write(&picture, &timeline(&samples, &outcomes))?;
    println!(
        "xtask: JSON in {}, picture in {}, logs in {}",
        report.display(),
        picture.display(),
        dir.display()
    );
    let failed = outcomes.iter().any(|o| o.verdict == Verdict::Fail);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The steps in order, each announced and named on the per-second lines.
fn run_steps(stage: &mut Stage<'_>, watcher: &Watcher) -> Result<Vec<Outcome>> {
    type Step = fn(&mut Stage<'_>) -> Result<Outcome>;
    let all: [(&str, &str, Step); 5] = [
        ("a.spread", "streams spread by leastconn", steps::spread),
        ("b.starve", "starve one instance", steps::starve),
        ("c.rolling", "rolling restart under load", steps::rolling),
        ("d.jobs", "SIGKILL one with jobs", steps::kill_with_jobs),
        ("e.rate", "one key's rate across the fleet", steps::rate),
    ];
    let mut outcomes = Vec::new();
    for (name, what, step) in all {
        println!("\nxtask: step {name}: {what}");
        watcher.step(name);
        let outcome = step(stage)?;
        println!(
            "xtask: step {name}: {}: {}",
            outcome.verdict.word(),
            outcome.measured
        );
        outcomes.push(outcome);
    }
    watcher.step("end");
    Ok(outcomes)
}

/// The verdict table.
fn table(outcomes: &[Outcome]) -> String {
    let mut text = String::from("make demo-scale: verdicts\n\n");
    text.push_str(&format!(
        "{:<10} {:<8} {}\n",
        "step", "verdict", "claim / measured"
    ));
    for o in outcomes {
        text.push_str(&format!(
            "{:<10} {:<8} {}\n",
            o.step,
            o.verdict.word(),
            o.claim
        ));
        text.push_str(&format!("{:<19} {}\n", "", o.measured));
    }
    let count = |v: Verdict| outcomes.iter().filter(|o| o.verdict == v).count();
    text.push_str(&format!(
        "\n{} passed, {} failed, {} skipped",
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Skipped)
    ));
    text
}

/// The samples as diag's plot wants them.
fn timeline(samples: &[Sample], outcomes: &[Outcome]) -> diag::fleet_plot::Timeline {
    let instances = samples.first().map_or(0, |s| s.instances.len());
    diag::fleet_plot::Timeline {
        instances: (1..=instances).map(|i| format!("gw{i}")).collect(),
        points: samples
            .iter()
            .map(|s| diag::fleet_plot::Point {
                t: s.t,
                streams: s.instances.iter().map(|i| i.streams).collect(),
                ready: s.instances.iter().map(|i| i.readyz == Some(200)).collect(),
                routed: s.instances.iter().map(|i| i.routed()).collect(),
            })
            .collect(),
        steps: outcomes
            .iter()
            .map(|o| diag::fleet_plot::Step {
                name: o.step.to_owned(),
                from: o.from_s,
                to: o.to_s,
                verdict: o.verdict.word().to_owned(),
            })
            .collect(),
    }
}
