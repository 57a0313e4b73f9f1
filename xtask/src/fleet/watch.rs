//! What the fleet looks like right now, from the outside: each gateway's own `/metrics` and
//! `/readyz` (on its admin plane, so a starved instance still answers), and HAProxy's `show stat`
//! (what the load balancer decided). Sampled once a second on a thread of its own and printed as
//! one line, so a person sees the spread, the readiness and the routing move together.
//!
//! Three views of one instance, because they disagree exactly when it matters: the gateway says
//! 503 at once, HAProxy believes it two checks later, and the streams already on it run on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::prometheus::samples;
use common::services::haproxy::{BACKEND, StatRow, show_stat};
use serde::Serialize;

use super::Fleet;

/// An HTTP agent for the admin planes: short timeouts, and a 503 is an answer, not an error.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_millis(800)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// One instance at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstanceSample {
    /// `gateway_live_streams`: response bodies it is relaying now.
    pub streams: Option<f64>,
    /// The sum of `gateway_requests_total`: every request it answered so far.
    pub requests: Option<f64>,
    /// `/readyz`'s status code (`None`: no answer, e.g. the process is down).
    pub readyz: Option<u16>,
    /// HAProxy's status for it (`UP`, `DOWN`, `UP 1/2`, `DOWN 1/3`, `MAINT`).
    pub haproxy: String,
    /// HAProxy's open sessions to it (`scur`).
    pub sessions: u64,
}

impl InstanceSample {
    pub fn routed(&self) -> bool {
        self.haproxy.starts_with("UP")
    }
}

/// The fleet at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the demo started.
    pub t: f64,
    /// The step running then.
    pub step: String,
    pub instances: Vec<InstanceSample>,
    /// HAProxy's frontend: 5xx answers sent to clients so far (its own 503s included).
    pub client_5xx: u64,
    /// HAProxy's backend: retries and redispatches so far.
    pub retries: u64,
    pub redispatches: u64,
}

/// Where to look: each instance's admin plane, and HAProxy's stats socket.
#[derive(Debug, Clone)]
pub struct Targets {
    admins: Vec<std::net::SocketAddr>,
    servers: Vec<String>,
    socket: std::path::PathBuf,
}

impl Targets {
    pub fn of(fleet: &Fleet) -> Self {
        Targets {
            admins: fleet.gateways.list.iter().map(|g| g.admin).collect(),
            servers: fleet
                .gateways
                .list
                .iter()
                .map(|g| g.server.clone())
                .collect(),
            socket: fleet.haproxy.socket(),
        }
    }

    /// Reads everything once.
    pub fn sample(&self, agent: &ureq::Agent, t: f64, step: &str) -> Sample {
        let stats = show_stat(&self.socket).unwrap_or_default();
        let row = |proxy: &str, server: &str| -> Option<&StatRow> {
            stats
                .iter()
                .find(|r| r.proxy == proxy && r.server == server)
        };
        let instances = self
            .admins
            .iter()
            .zip(&self.servers)
            .map(|(admin, server)| {
                let metrics = get(agent, &format!("http://{admin}/metrics"));
                let (streams, requests) = match metrics {
                    Some((200, text)) => {
                        let live = samples(&text, "gateway_live_streams");
                        let answered = samples(&text, "gateway_requests_total");
                        (
                            live.first().map(|(_, v)| *v),
                            Some(answered.iter().map(|(_, v)| v).sum()),
                        )
                    }
                    _ => (None, None),
                };
                let haproxy = row(BACKEND, server);
                InstanceSample {
                    streams,
                    requests,
                    readyz: get(agent, &format!("http://{admin}/readyz")).map(|(code, _)| code),
                    haproxy: haproxy.map_or("?", |r| r.get("status")).to_owned(),
                    sessions: haproxy.map_or(0, |r| r.number("scur")),
                }
            })
            .collect();
        let frontend = stats
            .iter()
            .find(|r| r.server == "FRONTEND" && r.proxy != "stats");
        let backend = row(BACKEND, "BACKEND");
        Sample {
            t,
            step: step.to_owned(),
            instances,
            client_5xx: frontend.map_or(0, |r| r.number("hrsp_5xx")),
            retries: backend.map_or(0, |r| r.number("wretr")),
            redispatches: backend.map_or(0, |r| r.number("wredis")),
        }
    }
}

/// `GET url`'s status and body, `None` when nothing answered.
pub fn get(agent: &ureq::Agent, url: &str) -> Option<(u16, String)> {
    let mut response = agent.get(url).call().ok()?;
    let code = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Some((code, body))
}

