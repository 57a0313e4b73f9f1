//! diag and the gateway's admin plane, end to end: `--admin` on `diag demo` and `diag watch`
//! (the `/readyz` row, cell and JSON), the guess of port 8002 when `--admin` is not given, and
//! an `--admin` that does not answer. Real gateways with `--admin-listen`, the real binary.
//!
//! The fixed gateway's readiness thresholds are raised to 1 s, so that a slow moment of a
//! shared test machine cannot turn it `degraded`; the broken one keeps the defaults (100 ms for
//! a pool job to start), which its full pool exceeds by seconds.

mod support;

use serde_json::Value;
use support::{
    Mock, dead_port_url, demo_at, diag, diag_guessing_admin, gateway_with, read_json,
    spare_loopback, wait_ready,
};

/// A gateway in `mode` with its admin plane on a free port (unless `extra` says where), plus
/// `extra` flags.
fn gateway(mode: &str, mock: &Mock, extra: &[&str]) -> gateway::embed::Running {
    let mut flags = vec![];
    if !extra.contains(&"--admin-listen") {
        flags.extend(["--admin-listen", "127.0.0.1:0"]);
    }
    if mode == "fixed" {
        flags.extend([
            "--readiness-runtime-threshold-ms",
            "1000",
            "--readiness-pool-threshold-ms",
            "1000",
        ]);
    }
    flags.extend_from_slice(extra);
    gateway_with(mode, mock, &flags)
}

fn count(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no count at {pointer} in {report:#}"))
}

/// The table's `/readyz` row.
fn readyz_row(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|line| line.starts_with("/readyz (admin) "))
        .unwrap_or_else(|| panic!("no /readyz row in {stdout}"))
}

/// The tests' demo of a gateway in `mode` with `--admin` and `--expect expect`, asserted to
/// exit 0: its stdout, its report and the admin plane's URL.
fn demo_with_admin(mode: &str, expect: &str) -> (String, Value, String) {
    let mock = Mock::start();
    let gateway = gateway(mode, &mock, &[]);
    let admin = gateway.admin_url();
    wait_ready(&admin);
    let name = format!("readiness-{mode}");
    let (run, json) = demo_at(
        &gateway.url(),
        &name,
        &["--admin", &admin, "--expect", expect],
    );
    assert_eq!(run.code, Some(0), "{run:#?}");
    (run.stdout, read_json(&json), admin)
}

#[test]
fn a_fixed_gateways_readiness_stays_ready_beside_a_healthy_verdict() {
    let (stdout, report, admin) = demo_with_admin("fixed", "healthy");
    assert_eq!(report["verdict"], "healthy", "{report:#}");
    let answers = count(&report, "/probes/readyz/samples");
    assert!(answers >= 10, "probed every 100 ms for 3 s: {report:#}");
    assert_eq!(count(&report, "/probes/readyz/statuses/ready"), answers);
    assert_eq!(report["probes"]["readyz"]["errors"], 0, "{report:#}");
    assert_eq!(report["readiness"]["url"], format!("{admin}/readyz"));
    assert_eq!(count(&report, "/readiness/not_ready_answers"), 0);
    assert!(report["readiness"]["first_not_ready_s"].is_null());
    assert!(report["readiness"]["checks"]["blocking_pool"]["threshold_ms"].is_number());
    let reason = report["verdict_reason"].as_str().expect("a reason");
    assert!(reason.ends_with("; readiness stayed ready"), "{reason}");

    assert!(
        readyz_row(&stdout).ends_with(&format!("   ready {answers}")),
        "{}",
        stdout
    );
    assert!(
        stdout.contains(&format!("and {admin}/readyz every 100ms")),
        "the announce line names it: {}",
        stdout
    );
    // The live line: every cell where it was, and readiness last. The cell reads `ready` with
    // its latency, or, when diag's own probe has waited longer than an interval (a machine so
    // busy that diag itself is not scheduled: three busy loops on two cores do it), how long it
    // has waited (`>0.2s`), the live line's documented stale cell. The report above says every
    // answer was `ready`; here at least one line must show it.
    let live: Vec<&str> = stdout.lines().filter(|l| l.contains("s  sync ")).collect();
    assert!(!live.is_empty(), "{}", stdout);
    let mut ready = 0;
    for line in live {
        let (_, readyz) = line
            .split_once(" flowing | readyz ")
            .unwrap_or_else(|| panic!("no readiness cell last: {line}"));
        if let Some(latency) = readyz.strip_prefix("ready ") {
            assert!(latency.ends_with("ms"), "{line}");
            ready += 1;
        } else {
            let stale = readyz.strip_prefix('>').and_then(|s| s.strip_suffix('s'));
            assert!(
                stale.is_some_and(|s| s.parse::<f64>().is_ok()),
                "neither ready nor stale: {line}"
            );
        }
    }
    assert!(ready > 0, "no live line read ready: {stdout}");
}

