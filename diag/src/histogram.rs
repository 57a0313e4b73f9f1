//! Latency histograms for `diag load` and `diag llm`: recording, percentiles, and the
//! hey-style bar chart.
//!
//! A load run can send millions of requests, so latencies are never kept one by one: each goes
//! into an HDR histogram (microseconds, 3 significant digits, up to one hour), whose size is
//! fixed (about 190 KiB) whatever the run length, and whose percentiles are exact to 0.1%. A
//! `Vec` of samples would grow by 8 bytes a request and need a sort at the end; the histogram
//! also merges (per-worker shards into one) without losing anything.
//!
//! Values are reported in milliseconds with 3 decimals, as in the rest of diag ([`round_ms`]),
//! and the health prober ([`crate::probe`]) keeps its latencies in the same histograms.

use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram holds, in microseconds: one hour. Longer values are clamped.
const MAX_MICROS: u64 = 3_600_000_000;

/// Milliseconds to three decimals (microsecond resolution), as every JSON report carries them.
pub fn round_ms(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3
}

/// Latencies in microseconds. See the module docs for why a histogram.
#[derive(Debug, Clone)]
pub struct Latencies {
    micros: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> anyhow::Result<Self> {
        let micros = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .context("cannot create a latency histogram")?;
        Ok(Self { micros })
    }

    /// Records one latency; above one hour it is recorded as one hour.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.micros.saturating_record(micros.min(MAX_MICROS));
    }

    /// Adds every value of `other` (same bounds, so this cannot fail in practice).
    pub fn merge(&mut self, other: &Latencies) -> anyhow::Result<()> {
        self.micros
            .add(&other.micros)
            .context("cannot merge latency histograms")
    }

    /// How many latencies were recorded.
    pub fn len(&self) -> u64 {
        self.micros.len()
    }

    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// The latency at `quantile` (0.5 = median) in ms; `None` when empty.
    pub fn quantile_ms(&self, quantile: f64) -> Option<f64> {
        self.ms(self.micros.value_at_quantile(quantile))
    }

    pub fn min_ms(&self) -> Option<f64> {
        self.ms(self.micros.min())
    }

    pub fn max_ms(&self) -> Option<f64> {
        self.ms(self.micros.max())
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (!self.is_empty()).then(|| round_ms(self.micros.mean() / 1e3))
    }

    /// p50, p90, p99 and max, as `diag llm` reports each of its latencies.
    pub fn spread(&self) -> Spread {
        Spread {
            p50: self.quantile_ms(0.50),
            p90: self.quantile_ms(0.90),
            p99: self.quantile_ms(0.99),
            max: self.max_ms(),
        }
    }

    /// hey's response-time histogram: `buckets` equal-width buckets from the fastest to the
    /// slowest latency, plus one for the slowest itself; each bar counts the latencies above
    /// the previous mark and up to its own. Empty when nothing was recorded.
    pub fn bars(&self, buckets: usize) -> Vec<Bar> {
        if self.is_empty() || buckets == 0 {
            return Vec::new();
        }
        let fastest = self.micros.min() as f64;
        let slowest = self.micros.max() as f64;
        let width = (slowest - fastest) / buckets as f64;
        let mut bars: Vec<Bar> = (0..=buckets)
            .map(|i| Bar {
                mark_ms: if i == buckets {
                    slowest / 1e3
                } else {
                    (fastest + width * i as f64) / 1e3
                },
                count: 0,
            })
            .collect();
        for value in self.micros.iter_recorded() {
            // The lowest value of the histogram bucket, so the fastest lands in the first bar.
            let micros = self.micros.lowest_equivalent(value.value_iterated_to()) as f64;
            let index = if width > 0.0 {
                (((micros - fastest) / width).ceil().max(0.0) as usize).min(buckets)
            } else {
                0
            };
            bars[index].count += value.count_at_value();
        }
        bars
    }

    fn ms(&self, micros: u64) -> Option<f64> {
        (!self.is_empty()).then(|| round_ms(micros as f64 / 1e3))
    }
}

/// Percentiles of one latency in ms; each `null` when nothing was measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// One line of the bar chart: latencies up to `mark_ms` (and above the previous mark).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    pub mark_ms: f64,
    pub count: u64,
}

/// The longest bar, in characters.
const BAR_WIDTH: u64 = 40;

