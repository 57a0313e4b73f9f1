//! Lesson: a listener needs defences of its own. Without them, 21,000 connections that each sent
//! half a request head held the gateway at its descriptor limit until the client left. Here:
//! half-sent heads are closed after `--header-read-timeout-ms`; past `--max-connections` a new
//! connection is closed at once while the open ones are served; an idle keep-alive connection
//! is closed after `--idle-timeout-secs` while a quiet stream is not; and during the drain the
//! listener stays open while idle connections are closed.
//!
//! The connections are raw TCP: the tests send half a head, hold a connection idle and watch
//! exactly when the gateway closes it, which an HTTP client library would hide.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::prometheus::sample;
use support::{Mock, client, draining_gateway, expected_body, gateway, metric, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `GET path` on `stream`.
async fn send_get(stream: &mut TcpStream, path: &str) -> std::io::Result<()> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n");
    stream.write_all(request.as_bytes()).await
}

/// `GET path` on a kept-alive connection: the status and the body, which must have a
/// `Content-Length` (the probes' answers do). An error if the connection closed first.
async fn get(stream: &mut TcpStream, path: &str) -> std::io::Result<(u16, String)> {
    send_get(stream, path).await?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map(|n| n.trim().parse().expect("a length"))
        .expect("a Content-Length");
    while received.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        received.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&received[head_end..head_end + length]).into_owned();
    Ok((status, body))
}

/// Reads until the gateway closes the connection (EOF or reset) and returns when that was; `None`
/// if it is still open after `limit`. Whatever arrives before is returned too.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<(Instant, String)> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|at| (at, String::from_utf8_lossy(&received).into_owned()))
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

