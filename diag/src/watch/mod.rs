//! `diag watch`: one line per interval, for a service that something else is loading. Two
//! views, chosen by whether the user names URLs with `--probe`:
//!
//! - [`gateway`], without `--probe`: this project's gateway, its three health endpoints, its
//!   `/debug/pool` and its admin plane's `/readyz`, closed loop, as it has always been.
//! - [`probes`], with `--probe`: any service's URLs, fired open loop by the one prober
//!   ([`crate::probe`]) on its own thread; each line a sliding window per probe ([`window`]),
//!   the starved-pool verdict of a `--pair` ([`pair`]), alerts with an exit code ([`alert`])
//!   and JSON lines ([`jsonl`]).
//!
//! Both share the line's clock ([`clock`]) and the rule for a service that stopped answering
//! ([`downtime`]).

pub mod alert;
pub mod clock;
pub mod downtime;
pub mod gateway;
pub mod jsonl;
pub mod pair;
pub mod probes;
pub mod window;

use crate::Error;
use crate::cli::WatchArgs;

/// Runs `diag watch` until `--count` lines, Ctrl-C, or (with `--probe`) an alert.
pub fn run(args: &WatchArgs) -> Result<(), Error> {
    if args.probes.is_empty() {
        gateway::run(args)
    } else {
        probes::run(args)
    }
}
