//! The process's file-descriptor budget, and the connection cap derived from it.
//!
//! Every socket is a descriptor, and the kernel refuses the one past `RLIMIT_NOFILE`: `accept`
//! fails with `EMFILE`, and so does the upstream `connect` of a request already accepted. The
//! issue that added this module measured it: 21,000 connections that each sent half a request
//! head held the gateway at its limit, `accept` failed once a second and `/health` timed out
//! until the client left. Two things follow.
//!
//! - The *soft* limit is what the kernel enforces, and it is often 1024 while the *hard* limit
//!   (the most an unprivileged process may raise it to) is far higher. A server that does not
//!   raise it runs with a fraction of what it is allowed: [`raise_soft_limit`] does, at
//!   start-up.
//! - Connections on the main listener must stop well before the descriptors do, so that the
//!   sockets the gateway needs for its *own* work are still there: one upstream socket per
//!   relayed stream, the admin plane's probes, DNS, the log. [`max_connections_for`] is that
//!   arithmetic, the default of `--max-connections`.
//!
//! A leaf: it knows nothing of the rest of the gateway.

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

/// Descriptors kept out of the connection budget: stdin/stdout/stderr, the two listeners (main
/// and admin), the runtime's epoll and wake-up descriptors, the admin plane's own connections,
/// DNS sockets, a config or key file being read. Generous on purpose: running out of them
/// costs more than 64 client connections.
pub const RESERVED: u64 = 128;

/// The soft limit is never raised past this, even when the hard limit is "unlimited" (macOS):
/// Linux's own ceiling (`fs.nr_open`) defaults to it.
const CEILING: u64 = 1 << 20;

/// The default of `--max-connections` for a soft limit of `nofile` descriptors.
///
/// `(nofile − RESERVED) / 2`: each client connection that carries a stream costs two sockets,
/// its own and the upstream one the gateway opens for it (HTTP/1.1 upstreams carry one request
/// per connection at a time). So at the cap, with every connection streaming, the process still
/// has `RESERVED` descriptors left: accept never fails with `EMFILE`, the upstream connects do
/// not fail, and the admin plane keeps answering. With `ulimit -n` 20000: 9,936 connections.
pub fn max_connections_for(nofile: u64) -> usize {
    // An unlimited soft limit would give a cap no semaphore can hold: stop at the flag's maximum.
    let budget = (nofile.saturating_sub(RESERVED) / 2).clamp(1, MAX_CONNECTIONS);
    usize::try_from(budget).unwrap_or(usize::MAX)
}

/// The largest `--max-connections` (the flag's range ends there too).
pub const MAX_CONNECTIONS: u64 = 10_000_000;

/// The soft `RLIMIT_NOFILE` now, i.e. what the kernel enforces (`u64::MAX` if unlimited).
pub fn soft_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft == RLIM_INFINITY => u64::MAX,
        Ok((soft, _)) => soft,
        // No answer (a platform without it): assume the common default rather than nothing.
        Err(_) => 1024,
    }
}

/// What [`raise_soft_limit`] did, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub from: u64,
    pub to: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (at most `CEILING`): any process may, no
/// privilege needed. Idempotent. It changes the whole process, so an embedded gateway
/// (`crate::embed`) raises its test process's limit too, which is harmless: the tests that open
/// thousands of sockets raise it themselves anyway.
pub fn raise_soft_limit() -> nix::Result<Raised> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = if hard == RLIM_INFINITY {
        CEILING
    } else {
        hard.min(CEILING)
    };
    if soft != RLIM_INFINITY && soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    }
    Ok(Raised {
        from: soft,
        to: soft.max(target),
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_of_what_is_left_after_the_reserve() {
        assert_eq!(max_connections_for(20_000), 9_936);
        assert_eq!(max_connections_for(1024), 448);
        assert_eq!(max_connections_for(100), 1, "never zero");
        assert_eq!(
            max_connections_for(u64::MAX),
            10_000_000,
            "unlimited is not infinite"
        );
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_least_where_it_was() {
        let before = soft_limit();
        let raised = raise_soft_limit().expect("getrlimit works on the test machines");
        assert!(raised.to >= before);
        assert_eq!(soft_limit(), raised.to);
    }
}
