//! A throwaway `redis-server` on a free loopback port: no persistence, its own directory, stopped
//! on drop. [`Redis::kill`] and [`Redis::restart`] exist because the cache and the shared rate
//! limits must be shown to survive a Redis that goes away and comes back on the same address.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{
    DETACHED, Detached, Service, detach_marker, instance_dir, log_tail, skip, wait_listening,
    watchdog,
};

/// A running `redis-server`, killed when dropped.
#[derive(Debug)]
pub struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    /// Starts one for `test`, or reports the skip (see [`skip`]) and returns `None` when
    /// `redis-server` is not installed. A Redis that is installed but fails to start panics: that
    /// is a broken machine, not a missing package.
    pub fn start_for(test: &str) -> Option<Redis> {
        if !Service::Redis.is_installed() {
            skip(test, Service::Redis);
            return None;
        }
        Some(Redis::start().unwrap_or_else(|error| panic!("{test}: {error}")))
    }

    /// Starts one on a free port.
    pub fn start() -> Result<Redis, String> {
        let port = super::free_port().map_err(|e| format!("no free port: {e}"))?;
        let dir = instance_dir("redis").map_err(|e| format!("no directory for redis: {e}"))?;
        let mut redis = Redis {
            port,
            dir,
            child: None,
        };
        redis.spawn()?;
        watchdog(
            &redis.dir,
            &format!(
                "pkill -KILL -f 'redis-server 127.0.0.1:{port}' ; rm -rf '{}'",
                redis.dir.display()
            ),
        );
        Ok(redis)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let program = Service::Redis
            .program()
            .ok_or("redis-server is not installed")?;
        let log = self.dir.join("redis.log");
        let child = Command::new(program)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C meant for a demo does not stop it behind its back.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        self.child = Some(child);
        if wait_listening(self.port, Duration::from_secs(10)) && self.ping() {
            Ok(())
        } else {
            self.kill();
            Err(format!(
                "redis-server did not answer on port {} within 10 s:\n{}",
                self.port,
                log_tail(&log)
            ))
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether it answers `PING` with `PONG` right now.
    pub fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Kills it at once (`SIGKILL`), as an outage would; the port stays free for [`Redis::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leaves it running after this handle is gone (its watchdog disarmed): what a later process
    /// needs to stop it. Used by `cargo xtask fleet up`.
    pub fn detach(mut self) -> Detached {
        detach_marker(&self.dir);
        let pid = self.child.take().map_or(0, |child| child.id());
        Detached {
            service: Service::Redis,
            pid,
            dir: self.dir.clone(),
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_none() && self.dir.join(DETACHED).exists() {
            return;
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
