//! The HTTP surface: the router, the OpenAI routes, the WebSocket route, the probes, and serving
//! with a drain deadline.
//!
//! - [`routes`]: which path goes to which handler, behind which policies; JSON 404 and 405.
//! - [`openai`]: `POST /v1/chat/completions` and `GET /v1/models`.
//! - [`jobs`]: `/v1/jobs`, the handlers of the job queue ([`crate::jobs`]).
//! - [`ws`]: `GET /v1/chat/ws`, chat over a WebSocket under its own cap.
//! - [`probes`]: `GET /health`, `GET /metrics`, and the request counter.
//! - [`observe`]: every request's id, span, access record and duration; the `admission` span.
//! - [`shutdown`]: lesson 5, graceful shutdown that cannot hang, and the drain's phases;
//!   [`closing`]: 503 `shutting_down` for new work once the drain's grace is over.
//! - [`server`]: the main listener's accept loop: the connection cap, the head and idle
//!   timeouts, the drain's part; [`connection`]: what one connection is doing, and when it
//!   has waited too long.
//! - [`state`]: the one cheap handle every request shares, and the part each handler takes.

pub mod chat_head;
pub mod closing;
pub mod connection;
pub mod guard;
pub mod jobs;
pub mod observe;
pub mod openai;
pub mod probes;
pub mod routes;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod ws;
