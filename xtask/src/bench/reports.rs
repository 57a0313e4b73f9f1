//! Every read of diag's JSON reports (and of the mock's `/stats`), in one place.
//!
//! The benchmarks run `diag llm` and `diag load` with `--json` and read numbers back. They read
//! them into diag's own report types (`diag::LlmReport`, `diag::LoadReport`, which derive
//! `Deserialize` for this): a field renamed or retyped in diag fails to *compile* here, never in
//! the middle of a benchmark's table. The few rules the benchmarks add on top (a latency that
//! must have been measured, the answers that were not 200) are functions below.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use diag::{JobsReport, LlmReport, LoadReport};

/// The report diag wrote to `path`, read as diag's own type.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("diag wrote no {path:?}"))?;
    serde_json::from_str(&text).with_context(|| format!("{path:?} is not the report diag writes"))
}

/// `latency_ms.p50` and `.p99` of a `diag load` report. diag writes `null` when nothing was
/// measured; every benchmark needs these two, so a `null` fails, naming the field.
pub fn p50_p99_ms(report: &LoadReport) -> Result<(f64, f64)> {
    let p50 = report.latency_ms.p50;
    let p99 = report.latency_ms.p99;
    Ok((
        p50.context("`latency_ms.p50` in diag's report is null: nothing was measured")?,
        p99.context("`latency_ms.p99` in diag's report is null: nothing was measured")?,
    ))
}

/// Responses with a status other than 200.
pub fn non_200(report: &LoadReport) -> u64 {
    report
        .status_codes
        .iter()
        .filter(|&(&status, _)| status != 200)
        .map(|(_, count)| count)
        .sum()
}

/// `chat.requests` of the mock's `/stats` (`mock_llm::stats::Snapshot`): every chat request the
/// upstream saw, hedges included. Read by path: typing it would make xtask depend on the mock's
/// server stack for one number.
pub fn mock_chat_requests(stats: &str) -> Result<u64> {
    let stats: Value = serde_json::from_str(stats).context("the mock's /stats is not JSON")?;
    stats["chat"]["requests"]
        .as_u64()
        .context("the mock's /stats has no integer `chat.requests`")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn write(name: &str, value: &Value) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("xtask-{}-{name}.json", std::process::id()));
        std::fs::write(&path, value.to_string()).expect("write");
        path
    }

    /// What `diag load --json` writes: read back through diag's type, rules on top.
    #[test]
    fn a_load_report_counts_what_was_not_200_and_needs_its_latencies() {
        let mut v = json!({
            "kind": "load", "url": "http://127.0.0.1:1/", "method": "GET", "concurrency": 50,
            "rate": null, "duration_s": 3.3, "rps": 120.5,
            "requests": {"total": 400, "ok": 400, "errors": 0, "aborted": 0, "unsent": 0},
            "latency_ms": {"fastest": 1.0, "slowest": 990.0, "average": 800.0, "p10": 700.0,
                           "p25": 750.0, "p50": 810.0, "p75": 900.0, "p90": 950.0, "p95": 970.0,
                           "p99": 987.125},
            "status_codes": {"200": 67, "503": 333},
            "errors": {},
            "bytes": {"total": 0},
        });
        let path = write("load", &v);
        let report: Result<LoadReport> = read(&path);
        let report = report.expect("diag's own shape");
        assert_eq!(non_200(&report), 333);
        assert_eq!(p50_p99_ms(&report).ok(), Some((810.0, 987.125)));

        v["latency_ms"]["p50"] = Value::Null;
        let path = write("load-null", &v);
        let report: LoadReport = read(&path).expect("null is allowed on the wire");
        let error = p50_p99_ms(&report).err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("latency_ms.p50")));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_report_of_the_other_kind_is_refused() {
        let path = write("kind", &json!({"kind": "llm"}));
        let report: Result<LoadReport> = read(&path);
        assert!(report.is_err());
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn the_mock_counts_every_upstream_request() {
        let stats = r#"{"active_streams":0,"chat":{"requests":105,"started":100}}"#;
        assert_eq!(mock_chat_requests(stats).ok(), Some(105));
    }
}
