//! A throwaway HAProxy in front of a fleet of gateways: the shipped `deploy/haproxy.cfg` rendered
//! with the fleet's addresses, run in the foreground, its stats socket read for what HAProxy
//! thinks of each server.
//!
//! The tests, `cargo xtask fleet up`, `make demo-scale` and `make bench-fleet` all start it here,
//! from the one template, so what they prove is about the configuration a user copies.
//! [`Haproxy::show_stat`] is the judge: a server HAProxy marked `DOWN` gets no new requests,
//! whatever the gateway's own counters say.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Detached, Service, detach_marker, instance_dir, log_tail, skip, wait_listening};

/// `deploy/haproxy.cfg`, the template every fleet renders.
pub const TEMPLATE: &str = include_str!("../../../deploy/haproxy.cfg");

/// The backend the template names, whose servers are the gateways.
pub const BACKEND: &str = "gateways";

/// One gateway behind HAProxy: where it serves traffic and where its admin plane answers the
/// check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its name in HAProxy (`gw1`, ...), as `show stat` reports it.
    pub name: String,
    pub main: SocketAddr,
    pub admin: SocketAddr,
}

/// What the template needs: the public listener, the stats page, and the servers.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub stats: SocketAddr,
    pub servers: Vec<Server>,
}

impl Config {
    /// [`TEMPLATE`] with this fleet's addresses and `socket` as the stats socket's path: the
    /// `server` line is repeated once per server.
    pub fn render(&self, socket: &Path) -> String {
        let mut out = String::new();
        for line in TEMPLATE.lines() {
            if line.contains("{{name}}") {
                for server in &self.servers {
                    let line = line
                        .replace("{{name}}", &server.name)
                        .replace("{{main}}", &server.main.to_string())
                        .replace("{{admin_port}}", &server.admin.port().to_string());
                    out.push_str(&line);
                    out.push('\n');
                }
                continue;
            }
            let line = line
                .replace("{{listen}}", &self.listen.to_string())
                .replace("{{stats}}", &self.stats.to_string())
                .replace("{{socket}}", &socket.to_string_lossy());
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// A running `haproxy`, killed when dropped (unless [`Haproxy::detach`]ed).
#[derive(Debug)]
pub struct Haproxy {
    config: Config,
    dir: PathBuf,
    child: Option<Child>,
}

impl Haproxy {
    /// Starts one for `test`, or reports the skip and returns `None` when `haproxy` is not
    /// installed. One that is installed but fails to start panics.
    pub fn start_for(test: &str, config: Config) -> Option<Haproxy> {
        if !Service::Haproxy.is_installed() {
            skip(test, Service::Haproxy);
            return None;
        }
        Some(Haproxy::start(config).unwrap_or_else(|error| panic!("{test}: {error}")))
    }

    /// Renders the template for `config` into a fresh directory and starts HAProxy on it in the
    /// foreground; returns once its listener and its stats socket answer.
    pub fn start(config: Config) -> Result<Haproxy, String> {
        let program = Service::Haproxy
            .program()
            .ok_or("haproxy is not installed")?;
        let dir = instance_dir("haproxy").map_err(|e| format!("no directory for haproxy: {e}"))?;
        let socket = dir.join("haproxy.sock");
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config.render(&socket))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        let log_path = dir.join("haproxy.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("no log file: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("no log file: {e}"))?;
        // `-db`: foreground, no daemon, so the handle is the process and its log is our file.
        // Its own process group: a Ctrl-C meant for a demo does not stop it behind the demo's back.
        let child = Command::new(program)
            .args(["-db", "-f"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start haproxy: {e}"))?;
        super::watchdog(
            &dir,
            &format!("kill -9 {} ; rm -rf '{}'", child.id(), dir.display()),
        );
        let mut haproxy = Haproxy {
            config,
            dir,
            child: Some(child),
        };
        let up = wait_listening(haproxy.config.listen.port(), Duration::from_secs(10))
            && haproxy.show_stat().is_ok();
        if !up {
            haproxy.kill();
            return Err(format!(
                "haproxy did not listen on {} within 10 s:\n{}",
                haproxy.config.listen,
                log_tail(&log_path)
            ));
        }
        Ok(haproxy)
    }

    /// `http://LISTEN`, where clients send their requests.
    pub fn url(&self) -> String {
        format!("http://{}", self.config.listen)
    }

    /// `http://STATS/`, the stats page.
    pub fn stats_url(&self) -> String {
        format!("http://{}/", self.config.stats)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The stats socket's path.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("haproxy.sock")
    }

    /// The rendered configuration file.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("haproxy.log")
    }

    /// The process id, for reading its CPU time from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `show stat` on the stats socket: one row per frontend, backend and server.
    pub fn show_stat(&self) -> Result<Vec<StatRow>, String> {
        show_stat(&self.socket())
    }

    /// HAProxy's status of server `name` in the gateways' backend (`UP`, `DOWN`, `MAINT`,
    /// `UP 1/3` while rising, `DOWN 1/2` while falling), `None` if unreadable.
    pub fn server_status(&self, name: &str) -> Option<String> {
        let rows = self.show_stat().ok()?;
        rows.iter()
            .find(|row| row.proxy == BACKEND && row.server == name)
            .map(|row| row.get("status").to_owned())
    }

    /// Any command of the stats socket (`disable server gateways/gw1`, ...); its answer.
    pub fn command(&self, command: &str) -> Result<String, String> {
        stats_command(&self.socket(), command)
    }

    /// Leaves HAProxy running after this handle is gone (its watchdog disarmed): what a later
    /// process needs to stop it. Used by `cargo xtask fleet up`.
    pub fn detach(mut self) -> Detached {
        detach_marker(&self.dir);
        let pid = self.child.take().map_or(0, |child| child.id());
        Detached {
            service: Service::Haproxy,
            pid,
            dir: self.dir.clone(),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One row of `show stat`: a frontend (`server` = `FRONTEND`), a backend (`BACKEND`) or a
/// server, with every column by its header name.
#[derive(Debug, Clone)]
pub struct StatRow {
    pub proxy: String,
    pub server: String,
    fields: HashMap<String, String>,
}

impl StatRow {
    /// A column as text, "" when absent or empty.
    pub fn get(&self, column: &str) -> &str {
        self.fields.get(column).map_or("", String::as_str)
    }

    /// A numeric column (`scur`, `stot`, `hrsp_5xx`, `wretr`, `wredis`, ...), 0 when empty.
    pub fn number(&self, column: &str) -> u64 {
        self.get(column).parse().unwrap_or(0)
    }

    /// Whether HAProxy sends new requests to it: `UP`, or `UP` with a check falling (`UP 1/2`).
    pub fn is_up(&self) -> bool {
        self.get("status").starts_with("UP")
    }
}

/// `show stat` on the stats socket at `socket`, parsed by its header line.
pub fn show_stat(socket: &Path) -> Result<Vec<StatRow>, String> {
    parse_stat(&stats_command(socket, "show stat")?)
}

/// Parses `show stat`'s CSV: a `# pxname,svname,...` header, then one line per row.
pub fn parse_stat(csv: &str) -> Result<Vec<StatRow>, String> {
    let mut lines = csv.lines();
    let header = lines
        .next()
        .and_then(|line| line.strip_prefix("# "))
        .ok_or_else(|| format!("not show stat's output: {csv:.80}"))?;
    let columns: Vec<&str> = header.split(',').collect();
    Ok(lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: HashMap<String, String> = columns
                .iter()
                .zip(line.split(','))
                .map(|(name, value)| ((*name).to_owned(), value.to_owned()))
                .collect();
            StatRow {
                proxy: fields.get("pxname").cloned().unwrap_or_default(),
                server: fields.get("svname").cloned().unwrap_or_default(),
                fields,
            }
        })
        .collect())
}

/// Sends one command to the stats socket and reads the answer to its end (HAProxy closes the
/// connection after one command in non-interactive mode).
pub fn stats_command(socket: &Path, command: &str) -> Result<String, String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream
        .write_all(format!("{command}\n").as_bytes())
        .map_err(|e| format!("cannot send `{command}`: {e}"))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("no answer to `{command}`: {e}"))?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Config {
            listen: addr(8080),
            stats: addr(8081),
            servers: (1..=3)
                .map(|i| Server {
                    name: format!("gw{i}"),
                    main: addr(8099 + i),
                    admin: addr(8199 + i),
                })
                .collect(),
        }
    }

    #[test]
    fn the_template_renders_one_server_line_per_gateway() {
        let text = config().render(Path::new("/tmp/x/haproxy.sock"));
        assert!(!text.contains("{{"), "a placeholder is left:\n{text}");
        assert!(text.contains("bind 127.0.0.1:8080\n"));
        assert!(text.contains("stats socket /tmp/x/haproxy.sock "));
        assert!(text.contains("    server gw1 127.0.0.1:8100 check port 8200\n"));
        assert!(text.contains("    server gw3 127.0.0.1:8102 check port 8202\n"));
        // The contract of issue 16, in the shipped file.
        for needle in [
            "balance leastconn",
            "http-check send meth GET uri /readyz",
            "inter 1s fall 2 rise 3",
            "option redispatch",
            "retry-on conn-failure",
        ] {
            assert!(text.contains(needle), "{needle} missing");
        }
    }

    #[test]
    fn show_stat_is_read_by_column_name() {
        let csv = "# pxname,svname,scur,status,hrsp_5xx,\n\
                   gateways,gw1,3,UP,,\n\
                   gateways,gw2,0,DOWN 1/2,,\n\
                   fleet,FRONTEND,3,OPEN,7,\n\n";
        let rows = parse_stat(csv).expect("parsed");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].server, "gw1");
        assert_eq!(rows[0].number("scur"), 3);
        assert!(rows[0].is_up() && !rows[1].is_up());
        assert_eq!(rows[2].number("hrsp_5xx"), 7);
        assert_eq!(rows[1].number("hrsp_5xx"), 0);
        assert!(parse_stat("Unknown command").is_err());
    }
}
