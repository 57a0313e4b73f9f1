//! Policies: what a request must pass before and while it reaches an upstream.
//!
//! - [`auth`]: API keys, compared in constant time, never logged.
//! - [`chat`]: a chat completion's one way to its provider, for the chat route and the job
//!   workers alike.
//! - [`limits`]: lesson 8, the inbound cap held until a stream's last byte, a short queue, a
//!   rate per key.
//! - [`resilience`]: lesson 9, retries before the first byte and hedged requests, each bounded.

pub mod auth;
pub mod chat;
pub mod limits;
pub mod resilience;
