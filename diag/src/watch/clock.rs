//! The watch's two ways of saying when: `HH:MM:SS` at the start of each line, for a person,
//! and an RFC 3339 timestamp in each JSON line, for a program (`--jsonl`).
//!
//! Both in UTC. Local time would need a time-zone database, a dependency these two strings do
//! not justify; the date is computed from the Unix day number (Howard Hinnant's
//! `civil_from_days`), which is exact for every date a watch can run on.

use std::time::{SystemTime, UNIX_EPOCH};

/// `HH:MM:SS` in UTC.
pub fn clock(now: SystemTime) -> String {
    let secs = since_epoch(now).as_secs() % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `2026-05-04T12:00:01.250Z`: RFC 3339, UTC, milliseconds.
pub fn timestamp(now: SystemTime) -> String {
    let since = since_epoch(now);
    let (days, secs) = (since.as_secs() / 86_400, since.as_secs() % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since.subsec_millis()
    )
}

/// Milliseconds since the Unix epoch, for `unix_ms`.
pub fn unix_ms(now: SystemTime) -> u64 {
    u64::try_from(since_epoch(now).as_millis()).unwrap_or(u64::MAX)
}

/// A clock set before 1970 reads as 1970: there is no meaningful watch to date there.
fn since_epoch(now: SystemTime) -> std::time::Duration {
    now.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Year, month (1-12) and day (1-31) of the `days`-th day after 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01, so that a leap day is the last day of its "year".
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_clock_is_utc_time_of_day() {
        let at = UNIX_EPOCH + Duration::from_secs(19_000 * 86_400 + 12 * 3600 + 61);
        assert_eq!(clock(at), "12:01:01");
    }

    #[test]
    fn timestamps_are_rfc_3339_in_utc() {
        let at = |secs: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms);
        assert_eq!(timestamp(at(0, 0)), "1970-01-01T00:00:00.000Z");
        // `date -u -d @951782400` is 2000-02-29 00:00:00: a leap day of a year divisible by 400.
        assert_eq!(timestamp(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        // `date -u -d @1777896061`: 2026-05-04 12:01:01.
        assert_eq!(
            timestamp(at(1_777_896_061, 250)),
            "2026-05-04T12:01:01.250Z"
        );
        assert_eq!(
            timestamp(at(4_107_542_399, 999)),
            "2100-02-28T23:59:59.999Z"
        );
        assert_eq!(unix_ms(at(1, 250)), 1250);
    }
}
