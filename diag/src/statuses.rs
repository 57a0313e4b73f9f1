//! Which HTTP statuses answer a probe: `diag watch --probe … --expect-status 200,204` or `2xx`.
//!
//! A probe of a service diag knows nothing about cannot guess what "healthy" looks like: most
//! health checks answer 200, some 204, a readiness check may answer 503 while it drains, and an
//! endpoint behind a login answers 401 by design. So the user says it, as codes and classes in a
//! comma list; the default is any 2xx, what diag's own probes have always accepted. A status
//! outside the list is a failure of that probe (shown as `HTTP 404`), never a latency: it
//! measured the wrong thing.

use std::fmt;

/// A list of codes (`200`) and classes (`2xx`); a status matches when it matches one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statuses(Vec<Status>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// One code, 100 to 599.
    Code(u16),
    /// A class by its first digit: `2xx` is `Class(2)`.
    Class(u16),
}

impl Default for Statuses {
    /// Any 2xx.
    fn default() -> Self {
        Self(vec![Status::Class(2)])
    }
}

impl Statuses {
    pub fn matches(&self, code: u16) -> bool {
        self.0.iter().any(|status| match *status {
            Status::Code(expected) => code == expected,
            Status::Class(digit) => code / 100 == digit,
        })
    }

    /// Parses `200`, `2xx`, `200,204,3xx`; the error says what was wrong and how to write it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |part: &str| {
            format!(
                "`{part}` is not a status: write a code (200), a class (2xx) or a list (200,204)"
            )
        };
        let statuses = text
            .split(',')
            .map(|part| {
                let part = part.trim();
                let status = match part.strip_suffix("xx").or_else(|| part.strip_suffix("XX")) {
                    Some(digit) => digit.parse().map(Status::Class).map_err(|_| bad(part))?,
                    None => part.parse().map(Status::Code).map_err(|_| bad(part))?,
                };
                match status {
                    Status::Code(100..=599) | Status::Class(1..=5) => Ok(status),
                    _ => Err(bad(part)),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(statuses))
    }
}

/// As written to parse: `200,2xx`.
impl fmt::Display for Statuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, status) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match status {
                Status::Code(code) => write!(f, "{code}")?,
                Status::Class(digit) => write!(f, "{digit}xx")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_classes_in_a_list() {
        let ok = Statuses::parse("204, 3xx").expect("valid");
        assert!(ok.matches(204) && ok.matches(301) && ok.matches(399));
        assert!(!ok.matches(200) && !ok.matches(404));
        assert_eq!(ok.to_string(), "204,3xx");
        let default = Statuses::default();
        assert!(default.matches(200) && default.matches(299) && !default.matches(503));
        assert_eq!(default.to_string(), "2xx");
    }

    #[test]
    fn what_is_not_a_status_is_refused() {
        for bad in ["", "ok", "600", "99", "6xx", "0xx", "200,", "2x", "-1"] {
            assert!(Statuses::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
