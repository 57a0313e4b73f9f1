//! Running a gateway inside another program: on its own thread, with its own runtime.
//!
//! Tests, `diag`'s tests and benchmarks start real gateways on `127.0.0.1:0`. They cannot simply
//! `tokio::spawn` [`crate::serve`] on their own runtime: the blocking-pool size is a property of
//! the *runtime* (`max_blocking_threads`), so a gateway borrowed onto the test's runtime would
//! starve, or fail to starve, the wrong pool. [`start`] gives each gateway the runtime the binary
//! would have built, through [`common::embed`], and [`Running`] stops it when dropped.

use std::time::Duration;

pub use common::embed::Running;

use crate::Config;

/// Binds `config.listen` and serves on a new thread with the runtime from [`crate::runtime`].
/// Returns once the socket is bound, so the gateway accepts connections from then on. Dropping
/// the [`Running`] shuts the gateway down, drain included.
///
/// A flag combination [`Config::check`] refuses is an `InvalidInput` error, before anything starts.
pub fn start(config: Config) -> std::io::Result<Running> {
    config
        .check()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let runtime = crate::runtime(&config)?;
    // As in `main`: pool threads may sit in upstream reads; give them a second, not forever.
    common::embed::start(
        "gateway",
        runtime,
        config.listen,
        Duration::from_secs(1),
        |listener, shutdown| crate::serve(listener, config, shutdown),
    )
}