#[test]
fn a_starved_pool_turns_readiness_degraded_naming_the_pool_and_the_verdict_stays_exhausted() {
    let (stdout, report, _) = demo_with_admin("broken", "exhausted");
    assert_eq!(report["verdict"], "exhausted", "{report:#}");
    assert!(
        count(&report, "/probes/readyz/statuses/degraded") > 0,
        "{report:#}"
    );
    assert_eq!(
        report["readiness"]["first_not_ready"], "degraded",
        "{report:#}"
    );
    assert!(
        count(&report, "/readiness/failing/blocking_pool") > 0,
        "{report:#}"
    );
    let pool = &report["readiness"]["checks"]["blocking_pool"];
    assert!(
        pool["max_delay_ms"].as_f64() > pool["threshold_ms"].as_f64(),
        "{report:#}"
    );
    let reason = report["verdict_reason"].as_str().expect("a reason");
    assert!(
        reason.contains("; readiness turned degraded at ") && reason.contains("blocking_pool"),
        "{reason}"
    );
    assert!(readyz_row(&stdout).contains("degraded "), "{}", stdout);
    assert!(
        stdout.contains(" | readyz degraded "),
        "a live line read degraded: {}",
        stdout
    );
}

#[test]
fn watch_prints_the_readiness_cell_last() {
    let mock = Mock::start();
    let gateway = gateway("fixed", &mock, &[]);
    let admin = gateway.admin_url();
    wait_ready(&admin);
    let url = gateway.url();
    let args = [
        "watch",
        "--gateway",
        &url,
        "--admin",
        &admin,
        "--interval",
        "200ms",
        "--count",
        "2",
    ];
    let run = diag(&args);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for line in lines {
        let cells: Vec<&str> = line.split(" | ").collect();
        assert_eq!(cells.len(), 5, "{line}");
        assert_eq!(cells[2], "health ok", "{line}");
        assert!(
            cells[4].starts_with("readyz ready ") && cells[4].ends_with("ms"),
            "{line}"
        );
    }
}

#[test]
fn an_admin_plane_that_does_not_answer_exits_3_before_measuring() {
    let mock = Mock::start();
    let gateway = gateway("fixed", &mock, &[]);
    let url = gateway.url();
    let dead = dead_port_url();
    let demo: &[&str] = &[
        "demo",
        "--gateway",
        &url,
        "--admin",
        &dead,
        "--duration",
        "1s",
    ];
    let watch: &[&str] = &["watch", "--gateway", &url, "--admin", &dead, "--count", "1"];
    for args in [demo, watch] {
        let run = diag(args);
        let command = args[0];
        assert_eq!(run.code, Some(3), "{command}: {run:#?}");
        assert!(
            run.stderr
                .contains(&format!("cannot reach the gateway's admin plane at {dead}")),
            "{command}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("--admin off"), "{}", run.stderr);
        assert!(run.stdout.is_empty(), "nothing measured: {}", run.stdout);
    }
}

#[test]
fn without_admin_diag_finds_the_admin_plane_on_port_8002_of_the_gateways_host() {
    let Some(ip) = spare_loopback() else {
        eprintln!("no loopback address besides 127.0.0.1 here: nothing to check");
        return;
    };
    let mock = Mock::start();
    let (listen, admin) = (format!("{ip}:0"), format!("{ip}:8002"));
    let gateway = gateway(
        "fixed",
        &mock,
        &["--listen", &listen, "--admin-listen", &admin],
    );
    wait_ready(&format!("http://{admin}"));
    let url = gateway.url();
    let run = diag_guessing_admin(&["watch", "--gateway", &url, "--count", "1"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains(" | readyz ready "),
        "the guessed admin plane was probed: {run:#?}"
    );
    assert!(!run.stderr.contains("no admin plane"), "{}", run.stderr);
}

#[test]
fn without_admin_and_nothing_on_port_8002_diag_says_so_once_and_carries_on() {
    let Some(ip) = spare_loopback() else {
        eprintln!("no loopback address besides 127.0.0.1 here: nothing to check");
        return;
    };
    let mock = Mock::start();
    let listen = format!("{ip}:0");
    // The admin plane is off: nothing listens on port 8002 of that address.
    let gateway = gateway_with("fixed", &mock, &["--listen", &listen]);
    let url = gateway.url();
    let run = diag_guessing_admin(&[
        "watch",
        "--gateway",
        &url,
        "--interval",
        "100ms",
        "--count",
        "2",
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let note = format!("diag: no admin plane at http://{ip}:8002 (");
    assert_eq!(run.stderr.matches(&note).count(), 1, "{}", run.stderr);
    for line in run.stdout.lines() {
        assert_eq!(line.split(" | ").count(), 4, "the line as ever: {line}");
    }
}
