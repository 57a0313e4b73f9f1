//! The main listener's accept loop: an accept queue, a connection cap, two timeouts, and its part
//! of the drain.
//!
//! `axum::serve` accepts every connection it can and never closes one the client keeps open: no
//! cap, no head timeout, no idle timeout. Measured before this loop existed: 21,000 connections
//! that each sent half a request head held the gateway at its descriptor limit; `accept`
//! failed with `EMFILE` once a second and `/health` timed out until the client left. So the
//! gateway runs its own loop around the same router, with hyper's HTTP/1 connection (upgrades
//! on, for `/v1/chat/ws`):
//!
//! - **the accept queue** (`--listen-backlog`, [`bind`]): the kernel completes a handshake
//!   before the gateway accepts it and queues the connection; when the queue is full it drops
//!   the SYN and the client's kernel sends it again after 1 s, then 3 s. Rust binds with a queue
//!   of 128 (nginx: 511). Measured in issue 17, a burst of 8,000 streams:
//!   10,319 SYNs dropped and a time to first token of 3.5 s at p99 (nginx: 1.3 s in the same
//!   run); with a queue of 4,096, none dropped and 1.9 s (nginx: 2.5 s).
//! - **`--max-connections`**: a place per connection ([`Admission`], no queue), held by the
//!   socket itself (`super::connection::Io`), so it is given back when the socket closes and a
//!   WebSocket keeps it for its life. Past the cap a new connection is closed at once (a reset:
//!   no `TIME_WAIT` left behind for thousands of refusals) and counted; the open ones are served
//!   on, and the descriptors kept in reserve (see [`crate::descriptors`]) leave the upstream
//!   connects and the admin plane their sockets.
//! - **the head and idle timeouts**: enforced by each connection's task from what
//!   [`super::connection`] records; why not hyper's own `header_read_timeout` is told there.
//! - **the drain** ([`Lifecycle`]): at [`Phase::ShuttingDown`] every open connection gets
//!   hyper's `graceful_shutdown`, which closes the idle ones at once and lets each busy one
//!   finish its response, then closes it. The listener keeps accepting: a client that connects
//!   during the drain gets an HTTP answer on a connection closed after it, where a closed
//!   listener would give it "connection refused", which a load balancer reads as a dead host
//!   rather than a draining one. At [`Phase::Stopped`] (the drain deadline) the loop stops
//!   accepting and every connection still open is cut, after a moment for its last words (an
//!   SSE stream's `shutting_down` event, see `crate::upstream::cutoff`); the loop returns only
//!   once they are gone, so that the runtime is not dropped under a last event being written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use super::connection::{Activity, Io, Timeouts, Tracked};
use crate::admission::Admission;
use crate::config::Config;
use crate::lifecycle::{Lifecycle, Phase};
use crate::telemetry::labels::{ConnectionClose, ConnectionRefusal};
use crate::telemetry::metrics::Metrics;

/// After an `accept` error that is not a client leaving (`EMFILE`: out of descriptors), wait this
/// long before the next try: the error would repeat at once, and a tight loop of failures only
/// burns the CPU the open connections need.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Refusals and accept errors come in thousands under attack: log them at most this often,
/// with a count.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// At the drain deadline, how long a connection gets to write what its body says last (every
/// relayed body ends itself then) before it is cut. Under the drain's own one second of last
/// words (`super::shutdown`), which bounds the whole thing.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// Binds the main listener with an accept queue of `backlog` connections (see the module
/// docs). Linux silently caps it at `net.core.somaxconn`: a lower cap is logged, with the line
/// that raises it.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted gateway rebinds while the old one's connections
    // are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    if let Some(cap) = somaxconn().filter(|&cap| cap < backlog) {
        tracing::warn!(
            "--listen-backlog {backlog}: the kernel caps the accept queue at {cap} \
             (net.core.somaxconn); `sysctl -w net.core.somaxconn={backlog}` raises it"
        );
    }
    socket.listen(backlog)
}

