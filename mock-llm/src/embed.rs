//! Running the mock inside another program: on its own thread, with its own runtime.
//!
//! Every test suite in the workspace needs a real upstream on `127.0.0.1:0`. On its own thread
//! (a current-thread runtime, through [`common::embed`]) the mock's timers keep their pace however
//! busy the test's runtime gets with its clients, so a test measures the code under test rather
//! than its own scheduling. [`Running`] stops the mock when dropped, cutting any stream it still
//! serves (as the binary's SIGTERM does).

use std::time::Duration;

pub use common::embed::Running;

use crate::Config;

/// Binds `config.listen` and serves on a new thread. Returns once the socket is bound, so the
/// mock accepts connections from then on.
pub fn start(config: Config) -> std::io::Result<Running> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    common::embed::start(
        "mock-llm",
        runtime,
        config.listen,
        Duration::ZERO,
        |listener, shutdown| crate::serve(listener, config, shutdown),
    )
}
