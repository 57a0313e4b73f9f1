//! Every read of diag's JSON reports (and of the mock's `/stats`), in one place.
//!
//! The benchmarks run `diag llm` and `diag load` with `--json` and read a few numbers back. The
//! structs below are the part of diag's `LlmReport` and `LoadReport` the benchmarks use, with
//! diag's field names, filled by looking each field up by path (`"ttft_ms.p99"`) in the JSON.
//! The lesson is the seam: a renamed field in diag fails here, at the read, with the field
//! named, and never in the middle of a table; and the day diag's report types derive
//! `Deserialize`, the lookups in this file are all that changes (the benchmarks read fields).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// What the benchmarks read of `diag llm --json` (diag's `LlmReport`).
#[derive(Debug, Clone, PartialEq)]
pub struct LlmReport {
    /// From the first stream started to the last one ended, seconds.
    pub duration_s: f64,
    pub streams: StreamCounts,
    pub ttft_ms: Spread,
    pub e2e_ms: Spread,
    /// The largest gap between two tokens of one stream, over all streams.
    pub max_gap_ms: Option<f64>,
    pub output_tokens: OutputTokens,
    /// `--health`'s probes of `{base}/health`; `None` without `--health`.
    pub health: Option<PollStats>,
    pub sustained: bool,
    pub sustained_reason: String,
}

/// `streams` of an [`LlmReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct StreamCounts {
    pub started: u64,
    /// Ended with `data: [DONE]`.
    pub completed: u64,
    pub failed: u64,
    /// Failed streams by kind: `http_503`, `connect`, `timeout`, ...
    pub errors: BTreeMap<String, u64>,
}

/// Percentiles of one latency in ms; each `None` when nothing was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// `output_tokens` of an [`LlmReport`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputTokens {
    pub total: f64,
    /// `total / duration_s`.
    pub per_s: f64,
}

/// `health` of an [`LlmReport`]: what the `/health` probes saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollStats {
    pub samples: u64,
    pub p99_ms: Option<f64>,
    pub timeouts: u64,
    pub errors: u64,
}

impl LlmReport {
    /// The report diag wrote to `path`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_json(&read_json(path)?)
    }

    fn from_json(v: &Value) -> Result<Self> {
        let health = if field(v, "health")?.is_null() {
            None
        } else {
            Some(PollStats {
                samples: uint(v, "health.samples")?,
                p99_ms: opt_num(v, "health.p99_ms")?,
                timeouts: uint(v, "health.timeouts")?,
                errors: uint(v, "health.errors")?,
            })
        };
        Ok(LlmReport {
            duration_s: num(v, "duration_s")?,
            streams: StreamCounts {
                started: uint(v, "streams.started")?,
                completed: uint(v, "streams.completed")?,
                failed: uint(v, "streams.failed")?,
                errors: counts(v, "streams.errors")?,
            },
            ttft_ms: spread(v, "ttft_ms")?,
            e2e_ms: spread(v, "e2e_ms")?,
            max_gap_ms: opt_num(v, "max_gap_ms")?,
            output_tokens: OutputTokens {
                total: num(v, "output_tokens.total")?,
                per_s: num(v, "output_tokens.per_s")?,
            },
            health,
            sustained: field(v, "sustained")?
                .as_bool()
                .context("sustained is not a boolean")?,
            sustained_reason: str_field(v, "sustained_reason")?,
        })
    }
}

/// What the benchmarks read of `diag load --json` (diag's `LoadReport`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// `requests.total / duration_s`.
    pub rps: f64,
    pub requests: RequestCounts,
    pub latency_ms: LatencyMs,
    /// Responses by HTTP status (`"200"`, `"503"`).
    pub status_codes: BTreeMap<String, u64>,
}

/// `requests` of a [`LoadReport`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestCounts {
    /// Requests that got a complete response, whatever its status.
    pub ok: u64,
    /// Requests that did not.
    pub errors: u64,
}

/// `latency_ms` of a [`LoadReport`]. diag writes `null` when nothing was measured; every
/// benchmark needs these two, so a `null` fails the read, naming the field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyMs {
    pub p50: f64,
    pub p99: f64,
}

impl LoadReport {
    /// The report diag wrote to `path`.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_json(&read_json(path)?)
    }

    fn from_json(v: &Value) -> Result<Self> {
        Ok(LoadReport {
            rps: num(v, "rps")?,
            requests: RequestCounts {
                ok: uint(v, "requests.ok")?,
                errors: uint(v, "requests.errors")?,
            },
            latency_ms: LatencyMs {
                p50: num(v, "latency_ms.p50")?,
                p99: num(v, "latency_ms.p99")?,
            },
            status_codes: counts(v, "status_codes")?,
        })
    }

    /// Responses with a status other than 200.
    pub fn non_200(&self) -> u64 {
        self.status_codes
            .iter()
            .filter(|(status, _)| *status != "200")
            .map(|(_, count)| count)
            .sum()
    }
}

/// `chat.requests` of the mock's `/stats` (`mock_llm::stats::Snapshot`): every chat request the
/// upstream saw, hedges included.
pub fn mock_chat_requests(stats: &str) -> Result<u64> {
    uint(&serde_json::from_str(stats)?, "chat.requests")
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("diag wrote no {path:?}"))?;
    serde_json::from_str(&text).with_context(|| format!("{path:?} is not JSON"))
}

fn field<'a>(v: &'a Value, path: &str) -> Result<&'a Value> {
    path.split('.').try_fold(v, |v, key| {
        v.get(key)
            .with_context(|| format!("diag's report has no field `{path}`"))
    })
}

