//! `cargo xtask bench conns` (`make bench-conns`): 21,000 connections that each send half a
//! request head and stop, from one client, against a gateway with its default bounds (issue 13,
//! lesson: a listener needs defences, and the health check must live where they cannot reach).
//!
//! Before the admin plane and the connection bounds, this held the gateway at its file-descriptor
//! limit: `accept` failed with EMFILE once a second and `/health` timed out until the client
//! left, because nothing ever closed a half-sent connection. Now three bounds meet it:
//!
//! - `--max-connections` (default: half the raised descriptor limit, less a reserve) closes the
//!   connections past it as soon as they are accepted, counted in
//!   `gateway_connections_refused_total`;
//! - `--header-read-timeout-ms` (default 10 s) closes the ones that never finish their head,
//!   counted in `gateway_connections_closed_total{reason="header_timeout"}`;
//! - the admin plane answers `/readyz` on its own listener and thread throughout.
//!
//! What is measured, and how: xtask opens the connections itself (raising its own descriptor
//! limit first when it may, *after* the gateway started, so the gateway keeps the default a user
//! gets), then every 50 ms tries a non-blocking read on each: end of file or a reset means the
//! gateway closed it, and when. Beside that, one thread probes the admin `/readyz` every 250 ms,
//! and another tries a new chat stream on the main port every 500 ms until one is served to its
//! end: refused while the listener sits at its cap, served once the head timeout has cleared it.
//! Results: `bench/results/<date>-conns[-quick].{json,md}`.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde_json::json;

use crate::bench::observe::{http_get, metric, metric_samples, status_kib};
use crate::bench::results::{Results, commands_section, machine, opt_ms};
use crate::bench::session::{Gateway, Session, strings};
use crate::cli::BenchArgs;

/// How long a connection may take to send its head: the gateway's default, named here so the
/// report can say which closes it explains.
const HEADER_TIMEOUT_S: f64 = 10.0;
/// Half a head: a request line and one header, never the blank line that ends it.
const HALF_HEAD: &[u8] = b"GET /v1/models HTTP/1.1\r\nHost: gateway\r\n";

