//! Health probes: one request to one health endpoint, timed; and the one prober that fires them
//! on a fixed schedule from its own OS thread, for `diag demo` (all three endpoints, and the
//! admin plane's `/readyz` when there is one), for `diag llm --health` (`/health` alone, or
//! `--health-url`: the demo's three would add two probes to the load, one of them holding a
//! gateway pool thread) and for `diag watch --probe` (whatever URLs the user names).
//!
//! A probe has a [`Target`]: which endpoint it is (that says how to read the answer), the URL
//! it goes to, and how to ask ([`Ask`]: a plain `GET` unless a user said otherwise). Most are
//! the gateway's base URL plus the endpoint's path; `/readyz` lives on another port
//! (`--admin`), `diag llm --health-url` may point anywhere, and a `diag watch --probe` is any
//! service's URL ([`Endpoint::Url`]). One prober, one thread, whatever the URLs: every probe is
//! timed the same way.
//!
//! Two rules keep the numbers honest:
//!
//! - **Own thread, own runtime, own client.** A probe that shared the load's runtime would also
//!   measure how long that runtime took to poll it, and a probe sharing the load's connection
//!   pool could queue behind a stream. The prober runs on a dedicated thread with a
//!   current-thread runtime and its own `reqwest::Client`, so its latency is the gateway's.
//! - **Open loop.** Each probe fires on schedule in its own task, whether or not the previous one
//!   has answered. A closed loop (send, wait, send) sends fewer probes exactly when the gateway
//!   is slow, and its percentiles forget the time spent waiting: the coordinated-omission
//!   mistake. A probe that times out is recorded *at* the timeout, not dropped, for the same
//!   reason: leaving it out would make a stalled gateway look faster.
//!
//! Besides latencies, the prober keeps one thing across its endpoints: the probes that got no
//! HTTP answer at all ([`Unanswered`]). A slow or starved target still answers, late or with a
//! timeout; a target that is gone refuses or resets the connection. That difference is what
//! lets `diag demo` tell a failing target from a starved one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::histogram::Latencies;
use crate::readiness::{Ready, Seen};
use crate::statuses::Statuses;
use crate::{lock, root_cause};

/// The gateway's health endpoints, each answering a different question (see the gateway's
/// `health` module), and [`Endpoint::Url`], any other service's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Answers from inside a blocking-pool job: waits for a free pool thread.
    HealthSync,
    /// Answers on an async worker: stays fast while the pool starves.
    HealthAsync,
    /// Times a trivial pool job against a threshold; 503 `degraded` when it is late.
    Health,
    /// The admin plane's readiness: the main runtime measured from another thread; 503
    /// `degraded`, `draining` or `starting` when not ready ([`crate::readiness`]).
    Readyz,
    /// A URL a user named (`diag watch --probe`), of a service diag knows nothing about: its
    /// answer is its HTTP status, judged by the target's [`Ask::expect`], and its body is read
    /// to the end (that is part of the latency) but not parsed.
    Url,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [
        Endpoint::HealthSync,
        Endpoint::HealthAsync,
        Endpoint::Health,
    ];

    /// The path [`Target::at`] appends to a base URL. A [`Endpoint::Url`]'s target holds its
    /// whole URL, so it has none (`""`).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::HealthSync => "/debug/health-sync",
            Endpoint::HealthAsync => "/debug/health-async",
            Endpoint::Health => "/health",
            Endpoint::Readyz => "/readyz",
            Endpoint::Url => "",
        }
    }

    /// The gateway's endpoints' places in the demo's timeline; a [`Endpoint::Url`] has none
    /// there (4, past its end: the demo never probes one).
    pub(crate) fn index(self) -> usize {
        match self {
            Endpoint::HealthSync => 0,
            Endpoint::HealthAsync => 1,
            Endpoint::Health => 2,
            Endpoint::Readyz => 3,
            Endpoint::Url => 4,
        }
    }

    /// Whether a 503 is an answer: a health check saying "not now" (with its reason in the
    /// body) has answered; a 503 from a debug endpoint has not.
    fn answers_with_503(self) -> bool {
        matches!(self, Endpoint::Health | Endpoint::Readyz)
    }
}

