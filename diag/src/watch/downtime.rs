//! Did the watched service stop answering? The rule both views of `diag watch` end by: a
//! service that answered and later stopped (a `down` line after one that was not) fails the
//! watch (exit 4), at `--count` or Ctrl-C alike, even if it came back, because a script that
//! watched a deploy needs to know. A service that never answered did not *stop*: the watch may
//! have been started first, waiting for it.

/// The lines so far, as the exit status needs them: did the service stop answering after it
/// had answered (see the module docs)?
#[derive(Debug, Default)]
pub struct Downtime {
    lines: u64,
    answered: bool,
    /// The clock of the first `down` line after an answered one.
    stopped_at: Option<String>,
    /// `down` lines, all of them (as the reader counts them on the screen).
    down_lines: u64,
    /// Whether the latest line was `down`.
    down_now: bool,
}

impl Downtime {
    /// Notes one line, printed at `clock`, `down` or not.
    pub fn saw(&mut self, clock: &str, down: bool) {
        self.lines += 1;
        self.down_now = down;
        self.down_lines += u64::from(down);
        if !down {
            self.answered = true;
        } else if self.answered {
            self.stopped_at.get_or_insert_with(|| clock.to_owned());
        }
    }

    /// Notes a line that was neither `down` nor answered: its probes had only timed out, or
    /// none had finished yet (`diag watch --probe`'s first line may come before any answer).
    pub fn waited(&mut self) {
        self.lines += 1;
        self.down_now = false;
    }

    /// The reason the watch failed, if the gateway stopped answering.
    pub fn failure(&self) -> Option<String> {
        self.failure_of("the gateway")
    }

    /// [`Downtime::failure`], naming what stopped (`the service`).
    pub fn failure_of(&self, what: &str) -> Option<String> {
        let at = self.stopped_at.as_ref()?;
        let end = if self.down_now {
            "still down at the end"
        } else {
            "answering again at the end"
        };
        Some(format!(
            "{what} stopped answering at {at} ({} of {} lines down; {end})",
            self.down_lines, self.lines
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_fails_the_watch_only_once_it_had_answered() {
        let mut never = Downtime::default();
        never.saw("12:00:00", true);
        never.saw("12:00:01", true);
        assert_eq!(
            never.failure(),
            None,
            "started before the gateway: no failure"
        );

        let mut died = Downtime::default();
        died.saw("12:00:00", true);
        died.saw("12:00:01", false);
        died.saw("12:00:02", true);
        died.saw("12:00:03", true);
        assert_eq!(
            died.failure().as_deref(),
            Some(
                "the gateway stopped answering at 12:00:02 (3 of 4 lines down; still down at the end)"
            )
        );
        died.saw("12:00:04", false);
        assert_eq!(
            died.failure().as_deref(),
            Some(
                "the gateway stopped answering at 12:00:02 (3 of 5 lines down; answering again at \
                 the end)"
            )
        );
    }
}