pub fn run(args: &BenchArgs) -> Result<()> {
    let connections: usize = if args.quick { 2_000 } else { 21_000 };
    let mut session = Session::begin("-conns")?;
    let mut results = Results::new(args, &session.clock, "conns");
    let runner = &mut session.runner;
    let (_mock, mock_listen) = runner.start_mock(&strings(&[
        "--ttft-ms",
        "100",
        "--itl-ms",
        "50",
        "--tokens",
        "20",
    ]))?;
    let Gateway {
        service: gateway,
        listen,
        admin,
    } = runner.start_gateway(mock_listen, &strings(&["--mode", "fixed"]))?;
    let before = http_get(&format!("http://{admin}/metrics"))?;
    let limit = metric(
        &metric_samples(&before, "gateway_connections_limit"),
        "gateway_connections_limit",
    );
    let nofile = raise_own_open_files(connections as u64 + 1_024);
    println!(
        "\n=== bench conns: {connections} half-sent heads against a gateway capped at {limit:.0} \
         connections (xtask's own open files limit: {})",
        nofile.map_or("unknown".into(), |n| n.to_string())
    );

    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let readyz = spawn_readyz_prober(admin, origin, Arc::clone(&stop));
    let mut conns = open_half_heads(listen, connections, origin);
    let opened_in = origin.elapsed();
    println!(
        "xtask: {} connected, {} failed to connect ({}), in {:.1} s; {} still open",
        connections - conns.connect_errors,
        conns.connect_errors,
        conns.error_kinds(),
        opened_in.as_secs_f64(),
        conns.open.len(),
    );
    let stream = spawn_stream_prober(listen, origin, Arc::clone(&stop));

    // Until every connection is closed, or well past the head timeout of the last one opened.
    let deadline = Instant::now() + Duration::from_secs_f64(HEADER_TIMEOUT_S + 5.0);
    while !conns.open.is_empty() && Instant::now() < deadline {
        conns.sweep();
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak_rss = status_kib(gateway.pid(), "VmHWM:");
    let still_open = conns.open.len();
    conns.open.clear();
    // The stream prober may still be mid-stream; give it the time one stream takes.
    let stream_deadline = Instant::now() + Duration::from_secs(5);
    while !stream.lock().is_ok_and(|s| s.served_at.is_some()) && Instant::now() < stream_deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));

    let after = http_get(&format!("http://{admin}/metrics"))?;
    let refused = metric_sum(&after, "gateway_connections_refused_total");
    let closed = metric_samples(&after, "gateway_connections_closed_total{");
    let header_timeouts = metric(
        &closed,
        "gateway_connections_closed_total{reason=\"header_timeout\"}",
    );
    let emfile = std::fs::read_to_string(runner.work_dir.join("gateway.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Too many open files") || l.contains("EMFILE"))
        .count();
    drop(gateway);

    let closes = Closes::from(&conns.closed_at);
    let readyz = readyz.lock().map(|r| r.summary()).unwrap_or_default();
    let stream = stream.lock().map(|s| s.clone()).unwrap_or_default();
    let value = json!({
        "kind": "conns",
        "date": session.clock.date(),
        "connections_attempted": connections,
        "connected": connections - conns.connect_errors,
        "connect_errors": conns.connect_errors,
        "connect_error_kinds": conns.connect_error_kinds,
        "opened_in_s": round1(opened_in.as_secs_f64()),
        "gateway_max_connections": limit,
        "xtask_open_files_limit": nofile,
        "closed_by_gateway": conns.closed_at.len(),
        "closed_within_1s": closes.within_1s,
        "closed_at_head_timeout": closes.around_timeout,
        "closed_at_s": { "min": closes.min, "p50": closes.p50, "max": closes.max },
        "still_open_at_end": still_open,
        "gateway_refused_total": refused,
        "gateway_header_timeout_total": header_timeouts,
        "gateway_log_emfile_lines": emfile,
        "gateway_peak_rss_kib": peak_rss,
        "readyz": readyz,
        "new_stream": {
            "attempts": stream.attempts,
            "first_attempt_s": stream.first_attempt_s,
            "served_at_s": stream.served_at,
            "last_error": stream.last_error,
        },
        "commands": runner.commands,
    });
    results.json(&value)?;
    let md = format!(
        "# {connections} half-sent request heads, one client, {}\n\n\
         - **Machine:** {}; release build; the box is shared, so every process here competed \
           for the same cores.\n\
         - **Run:** `make bench-conns` (`cargo xtask bench conns`), {:.0} s.\n\
         - **Gateway:** fixed mode, default bounds: `--max-connections` {limit:.0} (derived from its \
           open files limit), `--header-read-timeout-ms` 10000.\n\n\
         | what | value |\n|---|---|\n\
         | connected / failed to connect | {} / {} ({}) (opened in {:.1} s) |\n\
         | closed by the gateway within 1 s (over the cap) | {} (counter: {refused:.0} refused) |\n\
         | closed at the head timeout (9-12 s) | {} (counter: {header_timeouts:.0}) |\n\
         | close times, min / p50 / max | {} / {} / {} |\n\
         | still open at the end | {still_open} |\n\
         | `/readyz` (admin) during the run | {} answers, p50 {} / p99 {} / max {}, {} failed, statuses {} |\n\
         | a new chat stream on the main port | {} attempts from {}; served to its end at {} |\n\
         | EMFILE lines in the gateway's log | {emfile} |\n\
         | gateway peak RSS | {} |\n",
        session.clock.date(),
        machine().describe(),
        session.clock.elapsed().as_secs_f64(),
        connections - conns.connect_errors,
        conns.connect_errors,
        conns.error_kinds(),
        opened_in.as_secs_f64(),
        closes.within_1s,
        closes.around_timeout,
        secs(closes.min),
        secs(closes.p50),
        secs(closes.max),
        readyz.answers,
        opt_ms(readyz.p50_ms),
        opt_ms(readyz.p99_ms),
        opt_ms(readyz.max_ms),
        readyz.failed,
        readyz.statuses,
        stream.attempts,
        secs(stream.first_attempt_s),
        stream
            .served_at
            .map_or_else(|| "never".to_string(), |s| format!("{s:.1} s")),
        peak_rss.map_or_else(|| "n/a".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0)),
    );
    results.markdown(md + &commands_section(&runner.commands));
    results.write("bench conns done")
}