/// One thing to probe: the endpoint (how to read its answer) at a URL, and how to ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint: Endpoint,
    pub url: String,
    pub ask: Ask,
}

impl Target {
    /// `endpoint` on the service at `base` (a base URL without a trailing `/`).
    pub fn at(base: &str, endpoint: Endpoint) -> Self {
        Self::whole(endpoint, format!("{base}{}", endpoint.path()))
    }

    /// `endpoint` read at `url`, a whole URL, asked the default way.
    pub fn whole(endpoint: Endpoint, url: String) -> Self {
        Self {
            endpoint,
            url,
            ask: Ask::default(),
        }
    }
}

/// How a probe asks, beyond its URL. The default is what diag's own probes send: `GET`, no
/// headers of its own (the prober's client adds `--api-key` and `-H`), and the endpoint's
/// rule for what answers (a 2xx; for `/health` and `/readyz` a 503 too). `diag watch --probe`
/// sets each per probe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    pub method: reqwest::Method,
    /// Sent with this probe, besides the client's default headers (a name given here
    /// replaces the client's default of that name).
    pub headers: reqwest::header::HeaderMap,
    /// The statuses that answer; `None`: the endpoint's rule.
    pub expect: Option<Statuses>,
}

impl Ask {
    /// Whether `code` is an answer from `endpoint` (anything else is [`Outcome::Status`]).
    fn answers(&self, endpoint: Endpoint, code: reqwest::StatusCode) -> bool {
        match &self.expect {
            Some(expect) => expect.matches(code.as_u16()),
            None => code.is_success() || (endpoint.answers_with_503() && code.as_u16() == 503),
        }
    }
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The endpoint answered: a 2xx, or for `/health` and `/readyz` also a 503, which is a
    /// degraded gateway answering, not a failure to answer. `latency` runs from sending to the
    /// end of the body.
    Answered {
        latency: Duration,
        /// `/health`'s `status` (`ok`, `degraded`) or `/readyz`'s (`ready`, `degraded`, ...);
        /// `None` for the other endpoints.
        status: Option<String>,
        /// `/health`'s `mode` (`broken`, `fixed`).
        mode: Option<String>,
        /// `/readyz`'s failing checks and their delays; `None` for the other endpoints.
        ready: Option<Ready>,
    },
    /// No complete answer within the probe timeout.
    TimedOut,
    /// An HTTP status that is not an answer, e.g. 404 from a service without this endpoint
    /// (or, for a [`Endpoint::Url`], any status its [`Ask::expect`] does not list).
    Status(u16),
    /// No HTTP response at all (refused, reset, ...).
    Failed(String),
}

/// The part of `/health`'s and `/readyz`'s bodies diag reads first (their `checks` differ:
/// `/readyz`'s are read as [`Ready`]).
#[derive(Debug, Deserialize)]
struct HealthBody {
    status: Option<String>,
    mode: Option<String>,
}

/// Sends one `GET` to `endpoint` of the service at `gateway` and waits for the whole answer,
/// at most `timeout`.
pub async fn probe(
    client: &reqwest::Client,
    gateway: &str,
    endpoint: Endpoint,
    timeout: Duration,
) -> Outcome {
    probe_target(client, &Target::at(gateway, endpoint), timeout).await
}