/// Linux's cap on every accept queue (`net.core.somaxconn`), if this is Linux.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The main listener's connections: their cap, their timeouts, and how many are open.
#[derive(Debug)]
pub struct Connections {
    places: Admission,
    timeouts: Timeouts,
    http1: http1::Builder,
    /// HTTP connections being served: a connection leaves this count when it closes or is
    /// upgraded to a WebSocket (which keeps its place in `places` until it closes).
    serving: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Connections {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Self {
        let mut http1 = http1::Builder::new();
        // hyper's head timer would also close every keep-alive connection after the head
        // timeout (see `super::connection`); the connection's task keeps both timeouts instead.
        http1.header_read_timeout(None);
        Self {
            places: Admission::new(config.max_connections(), 0, Duration::ZERO),
            timeouts: Timeouts {
                header: config.header_read_timeout(),
                idle: config.idle_timeout(),
            },
            http1,
            serving: Arc::new(AtomicUsize::new(0)),
            metrics,
        }
    }

    /// Connections open now, WebSockets included.
    pub fn open(&self) -> usize {
        self.places.in_use()
    }

    /// `--max-connections`.
    pub fn limit(&self) -> usize {
        self.places.limit()
    }

    /// HTTP connections open now (not yet closed, not upgraded): the drain waits for these.
    pub fn serving(&self) -> usize {
        self.serving.load(Ordering::Acquire)
    }

    /// Accepts on `listener` until the lifecycle reaches [`Phase::Stopped`], serving `app` on
    /// each connection admitted.
    pub async fn run(self: Arc<Self>, listener: TcpListener, app: Router, lifecycle: Lifecycle) {
        let service = TowerToHyperService::new(app);
        let mut phase = lifecycle.subscribe();
        let mut refusals = Every::new(LOG_EVERY);
        let mut errors = Every::new(LOG_EVERY);
        loop {
            let accepted = tokio::select! {
                biased;
                _ = phase.wait_for(|now| *now >= Phase::Stopped) => break,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let Some(place) = self.places.try_admit() else {
                        self.refuse(tcp, &mut refusals);
                        continue;
                    };
                    // Counted before the task exists, so the drain never sees 0 while an
                    // accepted connection is about to be served.
                    let serving = Serving::enter(&self.serving);
                    let this = Arc::clone(&self);
                    let service = service.clone();
                    let phase = lifecycle.subscribe();
                    tokio::spawn(async move {
                        this.serve(tcp, peer, place, service, phase).await;
                        drop(serving);
                    });
                }
                // The client left between its SYN and our accept: nothing to do.
                Err(e) if client_gone(&e) => {}
                Err(e) => {
                    self.metrics.accept_errors.inc();
                    if let Some(count) = errors.tick() {
                        tracing::warn!(
                            open = self.open(),
                            "accept failed {count} time(s) in the last {LOG_EVERY:?}: {e}; \
                             retrying every {ACCEPT_BACKOFF:?}"
                        );
                    }
                    tokio::select! {
                        _ = phase.wait_for(|now| *now >= Phase::Stopped) => break,
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        }
        // The connections' tasks are writing their last words: returning now would let the
        // runtime be dropped under them (an SSE stream then lost its `shutting_down` event and
        // its end, on a busy machine). The caller bounds this wait.
        while self.serving() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::debug!("main listener closed");
    }

    /// Closes a connection past the cap at once, with a reset rather than a FIN: nothing to
    /// say to it, and no `TIME_WAIT` state left behind for each of thousands of refusals.
    fn refuse(&self, tcp: TcpStream, refusals: &mut Every) {
        let _ = tcp.set_zero_linger();
        drop(tcp);
        self.metrics
            .connection_refused(ConnectionRefusal::MaxConnections);
        if let Some(count) = refusals.tick() {
            tracing::warn!(
                limit = self.limit(),
                "--max-connections reached: {count} new connection(s) refused in the last \
                 {LOG_EVERY:?}; the open ones are served on"
            );
        }
    }

    /// Serves one connection until it ends, a timeout closes it, or the drain cuts it.
    async fn serve(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        place: OwnedSemaphorePermit,
        service: TowerToHyperService<Router>,
        mut phase: watch::Receiver<Phase>,
    ) {
        // Small writes go out at once. With Nagle's algorithm on, a token written right after
        // the response head waits for the client's (delayed, up to 40 ms) ACK of the head:
        // measured as +40 ms of time to first token on every hedged stream, whose head and
        // first token leave together.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let activity = Activity::new(self.timeouts);
        let io = TokioIo::new(Io::new(tcp, Arc::clone(&activity), place));
        let service = Tracked::new(service, peer, Arc::clone(&activity));
        let conn = self.http1.serve_connection(io, service).with_upgrades();
        tokio::pin!(conn);
        // A connection accepted during the drain is served one request (the drain's answer),
        // then closed; closing it before it could send that request would answer nothing.
        let late = *phase.borrow() >= Phase::ShuttingDown;
        let mut shutting_down = false;
        let mut closed_idle = false;
        let timer = tokio::time::sleep(self.timeouts.header);
        tokio::pin!(timer);
        let closed = loop {
            let now = *phase.borrow_and_update();
            if now >= Phase::Stopped {
                // Every relayed body ends itself at this phase: let the response be written to
                // its end (keep-alive off), then cut whatever is still open.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(LAST_WORDS, conn.as_mut()).await;
                break Some(ConnectionClose::Shutdown);
            }
            if now >= Phase::ShuttingDown && !shutting_down && (!late || activity.requests() > 0) {
                shutting_down = true;
                closed_idle = activity.is_idle();
                // Idle: closed at once. Busy: keep-alive off, closed after this response.
                conn.as_mut().graceful_shutdown();
            }
            let due = activity.due();
            if let Some((at, _)) = due {
                timer.as_mut().reset(at);
            }
            tokio::select! {
                biased;
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, "connection ended with an error: {e}");
                    }
                    break closed_idle.then_some(ConnectionClose::Shutdown);
                }
                () = activity.changed() => {}
                changed = phase.changed() => {
                    // The lifecycle is gone with the gateway's state: nothing left to serve for.
                    if changed.is_err() {
                        break Some(ConnectionClose::Shutdown);
                    }
                }
                () = &mut timer, if due.is_some() => {
                    // Re-read: a request may have started since the deadline was computed.
                    if let Some((at, reason)) = activity.due()
                        && at <= Instant::now()
                    {
                        break Some(reason);
                    }
                }
            }
        };
        // Dropping the connection closes the socket (unless it was upgraded: then the
        // WebSocket owns it).
        if let Some(reason) = closed {
            self.metrics.connection_closed(reason);
        }
    }
}

/// `accept` errors that concern one client only (it reset or aborted before we took it).
fn client_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
    )
}

/// One HTTP connection being served; leaves the count when dropped, however the task ends.
#[derive(Debug)]
struct Serving(Arc<AtomicUsize>);

impl Serving {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A log line at most once per period, with the count of events since the last one.
#[derive(Debug)]
struct Every {
    period: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Every {
    fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            count: 0,
        }
    }

    /// Counts one event; `Some(events since the last line)` when a line is due.
    fn tick(&mut self) -> Option<u64> {
        self.count += 1;
        let due = self.last.is_none_or(|last| last.elapsed() >= self.period);
        due.then(|| {
            self.last = Some(Instant::now());
            std::mem::take(&mut self.count)
        })
    }
}
