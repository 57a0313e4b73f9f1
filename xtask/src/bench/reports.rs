//! Every read of diag's JSON reports, in one place.
//!
//! The benchmarks run `diag llm` and `diag load` with `--json` and read a few numbers back. They
//! are looked up by path (`"ttft_ms.p99"`) in a `serde_json::Value`, so a renamed field in diag
//! fails mid-benchmark, with the field named. Keeping every lookup here means the day diag's
//! report types can be deserialized, this file is the only one that changes.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

pub fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("diag wrote no {path:?}"))?;
    serde_json::from_str(&text).with_context(|| format!("{path:?} is not JSON"))
}

pub fn field<'a>(v: &'a Value, path: &str) -> Result<&'a Value> {
    path.split('.').try_fold(v, |v, key| {
        v.get(key)
            .with_context(|| format!("diag's report has no field `{path}`"))
    })
}

pub fn num(v: &Value, path: &str) -> Result<f64> {
    field(v, path)?
        .as_f64()
        .with_context(|| format!("`{path}` in diag's report is not a number"))
}

pub fn opt_num(v: &Value, path: &str) -> Result<Option<f64>> {
    let f = field(v, path)?;
    if f.is_null() {
        return Ok(None);
    }
    f.as_f64()
        .map(Some)
        .with_context(|| format!("`{path}` in diag's report is not a number"))
}

/// `section.key` when diag wrote the section, `None` when the section is null (diag leaves a
/// latency section null when nothing was measured, e.g. no stream got a first token).
pub fn section_num(v: &Value, section: &str, key: &str) -> Result<Option<f64>> {
    if field(v, section)?.is_null() {
        return Ok(None);
    }
    opt_num(v, &format!("{section}.{key}"))
}

pub fn uint(v: &Value, path: &str) -> Result<u64> {
    field(v, path)?
        .as_u64()
        .with_context(|| format!("`{path}` in diag's report is not an integer"))
}

pub fn str_field(v: &Value, path: &str) -> Result<String> {
    field(v, path)?
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("`{path}` in diag's report is not a string"))
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
}
