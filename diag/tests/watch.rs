//! `diag watch` end to end, against a real fixed gateway and against nothing at all.

mod common;

use common::{Mock, dead_port_url, diag, gateway};

#[test]
fn watch_prints_count_lines_and_exits() {
    let mock = Mock::start();
    let gateway = gateway("fixed", &mock);
    let url = gateway.url();
    let run = diag(&[
        "watch",
        "--gateway",
        &url,
        "--interval",
        "200ms",
        "--count",
        "2",
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for line in lines {
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
fn watch_keeps_going_when_the_gateway_is_down() {
    let url = dead_port_url();
    let run = diag(&[
        "watch",
        "--gateway",
        &url,
        "--interval",
        "100ms",
        "--count",
        "2",
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(
        lines.iter().all(|line| line.contains("  down (")),
        "{}",
        run.stdout
    );
}
