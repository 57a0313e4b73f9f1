//! `cargo xtask skipped`: the last step of `make test`. Tests that need a real service (Redis,
//! Postgres, HAProxy, nginx, Prometheus) and found it missing recorded themselves in
//! `target/services-skipped.txt` (see `common::services`); this prints them in one box with the
//! `apt-get` line that enables them, so a green run that skipped something never looks complete.
//! `--reset` (the first step) clears the record of the previous run.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use common::services::{self, Service};

pub fn run(reset: bool) -> Result<ExitCode> {
    let log = services::skipped_log();
    if reset {
        let _ = std::fs::remove_file(&log);
        return Ok(ExitCode::SUCCESS);
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut by_service: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split('\t');
        if let (Some(test), Some(service)) = (fields.next(), fields.next()) {
            by_service.entry(service).or_default().push(test);
        }
    }
    if by_service.is_empty() {
        let installed: Vec<&str> = Service::ALL
            .iter()
            .filter(|s| s.is_installed())
            .map(|s| s.name())
            .collect();
        println!(
            "xtask: no test was skipped (services installed: {})",
            if installed.is_empty() {
                "none".to_string()
            } else {
                installed.join(", ")
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let total: usize = by_service.values().map(Vec::len).sum();
    let bar = "*".repeat(78);
    println!(
        "\n{bar}\n*** {total} test(s) SKIPPED: their service is not installed on this machine."
    );
    let mut packages = Vec::new();
    for (service, tests) in &by_service {
        let package = Service::ALL
            .iter()
            .find(|s| s.name() == *service)
            .map_or(*service, |s| s.package());
        packages.push(package);
        println!("***   {service} ({package}): {}", tests.join(", "));
    }
    println!(
        "*** Run them too:  sudo apt-get install -y {}  && make test\n{bar}\n",
        packages.join(" ")
    );
    Ok(ExitCode::SUCCESS)
}