/// Sends one request to `target` (a `GET`, unless its [`Ask`] says otherwise) and waits for the
/// whole answer, at most `timeout`.
pub async fn probe_target(client: &reqwest::Client, target: &Target, timeout: Duration) -> Outcome {
    let endpoint = target.endpoint;
    let sent = Instant::now();
    let exchange = async {
        let response = client
            .request(target.ask.method.clone(), &target.url)
            .headers(target.ask.headers.clone())
            .send()
            .await?;
        let code = response.status();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((code, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Outcome::TimedOut,
        Ok(Err(error)) => Outcome::Failed(root_cause(&error)),
        Ok(Ok((code, body))) => {
            let latency = sent.elapsed();
            if !target.ask.answers(endpoint, code) {
                return Outcome::Status(code.as_u16());
            }
            let (status, mode, ready) = match serde_json::from_slice::<HealthBody>(&body) {
                Ok(health) if endpoint == Endpoint::Health => (health.status, health.mode, None),
                Ok(health) if endpoint == Endpoint::Readyz => {
                    let ready = serde_json::from_slice::<Ready>(&body).unwrap_or_default();
                    (health.status, None, Some(ready))
                }
                _ => (None, None, None),
            };
            Outcome::Answered {
                latency,
                status,
                mode,
                ready,
            }
        }
    }
}

/// Latency percentiles and counts for one endpoint over a run. Milliseconds, 3 decimals;
/// the histogram keeps 3 significant digits, so a value is exact to 0.1%.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProbeStats {
    /// Probes that answered or timed out: the histogram's population.
    pub samples: u64,
    /// `None` (JSON null) when there were no samples.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Probes that got no answer within `--probe-timeout`; each is in the percentiles at the
    /// timeout value.
    pub timeouts: u64,
    /// Probes that failed otherwise (no connection, an unexpected status such as 404); not in
    /// the percentiles, because they measured nothing.
    pub errors: u64,
    /// The `status` of the last `/health` answer (`ok`, `degraded`), or `/readyz` answer
    /// (`ready`, `degraded`, ...); only for those two. The last answers may come after the
    /// streams were dropped, hence `statuses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<String>,
    /// How many answers carried each `status`; only for `/health` and `/readyz`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub statuses: BTreeMap<String, u64>,
}

impl ProbeStats {
    /// The stats of `latencies` (answers, and timeouts at the timeout value) and of the
    /// `timeouts` and `errors` among them; no statuses.
    pub fn of(latencies: &Latencies, timeouts: u64, errors: u64) -> Self {
        Self {
            samples: latencies.len(),
            p50_ms: latencies.quantile_ms(0.50),
            p95_ms: latencies.quantile_ms(0.95),
            p99_ms: latencies.quantile_ms(0.99),
            max_ms: latencies.max_ms(),
            timeouts,
            errors,
            ..Self::default()
        }
    }
}

/// One endpoint's running tally. Written by the probe thread, read by the live line.
#[derive(Debug)]
struct Tally {
    endpoint: Endpoint,
    /// Answers and timeouts alike.
    latencies: Latencies,
    timeouts: u64,
    errors: u64,
    /// The most recent probe to finish, whatever it saw.
    latest: Option<Outcome>,
    /// When each unanswered probe was sent, by sequence number: the oldest one tells the live
    /// line that the latest answer is stale.
    in_flight: BTreeMap<u64, Instant>,
    last_status: Option<String>,
    statuses: BTreeMap<String, u64>,
    /// What `/readyz`'s answers said besides their status.
    seen: Seen,
}

impl Tally {
    fn new(endpoint: Endpoint) -> anyhow::Result<Self> {
        Ok(Self {
            endpoint,
            latencies: Latencies::new()?,
            timeouts: 0,
            errors: 0,
            latest: None,
            in_flight: BTreeMap::new(),
            last_status: None,
            statuses: BTreeMap::new(),
            seen: Seen::default(),
        })
    }

    /// Notes a probe sent at `sent` that saw `outcome`.
    fn record(&mut self, sent: Instant, outcome: &Outcome, timeout: Duration) {
        match outcome {
            Outcome::Answered {
                latency,
                status,
                ready,
                ..
            } => {
                self.latencies.record(*latency);
                if let Some(status) = status {
                    *self.statuses.entry(status.clone()).or_insert(0) += 1;
                    self.last_status = Some(status.clone());
                }
                if let Some(ready) = ready {
                    self.seen.record(sent, status.as_deref(), ready);
                }
            }
            Outcome::TimedOut => {
                self.latencies.record(timeout);
                self.timeouts += 1;
            }
            Outcome::Status(_) | Outcome::Failed(_) => self.errors += 1,
        }
        self.latest = Some(outcome.clone());
    }

    /// The latest probe and the age of the oldest one unanswered, now.
    fn latest_now(&self) -> Latest {
        let now = Instant::now();
        Latest {
            outcome: self.latest.clone(),
            oldest_waiting: self
                .in_flight
                .values()
                .next()
                .map(|sent| now.duration_since(*sent)),
        }
    }

    fn stats(&self) -> ProbeStats {
        ProbeStats {
            last_status: self.last_status.clone(),
            statuses: self.statuses.clone(),
            ..ProbeStats::of(&self.latencies, self.timeouts, self.errors)
        }
    }
}

/// The probes, of any endpoint, that got no HTTP answer at all (refused, reset, cut off): when
/// the first failed, and whether the target answered again after the last one. A status, even a
/// 404 or a 500, is an answer; a timeout is not counted here either (a stalled target may still
/// be there, see the module docs). Times are when the failure was *seen*, which for a probe
/// waiting when its connection was reset is the moment of the reset, not the moment it was sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Unanswered {
    /// How many probes got no HTTP answer.
    pub count: u64,
    /// When the first of them failed, and why (e.g. `Connection refused`).
    pub first: Option<(Instant, String)>,
    /// When the last of them failed.
    pub last: Option<Instant>,
    /// When the target stopped answering for good: the first failure after its last HTTP
    /// answer. `None` when it answered again after its last failure, or never failed.
    pub since: Option<Instant>,
}

