//! A throwaway Prometheus on a free loopback port, and `promtool`: the real rule checker and the
//! real scraper and evaluator, so an alert rule is shown to parse and to fire, not assumed to.
//!
//! [`Prometheus::start_for`] writes a config (one scrape job over the given targets, every second,
//! rules evaluated every second) and the rules beside it, under `target/services/prometheus-*`,
//! with its TSDB there too; dropping the handle stops it and removes the directory.
//! [`check_rules`] runs `promtool check rules`. Both come with Debian's `prometheus` package; a
//! machine without it skips loudly (see [`super::skip`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Service, instance_dir, log_tail, on_path, skip, wait_listening, watchdog};

/// `promtool check rules FILE`: `Some(Ok(output))` when the rules are valid, `Some(Err(output))`
/// when promtool rejects them, `None` (after the loud skip) when promtool is not installed.
pub fn check_rules(test: &str, rules: &Path) -> Option<Result<String, String>> {
    let Some(promtool) = on_path("promtool") else {
        skip(test, Service::Prometheus);
        return None;
    };
    let output = match Command::new(promtool)
        .arg("check")
        .arg("rules")
        .arg(rules)
        .output()
    {
        Ok(output) => output,
        Err(e) => return Some(Err(format!("cannot run promtool: {e}"))),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some(if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    })
}

/// A running `prometheus`, killed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Prometheus {
    /// Starts one for `test` scraping `targets` (`127.0.0.1:PORT`, `/metrics`) every second and
    /// evaluating `rules` (a rules file's text) every second; or reports the skip and returns
    /// `None` when `prometheus` is not installed. One that is installed but does not start
    /// panics: that is a broken machine, or broken rules, not a missing package.
    pub fn start_for(test: &str, targets: &[String], rules: &str) -> Option<Prometheus> {
        if !Service::Prometheus.is_installed() {
            skip(test, Service::Prometheus);
            return None;
        }
        Some(Prometheus::start(targets, rules).unwrap_or_else(|error| panic!("{test}: {error}")))
    }

    /// Starts one on a free port.
    pub fn start(targets: &[String], rules: &str) -> Result<Prometheus, String> {
        let program = Service::Prometheus
            .program()
            .ok_or("prometheus is not installed")?;
        let port = super::free_port().map_err(|e| format!("no free port: {e}"))?;
        let dir = instance_dir("prometheus").map_err(|e| format!("no directory: {e}"))?;
        let rules_path = dir.join("rules.yml");
        std::fs::write(&rules_path, rules).map_err(|e| format!("cannot write the rules: {e}"))?;
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: [{}]\n",
            rules_path.display(),
            targets.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| format!("cannot write the config: {e}"))?;
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).map_err(|e| format!("log file: {e}"))?;
        let listen = format!("127.0.0.1:{port}");
        let child = Command::new(program)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start prometheus: {e}"))?;
        let mut prometheus = Prometheus {
            port,
            dir,
            child: Some(child),
        };
        watchdog(
            &prometheus.dir,
            &format!(
                "pkill -KILL -f 'web.listen-address={listen}' ; rm -rf '{}'",
                prometheus.dir.display()
            ),
        );
        if wait_listening(port, Duration::from_secs(20)) {
            Ok(prometheus)
        } else {
            prometheus.kill();
            Err(format!(
                "prometheus did not listen on port {port} within 20 s:\n{}",
                log_tail(&log)
            ))
        }
    }

    /// `http://127.0.0.1:PORT`, for its HTTP API (`/api/v1/query`, `/api/v1/alerts`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log so far (warnings and errors), for a failing test's message.
    pub fn log(&self) -> String {
        log_tail(&self.dir.join("prometheus.log"))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
