//! # common: the pieces two binaries of the workspace would otherwise each write
//!
//! Kept deliberately small and free of the binaries' own crates, so that every member can depend
//! on it without a loop: it knows nothing of the gateway, the mock or diag.
//!
//! # Layout
//!
//! - [`embed`]: a server on its own thread with its own runtime, stopped when dropped. The
//!   gateway and the mock both run inside tests and tools this way.
//! - [`pool`]: the JSON of the gateway's `GET /debug/pool`, written by the gateway and read by
//!   diag, so a field renamed on one side fails to compile on the other.
//! - [`logging`]: the binaries' log set-up: `RUST_LOG`, and colors only on a terminal (`NO_COLOR`).
//! - [`prometheus`]: reading a `/metrics` text exposition back (tests, benchmarks).
//! - [`signal`]: Ctrl-C or SIGTERM, whichever comes first, for the tools that stop on either.
//! - `services` (feature `services`): throwaway instances of Redis, Postgres, HAProxy (in front
//!   of gateways, from `deploy/haproxy.cfg`) and the other real services tests use, the loud skip
//!   when one is not installed, and `detach` for the fleet `cargo xtask fleet up` leaves running.

pub mod embed;
pub mod logging;
pub mod pool;
pub mod prometheus;
#[cfg(feature = "services")]
pub mod services;
pub mod signal;
