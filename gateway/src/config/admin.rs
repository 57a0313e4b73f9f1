//! Settings of the admin plane and the drain: where the admin plane listens, who may drain the
//! instance through it, how readiness is judged, how long a drain serves before it refuses.
//!
//! Settings types only (the admin plane itself is [`crate::admin`]); kept apart from the long
//! list of flags in `config/mod.rs` so the rule about tokens sits beside the address it guards.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use super::Config;

/// `--admin-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    /// No admin plane: no `/livez`, no `/readyz`, no background probing, no `POST /admin/drain`
    /// (a drain then starts only with SIGTERM or SIGINT).
    Off,
    At(SocketAddr),
}

impl AdminListen {
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            Self::Off => None,
            Self::At(addr) => Some(addr),
        }
    }
}

impl FromStr for AdminListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.trim()
            .parse()
            .map(Self::At)
            .map_err(|_| format!("expected an address such as 127.0.0.1:8002, or `off`; got {s:?}"))
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::At(addr) => write!(f, "{addr}"),
        }
    }
}

/// How `/readyz` judges the main runtime (see [`crate::admin::readiness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadinessSettings {
    /// A probe is sent this often, when the previous one has come back.
    pub interval: Duration,
    /// Degraded past this delay between spawning a task on the main runtime and its first poll.
    pub runtime_threshold: Duration,
    /// Degraded past this delay between submitting a blocking-pool job and its start.
    pub pool_threshold: Duration,
}

impl Config {
    pub fn readiness(&self) -> ReadinessSettings {
        ReadinessSettings {
            interval: Duration::from_millis(self.readiness_interval_ms),
            runtime_threshold: Duration::from_millis(self.readiness_runtime_threshold_ms),
            pool_threshold: Duration::from_millis(self.readiness_pool_threshold_ms),
        }
    }

    /// `--drain-grace-secs`: how long a drain keeps serving new requests.
    pub fn drain_grace(&self) -> Duration {
        Duration::from_secs(self.drain_grace_secs)
    }
}

/// An admin plane others can reach must be locked: `POST /admin/drain` takes the instance out of
/// service. On a loopback address only processes on the same host reach it (a sidecar, a
/// `kubectl exec`), which is the usual deployment; anywhere else a token is required, and a
/// missing one is a start-up error rather than an open door.
pub(super) fn check(config: &Config) -> Result<(), String> {
    match config.admin_listen {
        AdminListen::At(addr) if !addr.ip().is_loopback() && config.admin_token.is_none() => {
            Err(format!(
                "--admin-listen {addr} is not a loopback address: anyone who reaches it could \
                 drain this instance with POST /admin/drain; set --admin-token (or \
                 GATEWAY_ADMIN_TOKEN), or listen on 127.0.0.1"
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_or_an_address() {
        assert_eq!("off".parse::<AdminListen>(), Ok(AdminListen::Off));
        assert_eq!(
            "127.0.0.1:8002"
                .parse::<AdminListen>()
                .map(AdminListen::addr),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 8002))))
        );
        let error = "8002".parse::<AdminListen>().expect_err("a port alone");
        assert!(error.contains("`off`"), "{error}");
        assert_eq!(AdminListen::Off.to_string(), "off");
    }
}
