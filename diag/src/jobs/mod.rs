//! `diag jobs`: submit N jobs to a gateway's `/v1/jobs`, poll them to their end, and report
//! how fast they were accepted (each a durable commit) and how long each took end to end.
//!
//! Two phases, measured apart. **Submit**: `-c` submits in flight, each waiting for its 202,
//! which the gateway sends only once the job is on disk: accepted per second is the store's
//! commit rate as a client sees it. **Drain**: every round, the oldest `--poll-window`
//! unfinished jobs are polled at once, then diag sleeps `--poll-interval`. A job's end-to-end
//! time runs from its submit to the poll that first saw it finished, so it is late by at most
//! one round; with the queue in order, the window sees each job finish nearly when it does.

pub mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use serde_json::{Value, json};

use crate::Error;
use crate::cli::jobs::JobsArgs;
use crate::histogram::Latencies;
use report::{JobsReport, Phase};

/// Runs `diag jobs` and prints (and writes) its report.
pub fn run(args: &JobsArgs) -> Result<(), Error> {
    crate::measure_and_report(measure(args), args.json.as_deref(), "report written to")
}

/// One submitted job: when its submit began, and when it was seen finished.
struct Submitted {
    id: String,
    at: Instant,
}

async fn measure(args: &JobsArgs) -> Result<JobsReport, Error> {
    let base: reqwest::Url = args.base_url.parse().context("the base URL")?;
    crate::reachable::check_reachable(&base, Duration::from_secs(5)).await?;
    let client = reqwest::Client::builder()
        .default_headers(args.access.header_map()?)
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")?;
    let body = Arc::new(json!({
        "model": args.model,
        "messages": [{"role": "user", "content": "A job from diag."}],
    }));
    let submit_url = format!("{}/v1/jobs", args.base_url);
    let started = Instant::now();

    // Submit: -c at a time, in order of n.
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut submit_latency = Latencies::new()?;
    let mut jobs: Vec<(u64, Submitted)> = Vec::new();
    let mut max_position = 0;
    let mut pending = FuturesUnordered::new();
    let mut next = 0;
    while next < args.jobs || !pending.is_empty() {
        while next < args.jobs && pending.len() < args.concurrency as usize {
            let (client, url, body) = (client.clone(), submit_url.clone(), Arc::clone(&body));
            let n = next;
            pending.push(async move {
                let at = Instant::now();
                let answer = client.post(&url).json(&*body).send().await;
                (n, at, answer)
            });
            next += 1;
        }
        let Some((n, at, answer)) = pending.next().await else {
            break;
        };
        submit_latency.record(at.elapsed());
        match answer {
            Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                let job: Value = response.json().await.context("a 202 without a job")?;
                let id = job["id"]
                    .as_str()
                    .context("a job without an id")?
                    .to_owned();
                max_position = max_position.max(job["queue_position"].as_u64().unwrap_or(0));
                jobs.push((n, Submitted { id, at }));
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                let code = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
                let key = code.map_or_else(|| status.to_string(), |c| format!("{status} {c}"));
                *refused.entry(key).or_default() += 1;
            }
            Err(error) => {
                *refused.entry(crate::root_cause(&error)).or_default() += 1;
            }
        }
    }
    let submit = Phase {
        seconds: started.elapsed().as_secs_f64(),
        latency: submit_latency.spread(),
    };
    jobs.sort_by_key(|(n, _)| *n);
    let accepted = jobs.len() as u64;

    // Drain: poll the oldest unfinished ones until every job has ended or the time is up.
    let mut end_to_end = Latencies::new()?;
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut unfinished: Vec<Submitted> = jobs.into_iter().map(|(_, job)| job).collect();
    let deadline = started + args.timeout;
    let polling = !args.no_wait;
    while polling && !unfinished.is_empty() && Instant::now() < deadline {
        let window = unfinished.len().min(args.poll_window as usize);
        let polls = unfinished[..window].iter().map(|job| {
            let url = format!("{}/v1/jobs/{}", args.base_url, job.id);
            let client = client.clone();
            async move {
                let job: Option<Value> = match client.get(&url).send().await {
                    Ok(response) => response.json().await.ok(),
                    Err(_) => None,
                };
                job.and_then(|job| job["status"].as_str().map(str::to_owned))
            }
        });
        let statuses = futures_util::future::join_all(polls).await;
        let seen = Instant::now();
        let mut index = 0;
        unfinished.retain(|job| {
            let status = statuses.get(index).cloned().flatten();
            index += 1;
            match status.as_deref() {
                Some(done @ ("completed" | "failed" | "cancelled" | "expired")) => {
                    *by_status.entry(done.to_owned()).or_default() += 1;
                    end_to_end.record(seen - job.at);
                    false
                }
                _ => true,
            }
        });
        tokio::time::sleep(args.poll_interval).await;
    }
    Ok(JobsReport::new(
        args,
        accepted,
        refused,
        submit,
        max_position,
        by_status,
        if polling { unfinished.len() as u64 } else { 0 },
        end_to_end.spread(),
        started.elapsed(),
    ))
}