const HALF_SENT: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_are_closed_after_the_head_timeout() {
    // Both ends of every connection live in this process.
    gateway::descriptors::raise_soft_limit().expect("the open-file limit");
    let mock = Mock::fast();
    let gw = gateway("fixed", &mock.url(), &["--header-read-timeout-ms", "500"]);
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..HALF_SENT {
        let connecting = Instant::now();
        let mut stream = connect(gw.addr()).await;
        // Half a head: no blank line, ever.
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
            .await
            .expect("write half a head");
        let sent = Instant::now();
        readers.spawn(async move {
            let closed = closed_within(&mut stream, Duration::from_secs(20)).await;
            (connecting, sent, closed)
        });
    }
    // Meanwhile the gateway answers as usual.
    let health = client()
        .get(format!("{}/health", gw.url()))
        .send()
        .await
        .expect("/health answers while the half-sent heads are open");
    assert_eq!(health.status(), 200);

    while let Some(joined) = readers.join_next().await {
        let (connecting, sent, closed) = joined.expect("reader");
        let (at, received) = closed.expect("a half-sent head is closed within 20 s");
        // Accepted after `connecting`, so closed no sooner than 500 ms after it (a margin
        // for timer rounding), and not much later than 500 ms after the head went out.
        let after = at - connecting;
        assert!(
            after >= Duration::from_millis(450),
            "closed at once: {after:?}"
        );
        assert!(
            at - sent < Duration::from_secs(10),
            "closed {:?} after it was sent",
            at - sent
        );
        assert!(
            received.is_empty(),
            "no answer to half a head: {received:?}"
        );
    }
    let closed = metric(
        &gw.url(),
        "gateway_connections_closed_total{reason=\"header_timeout\"}",
    )
    .await;
    assert!(closed >= HALF_SENT as f64, "{closed}");
    let url = gw.url();
    wait_for(
        "the open gauge to fall back",
        Duration::from_secs(5),
        || {
            let url = url.clone();
            async move { (metric(&url, "gateway_connections_open").await <= 2.0).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_new_one_is_refused_and_the_open_ones_are_served() {
    gateway::descriptors::raise_soft_limit().expect("the open-file limit");
    let mock = Mock::fast();
    let gw = gateway(
        "fixed",
        &mock.url(),
        &["--max-connections", "500", "--admin-listen", "127.0.0.1:0"],
    );
    let mut open = Vec::with_capacity(500);
    for _ in 0..500 {
        let mut stream = connect(gw.addr()).await;
        let (status, _) = get(&mut stream, "/health").await.expect("served");
        assert_eq!(status, 200);
        open.push(stream);
    }

    // Connection 501: the kernel completes the handshake, the gateway resets it at once (so
    // fast, at times, that `connect` itself reports the reset).
    if let Ok(mut refused) = TcpStream::connect(gw.addr()).await {
        let _ = send_get(&mut refused, "/health").await;
        let (_, received) = closed_within(&mut refused, Duration::from_secs(5))
            .await
            .expect("connection 501 is closed at once");
        assert!(received.is_empty(), "no answer past the cap: {received:?}");
    }

    // The admin plane has a listener of its own, outside the cap: while the main port turns
    // new connections away, a load balancer still gets its liveness and readiness answers.
    let admin = gw.admin_addr().expect("the admin plane listens");
    let mut stream = connect(admin).await;
    let (status, body) = get(&mut stream, "/livez").await.expect("/livez answers");
    assert_eq!(status, 200, "/livez with the main port full: {body}");
    // `ready` once the first readiness round is in (every 250 ms); `starting` before is a 503.
    wait_for(
        "/readyz ready with the main port full",
        Duration::from_secs(10),
        || async move {
            let mut stream = TcpStream::connect(admin).await.ok()?;
            let (status, _) = get(&mut stream, "/readyz").await.ok()?;
            (status == 200).then_some(())
        },
    )
    .await;
    if let Ok(mut refused) = TcpStream::connect(gw.addr()).await {
        let _ = send_get(&mut refused, "/health").await;
        let (_, received) = closed_within(&mut refused, Duration::from_secs(5))
            .await
            .expect("still refused while the admin plane answers");
        assert!(received.is_empty(), "no answer past the cap: {received:?}");
    }

    // The open ones are still served, on their own connections.
    for stream in open.iter_mut().take(20) {
        let (status, _) = get(stream, "/health").await.expect("still served");
        assert_eq!(status, 200);
    }
    let (_, metrics) = get(&mut open[0], "/metrics").await.expect("metrics");
    let series = |name: &str| support::series(&metrics, name);
    assert_eq!(series("gateway_connections_open"), 500.0, "{metrics}");
    assert_eq!(series("gateway_connections_limit"), 500.0);
    assert!(
        series("gateway_connections_refused_total{reason=\"max_connections\"}") >= 1.0,
        "{metrics}"
    );

    // Some leave: a new connection is served again.
    open.truncate(490);
    let addr = gw.addr();
    wait_for(
        "a new connection to be served once some closed",
        Duration::from_secs(10),
        || async move {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            let answered =
                tokio::time::timeout(Duration::from_secs(2), get(&mut stream, "/health"));
            matches!(answered.await, Ok(Ok((200, _)))).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_but_a_quiet_stream_is_not() {
    let mock = Mock::start();
    let gw = gateway("fixed", &mock.url(), &["--idle-timeout-secs", "1"]);
    // A stream quieter than the idle timeout: 1.5 s between chunks, 4.5 s in all.
    let mut streaming = connect(gw.addr()).await;
    send_get(&mut streaming, "/chat/stream?chunks=3&interval_ms=1500")
        .await
        .expect("send");
    let stream = tokio::spawn(async move {
        let started = Instant::now();
        let (ended, body) = closed_within(&mut streaming, Duration::from_secs(20))
            .await
            .expect("the connection closes after the stream, once idle");
        (ended - started, body)
    });

    let mut idle = connect(gw.addr()).await;
    let (status, _) = get(&mut idle, "/health").await.expect("served");
    assert_eq!(status, 200);
    let answered = Instant::now();
    let (closed, _) = closed_within(&mut idle, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection is closed");
    let idle_for = closed - answered;
    assert!(
        idle_for >= Duration::from_millis(800) && idle_for < Duration::from_secs(5),
        "closed after {idle_for:?} idle; the timeout is 1 s"
    );

    let (lasted, body) = stream.await.expect("stream reader");
    for line in expected_body(3).lines() {
        assert!(body.contains(line), "the quiet stream was cut: {body:?}");
    }
    assert!(lasted >= Duration::from_secs(3), "{lasted:?}");
    let idle_closed = metric(
        &gw.url(),
        "gateway_connections_closed_total{reason=\"idle_timeout\"}",
    )
    .await;
    assert!(
        idle_closed >= 2.0,
        "the idle one, then the stream's: {idle_closed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_closes_idle_connections_and_still_answers_new_ones() {
    let mock = Mock::start();
    let gw = draining_gateway(&mock.url());
    let addr = gw.addr();
    let mut idle = connect(addr).await;
    let (status, _) = get(&mut idle, "/health").await.expect("served");
    assert_eq!(status, 200);
    let mut streaming = connect(addr).await;
    send_get(&mut streaming, "/chat/stream?chunks=4&interval_ms=400")
        .await
        .expect("send");
    let mut first = [0u8; 1024];
    let n = streaming.read(&mut first).await.expect("the stream's head");
    assert!(n > 0);

    // Dropping the embedded gateway starts its drain and waits for it: off the test's runtime.
    let stopping = tokio::task::spawn_blocking(move || drop(gw));
    closed_within(&mut idle, Duration::from_secs(3))
        .await
        .expect("the idle connection is closed when the drain begins");

    // The listener is still open: a new connection is answered, then closed.
    let mut late = TcpStream::connect(addr)
        .await
        .expect("the listener stays open during the drain");
    get(&mut late, "/health")
        .await
        .expect("a request during the drain is answered");
    closed_within(&mut late, Duration::from_secs(3))
        .await
        .expect("closed after its one answer");
    // The idle connection's close is counted (by its task, just after the socket closed).
    wait_for(
        "gateway_connections_closed_total{reason=\"shutdown\"}",
        Duration::from_secs(3),
        || async move {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            let (_, metrics) = get(&mut stream, "/metrics").await.ok()?;
            let series = "gateway_connections_closed_total{reason=\"shutdown\"}";
            (sample(&metrics, series)? >= 1.0).then_some(())
        },
    )
    .await;

    let (_, body) = closed_within(&mut streaming, Duration::from_secs(10))
        .await
        .expect("the stream ends");
    let body = String::from_utf8_lossy(&first[..n]).into_owned() + &body;
    for line in expected_body(4).lines() {
        assert!(body.contains(line), "the stream was cut: {body:?}");
    }
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("drained once the stream ended")
        .unwrap();
}

/// Connects `n` clients to `addr` at once, none of which is accepted; returns how many completed
/// their handshake within `within` (a dropped SYN is sent again only after 1 s).
async fn handshakes(addr: SocketAddr, n: usize, within: Duration) -> usize {
    let attempts: Vec<_> = (0..n)
        .map(|_| tokio::spawn(tokio::time::timeout(within, TcpStream::connect(addr))))
        .collect();
    let mut done = Vec::new();
    for attempt in attempts {
        if let Ok(Ok(Ok(stream))) = attempt.await {
            done.push(stream);
        }
    }
    done.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_burst_waits_in_the_accept_queue_instead_of_losing_its_syns() {
    const BURST: usize = 600;
    // 600 client sockets at a time, next to other tests' in this process.
    gateway::descriptors::raise_soft_limit().expect("the open-file limit");
    let cap = gateway::http::server::somaxconn().unwrap_or(0) as usize;
    if cap < BURST + 1 {
        eprintln!("skipped: net.core.somaxconn is {cap}, under the {BURST} this test queues");
        return;
    }
    // Nobody accepts on either listener: the burst can only wait in the kernel's queue.
    let rust_default = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let short = handshakes(
        rust_default.local_addr().unwrap(),
        BURST,
        Duration::from_millis(700),
    )
    .await;
    assert!(
        short < BURST,
        "a queue of 128 cannot hold {BURST} handshakes, yet {short} completed"
    );
    let gateway = gateway::http::server::bind("127.0.0.1:0".parse().unwrap(), 1024).expect("bind");
    let queued = handshakes(
        gateway.local_addr().unwrap(),
        BURST,
        Duration::from_millis(700),
    )
    .await;
    assert_eq!(
        queued, BURST,
        "every handshake of the burst completes at once"
    );
}
