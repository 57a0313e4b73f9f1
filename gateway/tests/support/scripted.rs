//! Upstreams that fail in ways `mock-llm` cannot: a 502 or 504 of their own, a 200 whose body
//! breaks off before its first byte, a port that never completes a connection. Each one exists
//! to prove one documented answer of the gateway (its status, `code` and attempts), so each is
//! as small as the failure it makes.
//!
//! [`Scripted`] speaks raw HTTP/1.1 on a thread of its own: it reads each request whole, counts
//! it, answers with the next [`Reply`] of its script (the last one repeats) and closes the
//! connection, so every attempt of the gateway is one connection and one count.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// What the scripted upstream answers to one request.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// This status with an OpenAI-shaped error body (`code` null), `Connection: close`.
    Status(u16),
    /// 200 with a non-streaming chat completion.
    Completion,
    /// A 200 event-stream head, then the connection closes before the first body byte: a
    /// chunked body that never ends, which every HTTP client reads as an error.
    HeadThenClose,
}

/// A scripted upstream on `127.0.0.1:0`; stops when dropped.
pub struct Scripted {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Scripted {
    /// Answers the n-th request with `script[n]`, and every one past the end with its last.
    pub fn start(script: &[Reply]) -> Self {
        assert!(!script.is_empty(), "a script of at least one reply");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (script, counter, stopped) =
            (script.to_vec(), Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (script, counter) = (script.clone(), Arc::clone(&counter));
                std::thread::spawn(move || serve(stream, &script, &counter));
            }
        });
        Self {
            addr,
            requests,
            stop,
        }
    }

    /// `http://ADDR`, as a gateway's `--upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received whole so far: the gateway's attempts, seen from the upstream's side.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Reads one request (head and `Content-Length` body), counts it, answers it, closes.
fn serve(stream: TcpStream, script: &[Reply], requests: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let n = requests.fetch_add(1, Ordering::SeqCst);
    let reply = script[n.min(script.len() - 1)];
    let mut stream = &stream;
    let _ = stream.write_all(&bytes(reply));
    let _ = stream.flush();
    // Reading to EOF after the client is done keeps the close from turning into a reset that
    // could overtake the answer; a head-then-close reply closes at once, which is its point.
    if !matches!(reply, Reply::HeadThenClose) {
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    }
}

fn bytes(reply: Reply) -> Vec<u8> {
    let full = |status: u16, reason: &str, body: String| {
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    match reply {
        Reply::Status(status) => {
            let body = serde_json::json!({"error": {
                "message": format!("scripted {status}"),
                "type": "server_error",
                "param": null,
                "code": null,
            }});
            full(status, "Scripted", body.to_string())
        }
        Reply::Completion => {
            let body = serde_json::json!({
                "id": "chatcmpl-scripted",
                "object": "chat.completion",
                "created": 0,
                "model": "gpt-4o",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "scripted"},
                    "finish_reason": "stop",
                }],
            });
            full(200, "OK", body.to_string())
        }
        Reply::HeadThenClose => b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
            transfer-encoding: chunked\r\n\r\n"
            .to_vec(),
    }
}

/// A listener whose accept queue is full and never drained: a connection to it is neither
/// accepted nor refused (Linux drops the SYN of a connection that has no room in the queue), so
/// the client's connect times out, like an upstream behind a black-holing firewall. Keep it
/// alive while it is used.
pub struct Unanswering {
    addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _queued: Vec<TcpStream>,
}

impl Unanswering {
    /// Must run inside a Tokio runtime (the listener is Tokio's, for its `listen(backlog)`).
    pub fn start() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let addr = socket.local_addr().expect("address");
        // Backlog 0: room for one connection that nobody accepts.
        let listener = socket.listen(0).expect("listen");
        let mut queued = Vec::new();
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(stream) => queued.push(stream),
                Err(_) => break,
            }
            assert!(queued.len() < 64, "the accept queue never filled");
        }
        Self {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
