//! `diag watch` end to end, against a real fixed gateway and against nothing at all.

mod support;

use std::time::Duration;

use support::{Mock, Recorder, dead_port_url, diag, diag_in_background, gateway};

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
