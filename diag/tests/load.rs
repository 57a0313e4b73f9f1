//! `diag load` end to end: the real binary against a real mock on `127.0.0.1:0`.
//!
//! Counts are asserted exactly (`-n 200` means 200 requests, all answered 200); times only
//! against wide bounds (a 200 ms body is at least 180 ms; 1 s at 50/s is 25 to 75 requests).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Mock, Run, dead_port_url, diag, diag_json, refuses};

/// `diag load <flags> <url> --json …`, expected to exit 0: the run and its report.
fn load(name: &str, flags: &[&str], url: &str) -> (Run, Value) {
    let mut args = vec!["load"];
    args.extend_from_slice(flags);
    args.push(url);
    diag_json(name, &args)
}

fn ms(report: &serde_json::Value, field: &str) -> f64 {
    report["latency_ms"][field]
        .as_f64()
        .unwrap_or_else(|| panic!("latency_ms.{field} in {report:#}"))
}

#[test]
fn n_requests_are_exactly_n_with_ordered_percentiles() {
    let mock = Mock::start();
    let url = format!("{}/health", mock.url());
    let (run, report) = load("load-n", &["-n", "200", "-c", "10"], &url);
    assert_eq!(report["kind"], "load");
    assert_eq!(report["method"], "GET");
    assert_eq!(report["concurrency"], 10);
    assert!(report["rate"].is_null());
    assert_eq!(report["requests"]["total"], 200, "{report:#}");
    assert_eq!(report["requests"]["ok"], 200);
    assert_eq!(report["requests"]["errors"], 0);
    assert_eq!(report["status_codes"]["200"], 200);
    assert_eq!(report["errors"], serde_json::json!({}));
    // `{"status":"ok"}` is 15 bytes.
    assert_eq!(report["bytes"]["total"], 200 * 15);
    assert!(report["rps"].as_f64().expect("rps") > 0.0);

    let order = [
        "fastest", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p99_9", "slowest",
    ];
    for pair in order.windows(2) {
        assert!(
            ms(&report, pair[0]) <= ms(&report, pair[1]),
            "{} > {} in {report:#}",
            pair[0],
            pair[1]
        );
    }
    assert!(ms(&report, "fastest") > 0.0);
    // A local health check: well under a second even on a busy machine.
    assert!(ms(&report, "p50") < 1000.0, "{report:#}");
    let average = ms(&report, "average");
    assert!(ms(&report, "fastest") <= average && average <= ms(&report, "slowest"));

    // The human report: hey's sections.
    for section in [
        "Summary:",
        "Requests/sec:",
        "Response time histogram:",
        "Latency distribution:",
        "  99.9% in ",
        "Status code distribution:",
        "  [200]\t200 responses",
    ] {
        assert!(
            run.stdout.contains(section),
            "no {section:?} in\n{}",
            run.stdout
        );
    }
}

#[test]
fn a_rate_sends_about_rate_times_duration_requests() {
    let mock = Mock::start();
    let url = format!("{}/health", mock.url());
    let (run, report) = load("load-q", &["-z", "1s", "-q", "50", "-c", "5"], &url);
    let total = report["requests"]["total"].as_u64().expect("total");
    assert!((25..=75).contains(&total), "{total} requests in {report:#}");
    assert_eq!(report["rate"], 50.0);
    let duration = report["duration_s"].as_f64().expect("duration_s");
    assert!((0.9..3.0).contains(&duration), "{report:#}");
    assert!(
        run.stdout
            .contains("Latency distribution (a late request counts from its intended start):"),
        "{}",
        run.stdout
    );
}

#[test]
fn under_a_rate_a_late_request_counts_from_when_it_was_due() {
    // One worker, ~200 ms a request, 20 requests due per second: the worker falls further
    // behind with every request. Counted from the send, every latency would be ~200 ms; counted
    // from when each was due, the last ones waited over a second.
    let mock = Mock::start();
    let url = format!("{}/slow_stream?chunks=2&interval_ms=100", mock.url());
    let (run, report) = load("load-co", &["-z", "2s", "-q", "20", "-c", "1"], &url);
    let total = report["requests"]["total"].as_u64().expect("total");
    assert!((5..=12).contains(&total), "{report:#}");
    assert!(ms(&report, "slowest") >= 600.0, "{report:#}");
    // 40 were due; the ones never sent are named, not hidden.
    let unsent = report["requests"]["unsent"].as_u64().expect("unsent");
    let aborted = report["requests"]["aborted"].as_u64().expect("aborted");
    assert_eq!(total + aborted + unsent, 40, "{report:#}");
    assert!(run.stdout.contains("never sent"), "{}", run.stdout);
}

