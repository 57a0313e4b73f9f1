//! The lessons: the teaching demo's routes, beside the gateway rather than inside it.
//!
//! - [`stream`]: `GET /chat/stream`, the plain stream every pool lesson is shown with.
//! - [`health`]: lesson 4, `GET /debug/health-sync`, `GET /debug/health-async` and
//!   `GET /debug/pool`: health checks that do and do not depend on the pool.
//! - [`solve`]: lesson 7, `POST /v1/solve`: CPU-bound work inline, on the pool, or bounded.
//!
//! They use the gateway's layers (its upstream clients, its policies, its telemetry) like any
//! route; nothing in those layers knows about them.

pub mod health;
pub mod solve;
pub mod stream;
