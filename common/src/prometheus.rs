//! Reading a Prometheus text exposition: the gateway's tests and `cargo xtask bench` both read
//! `/metrics` back, and one reader means one answer to "what is a series' value".
//!
//! Just enough of the format for our own output: one sample per line, `name{labels} value`,
//! `#` lines skipped. A label value may contain spaces, so the value is split off the right.

/// Every sample whose series (name with its labels, as written) starts with `prefix`, with its
/// value, e.g. `("gateway_shed_total{reason=\"queue_full\"}", 3.0)`.
pub fn samples(text: &str, prefix: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| {
            let (series, value) = line.trim_end().rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the series written exactly as `series`; `None` when it is not exposed.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.trim_end().rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP gateway_shed_total Requests refused.\n\
        # TYPE gateway_shed_total counter\n\
        gateway_shed_total{reason=\"queue_full\"} 3\n\
        gateway_shed_total{reason=\"queue timeout\"} 1\n\
        gateway_shed_total_extra 9\n\
        gateway_up 1\n";

    #[test]
    fn a_series_is_matched_whole_with_its_labels() {
        assert_eq!(
            sample(TEXT, "gateway_shed_total{reason=\"queue_full\"}"),
            Some(3.0)
        );
        assert_eq!(
            sample(TEXT, "gateway_shed_total{reason=\"queue timeout\"}"),
            Some(1.0)
        );
        assert_eq!(sample(TEXT, "gateway_shed_total"), None);
        assert_eq!(sample(TEXT, "gateway_nothing"), None);
    }

    #[test]
    fn a_prefix_lists_every_matching_series() {
        let shed = samples(TEXT, "gateway_shed_total{");
        assert_eq!(shed.len(), 2);
        assert_eq!(
            shed[1],
            ("gateway_shed_total{reason=\"queue timeout\"}".into(), 1.0)
        );
    }
}
