//! "Stop now" as a tool hears it: Ctrl-C in a terminal (SIGINT), or SIGTERM from whatever runs it
//! (`timeout`, `kill`, a process manager, a container runtime).
//!
//! A tool that only listens for Ctrl-C is killed outright by SIGTERM, and whatever it meant to
//! say at its end (`diag watch`'s summary and verdict, the mock's last log line) is lost. The
//! gateway's own drain has more to it (a second signal, the admin plane) and lives in the gateway.

/// Which signal asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Stop {
    /// How a summary says it: `Ctrl-C`, `SIGTERM`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Interrupt => "Ctrl-C",
            Self::Terminate => "SIGTERM",
        }
    }
}

/// Completes at the first SIGINT or SIGTERM. If SIGTERM cannot be listened for, logs a warning
/// and waits for Ctrl-C alone.
pub async fn stop_requested() -> Stop {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}); Ctrl-C still works");
            let _ = tokio::signal::ctrl_c().await;
            return Stop::Interrupt;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Stop::Interrupt,
        _ = term.recv() => Stop::Terminate,
    }
}
