//! Telemetry: what the gateway tells about itself, in logs and in `/metrics`.

pub mod log;
