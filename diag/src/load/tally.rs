//! What `diag load`'s workers count: one `Tally` per shard of workers, merged at the end.
//!
//! Nothing is kept per request, so memory stays bounded however long the run: latencies go into
//! an HDR histogram, statuses and error kinds into small maps with one example message each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::histogram::Latencies;

/// Errors by kind: `connect`, `timeout`, `body`, `other`.
pub(super) fn error_kind(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "connect"
    } else if error.is_timeout() {
        "timeout"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "other"
    }
}

/// One error kind: how many, and the first message seen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorCount {
    pub count: u64,
    pub example: String,
}

/// What one shard of workers saw.
#[derive(Debug)]
pub(super) struct Tally {
    /// Responses and timeouts; from the intended start under `-q` when a request was late.
    pub(super) latencies: Latencies,
    /// Responses by status code.
    pub(super) statuses: BTreeMap<u16, u64>,
    /// Requests without a (complete) response, by kind. At most four keys.
    pub(super) errors: BTreeMap<&'static str, ErrorCount>,
    /// Response body bytes received.
    pub(super) bytes: u64,
    /// Requests dropped at the `-z` deadline.
    pub(super) aborted: u64,
}

impl Tally {
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latencies: Latencies::new()?,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            bytes: 0,
            aborted: 0,
        })
    }

    pub(super) fn error(&mut self, kind: &'static str, example: impl FnOnce() -> String) {
        self.errors
            .entry(kind)
            .and_modify(|e| e.count += 1)
            .or_insert_with(|| ErrorCount {
                count: 1,
                example: example(),
            });
    }

    pub(super) fn merge(&mut self, other: &Tally) -> anyhow::Result<()> {
        self.latencies.merge(&other.latencies)?;
        for (status, count) in &other.statuses {
            *self.statuses.entry(*status).or_insert(0) += count;
        }
        for (kind, error) in &other.errors {
            self.errors
                .entry(kind)
                .and_modify(|e| e.count += error.count)
                .or_insert_with(|| error.clone());
        }
        self.bytes += other.bytes;
        self.aborted += other.aborted;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_by_kind_keep_one_example_and_merge() {
        let mut a = Tally::new().expect("tally");
        a.error("connect", || "refused".into());
        a.error("connect", || "never used".into());
        let mut b = Tally::new().expect("tally");
        b.error("connect", || "reset".into());
        b.error("timeout", || "slow".into());
        b.statuses.insert(200, 3);
        a.merge(&b).expect("merge");
        assert_eq!(a.errors["connect"].count, 3);
        assert_eq!(a.errors["connect"].example, "refused");
        assert_eq!(a.errors["timeout"].count, 1);
        assert_eq!(a.statuses[&200], 3);
    }
}