/// The column heads of [`line()`].
pub fn header(instances: usize) -> String {
    let cols = |label: &str, width: usize| format!("{label:<w$}", w = width * instances);
    format!(
        "{:>5} {:<10} | {} | {} | {} | {} | {:>4} {:>5} {:>6}",
        "t",
        "step",
        cols("streams", 5),
        cols("served/s", 5),
        cols("readyz", 5),
        cols("haproxy", 9),
        "5xx",
        "retry",
        "redisp"
    )
}

/// One sample as a line: streams per instance, requests served in the last second, `/readyz`,
/// HAProxy's view, and what the clients got (5xx) and HAProxy retried, since the last line.
/// HAProxy's status is printed as it says it: `UP 1/2` is up with one failed check of the two
/// that take it down, `DOWN 1/3` down with one good check of the three that bring it back.
pub fn line(sample: &Sample, previous: Option<&Sample>) -> String {
    let num = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0}"));
    let streams: String = sample
        .instances
        .iter()
        .map(|i| format!("{:>4} ", num(i.streams)))
        .collect();
    let served: String = sample
        .instances
        .iter()
        .enumerate()
        .map(|(k, i)| {
            let before = previous.and_then(|p| p.instances.get(k)?.requests);
            let delta = match (i.requests, before) {
                (Some(now), Some(then)) if now >= then => Some(now - then),
                _ => None,
            };
            format!("{:>4} ", num(delta))
        })
        .collect();
    let readyz: String = sample
        .instances
        .iter()
        .map(|i| format!("{:>4} ", i.readyz.map_or("-".into(), |c| c.to_string())))
        .collect();
    let routed: String = sample
        .instances
        .iter()
        .map(|i| format!("{:<8} ", i.haproxy))
        .collect();
    let since = |now: u64, then: Option<u64>| now.saturating_sub(then.unwrap_or(now));
    format!(
        "{:>4.0}s {:<10} | {streams}| {served}| {readyz}| {routed}| {:>4} {:>5} {:>6}",
        sample.t,
        sample.step,
        since(sample.client_5xx, previous.map(|p| p.client_5xx)),
        since(sample.retries, previous.map(|p| p.retries)),
        since(sample.redispatches, previous.map(|p| p.redispatches)),
    )
}

/// The sampler: a thread that reads the fleet once a second, prints the line, and keeps every
/// sample for the report and the picture. The step it records is whatever [`Watcher::step`] set.
pub struct Watcher {
    step: Arc<Mutex<String>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub origin: Instant,
}

impl Watcher {
    pub fn start(targets: Targets) -> Self {
        let step = Arc::new(Mutex::new(String::from("start")));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let origin = Instant::now();
        let thread = std::thread::spawn({
            let (step, samples, stop) = (step.clone(), samples.clone(), stop.clone());
            move || {
                let agent = agent();
                println!("{}", header(targets.admins.len()));
                let mut next = origin;
                while !stop.load(Ordering::SeqCst) {
                    let current = step.lock().map(|s| s.clone()).unwrap_or_default();
                    let t = origin.elapsed().as_secs_f64();
                    let sample = targets.sample(&agent, t, &current);
                    if let Ok(mut all) = samples.lock() {
                        println!("{}", line(&sample, all.last()));
                        all.push(sample);
                    }
                    next += Duration::from_secs(1);
                    while Instant::now() < next && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        });
        Watcher {
            step,
            samples,
            stop,
            thread: Some(thread),
            origin,
        }
    }

    /// Names the step the next samples belong to.
    pub fn step(&self, name: &str) {
        if let Ok(mut step) = self.step.lock() {
            *step = name.to_owned();
        }
    }

    /// Stops the thread and returns every sample.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_deltas_since_the_last_sample() {
        let instance = |streams, requests, readyz, haproxy: &str| InstanceSample {
            streams: Some(streams),
            requests: Some(requests),
            readyz,
            haproxy: haproxy.to_owned(),
            sessions: 0,
        };
        let before = Sample {
            t: 1.0,
            step: "a.spread".into(),
            instances: vec![instance(8.0, 100.0, Some(200), "UP")],
            client_5xx: 2,
            retries: 1,
            redispatches: 1,
        };
        let now = Sample {
            t: 2.0,
            instances: vec![instance(9.0, 112.0, Some(503), "UP 1/2")],
            client_5xx: 2,
            retries: 4,
            ..before.clone()
        };
        let text = line(&now, Some(&before));
        assert!(text.contains("   9 |   12 |  503 | UP 1/2   |"), "{text}");
        assert!(text.ends_with("   0     3      0"), "{text}");
        assert!(
            line(&now, None).contains("   - |"),
            "no delta without a previous sample"
        );
    }
}