fn num(v: &Value, path: &str) -> Result<f64> {
    field(v, path)?
        .as_f64()
        .with_context(|| format!("`{path}` in diag's report is not a number"))
}

fn opt_num(v: &Value, path: &str) -> Result<Option<f64>> {
    let f = field(v, path)?;
    if f.is_null() {
        return Ok(None);
    }
    f.as_f64()
        .map(Some)
        .with_context(|| format!("`{path}` in diag's report is not a number"))
}

/// A latency section's percentiles; all `None` when the section is null (a section is left
/// null when nothing was measured, e.g. no stream got a first token).
fn spread(v: &Value, section: &str) -> Result<Spread> {
    if field(v, section)?.is_null() {
        return Ok(Spread {
            p50: None,
            p90: None,
            p99: None,
        });
    }
    Ok(Spread {
        p50: opt_num(v, &format!("{section}.p50"))?,
        p90: opt_num(v, &format!("{section}.p90"))?,
        p99: opt_num(v, &format!("{section}.p99"))?,
    })
}

fn uint(v: &Value, path: &str) -> Result<u64> {
    field(v, path)?
        .as_u64()
        .with_context(|| format!("`{path}` in diag's report is not an integer"))
}

fn str_field(v: &Value, path: &str) -> Result<String> {
    field(v, path)?
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("`{path}` in diag's report is not a string"))
}

/// An object of counts by name (`status_codes`, `streams.errors`).
fn counts(v: &Value, path: &str) -> Result<BTreeMap<String, u64>> {
    let object = field(v, path)?
        .as_object()
        .with_context(|| format!("`{path}` in diag's report is not an object"))?;
    object
        .iter()
        .map(|(key, count)| {
            let count = count
                .as_u64()
                .with_context(|| format!("`{path}.{key}` in diag's report is not an integer"))?;
            Ok((key.clone(), count))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn missing_fields_are_named() {
        let v = json!({"a": {"b": 1}});
        assert_eq!(num(&v, "a.b").ok(), Some(1.0));
        let err = num(&v, "a.c").err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("diag's report has no field `a.c`"));
    }

    /// The shape `diag llm --json` writes (trimmed to what is read, plus a field not read).
    fn llm_json(health: Value) -> Value {
        json!({
            "kind": "llm",
            "duration_s": 4.2,
            "streams": {"started": 50, "completed": 48, "failed": 2, "cancelled": 0,
                        "errors": {"http_503": 1, "timeout": 1}},
            "ttft_ms": {"p50": 201.5, "p90": 210.0, "p99": 250.25, "max": 300.0},
            "itl_ms": {"p50": 200.0, "p90": 200.0, "p99": 201.0, "max": 202.0},
            "e2e_ms": {"p50": null, "p90": null, "p99": null, "max": null},
            "max_gap_ms": 400.5,
            "output_tokens": {"total": 960, "per_s": 228.6, "per_stream_p50_per_s": 5.0},
            "health": health,
            "pacing_ms": 200.0,
            "sustained": true,
            "sustained_reason": "no gap above 2000 ms",
        })
    }

    #[test]
    fn an_llm_report_is_read_field_by_field() {
        let health = json!({"samples": 16, "p50_ms": 1.0, "p99_ms": 5.5, "max_ms": 6.0,
                            "timeouts": 0, "errors": 1});
        let r = LlmReport::from_json(&llm_json(health)).expect("a full report");
        assert_eq!(r.duration_s, 4.2);
        assert_eq!(
            (r.streams.started, r.streams.completed, r.streams.failed),
            (50, 48, 2)
        );
        assert_eq!(r.streams.errors.get("http_503"), Some(&1));
        assert_eq!(r.ttft_ms.p99, Some(250.25));
        assert_eq!(r.e2e_ms.p50, None);
        assert_eq!(r.output_tokens.total, 960.0);
        assert_eq!(
            r.health.map(|h| (h.samples, h.p99_ms, h.errors)),
            Some((16, Some(5.5), 1))
        );
        assert!(r.sustained);

        let without = LlmReport::from_json(&llm_json(Value::Null)).expect("no --health");
        assert_eq!(without.health, None);
    }

    #[test]
    fn a_null_latency_section_reads_as_no_samples() {
        let mut v = llm_json(Value::Null);
        v["ttft_ms"] = Value::Null;
        let r = LlmReport::from_json(&v).expect("a null section");
        assert_eq!(r.ttft_ms.p99, None);
    }

    #[test]
    fn a_load_report_counts_what_was_not_200() {
        let v = json!({
            "kind": "load", "rps": 120.5, "duration_s": 3.3,
            "requests": {"total": 400, "ok": 400, "errors": 0, "aborted": 0, "unsent": 0},
            "latency_ms": {"p50": 810.0, "p99": 987.125},
            "status_codes": {"200": 67, "503": 333},
        });
        let r = LoadReport::from_json(&v).expect("a full report");
        assert_eq!(r.non_200(), 333);
        assert_eq!(r.latency_ms.p99, 987.125);
        let mut v = v;
        v["latency_ms"]["p50"] = Value::Null;
        let err = LoadReport::from_json(&v).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("`latency_ms.p50` in diag's report is not a number")
        );
    }

    #[test]
    fn the_mock_counts_every_upstream_request() {
        let stats = r#"{"active_streams":0,"chat":{"requests":105,"started":100}}"#;
        assert_eq!(mock_chat_requests(stats).ok(), Some(105));
    }
}
