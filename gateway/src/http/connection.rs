//! One connection of the main listener: what it is doing, and whether it has waited too long.
//!
//! Two timeouts guard a connection, the two that Go's `net/http`, nginx and Envoy keep apart:
//!
//! - the **head timeout** (`--header-read-timeout-ms`): a request head must be complete this
//!   long after the connection was accepted (its first request), or after the first byte of a
//!   later request arrived. A client that sends half a head and stops holds a socket for that
//!   long, not forever: 21,000 of them once held the gateway at its descriptor limit.
//! - the **idle timeout** (`--idle-timeout-secs`): a keep-alive connection waiting for its next
//!   request is closed this long after its last response ended.
//!
//! "Idle" means *no request in flight*, not "no bytes moving". A request is in flight from the
//! moment its head is parsed until its response body has been handed over whole (or dropped,
//! when the client leaves), so a 45 s SSE stream with seconds between tokens, or a request
//! waiting in the inbound queue, is never idle. Once a connection is upgraded to a WebSocket
//! it is no longer HTTP and neither timeout applies: the socket has its own pings and cap
//! (`super::ws`).
//!
//! Why not hyper's own `header_read_timeout`: its timer starts whenever hyper waits for a
//! head, which is at accept *and again right after every response* (hyper 1.12 re-arms it when
//! a keep-alive connection goes idle). One number would be both timeouts: with the head timeout
//! at 10 s, every keep-alive connection would be closed after 10 s idle, and a separate idle
//! timeout could not exist. So hyper's is off, and the connection's task (`super::server`)
//! enforces both from what this module records: [`Io`] notes the first byte after an idle
//! spell, [`Tracked`] notes a request starting, a guard inside its response body notes it
//! ending, and [`Activity::due`] turns that into the one deadline in force.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use crate::admission;
use crate::telemetry::labels::ConnectionClose;

/// The two timeouts of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `--header-read-timeout-ms`.
    pub header: Duration,
    /// `--idle-timeout-secs`.
    pub idle: Duration,
}

/// What one connection is doing. Shared by its IO, its service and its task; only they touch
/// the lock, so it is never contended across connections.
#[derive(Debug)]
pub struct Activity {
    timeouts: Timeouts,
    state: Mutex<State>,
    /// True while no byte of the next request has arrived (from accept, and from the end of
    /// each response): [`Io`] reads it on every read without taking the lock.
    awaiting_first_byte: AtomicBool,
    /// Woken when a request starts or ends and when the first byte arrives, so the task
    /// recomputes its deadline.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    accepted: Instant,
    /// Requests whose response body has not been handed over whole yet.
    in_flight: usize,
    /// Requests whose head was complete, since accept.
    requests: u64,
    /// When `in_flight` last went to 0.
    idle_since: Instant,
    /// The first byte after `idle_since` (or after accept), if any.
    head_started: Option<Instant>,
}

impl Activity {
    pub fn new(timeouts: Timeouts) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            timeouts,
            state: Mutex::new(State {
                accepted: now,
                in_flight: 0,
                requests: 0,
                idle_since: now,
                head_started: None,
            }),
            awaiting_first_byte: AtomicBool::new(true),
            changed: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection must be closed if nothing changes, and why; `None` while a request is
    /// in flight (a stream may be silent for as long as it likes).
    pub fn due(&self) -> Option<(Instant, ConnectionClose)> {
        let state = self.state();
        let Timeouts { header, idle } = self.timeouts;
        if state.in_flight > 0 {
            None
        } else if state.requests == 0 {
            // The first request: its head is due `header` after accept, whether or not any byte
            // came. A connection that never sends anything is not "idle", it is slow.
            Some((state.accepted + header, ConnectionClose::HeaderTimeout))
        } else if let Some(started) = state.head_started {
            Some((started + header, ConnectionClose::HeaderTimeout))
        } else {
            Some((state.idle_since + idle, ConnectionClose::IdleTimeout))
        }
    }