/// The connections still open, and when each closed one was seen closed.
struct Conns {
    open: Vec<(TcpStream, Instant)>,
    connect_errors: usize,
    /// Why connects failed, by kind: a reset is the gateway closing a connection over its cap
    /// before the client's connect had returned.
    connect_error_kinds: std::collections::BTreeMap<String, usize>,
    /// Seconds from the connection's own connect to its close being seen.
    closed_at: Vec<f64>,
}

/// Opens `count` connections one after another, sweeping for closes every 100 of them: opening
/// 21,000 takes longer than the head timeout, and a close must be timed when it happens.
fn open_half_heads(listen: SocketAddr, count: usize, origin: Instant) -> Conns {
    let mut conns = Conns {
        open: Vec::with_capacity(count),
        connect_errors: 0,
        connect_error_kinds: std::collections::BTreeMap::new(),
        closed_at: Vec::new(),
    };
    for n in 0..count {
        if n % 100 == 0 {
            conns.sweep();
        }
        if n % 5_000 == 0 && n > 0 {
            println!(
                "xtask: {n} opened at {:.1} s, {} still open",
                origin.elapsed().as_secs_f64(),
                conns.open.len()
            );
        }
        let connected = Instant::now();
        match TcpStream::connect_timeout(&listen, Duration::from_secs(1)) {
            Ok(mut stream) => {
                // A write may fail on a connection the gateway already closed (over the cap);
                // the sweep sees that close.
                let _ = stream.write_all(HALF_HEAD);
                let _ = stream.set_nonblocking(true);
                conns.open.push((stream, connected));
            }
            Err(e) => {
                conns.connect_errors += 1;
                *conns
                    .connect_error_kinds
                    .entry(format!("{:?}", e.kind()))
                    .or_insert(0) += 1;
            }
        }
    }
    conns
}

impl Conns {
    fn error_kinds(&self) -> String {
        let kinds: Vec<String> = self
            .connect_error_kinds
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect();
        if kinds.is_empty() {
            "none".into()
        } else {
            kinds.join(", ")
        }
    }

    /// One non-blocking read on each open connection: EOF or an error other than "would block"
    /// means the gateway closed it.
    fn sweep(&mut self) {
        let mut byte = [0u8; 512];
        let now = Instant::now();
        let closed_at = &mut self.closed_at;
        self.open.retain_mut(|(stream, connected)| {
            let open = match stream.read(&mut byte) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted,
            };
            if !open {
                closed_at.push(now.duration_since(*connected).as_secs_f64());
            }
            open
        });
    }
}

/// When the closes came: how many at once (the cap), how many at the head timeout.
#[derive(Default)]
struct Closes {
    within_1s: usize,
    around_timeout: usize,
    min: Option<f64>,
    p50: Option<f64>,
    max: Option<f64>,
}

impl From<&Vec<f64>> for Closes {
    fn from(times: &Vec<f64>) -> Self {
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        Closes {
            within_1s: sorted.iter().filter(|t| **t < 1.0).count(),
            around_timeout: sorted
                .iter()
                .filter(|t| (HEADER_TIMEOUT_S - 1.0..HEADER_TIMEOUT_S + 2.0).contains(*t))
                .count(),
            min: sorted.first().copied().map(round1),
            p50: sorted.get(sorted.len() / 2).copied().map(round1),
            max: sorted.last().copied().map(round1),
        }
    }
}

