//! Finding the gateway's admin plane (`--admin`), once, before `diag demo` or `diag watch`
//! starts measuring.
//!
//! The admin plane is a second listener (the gateway's `--admin-listen`, default
//! `127.0.0.1:8002`) served by its own thread and runtime, so its `/readyz` answers however
//! stalled the main runtime is: the check a load balancer should use, shown beside the probes
//! that share the main runtime ([`crate::readiness`] says how it is read). Three cases:
//!
//! - `--admin URL`: the user says it is there, so it must answer `GET URL/readyz` (any answer,
//!   a 503 included); if nothing does, that is [`Error::AdminUnreachable`] (exit code 3), as
//!   for a gateway that is not there: a run without the column asked for would mislead.
//! - `--admin off`: no admin plane, no `/readyz`.
//! - not given: the gateway's host on port 8002, the gateway's default, *if* a readiness answer
//!   (one with a `status`) comes back within a second. Otherwise diag says so once on stderr
//!   and carries on without it: a gateway started with `--admin-listen off`, or one behind
//!   a proxy, is still worth measuring.
//!
//! The guess can be wrong in one way: another gateway's admin plane on that port (two gateways
//! on one host, on different main ports). The announce line names the URL it probes, so a
//! reader can tell; `--admin` settles it.

use std::time::Duration;

use crate::Error;
use crate::cli::AdminUrl;
use crate::probe::{Endpoint, Outcome, Target, probe_target};

/// The gateway's default `--admin-listen` port, where diag looks when `--admin` is not given.
pub const DEFAULT_PORT: u16 = 8002;

/// The most the guess may add to a run's start: the admin plane answers at once by design.
const GUESS_TIMEOUT: Duration = Duration::from_secs(1);

/// The admin plane's base URL for this run, or `None` to run without `/readyz`.
pub async fn resolve(
    client: &reqwest::Client,
    admin: Option<&AdminUrl>,
    gateway: &str,
    timeout: Duration,
) -> Result<Option<String>, Error> {
    let url = match admin {
        Some(AdminUrl::Off) => return Ok(None),
        Some(AdminUrl::At(url)) => {
            return match check(client, url, timeout).await {
                Ok(_) => Ok(Some(url.clone())),
                Err(reason) => Err(Error::AdminUnreachable {
                    url: url.clone(),
                    reason,
                }),
            };
        }
        None => match default_url(gateway) {
            Some(url) => url,
            None => return Ok(None),
        },
    };
    let timeout = timeout.min(GUESS_TIMEOUT);
    let reason = match check(client, &url, timeout).await {
        Ok(true) => return Ok(Some(url)),
        Ok(false) => "its /readyz has no readiness status".to_owned(),
        Err(reason) => reason,
    };
    eprintln!(
        "diag: no admin plane at {url} ({reason}), so /readyz is not probed; pass --admin URL \
         where the gateway's --admin-listen is, or --admin off"
    );
    Ok(None)
}

/// `--admin`'s default for `gateway`: its host, plain HTTP (the admin plane has no TLS), port
/// [`DEFAULT_PORT`]. `None` for a URL without a host.
pub fn default_url(gateway: &str) -> Option<String> {
    let gateway = reqwest::Url::parse(gateway).ok()?;
    let host = gateway.host_str()?;
    // `host_str` keeps an IPv6 literal's brackets, as a URL needs them.
    Some(format!("http://{host}:{DEFAULT_PORT}"))
}

/// One `GET <admin>/readyz`: whether it came with a readiness status, or why it did not answer.
async fn check(client: &reqwest::Client, admin: &str, timeout: Duration) -> Result<bool, String> {
    match probe_target(client, &Target::at(admin, Endpoint::Readyz), timeout).await {
        Outcome::Answered { status, .. } => Ok(status.is_some()),
        Outcome::Status(code) => Err(format!("GET /readyz answered HTTP {code}")),
        Outcome::TimedOut => Err(format!("no answer within {timeout:?}")),
        Outcome::Failed(reason) => Err(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_the_gateways_host_on_port_8002() {
        let default = |gateway| default_url(gateway);
        assert_eq!(
            default("http://127.0.0.1:8000").as_deref(),
            Some("http://127.0.0.1:8002")
        );
        assert_eq!(
            default("https://gw.example.com/base").as_deref(),
            Some("http://gw.example.com:8002")
        );
        assert_eq!(
            default("http://[::1]:9000").as_deref(),
            Some("http://[::1]:8002")
        );
    }
}
