//! Running a gateway inside another program: on its own thread, with its own runtime.
//!
//! Tests, `diag`'s tests and benchmarks start real gateways on `127.0.0.1:0`. They cannot simply
//! `tokio::spawn` [`crate::serve`] on their own runtime: the blocking-pool size is a property of
//! the *runtime* (`max_blocking_threads`), so a gateway borrowed onto the test's runtime would
//! starve, or fail to starve, the wrong pool. [`start`] gives each gateway the runtime the binary
//! would have built, through [`common::embed`], and [`Running`] stops it when dropped. The admin
//! plane runs too when `--admin-listen` is given (tests pass `127.0.0.1:0`, or `off`: its default
//! port, 8002, would collide between gateways started side by side);
//! [`Running::admin_addr`] says where.

use std::net::SocketAddr;
use std::time::Duration;

use crate::Config;

/// A gateway serving on its own thread. Dropping it shuts the gateway down, drain included
/// (tests pass `--drain-grace-secs 0`: nobody needs to notice an embedded gateway leave).
#[derive(Debug)]
pub struct Running {
    server: common::embed::Running,
    /// Where the admin plane listens, when it is on.
    admin: Option<SocketAddr>,
}

impl Running {
    /// The main listener's address (a real port even when the configuration said `:0`).
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://ADDR` of the main listener, ready for paths to be appended.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The admin plane's address, `None` with `--admin-listen off`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// `http://ADDR` of the admin plane; panics when it is off (a test that asks wants it on).
    pub fn admin_url(&self) -> String {
        let addr = self
            .admin
            .expect("the admin plane is off: start the gateway with --admin-listen 127.0.0.1:0");
        format!("http://{addr}")
    }
}

/// Binds `config.listen` (and `--admin-listen`) and serves on a new thread with the runtime from
/// [`crate::runtime`]. Returns once the sockets are bound, so the gateway accepts connections
/// from then on. Dropping the [`Running`] shuts the gateway down, drain included.
///
/// A flag combination [`Config::check`] refuses is an `InvalidInput` error, before anything starts.
pub fn start(config: Config) -> std::io::Result<Running> {
    config
        .check()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let runtime = crate::runtime(&config)?;
    let admin = crate::admin::bind(&config)?;
    let admin_addr = admin.as_ref().map(|l| l.local_addr()).transpose()?;
    // As in `main`: pool threads may sit in upstream reads; give them a second, not forever.
    let server = common::embed::start(
        "gateway",
        runtime,
        config.listen,
        Duration::from_secs(1),
        |listener, shutdown| crate::serve(listener, admin, config, shutdown),
    )?;
    Ok(Running {
        server,
        admin: admin_addr,
    })
}
