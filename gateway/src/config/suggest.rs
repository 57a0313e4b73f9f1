//! "Did you mean ...?" for the settings clap does not parse itself: keys of the `--config` file
//! and `GATEWAY_*` environment variables. clap already says it for a mistyped flag; a mistyped
//! file key or variable deserves the same tip, by the same rule, so the three agree.
//!
//! A typo in a variable is the quiet one. The file refuses unknown keys, but nothing refuses an
//! unknown variable: `GATEWAY_MAX_CONCURENT_REQUESTS=5` used to run with the default 1024 and
//! not a word. Refusing it would break a deployment that sets variables for several versions, so
//! the gateway warns at start-up, and `--check-config` prints the warning.

use clap::Command;

/// The prefix of every environment variable of the gateway.
const PREFIX: &str = "GATEWAY_";

/// The known name most like `typed`, if one is alike enough: clap's own rule for flags (Jaro
/// similarity above 0.7, <https://docs.rs/clap> `did_you_mean`), so file keys, variables and
/// flags get the same tips.
pub fn closest<'a>(typed: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|name| (strsim::jaro(typed, name), name))
        .filter(|(similarity, _)| *similarity > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| name)
}

/// `; did you mean `NAME`?`, or nothing.
pub fn did_you_mean<'a>(typed: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    closest(typed, known).map_or_else(String::new, |name| format!("; did you mean `{name}`?"))
}

/// A warning for each variable in `set` that starts with `GATEWAY_` but is neither a flag's
/// (`command`'s `env` names) nor one of `also_read` (a provider's `api-key-env`), with the
/// closest known name.
pub fn unknown_variables<'a>(
    command: &Command,
    set: impl IntoIterator<Item = String>,
    also_read: impl IntoIterator<Item = &'a str> + Clone,
) -> Vec<String> {
    let known: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect();
    let mut unknown: Vec<String> = set
        .into_iter()
        .filter(|name| name.starts_with(PREFIX))
        .filter(|name| !known.contains(name) && !also_read.clone().into_iter().any(|a| a == name))
        .collect();
    unknown.sort_unstable();
    unknown
        .into_iter()
        .map(|name| {
            // Compared without the prefix every name shares, which would make any two alike.
            let stem = |name: &str| name.strip_prefix(PREFIX).unwrap_or(name).to_owned();
            let stems: Vec<String> = known.iter().map(|k| stem(k)).collect();
            let tip = closest(&stem(&name), stems.iter().map(String::as_str))
                .map_or_else(String::new, |s| format!("; did you mean {PREFIX}{s}?"));
            format!(
                "{name} is set but is not a setting of the gateway, so it is ignored{tip} \
                 (`gateway --help` lists every variable)"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;
    use crate::Config;

    #[test]
    fn a_close_name_is_suggested_and_a_far_one_is_not() {
        let keys = ["max-concurrent-requests", "max-queued-requests", "mode"];
        assert_eq!(
            closest("max-concurent-requests", keys),
            Some("max-concurrent-requests")
        );
        assert_eq!(
            closest("blocking-thread", ["blocking-threads", "mode"]),
            Some("blocking-threads")
        );
        assert_eq!(closest("zzz", keys), None);
        assert_eq!(did_you_mean("zzz", keys), "");
    }

    #[test]
    fn unknown_variables_are_named_with_the_closest_flag_variable() {
        let set = [
            "GATEWAY_MAX_CONCURENT_REQUESTS",
            "GATEWAY_MODE",
            "GATEWAY_OPENAI_KEY",
            "GATEWAY_XYZZY",
            "HOME",
        ]
        .map(String::from);
        let warnings = unknown_variables(&Config::command(), set, ["GATEWAY_OPENAI_KEY"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("GATEWAY_MAX_CONCURENT_REQUESTS is set but")
                && warnings[0].contains("did you mean GATEWAY_MAX_CONCURRENT_REQUESTS?"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with("GATEWAY_XYZZY") && !warnings[1].contains("did you mean"),
            "{warnings:?}"
        );
    }
}