impl Unanswered {
    /// Notes a probe that finished at `at` with `outcome`, in the order probes finish.
    fn record(&mut self, at: Instant, outcome: &Outcome) {
        match outcome {
            Outcome::Failed(reason) => {
                self.count += 1;
                self.first.get_or_insert_with(|| (at, reason.clone()));
                self.last = Some(at);
                self.since.get_or_insert(at);
            }
            Outcome::Answered { .. } | Outcome::Status(_) => self.since = None,
            Outcome::TimedOut => {}
        }
    }
}

/// State shared by the probe thread and whoever reads the probes while they run.
#[derive(Debug)]
struct Shared {
    /// One per target, in the order given to [`Prober::start`].
    tallies: Vec<Tally>,
    mode: Option<String>,
    unanswered: Unanswered,
    next_id: u64,
}

impl Shared {
    /// The first target of `endpoint`'s tally (the gateway's endpoints have one target each).
    fn tally(&mut self, endpoint: Endpoint) -> Option<&mut Tally> {
        self.tallies.iter_mut().find(|t| t.endpoint == endpoint)
    }
}

/// Called as each probe finishes, with its target's place in the list given to
/// [`Prober::start`], its endpoint, when it was sent, and what it saw. The demo records every
/// probe in its timeline this way, and `diag watch` its sliding windows; the prober needs to
/// know nothing of either.
pub type OnProbe = Arc<dyn Fn(usize, Endpoint, Instant, &Outcome) + Send + Sync>;

/// What is known of one endpoint while the probes run: enough for a live line.
#[derive(Debug, Clone, Default)]
pub struct Latest {
    /// The most recent probe to finish, whatever it saw.
    pub outcome: Option<Outcome>,
    /// How long the oldest probe still unanswered has been waiting.
    pub oldest_waiting: Option<Duration>,
}

/// What the probes saw, once they are done.
#[derive(Debug, Clone)]
pub struct Probed {
    stats: Vec<(Endpoint, ProbeStats)>,
    /// The gateway's `--mode`, from the last `/health` answer that named it.
    pub mode: Option<String>,
    /// The probes that got no HTTP answer, over the gateway's endpoints (not `/readyz`'s:
    /// the admin plane is another listener, and its silence says nothing of the gateway's).
    pub unanswered: Unanswered,
    /// What `/readyz`'s answers said; empty if it was not probed.
    pub readiness: Seen,
}

impl Probed {
    /// The stats of `endpoint`; no samples if it was not probed.
    pub fn stats(&self, endpoint: Endpoint) -> ProbeStats {
        self.stats
            .iter()
            .find(|(probed, _)| *probed == endpoint)
            .map(|(_, stats)| stats.clone())
            .unwrap_or_default()
    }

    /// Whether `endpoint` was probed at all.
    pub fn probed(&self, endpoint: Endpoint) -> bool {
        self.stats.iter().any(|(probed, _)| *probed == endpoint)
    }

    /// The stats of the target at `index` in the list given to [`Prober::start`].
    pub fn stats_of(&self, index: usize) -> ProbeStats {
        self.stats
            .get(index)
            .map(|(_, stats)| stats.clone())
            .unwrap_or_default()
    }
}

/// Probes some health endpoints every `every`, open loop, from its own thread.
#[derive(Debug)]
pub struct Prober {
    shared: Arc<Mutex<Shared>>,
    /// Dropping or sending ends the schedule; probes in flight then finish or time out.
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    every: Duration,
}

