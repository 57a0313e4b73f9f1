//! Lesson (issue 16): behind a load balancer that checks `/readyz`, an instance can leave or
//! starve without a client noticing. Two real `gateway` processes behind a real HAProxy, started
//! from the shipped `deploy/haproxy.cfg` (`common::services::Haproxy`, loopback, free ports):
//!
//! - **drain**: `POST /admin/drain` on one while a client sends a steady stream of requests
//!   through HAProxy. `/readyz` turns 503, HAProxy stops sending within two checks, the
//!   gateway's grace outlasts them, it exits 0, and the client sees no failed request.
//! - **starve**: one gateway in broken mode with a blocking pool of one thread, held by streams
//!   sent to its own port. Its `/readyz` says 503 (from the admin plane's own thread), HAProxy
//!   marks it DOWN, and every request through HAProxy from then on is answered by the other:
//!   HAProxy's own session counter for the starved one does not move.
//!
//! Without `haproxy` installed, both skip loudly (a failure under `REQUIRE_SERVICES=1`).
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::services::Haproxy;
use common::services::haproxy::{BACKEND, Config, Server};
use support::{GatewayProcess, Mock, Streams, client, expected_body, wait_for};

/// Two gateways started with `args` each (plus their ports), and HAProxy in front of both,
/// once HAProxy counts both UP. `None` when HAProxy is not installed (the skip was reported).
async fn fleet(test: &str, args: [&[&str]; 2]) -> Option<(Vec<GatewayProcess>, Haproxy)> {
    if !common::services::Service::Haproxy.is_installed() {
        common::services::skip(test, common::services::Service::Haproxy);
        return None;
    }
    let gateways: Vec<GatewayProcess> = args
        .iter()
        .map(|args| {
            let mut all = vec!["--admin-listen", "127.0.0.1:0"];
            all.extend_from_slice(args);
            GatewayProcess::start(&all)
        })
        .collect();
    let free = || {
        let port = common::services::free_port().unwrap();
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    };
    let config = Config {
        listen: free(),
        stats: free(),
        servers: gateways
            .iter()
            .enumerate()
            .map(|(i, g)| Server {
                name: format!("gw{}", i + 1),
                main: g.addr,
                admin: g.admin.unwrap(),
            })
            .collect(),
    };
    let haproxy = Haproxy::start_for(test, config)?;
    for name in ["gw1", "gw2"] {
        wait_until_status(&haproxy, name, "UP").await;
    }
    Some((gateways, haproxy))
}

/// Waits (up to 15 s: fall 2 or rise 3 at 1 s, on a busy machine) for HAProxy's status of
/// `name` to start with `status`.
async fn wait_until_status(haproxy: &Haproxy, name: &str, status: &str) {
    let what = format!("HAProxy to count {name} {status}");
    wait_for(&what, Duration::from_secs(15), || async move {
        haproxy
            .server_status(name)
            .filter(|s| s.starts_with(status))
    })
    .await;
}

/// HAProxy's total sessions sent to `name` (`stot`).
fn sessions_sent(haproxy: &Haproxy, name: &str) -> u64 {
    let rows = haproxy.show_stat().unwrap();
    let row = rows
        .iter()
        .find(|r| r.proxy == BACKEND && r.server == name)
        .unwrap();
    row.number("stot")
}

/// A short stream (4 chunks, 50 ms apart) through `url`; `Err` says what went wrong.
async fn one_stream(http: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = http
        .get(format!("{url}/chat/stream?chunks=4&interval_ms=50"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if status != 200 || body != expected_body(4) {
        return Err(format!("{status}: {body:.120}"));
    }
    Ok(())
}

/// Clients that send short streams through HAProxy back to back until told to stop.
struct SteadyClient {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SteadyClient {
    fn start(url: &str, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                let url = url.to_owned();
                // Keep-alive towards HAProxy, as a real client would.
                let http = reqwest::Client::new();
                tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        match one_stream(&http, &url).await {
                            Ok(()) => ok.fetch_add(1, Ordering::SeqCst),
                            Err(e) => {
                                failures.lock().unwrap().push(e);
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        SteadyClient {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    /// Stops the workers; (requests that succeeded, the failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("a worker ends")
                .unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_gateway_leaves_the_fleet_without_a_failed_request() {
    let mock = Mock::start();
    let upstream = mock.url();
    // The grace (3 s) outlasts HAProxy's two failed checks a second apart.
    let args: &[&str] = &[
        "--mode",
        "fixed",
        "--upstream",
        &upstream,
        "--drain-grace-secs",
        "3",
        "--drain-secs",
        "10",
    ];
    let test = "a_drained_gateway_leaves_the_fleet_without_a_failed_request";
    let Some((mut gateways, haproxy)) = fleet(test, [args, args]).await else {
        return;
    };
    let clients = SteadyClient::start(&haproxy.url(), 4);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let drained = client()
        .post(format!("{}/admin/drain", gateways[0].admin_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(drained.status(), 202);
    wait_until_status(&haproxy, "gw1", "DOWN").await;
    let status = gateways[0].exit_within(Duration::from_secs(20)).await;
    assert!(status.success(), "a drain exits 0: {status}");
    let after_exit = clients.ok.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, failures) = clients.finish().await;

    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(
        ok > after_exit,
        "the other gateway served after the first exited ({ok} in all, {after_exit} before)"
    );
    let gw2 = sessions_sent(&haproxy, "gw2");
    assert!(gw2 > 0, "HAProxy sent gw2 nothing");
    drop(gateways);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_routes_around_a_starved_gateway() {
    let mock = Mock::start();
    let upstream = mock.url();
    let healthy: &[&str] = &["--mode", "fixed", "--upstream", &upstream];
    let starved: &[&str] = &[
        "--mode",
        "broken",
        "--blocking-threads",
        "1",
        "--upstream",
        &upstream,
    ];
    let test = "haproxy_routes_around_a_starved_gateway";
    let Some((gateways, haproxy)) = fleet(test, [healthy, starved]).await else {
        return;
    };
    // Two long streams (6 s) straight to gw2's own port: one holds its only pool thread, the
    // other waits for it, and so does the admin plane's pool probe.
    let http = client();
    let holders = Streams::open(
        &http,
        &format!(
            "{}/chat/stream?chunks=60&interval_ms=100",
            gateways[1].url()
        ),
        2,
    );
    let admin = gateways[1].admin_url();
    wait_for("gw2's /readyz to say 503", Duration::from_secs(10), || {
        let http = http.clone();
        let url = format!("{admin}/readyz");
        async move {
            let code = http.get(&url).send().await.ok()?.status();
            (code == 503).then_some(())
        }
    })
    .await;
    let marked = Instant::now();
    wait_until_status(&haproxy, "gw2", "DOWN").await;
    assert!(
        marked.elapsed() < Duration::from_secs(10),
        "marked down {:?} after its /readyz said 503",
        marked.elapsed()
    );

    let before = sessions_sent(&haproxy, "gw2");
    let through = reqwest::Client::new();
    for _ in 0..20 {
        one_stream(&through, &haproxy.url()).await.unwrap();
    }
    assert_eq!(
        sessions_sent(&haproxy, "gw2"),
        before,
        "HAProxy sent a request to the starved gateway after marking it DOWN"
    );
    assert!(sessions_sent(&haproxy, "gw1") >= 20);
    let held = holders.finish(Duration::from_secs(20)).await;
    assert!(held.iter().all(|f| f.status == 200));
    drop(gateways);
}