/// Writes the bars as hey does, the mark in seconds, the count, a tab, and the bar:
/// `  0.012 [1234]<TAB>|■■■■■■`.
pub fn write_bars(f: &mut impl fmt::Write, bars: &[Bar]) -> fmt::Result {
    let most = bars.iter().map(|bar| bar.count).max().unwrap_or(0).max(1);
    let digits = most.to_string().len();
    // hey's 3 decimals, or more when the buckets are narrower than a millisecond, so that two
    // marks never read the same.
    let width_s = match (bars.first(), bars.last()) {
        (Some(first), Some(last)) if bars.len() > 1 => {
            (last.mark_ms - first.mark_ms) / 1e3 / (bars.len() - 1) as f64
        }
        _ => 0.0,
    };
    let decimals = if width_s > 0.0 {
        ((-width_s.log10()).ceil() as usize).clamp(3, 6)
    } else {
        3
    };
    for bar in bars {
        // Rounded to the nearest character, so a bucket with any latency at all shows a mark
        // only when it holds at least 1/80 of the largest one (as in hey).
        let length = (bar.count * BAR_WIDTH + most / 2) / most;
        writeln!(
            f,
            "  {:.decimals$} [{:>digits$}]\t|{}",
            bar.mark_ms / 1e3,
            bar.count,
            "■".repeat(length as usize)
        )?;
    }
    Ok(())
}

/// A latency in ms, the way hey prints it: seconds with 4 decimals, `-` when absent.
pub fn secs(ms: Option<f64>) -> String {
    ms.map_or_else(|| "-".to_owned(), |ms| format!("{:.4} secs", ms / 1e3))
}

/// A latency a person can read at a glance: milliseconds below a second (`0.4ms`, `12.3ms`),
/// seconds above (`2.013s`). A fixed `0.000s` would hide the healthy case's sub-millisecond
/// answers, and the contrast between 0.4 ms and 5 s is the whole point of the demo.
pub fn seconds(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 1.0 {
        format!("{:.1}ms", secs * 1e3)
    } else {
        format!("{secs:.3}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latencies(ms: &[u64]) -> Latencies {
        let mut latencies = Latencies::new().expect("histogram");
        for ms in ms {
            latencies.record(Duration::from_millis(*ms));
        }
        latencies
    }

    #[test]
    fn percentiles_are_in_milliseconds_and_ordered() {
        let latencies = latencies(&(1..=100).collect::<Vec<_>>());
        let spread = latencies.spread();
        let p50 = spread.p50.expect("p50");
        assert!((49.9..=50.1).contains(&p50), "{p50}");
        assert!(spread.p50 <= spread.p90 && spread.p90 <= spread.p99 && spread.p99 <= spread.max);
        assert!((99.9..=100.1).contains(&spread.max.expect("max")));
        assert!((1.0..=1.001).contains(&latencies.min_ms().expect("min")));
        assert!((50.4..=50.6).contains(&latencies.mean_ms().expect("mean")));
    }

    #[test]
    fn an_empty_histogram_reports_nothing() {
        let empty = Latencies::new().expect("histogram");
        assert_eq!(
            empty.spread(),
            Spread {
                p50: None,
                p90: None,
                p99: None,
                max: None
            }
        );
        assert!(empty.bars(10).is_empty());
        assert_eq!(secs(empty.mean_ms()), "-");
    }

    #[test]
    fn bars_count_every_latency_once_from_fastest_to_slowest() {
        let latencies = latencies(&[10, 10, 10, 20, 55, 100]);
        let bars = latencies.bars(10);
        assert_eq!(bars.len(), 11);
        assert_eq!(bars.iter().map(|bar| bar.count).sum::<u64>(), 6);
        assert_eq!(bars[0].count, 3, "{bars:?}");
        assert!((bars[0].mark_ms - 10.0).abs() < 0.1);
        assert!((bars[10].mark_ms - 100.0).abs() < 0.1);
        assert_eq!(bars[10].count, 1, "{bars:?}");
        let mut text = String::new();
        write_bars(&mut text, &bars).expect("write");
        assert!(text.starts_with("  0.010 [3]\t|■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■■\n"));
    }

    #[test]
    fn one_value_makes_one_full_bar() {
        let bars = latencies(&[7, 7]).bars(10);
        assert_eq!(bars[0].count, 2);
        assert_eq!(bars.iter().map(|bar| bar.count).sum::<u64>(), 2);
    }

    #[test]
    fn merging_keeps_every_value() {
        let mut a = latencies(&[1, 2]);
        a.merge(&latencies(&[3])).expect("merge");
        assert_eq!(a.len(), 3);
    }
}