/// `/readyz` latencies and statuses over the run.
#[derive(Default)]
struct ReadyzProbes {
    latencies_ms: Vec<f64>,
    statuses: std::collections::BTreeMap<String, u64>,
    failed: u64,
}

#[derive(Default, serde::Serialize)]
struct ReadyzSummary {
    answers: usize,
    failed: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    statuses: String,
}

impl ReadyzProbes {
    fn summary(&self) -> ReadyzSummary {
        let mut sorted = self.latencies_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            (!sorted.is_empty())
                .then(|| sorted[((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1)])
        };
        ReadyzSummary {
            answers: sorted.len(),
            failed: self.failed,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: sorted.last().copied(),
            statuses: self
                .statuses
                .iter()
                .map(|(s, n)| format!("{s} x{n}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

fn spawn_readyz_prober(
    admin: SocketAddr,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> Arc<Mutex<ReadyzProbes>> {
    let probes = Arc::new(Mutex::new(ReadyzProbes::default()));
    let shared = Arc::clone(&probes);
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("http://{admin}/readyz");
        let mut next = origin;
        while !stop.load(Ordering::SeqCst) {
            let sent = Instant::now();
            let outcome = agent.get(&url).call();
            let ms = sent.elapsed().as_secs_f64() * 1e3;
            if let Ok(mut p) = shared.lock() {
                match outcome {
                    Ok(response) => {
                        p.latencies_ms.push((ms * 1e3).round() / 1e3);
                        *p.statuses
                            .entry(response.status().as_u16().to_string())
                            .or_insert(0) += 1;
                    }
                    Err(_) => p.failed += 1,
                }
            }
            next += Duration::from_millis(250);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    probes
}

/// The new stream's story: tries until one is served to `[DONE]`.
#[derive(Debug, Clone, Default)]
struct StreamProbe {
    attempts: u64,
    first_attempt_s: Option<f64>,
    served_at: Option<f64>,
    last_error: Option<String>,
}

fn spawn_stream_prober(
    listen: SocketAddr,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> Arc<Mutex<StreamProbe>> {
    let probe = Arc::new(Mutex::new(StreamProbe::default()));
    let shared = Arc::clone(&probe);
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let url = format!("http://{listen}/v1/chat/completions");
        let body =
            r#"{"model":"mock-1","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        while !stop.load(Ordering::SeqCst) {
            let at = round1(origin.elapsed().as_secs_f64());
            let outcome = agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body)
                .context("request")
                .and_then(|mut r| r.body_mut().read_to_string().context("body"));
            let Ok(mut p) = shared.lock() else { return };
            p.attempts += 1;
            p.first_attempt_s.get_or_insert(at);
            match outcome {
                Ok(text) if text.contains("[DONE]") => {
                    p.served_at = Some(round1(origin.elapsed().as_secs_f64()));
                    return;
                }
                Ok(_) => p.last_error = Some("stream ended without [DONE]".into()),
                Err(e) => p.last_error = Some(format!("{e:#}")),
            }
            drop(p);
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    probe
}

/// Raises this process's open files limit to `wanted` when it may (the soft limit up to the
/// hard one; the hard one too when running as root), and returns the soft limit in force.
fn raise_own_open_files(wanted: u64) -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= wanted {
        return Some(soft);
    }
    if setrlimit(Resource::RLIMIT_NOFILE, wanted.max(hard), wanted.max(hard)).is_err() {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

fn metric_sum(text: &str, prefix: &str) -> f64 {
    metric_samples(text, prefix).iter().map(|(_, v)| v).sum()
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_string(), |s| format!("{s:.1} s"))
}
