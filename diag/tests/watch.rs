//! `diag watch` end to end, against a real fixed gateway and against nothing at all; and
//! `diag watch --probe` against a plain service that is not this project's (an axum app with
//! only `/healthz`), a broken gateway whose pool starves, a server that answers 404 to
//! everything, and nothing at all.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{
    DiagChild, Mock, Recorder, dead_port_url, diag, diag_in_background, gateway, healthz_server,
};

/// Runs `diag watch` of `url` every `interval` for two lines; asserts it exited 0 after exactly
/// two, and returns them.
fn two_lines(url: &str, interval: &str) -> Vec<String> {
    let run = diag(&[
        "watch",
        "--gateway",
        url,
        "--interval",
        interval,
        "--count",
        "2",
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines: Vec<String> = run.stdout.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    lines
}

#[test]
fn watch_prints_count_lines_and_exits() {
    let mock = Mock::start();
    let gateway = gateway("fixed", &mock);
    for line in two_lines(&gateway.url(), "200ms") {
        // `HH:MM:SS  sync 2.1ms | async 0.8ms | health ok | pool 0/2 +0 queued`
        let (clock, readings) = line.split_once("  ").expect("clock, then readings");
        assert_eq!(clock.len(), 8, "{line}");
        assert_eq!(clock.matches(':').count(), 2, "{line}");
        let cells: Vec<&str> = readings.split(" | ").collect();
        assert_eq!(cells.len(), 4, "{line}");
        assert!(
            cells[0].starts_with("sync ") && cells[0].ends_with("ms"),
            "{line}"
        );
        assert!(
            cells[1].starts_with("async ") && cells[1].ends_with("ms"),
            "{line}"
        );
        assert_eq!(cells[2], "health ok", "{line}");
        assert!(
            cells[3].starts_with("pool ") && cells[3].ends_with("/2 +0 queued"),
            "{line}"
        );
    }
}

#[test]
fn a_gateway_that_stops_answering_ends_the_watch_failed() {
    let mock = Mock::start();
    let gateway = gateway("fixed", &mock);
    let url = gateway.url();
    let run = diag_in_background(&[
        "watch",
        "--gateway",
        &url,
        "--interval",
        "200ms",
        "--count",
        "8",
    ]);
    std::thread::sleep(Duration::from_millis(700));
    drop(gateway);
    let run = run.join().expect("the diag run");

    // The same lines as ever (it kept watching), and the failure in the exit code.
    assert_eq!(run.code, Some(4), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 8, "{}", run.stdout);
    assert!(lines[0].contains("  sync "), "{}", run.stdout);
    assert!(lines[7].contains("  down ("), "{}", run.stdout);
    assert!(
        run.stderr
            .contains("FAILED: the gateway stopped answering at "),
        "{}",
        run.stderr
    );
}

#[test]
fn watch_sends_the_key_and_headers_with_every_probe() {
    let recorder = Recorder::start();
    let url = recorder.url();
    let run = diag(&[
        "watch",
        "--gateway",
        &url,
        "--count",
        "1",
        "--api-key",
        "k1",
        "-H",
        "X-Diag-Test: yes",
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let heads = recorder.heads();
    assert_eq!(heads.len(), 4, "three probes and /debug/pool: {heads:#?}");
    for head in &heads {
        let head = head.to_ascii_lowercase();
        assert!(head.contains("authorization: bearer k1"), "{head}");
        assert!(head.contains("x-diag-test: yes"), "{head}");
    }
}

#[test]
fn watch_keeps_going_when_the_gateway_is_down() {
    let lines = two_lines(&dead_port_url(), "100ms");
    assert!(
        lines.iter().all(|line| line.contains("  down (")),
        "{lines:#?}"
    );
}

/// Asserts that `text` (a run's stdout or stderr) has `part` in it, showing `text` if not.
fn has(text: &str, part: &str) {
    assert!(text.contains(part), "no {part:?} in:\n{text}");
}

/// The cell of probe `name` in a `--probe` line: `name 0.4ms (p50 … failed)`.
fn cell<'a>(line: &'a str, name: &str) -> &'a str {
    let readings = line.split_once("  ").map_or(line, |(_, readings)| readings);
    readings
        .split(" | ")
        .find(|cell| cell.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no cell for {name} in {line}"))
}

/// `diag watch --gateway <a plain server with only /healthz> --probe /healthz --interval 200ms
/// <extra>`: the run, and the server's URL.
fn watch_healthz(extra: &[&str]) -> (support::Run, String) {
    let server = healthz_server();
    let url = server.url();
    let mut args = vec![
        "watch",
        "--gateway",
        &url,
        "--probe",
        "/healthz",
        "--interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    (diag(&args), url.clone())
}

#[test]
fn a_plain_service_with_only_healthz_gets_its_latencies_and_exits_0() {
    let (run, url) = watch_healthz(&["--count", "3"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    for line in &lines[..3] {
        // `12:00:01  healthz 0.4ms (p50 0.4ms p99 0.9ms max 0.9ms, 0/2 failed)`
        let cell = cell(line, "healthz");
        let latest = cell.split(' ').nth(1).expect("a latest reading");
        let number = latest
            .strip_suffix("ms")
            .or_else(|| latest.strip_suffix('s'));
        assert!(
            number.is_some_and(|n| n.parse::<f64>().is_ok()),
            "a latency: {line}"
        );
        assert!(cell.contains("(p50 ") && cell.contains(" p99 "), "{line}");
        assert!(cell.contains(", 0/"), "no failures: {line}");
        assert!(!cell.contains(" - "), "every window has answers: {line}");
    }
    has(&run.stdout, "\nsummary: 3 lines in ");
    has(&run.stdout, &format!("healthz  GET {url}/healthz"));
    has(&run.stderr, "diag watch: healthz = GET ");
}

#[test]
fn a_probe_that_404s_is_an_error_line_and_a_failed_watch() {
    let (run, _) = watch_healthz(&["--probe", "/health", "--count", "2"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let first = run.stdout.lines().next().expect("a line");
    assert!(
        cell(first, "health").starts_with("health HTTP 404 ("),
        "{first}"
    );
    assert!(cell(first, "healthz").contains(", 0/"), "{first}");
    assert!(
        run.stderr.contains("ALERT: health (GET ")
            && run.stderr.contains("HTTP 404: nothing there"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_first_threshold_crossed_ends_the_watch_with_1_at_once() {
    let (run, _) = watch_healthz(&["--probe", "gone=/missing", "--fail-on-errors", "2"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().take_while(|l| !l.is_empty()).collect();
    assert!(lines.len() <= 3, "it stopped at the crossing: {lines:#?}");
    let last = lines.last().expect("a line");
    assert!(
        last.contains("ALERT gone failed 2 times in the last 60s"),
        "{last}"
    );
    has(&run.stdout, "stopped by the alert");
    has(&run.stderr, "ALERT: gone failed 2 times");
}

#[test]
fn nothing_answering_any_probe_exits_3() {
    let run = diag(&[
        "watch",
        "--probe",
        &format!("{}/healthz", dead_port_url()),
        "--interval",
        "100ms",
        "--count",
        "2",
    ]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stdout
            .lines()
            .next()
            .is_some_and(|l| l.contains("healthz down (")),
        "{run:#?}"
    );
    has(&run.stderr, "nothing was measured");
}

#[test]
fn each_probe_sends_its_own_method_headers_and_key() {
    let recorder = Recorder::start();
    let run = diag(&[
        "watch",
        "--gateway",
        &recorder.url(),
        "-H",
        "X-All: 1",
        "--probe",
        "a=/a",
        "--expect-status",
        "404",
        "--probe",
        "b=/b",
        "--method",
        "HEAD",
        "--api-key",
        "k2",
        "-H",
        "X-Own: 2",
        "--expect-status",
        "4xx",
        "--count",
        "1",
    ]);
    // The recorder answers 404, which both probes were told to expect.
    assert_eq!(run.code, Some(0), "{run:#?}");
    let heads = recorder.heads();
    let head = |line: &str| {
        heads
            .iter()
            .find(|head| head.starts_with(line))
            .unwrap_or_else(|| panic!("no {line} in {heads:#?}"))
            .to_ascii_lowercase()
    };
    let a = head("GET /a ");
    assert!(
        a.contains("x-all: 1") && !a.contains("x-own") && !a.contains("authorization"),
        "{a}"
    );
    let b = head("HEAD /b ");
    assert!(b.contains("x-all: 1") && b.contains("x-own: 2"), "{b}");
    assert!(b.contains("authorization: bearer k2"), "{b}");
}

#[test]
fn a_starved_pool_reads_starved_and_fails_the_watch_over_its_budget() {
    let mock = Mock::start();
    let gateway = gateway("broken", &mock);
    let url = gateway.url();
    // Four streams of 1.8 s each through a pool of two threads, for 6 s: the pool stays full
    // and every request that needs a thread of it waits, while async answers stay instant.
    let stream = format!("{url}/chat/stream?{}", support::STREAM_QUERY);
    let load = diag_in_background(&["load", &stream, "-c", "4", "-z", "6s"]);
    std::thread::sleep(Duration::from_millis(500));
    let run = diag(&[
        "watch",
        "--gateway",
        &url,
        "--probe",
        "fast=/debug/health-async",
        "--probe",
        "slow=/debug/health-sync",
        "--pair",
        "fast=slow",
        "--fail-over",
        "500ms",
        "--interval",
        "250ms",
        "--window",
        "10s",
        "--count",
        "12",
    ]);
    let _ = load.join();
    assert_eq!(run.code, Some(1), "{run:#?}");
    let starved = run
        .stdout
        .lines()
        .filter(|line| line.contains(" | starved: slow waits while fast answers"))
        .count();
    assert!(starved >= 3, "{}", run.stdout);
    assert!(
        run.stdout
            .contains("fast=slow: starved: slow waits while fast answers (in "),
        "{}",
        run.stdout
    );
    has(&run.stderr, "ALERT: slow p99 ");
    has(&run.stderr, " over --fail-over 500ms, at ");
}

#[test]
fn jsonl_on_stdout_is_one_object_per_line_with_every_probe() {
    let (run, _) = watch_healthz(&[
        "--probe",
        "missing=/nope",
        "--expect-status",
        "404",
        "--pair",
        "healthz=missing",
        "--count",
        "3",
        "--jsonl",
        "-",
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let records: Vec<Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(
        records.len(),
        4,
        "three intervals and a summary: {}",
        run.stdout
    );
    for (i, record) in records[..3].iter().enumerate() {
        assert_eq!(record["type"], "interval", "{record:#}");
        assert_eq!(record["line"], i as u64 + 1, "{record:#}");
        assert!(
            record["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{record:#}"
        );
        for name in ["healthz", "missing"] {
            let probe = &record["probes"][name];
            assert_eq!(probe["method"], "GET", "{record:#}");
            assert!(
                probe["samples"].as_u64().is_some_and(|n| n >= 1),
                "{record:#}"
            );
            assert!(
                probe["p99_ms"].is_number() && probe["max_ms"].is_number(),
                "{record:#}"
            );
            assert_eq!(probe["failures"], 0, "{record:#}");
            assert_eq!(probe["latest"]["outcome"], "answered", "{record:#}");
        }
        assert_eq!(record["pairs"][0]["fast"], "healthz", "{record:#}");
        assert!(record["verdict"].is_string(), "{record:#}");
    }
    let summary = &records[3];
    assert_eq!(summary["type"], "summary", "{summary:#}");
    assert_eq!(summary["exit_code"], 0, "{summary:#}");
    assert!(
        summary["probes"]["missing"]["samples"]
            .as_u64()
            .is_some_and(|n| n >= 3),
        "{summary:#}"
    );
    // The person watching still sees the lines, on stderr.
    assert!(
        run.stderr.contains("healthz ") && run.stderr.contains("summary: 3 lines"),
        "{}",
        run.stderr
    );
}

#[test]
fn ctrl_c_and_sigterm_print_the_summary_and_exit_by_the_rules() {
    let server = healthz_server();
    let url = server.url();
    for (signal, said) in [
        (DiagChild::interrupt as fn(&DiagChild), "stopped by Ctrl-C"),
        (DiagChild::terminate, "stopped by SIGTERM"),
    ] {
        let mut child = DiagChild::start(&[
            "watch",
            "--gateway",
            &url,
            "--probe",
            "/healthz",
            "--interval",
            "100ms",
            "--jsonl",
            "-",
        ]);
        child.wait_for_lines(2);
        signal(&child);
        let run = child.wait();
        assert_eq!(run.code, Some(0), "{said}: {run:#?}");
        assert!(
            run.stderr.contains("summary: ") && run.stderr.contains(said),
            "{}",
            run.stderr
        );
        has(&run.stderr, &format!("healthz  GET {url}/healthz"));
        let summary: Value = run
            .stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|record| record["type"] == "summary")
            .unwrap_or_else(|| panic!("{said}: no summary record in {}", run.stdout));
        assert_eq!(summary["interrupted"], true, "{said}: {summary:#}");
    }
}