impl Prober {
    /// Starts the probe thread; the first probes (one per target) fire at once, each with
    /// `headers` (the key and `-H` of [`crate::cli::Access`]) and its target's own [`Ask`].
    /// `on_probe`, if given, sees every probe as it finishes. Each of the gateway's endpoints
    /// is probed at one target at most ([`Prober::latest`] finds it by endpoint); there may
    /// be any number of [`Endpoint::Url`]s, told apart by their place in `targets`.
    pub fn start(
        headers: reqwest::header::HeaderMap,
        targets: &[Target],
        every: Duration,
        timeout: Duration,
        on_probe: Option<OnProbe>,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared {
            tallies: targets
                .iter()
                .map(|target| Tally::new(target.endpoint))
                .collect::<anyhow::Result<_>>()?,
            mode: None,
            unanswered: Unanswered::default(),
            next_id: 0,
        }));
        // A current-thread runtime: the thread does nothing but wait on sockets and timers, so
        // one thread is enough, and nothing else can ever be scheduled in front of a probe.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the probe runtime")?;
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .context("cannot build the probe HTTP client")?;
        let (stop, stopped) = oneshot::channel();
        let schedule = Schedule {
            client,
            targets: targets.iter().cloned().map(Arc::new).collect(),
            every,
            timeout,
            shared: Arc::clone(&shared),
            on_probe,
        };
        let thread = std::thread::Builder::new()
            .name("diag-probe".into())
            .spawn(move || runtime.block_on(schedule.run(stopped)))
            .context("cannot start the probe thread")?;
        Ok(Self {
            shared,
            stop: Some(stop),
            thread: Some(thread),
            every,
        })
    }

    /// The probe period.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The latest probe of `endpoint` and the age of its oldest unanswered one.
    pub fn latest(&self, endpoint: Endpoint) -> Latest {
        let mut shared = lock(&self.shared);
        shared
            .tally(endpoint)
            .map(|tally| tally.latest_now())
            .unwrap_or_default()
    }

    /// [`Prober::latest`] of the target at `index` in the list given to [`Prober::start`].
    pub fn latest_of(&self, index: usize) -> Latest {
        let shared = lock(&self.shared);
        shared
            .tallies
            .get(index)
            .map(Tally::latest_now)
            .unwrap_or_default()
    }

    /// When each probe of the target at `index` still in flight was sent, oldest first.
    pub fn waiting_of(&self, index: usize) -> Vec<Instant> {
        let shared = lock(&self.shared);
        shared
            .tallies
            .get(index)
            .map(|tally| tally.in_flight.values().copied().collect())
            .unwrap_or_default()
    }

    /// Stops the schedule, waits for the probes still in flight (each at most its timeout),
    /// and returns the stats.
    pub async fn finish(mut self) -> Probed {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // `join` blocks; let a blocking-pool thread of diag's own runtime do the waiting.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.so_far()
    }

    /// The stats of the probes finished so far, while the schedule goes on; the ones still
    /// in flight are not in them. For an end that cannot wait up to a timeout for them (a
    /// person pressing Ctrl-C); [`Prober::finish`] is the complete account.
    pub fn so_far(&self) -> Probed {
        let shared = lock(&self.shared);
        Probed {
            stats: shared
                .tallies
                .iter()
                .map(|tally| (tally.endpoint, tally.stats()))
                .collect(),
            mode: shared.mode.clone(),
            unanswered: shared.unanswered.clone(),
            readiness: shared
                .tallies
                .iter()
                .find(|tally| tally.endpoint == Endpoint::Readyz)
                .map(|tally| tally.seen.clone())
                .unwrap_or_default(),
        }
    }
}

/// Everything the probe thread needs, moved onto it.
struct Schedule {
    client: reqwest::Client,
    targets: Vec<Arc<Target>>,
    every: Duration,
    timeout: Duration,
    shared: Arc<Mutex<Shared>>,
    on_probe: Option<OnProbe>,
}