    /// Nothing in flight, and either a response was sent or nothing was received: exactly what
    /// hyper's `graceful_shutdown` closes at once (a connection with half of its first head is
    /// left to finish it, or to its head timeout).
    pub fn is_idle(&self) -> bool {
        let state = self.state();
        state.in_flight == 0 && (state.requests > 0 || state.head_started.is_none())
    }

    /// Requests whose head was complete, since accept.
    pub fn requests(&self) -> u64 {
        self.state().requests
    }

    /// Completes after the next change (at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// A request's head is complete: until the returned guard is dropped, the connection is
    /// not idle.
    fn request_started(self: &Arc<Self>) -> InFlight {
        {
            let mut state = self.state();
            state.in_flight += 1;
            state.requests += 1;
            state.head_started = None;
        }
        self.awaiting_first_byte.store(false, Ordering::Release);
        self.changed.notify_one();
        InFlight(Arc::clone(self))
    }

    fn first_byte(&self) {
        if self.awaiting_first_byte.swap(false, Ordering::AcqRel) {
            let mut state = self.state();
            if state.in_flight == 0 && state.head_started.is_none() {
                state.head_started = Some(Instant::now());
            }
            drop(state);
            self.changed.notify_one();
        }
    }
}

/// One request in flight on its connection; dropped with the response body, i.e. when the last
/// frame has been handed to hyper or the client went away.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let mut state = activity.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = Instant::now();
            state.head_started = None;
            drop(state);
            activity.awaiting_first_byte.store(true, Ordering::Release);
        } else {
            drop(state);
        }
        activity.changed.notify_one();
    }
}

/// The accepted socket, as hyper reads and writes it. It holds the connection's place under
/// `--max-connections`, so the place is given back when the socket closes, however it closes,
/// and an upgraded WebSocket (hyper hands this very value to it) keeps its place for its whole
/// life.
#[derive(Debug)]
pub struct Io {
    tcp: TcpStream,
    activity: Arc<Activity>,
    _place: OwnedSemaphorePermit,
}

impl Io {
    pub fn new(tcp: TcpStream, activity: Arc<Activity>, place: OwnedSemaphorePermit) -> Self {
        Self {
            tcp,
            activity,
            _place: place,
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before && this.activity.awaiting_first_byte.load(Ordering::Acquire)
        {
            this.activity.first_byte();
        }
        polled
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The connection's service: the router, plus the peer address (`ConnectInfo`, the rate-limit
/// key without API keys) and the request's in-flight guard moved into its response body.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, peer: SocketAddr, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            peer,
            activity,
        }
    }
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let in_flight = self.activity.request_started();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // Dropped if the client leaves before the response is ready, too.
            Ok(admission::hold(response, in_flight))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(75),
    };

    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_what_the_connection_is_doing() {
        let activity = Activity::new(TIMEOUTS);
        let accepted = Instant::now();
        let header = ConnectionClose::HeaderTimeout;
        assert_eq!(activity.due(), Some((accepted + TIMEOUTS.header, header)));
        assert!(activity.is_idle(), "nothing received yet");

        tokio::time::advance(Duration::from_secs(1)).await;
        activity.first_byte();
        assert_eq!(
            activity.due(),
            Some((accepted + TIMEOUTS.header, header)),
            "the first head is due from accept, not from its first byte"
        );
        assert!(!activity.is_idle(), "half a head: hyper lets it finish");

        let request = activity.request_started();
        assert_eq!(activity.due(), None, "a request in flight is never idle");
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(activity.due(), None, "however long the stream");
        drop(request);
        let ended = Instant::now();
        assert_eq!(
            activity.due(),
            Some((ended + TIMEOUTS.idle, ConnectionClose::IdleTimeout))
        );
        assert!(activity.is_idle());

        tokio::time::advance(Duration::from_secs(30)).await;
        activity.first_byte();
        let first_byte = Instant::now();
        assert_eq!(
            activity.due(),
            Some((first_byte + TIMEOUTS.header, header)),
            "once a byte of the next head came, the head timeout applies"
        );
        assert_eq!(activity.requests(), 1);
    }
}
