//! Log lines written to a file are plain text: no ANSI color codes (`common::logging`).
//!
//! The demos send each service's output to `target/demo/*.log`; escape codes there made
//! `head gateway.log | cat -v` read `^[[2m2026-…` and broke `grep` on a level or a field.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_log_written_to_a_file_has_no_color_codes() {
    let dir = std::env::temp_dir().join(format!("mock-llm-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("mock.log");
    let log = std::fs::File::create(&path).expect("log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-llm"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(log))
        .stderr(Stdio::null())
        .spawn()
        .expect("start mock-llm");
    // Bounded wait for the start-up line, then stop the child whatever happened.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("mock-llm listening") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        text.contains("mock-llm listening"),
        "no start-up line in 20 s: {text:?}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escape in a log file: {text:?}"
    );
}