impl Schedule {
    /// The probe thread's whole life: fire on every tick until told to stop, then drain.
    async fn run(self, mut stopped: oneshot::Receiver<()>) {
        let mut ticks = tokio::time::interval(self.every);
        // Should this thread itself ever be late, skip the missed ticks rather than fire a
        // burst: a burst would be load diag made up, not the steady probing the report describes.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut in_flight = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = ticks.tick() => {
                    for (index, target) in self.targets.iter().enumerate() {
                        in_flight.spawn(self.fire(index, target));
                    }
                }
                // Reap finished probes as they end, so the set holds only those in flight.
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// One probe of `target`, the `index`th, sent now, as a task of its own: open loop.
    fn fire(
        &self,
        index: usize,
        target: &Arc<Target>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let endpoint = target.endpoint;
        let sent = Instant::now();
        let id = {
            let mut shared = lock(&self.shared);
            shared.next_id += 1;
            let id = shared.next_id;
            if let Some(tally) = shared.tallies.get_mut(index) {
                tally.in_flight.insert(id, sent);
            }
            id
        };
        let (client, target, shared, on_probe, timeout) = (
            self.client.clone(),
            Arc::clone(target),
            Arc::clone(&self.shared),
            self.on_probe.clone(),
            self.timeout,
        );
        async move {
            let outcome = probe_target(&client, &target, timeout).await;
            {
                let mut shared = lock(&shared);
                if endpoint != Endpoint::Readyz {
                    shared.unanswered.record(Instant::now(), &outcome);
                }
                if let Outcome::Answered {
                    mode: Some(mode), ..
                } = &outcome
                {
                    shared.mode = Some(mode.clone());
                }
                if let Some(tally) = shared.tallies.get_mut(index) {
                    tally.in_flight.remove(&id);
                    tally.record(sent, &outcome, timeout);
                }
            }
            // Out of the in-flight set first, then to the callback: whoever reads both (the
            // watch's windows and `waiting_of`) may miss a probe for a moment, never count it
            // twice.
            if let Some(on_probe) = &on_probe {
                on_probe(index, endpoint, sent, &outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_counts_at_the_timeout_value() {
        let mut tally = Tally::new(Endpoint::HealthSync).expect("histogram");
        let timeout = Duration::from_secs(5);
        for _ in 0..98 {
            let answer = Outcome::Answered {
                latency: Duration::from_millis(2),
                status: None,
                mode: None,
                ready: None,
            };
            tally.record(Instant::now(), &answer, timeout);
        }
        tally.record(Instant::now(), &Outcome::TimedOut, timeout);
        tally.record(Instant::now(), &Outcome::TimedOut, timeout);
        tally.record(Instant::now(), &Outcome::Status(404), timeout);
        let stats = tally.stats();
        assert_eq!((stats.samples, stats.timeouts, stats.errors), (100, 2, 1));
        let p50 = stats.p50_ms.expect("samples");
        let max = stats.max_ms.expect("samples");
        assert!((1.99..2.01).contains(&p50), "{p50}");
        // hdrhistogram reports the top of the 3-significant-digit bucket holding 5 s.
        assert!((5000.0..5010.0).contains(&max), "{max}");
    }

    #[test]
    fn the_target_stopped_answering_at_its_first_failure_after_the_last_answer() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let answer = Outcome::Status(404);
        let refused = Outcome::Failed("Connection refused".into());
        let mut unanswered = Unanswered::default();
        unanswered.record(at(100), &answer);
        unanswered.record(at(200), &refused);
        unanswered.record(at(300), &Outcome::TimedOut);
        assert_eq!(unanswered.since, Some(at(200)));
        // It answered again: not gone for good, but the failures are still counted.
        unanswered.record(at(400), &answer);
        assert_eq!(unanswered.since, None);
        unanswered.record(at(500), &refused);
        unanswered.record(at(600), &refused);
        assert_eq!(unanswered.count, 3);
        assert_eq!(
            unanswered.first,
            Some((at(200), "Connection refused".into()))
        );
        assert_eq!(
            (unanswered.since, unanswered.last),
            (Some(at(500)), Some(at(600)))
        );
    }

    #[test]
    fn no_samples_means_no_percentiles() {
        let stats = Tally::new(Endpoint::Health).expect("histogram").stats();
        assert_eq!(stats.samples, ProbeStats::default().samples);
        assert_eq!(stats.samples, 0);
        assert_eq!(stats.p99_ms, None);
    }
}