#[test]
fn latency_runs_to_the_end_of_the_body() {
    let mock = Mock::start();
    let url = format!("{}/slow_stream?chunks=2&interval_ms=100", mock.url());
    let (_, report) = load("load-slow", &["-n", "10", "-c", "5"], &url);
    assert_eq!(report["requests"]["ok"], 10, "{report:#}");
    assert!(ms(&report, "p50") >= 180.0, "{report:#}");
    assert!(ms(&report, "fastest") >= 180.0, "{report:#}");
}

#[test]
fn a_post_with_headers_and_a_body_reaches_the_server() {
    let mock = Mock::with_flags(&["--ttft-ms", "0", "--itl-ms", "0", "--tokens", "2"]);
    let url = format!("{}/v1/chat/completions", mock.url());
    let body = r#"{"model":"m","messages":[{"role":"user","content":"Hi"}]}"#;
    let (_, report) = load(
        "load-post",
        &[
            "-n",
            "20",
            "-c",
            "4",
            "-m",
            "post",
            "-T",
            "application/json",
            "-H",
            "x-mock-fault: 503",
            "-d",
            body,
        ],
        &url,
    );
    assert_eq!(report["method"], "POST");
    // The header reached the mock: every answer is the forced 503, counted as a response.
    assert_eq!(report["status_codes"]["503"], 20, "{report:#}");
    assert_eq!(report["requests"]["ok"], 20);
}

#[test]
fn a_dead_port_is_unreachable_with_exit_code_3() {
    let url = format!("{}/health", dead_port_url());
    let run = diag(&["load", "-n", "10", &url]);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("cannot reach"), "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing was measured"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_server_that_dies_mid_run_gives_connect_errors_and_the_run_completes() {
    let mock = Mock::start();
    // A one-chunk stream, so the mock counts each request the run makes (`/health` is not
    // counted): the server dies once it has served some, not after a guessed sleep.
    let url = format!("{}/slow_stream?chunks=1&interval_ms=0", mock.url());
    let runner = std::thread::spawn(move || {
        load(
            "load-dies",
            &["-z", "2s", "-q", "100", "-c", "2", "--disable-keepalive"],
            &url,
        )
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime to poll the mock");
    runtime.block_on(
        mock.wait_stats("the run to get 5 answers", Duration::from_secs(10), |s| {
            s.completed >= 5
        }),
    );
    drop(mock);
    let (run, report) = runner
        .join()
        .expect("the run exited 0 and wrote its report");
    let ok = report["requests"]["ok"].as_u64().expect("ok");
    assert!(ok > 0, "{report:#}");
    let connect = &report["errors"]["connect"];
    assert!(
        connect["count"].as_u64().expect("connect count") > 0,
        "{report:#}"
    );
    assert!(
        connect["example"]
            .as_str()
            .expect("example")
            .contains("refused"),
        "{report:#}"
    );
    assert_eq!(
        report["requests"]["errors"].as_u64(),
        report["errors"]
            .as_object()
            .map(|kinds| kinds.values().filter_map(|e| e["count"].as_u64()).sum()),
    );
    assert!(run.stdout.contains("Error distribution:"), "{}", run.stdout);
}

/// Exit 1 when the report cannot be written (here its directory is a file), after the run:
/// stderr names the path.
#[test]
fn an_unwritable_json_path_exits_1_and_names_it() {
    let mock = Mock::start();
    let (blocker, report) = support::unwritable_json("load-blocker");
    let url = format!("{}/health", mock.url());
    let run = diag(&[
        "load",
        "-n",
        "5",
        &url,
        "--json",
        report.to_str().expect("utf-8"),
    ]);
    support::assert_unwritable(&run, &blocker);
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    let url = "http://127.0.0.1:9/health";
    let cases: [(&[&str], &str); 9] = [
        (
            &["load", "-n", "0", url],
            "must be a whole number, at least 1",
        ),
        (&["load", "-c", "0", url], "must be a whole number from 1"),
        (&["load", "-n", "5", "-z", "1s", url], "cannot be used with"),
        (&["load", "-q", "-5", url], "not a rate"),
        (&["load", "-q", "0", url], "not a rate"),
        (&["load", "-H", "novalue", url], "Name: value"),
        (&["load", "ftp://127.0.0.1/x"], "http:// or https://"),
        (&["load", "-z", "10", url], "no unit"),
        (
            &["load", "-D", "/nonexistent/body.json", url],
            "cannot read",
        ),
    ];
    refuses(&cases);
}
