//! The config file (`--config gateway.toml`), and the one rule for where a setting comes from.
//!
//! # Precedence: file < environment < flags
//!
//! Every flag can also be a top-level key of the file, under the flag's own name
//! (`blocking-threads = 8` for `--blocking-threads 8`). For each setting the gateway takes, in
//! order of strength:
//!
//! 1. the command-line flag, if given;
//! 2. else its `GATEWAY_*` environment variable, if set;
//! 3. else the key in the file, if present;
//! 4. else the built-in default.
//!
//! So a file holds the deployment's settings, an environment variable overrides one for a
//! container, and a flag overrides anything for one run. The file alone holds what has no flag:
//! the `[[providers]]` tables (see [`ProviderConfig`]).
//!
//! # Mistakes are fatal, and named
//!
//! A key that is not a flag's name (a typo such as `max-concurent-requests`), a value the flag
//! would refuse, or a provider field that does not exist stops the gateway with exit status 2 and
//! a message naming the file and the key. A silently ignored limit is worse than no limit: the
//! operator believes it is in force.
//!
//! How: clap parses the flags and environment first and says, per setting, where its value came
//! from ([`clap::parser::ValueSource`]). Each file key whose setting came only from a default is
//! checked with the flag's own value parser (on a copy of the command given only that value) (so the file accepts exactly what the flag accepts),
//! and then handed to clap as if it had been typed before the real flags.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, CommandFactory as _, FromArgMatches as _};
use reqwest::Url;
use serde::Deserialize;

use super::Config;
use super::suggest;

/// One named upstream in the file: where it is, how to authenticate, which models it serves,
/// and the limits of its own client pool.
///
/// ```toml
/// [[providers]]
/// name = "openai"
/// base-url = "https://api.openai.com"
/// api-key-env = "OPENAI_API_KEY"
/// models = ["gpt-4o", "gpt-4o-mini"]
/// max-concurrent = 200
/// requests-per-minute = 3000
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProviderConfig {
    /// Shown in logs, metrics (`provider="openai"`) and the `owned_by` of `/v1/models`.
    pub name: String,
    /// The provider's root; `/v1/chat/completions` is joined to it. http or https.
    pub base_url: String,
    /// The environment variable holding this provider's API key, sent as `Authorization:
    /// Bearer`. Named rather than written here, so the file can be committed.
    pub api_key_env: Option<String>,
    /// The `model` values routed here. `"*"` (in at most one provider) takes every model no
    /// other provider names.
    pub models: Vec<String>,
    /// Upstream requests (streams included, until they end) this provider may have open at
    /// once; default: `--max-concurrent-requests`. This is also its outbound connection cap:
    /// over HTTP/1.1 each open request holds one connection.
    pub max_concurrent: Option<usize>,
    /// How long a request may wait for one of `max-concurrent`; then 503 `provider_busy`.
    #[serde(default = "defaults::pool_timeout_ms")]
    pub pool_timeout_ms: u64,
    /// Requests per minute sent to this provider; over it, 429 `provider_rate_limited` without
    /// calling it. Absent: no limit.
    pub requests_per_minute: Option<u32>,
    /// The bucket's size: requests that may go back to back after a quiet spell, before the
    /// steady rate applies; default: `requests-per-minute`.
    pub burst: Option<u32>,
    /// Idle keep-alive connections kept open to this provider.
    #[serde(default = "defaults::max_idle_connections")]
    pub max_idle_connections: usize,
    /// An idle connection is closed after this long (seconds): the pool's expiry.
    #[serde(default = "defaults::idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Default: `--upstream-connect-timeout-secs`.
    pub connect_timeout_secs: Option<u64>,
    /// The longest silence allowed while reading (seconds); default:
    /// `--upstream-read-timeout-secs`.
    pub read_timeout_secs: Option<u64>,
}

mod defaults {
    pub fn pool_timeout_ms() -> u64 {
        1000
    }
    pub fn max_idle_connections() -> usize {
        64
    }
    pub fn idle_timeout_secs() -> u64 {
        90
    }
}

impl ProviderConfig {
    /// The provider the gateway uses when the file names none: `--upstream`, every model.
    pub fn from_flags(config: &Config) -> Self {
        Self {
            name: "default".into(),
            base_url: config.upstream.to_string(),
            api_key_env: None,
            models: vec!["*".into()],
            max_concurrent: None,
            pool_timeout_ms: defaults::pool_timeout_ms(),
            requests_per_minute: None,
            burst: None,
            max_idle_connections: defaults::max_idle_connections(),
            idle_timeout_secs: defaults::idle_timeout_secs(),
            connect_timeout_secs: None,
            read_timeout_secs: None,
        }
    }

    /// Requests this provider may have open at once.
    pub fn max_concurrent_or_default(&self, config: &Config) -> usize {
        self.max_concurrent
            .unwrap_or(config.max_concurrent_requests)
    }

    pub fn connect_timeout(&self, config: &Config) -> Duration {
        Duration::from_secs(
            self.connect_timeout_secs
                .unwrap_or(config.upstream_connect_timeout_secs),
        )
    }

    pub fn read_timeout(&self, config: &Config) -> Duration {
        Duration::from_secs(
            self.read_timeout_secs
                .unwrap_or(config.upstream_read_timeout_secs),
        )
    }

    /// One line of the limits block (see [`Config::limits_block`]).
    pub fn describe(&self, config: &Config) -> String {
        let rate = self.requests_per_minute.map_or_else(
            || "no rpm limit".to_owned(),
            |rpm| {
                let shared = if config.redis_url.is_some() {
                    ", shared in redis"
                } else {
                    ""
                };
                format!("{rpm}/min burst {}{shared}", self.burst.unwrap_or(rpm))
            },
        );
        let key = match (&self.api_key_env, &config.upstream_api_key) {
            (Some(var), _) => format!("key from ${var}"),
            (None, Some(_)) if self.name == "default" => "key from --upstream-api-key".to_owned(),
            _ => "no key".to_owned(),
        };
        // A "*" provider refuses no model: say so, or a misspelt model looks served.
        let models = self
            .models
            .iter()
            .map(|model| match model.as_str() {
                "*" if self.models.len() == 1 => "* (any model name, forwarded as is)",
                "*" => "* (any other model name, forwarded as is)",
                named => named,
            })
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{} {}: models {models}; {} at once (wait {} ms, then 503); {rate}; {} idle conns for \
             {} s; connect {:?}, read {:?}; {key}",
            self.name,
            self.base_url,
            self.max_concurrent_or_default(config),
            self.pool_timeout_ms,
            self.max_idle_connections,
            self.idle_timeout_secs,
            self.connect_timeout(config),
            self.read_timeout(config),
        )
    }

    /// Checks one provider on its own; [`check_providers`] checks them together.
    fn check(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "provider name {name:?} must be non-empty letters, digits, '-', '_' or '.'"
            ));
        }
        let url = Url::parse(&self.base_url)
            .map_err(|e| format!("provider {name}: base-url {:?}: {e}", self.base_url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!(
                "provider {name}: base-url {:?} must be an http or https URL with a host",
                self.base_url
            ));
        }
        if self.models.is_empty() || self.models.iter().any(String::is_empty) {
            return Err(format!(
                "provider {name}: models must list at least one model name (or \"*\" for all)"
            ));
        }
        let positive = [
            ("max-concurrent", self.max_concurrent.map(|n| n as u64)),
            (
                "requests-per-minute",
                self.requests_per_minute.map(u64::from),
            ),
            ("burst", self.burst.map(u64::from)),
            ("idle-timeout-secs", Some(self.idle_timeout_secs)),
            ("connect-timeout-secs", self.connect_timeout_secs),
            ("read-timeout-secs", self.read_timeout_secs),
        ];
        for (key, value) in positive {
            if value == Some(0) {
                return Err(format!("provider {name}: {key} must be at least 1"));
            }
        }
        if self.max_concurrent.is_some_and(|n| n > 1_000_000) {
            return Err(format!(
                "provider {name}: max-concurrent must be at most 1000000"
            ));
        }
        if self.pool_timeout_ms > 600_000 {
            return Err(format!(
                "provider {name}: pool-timeout-ms must be at most 600000 (10 minutes)"
            ));
        }
        if self.burst.is_some() && self.requests_per_minute.is_none() {
            return Err(format!(
                "provider {name}: burst needs requests-per-minute (it is the burst of that rate)"
            ));
        }
        if let Some(var) = &self.api_key_env
            && std::env::var_os(var).is_none_or(|v| v.is_empty())
        {
            return Err(format!(
                "provider {name}: api-key-env names {var}, which is not set (or empty); export it \
                 or remove api-key-env"
            ));
        }
        Ok(())
    }
}

/// Names unique, each model in one provider, at most one `"*"`.
pub(super) fn check_providers(providers: &[ProviderConfig]) -> Result<(), String> {
    let mut names = HashSet::new();
    let mut models = HashSet::new();
    for provider in providers {
        provider.check()?;
        if !names.insert(provider.name.as_str()) {
            return Err(format!("two providers are named {:?}", provider.name));
        }
        for model in &provider.models {
            if !models.insert(model.as_str()) {
                return Err(if model == "*" {
                    "only one provider may serve models = [\"*\"]".to_owned()
                } else {
                    format!("model {model:?} is listed by two providers; route it to one")
                });
            }
        }
    }
    Ok(())
}

/// Parses flags, environment and the `--config` file (see the module docs) into a [`Config`].
/// An `Err` is a usage error: `.exit()` prints it and exits with status 2.
pub fn load<I, T>(args: I) -> Result<Config, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut command = Config::command();
    let matches = command.try_get_matches_from_mut(&args)?;
    let mut config = Config::from_arg_matches(&matches)?;
    let Some(path) = config.config.clone() else {
        config.check().map_err(|m| usage(&mut command, m))?;
        config.warnings = unknown_variables(&command, &config.providers);
        return Ok(config);
    };
    let (from_file, providers) =
        read_file(&path, &command, &matches).map_err(|m| usage(&mut command, m))?;
    let in_file = |long: &str| {
        let prefix = format!("--{long}=");
        from_file
            .iter()
            .any(|arg| arg.to_string_lossy().starts_with(&prefix))
    };
    let upstream_in_file = in_file("upstream");
    let key_in_file = in_file("upstream-api-key");
    if !from_file.is_empty() {
        // The file's values go first, the real flags after: nothing the file sets was set by a
        // flag or the environment (see `read_file`), so no flag is given twice.
        let mut merged = vec![args.first().cloned().unwrap_or_else(|| "gateway".into())];
        merged.extend(from_file);
        merged.extend(args.into_iter().skip(1));
        config = Config::from_arg_matches(&command.try_get_matches_from_mut(merged)?)?;
    }
    if !providers.is_empty() && (source(&matches, "upstream_api_key").is_some() || key_in_file) {
        let message = format!(
            "{}: the file defines [[providers]], so {} has no effect; give each provider its \
             key with api-key-env",
            path.display(),
            origin(&command, &matches, "upstream_api_key")
        );
        return Err(usage(&mut command, message));
    }
    if !providers.is_empty() && (source(&matches, "upstream").is_some() || upstream_in_file) {
        let message = format!(
            "{}: the file defines [[providers]], so {} has no effect (each provider has its \
             base-url); remove one of them",
            path.display(),
            origin(&command, &matches, "upstream")
        );
        return Err(usage(&mut command, message));
    }
    config.providers = providers;
    config.check().map_err(|m| usage(&mut command, m))?;
    config.warnings = unknown_variables(&command, &config.providers);
    Ok(config)
}

/// The warnings for `GATEWAY_*` variables that are set but that no flag and no provider's
/// `api-key-env` reads (see [`suggest`]).
fn unknown_variables(command: &Command, providers: &[ProviderConfig]) -> Vec<String> {
    let set = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    let read = providers.iter().filter_map(|p| p.api_key_env.as_deref());
    suggest::unknown_variables(command, set, read)
}

/// The file's keys: the flags' long names, but not `config`, `check-config`, `help`, `version`
/// or a hidden flag.
fn file_keys(command: &Command) -> impl Iterator<Item = &clap::Arg> {
    command.get_arguments().filter(|arg| {
        arg.get_long().is_some_and(|long| long != "config")
            && !arg.is_hide_set()
            && !matches!(arg.get_id().as_str(), "check_config" | "help" | "version")
    })
}

fn usage(command: &mut Command, message: impl std::fmt::Display) -> clap::Error {
    command.error(clap::error::ErrorKind::InvalidValue, message)
}

/// Where a setting's value came from, unless it is only the default.
fn source(matches: &ArgMatches, id: &str) -> Option<ValueSource> {
    matches
        .value_source(id)
        .filter(|source| *source != ValueSource::DefaultValue)
}

/// Where a setting that is set came from, in the reader's terms: the flag, the environment
/// variable, or (when clap saw neither) the file's key. An error must point at the line to
/// change, not at every place the value could have been.
fn origin(command: &Command, matches: &ArgMatches, id: &str) -> String {
    let arg = command.get_arguments().find(|arg| arg.get_id() == id);
    let long = arg.and_then(clap::Arg::get_long).unwrap_or(id);
    match (source(matches, id), arg.and_then(clap::Arg::get_env)) {
        (Some(ValueSource::EnvVariable), Some(env)) => {
            format!("the environment variable {}", env.to_string_lossy())
        }
        (Some(_), _) => format!("the flag --{long}"),
        (None, _) => format!("its key `{long}`"),
    }
}

/// The file's flag settings as `--name=value` arguments (only those no flag or environment
/// variable overrides), and its providers.
fn read_file(
    path: &Path,
    command: &Command,
    matches: &ArgMatches,
) -> Result<(Vec<OsString>, Vec<ProviderConfig>), String> {
    let file = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read --config {file}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{file} is not valid TOML: {e}"))?;
    let mut args = Vec::new();
    let mut providers = Vec::new();
    for (key, value) in table {
        if key == "providers" {
            providers = value.try_into::<Vec<ProviderConfig>>().map_err(|e| {
                format!(
                    "{file}: [[providers]]: {}{}",
                    e.message(),
                    unknown_field_tip(e.message())
                )
            })?;
            continue;
        }
        let arg = file_keys(command)
            .find(|arg| arg.get_long() == Some(key.as_str()))
            .ok_or_else(|| {
                let keys = file_keys(command).filter_map(clap::Arg::get_long);
                format!(
                    "{file}: unknown key `{key}`{} (keys are the flags' long names, see \
                     `gateway --help`, and [[providers]])",
                    suggest::did_you_mean(&key, keys.chain(["providers"]))
                )
            })?;
        let values = match value {
            toml::Value::Array(items) => items,
            single => vec![single],
        };
        let mut texts = Vec::with_capacity(values.len());
        for value in values {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(format!(
                        "{file}: key `{key}`: expected a string or a number, got a {}",
                        other.type_str()
                    ));
                }
            };
            // The flag's own parser decides, on a copy of the command given just this value.
            let flag = format!("--{key}={text}");
            command
                .clone()
                .try_get_matches_from(["gateway", flag.as_str()])
                .map_err(|e| {
                    let reason = e.to_string();
                    let reason = reason.lines().next().unwrap_or_default();
                    let reason = reason.strip_prefix("error: ").unwrap_or(reason);
                    format!("{file}: key `{key}` = {text:?}: {reason}")
                })?;
            texts.push(text);
        }
        if source(matches, arg.get_id().as_str()).is_some() {
            continue; // a flag or an environment variable wins over the file
        }
        args.extend(texts.into_iter().map(|t| format!("--{key}={t}").into()));
    }
    check_providers(&providers).map_err(|e| format!("{file}: {e}"))?;
    Ok((args, providers))
}

/// serde refuses an unknown provider field with ``unknown field `bse-url`, expected one of
/// `name`, `base-url`, ...``: the tip picks the closest of the fields it lists.
fn unknown_field_tip(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field ") else {
        return String::new();
    };
    let mut quoted = rest.split('`').skip(1).step_by(2);
    let Some(typed) = quoted.next() else {
        return String::new();
    };
    suggest::did_you_mean(typed, quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("gateway-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write the test config");
        path
    }

    fn load_with(name: &str, text: &str, flags: &[&str]) -> Result<Config, String> {
        let path = write(name, text);
        let mut args = vec!["gateway", "--config", path.to_str().expect("utf-8 path")];
        args.extend(flags);
        load(args).map_err(|e| e.to_string())
    }

    #[test]
    fn file_sets_what_no_flag_sets_and_a_flag_wins() {
        let text =
            "blocking-threads = 7\nmax-concurrent-requests = 12\napi-key = [\"k1\", \"k2\"]\n";
        let config = load_with("precedence", text, &["--blocking-threads", "3"]).expect("valid");
        assert_eq!(config.blocking_threads, 3, "the flag wins");
        assert_eq!(
            config.max_concurrent_requests, 12,
            "the file beats the default"
        );
        assert_eq!(config.api_keys.len(), 2, "arrays are repeated flags");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let typo = load_with("typo", "max-concurent-requests = 5\n", &[]).expect_err("typo");
        assert!(
            typo.contains(
                "unknown key `max-concurent-requests`; did you mean `max-concurrent-requests`?"
            ),
            "{typo}"
        );
        let far = load_with("far", "zzz = 5\n", &[]).expect_err("unknown");
        assert!(!far.contains("did you mean"), "{far}");
        let providers = load_with("providers-typo", "provider = []\n", &[]).expect_err("typo");
        assert!(
            providers.contains("did you mean `providers`?"),
            "{providers}"
        );
        let bad = load_with("bad", "blocking-threads = 0\n", &[]).expect_err("zero");
        assert!(bad.contains("key `blocking-threads` = \"0\""), "{bad}");
        let mode = load_with("mode", "mode = \"fast\"\n", &[]).expect_err("mode");
        assert!(mode.contains("key `mode`"), "{mode}");
        let table = load_with("table", "[limits]\nx = 1\n", &[]).expect_err("table");
        assert!(table.contains("unknown key `limits`"), "{table}");
    }

    #[test]
    fn providers_are_checked() {
        let provider = |extra: &str| {
            format!(
                "[[providers]]\nname = \"a\"\nbase-url = \"http://127.0.0.1:1\"\nmodels = [\"m\"]\n{extra}"
            )
        };
        let ok = load_with("p-ok", &provider("max-concurrent = 3\n"), &[]).expect("valid");
        assert_eq!(ok.providers.len(), 1);
        assert_eq!(ok.providers[0].max_concurrent, Some(3));
        let field = load_with("p-field", &provider("bse-url = \"x\"\n"), &[]).expect_err("field");
        assert!(field.contains("unknown field `bse-url`"), "{field}");
        assert!(field.contains("did you mean `base-url`?"), "{field}");
        let env = load_with(
            "p-env",
            &provider("api-key-env = \"GATEWAY_TEST_NOT_SET_XYZ\"\n"),
            &[],
        )
        .expect_err("env");
        assert!(env.contains("GATEWAY_TEST_NOT_SET_XYZ"), "{env}");
        let twice = format!("{}\n{}", provider(""), provider(""));
        let twice = load_with("p-twice", &twice, &[]).expect_err("twice");
        assert!(twice.contains("two providers are named \"a\""), "{twice}");
        let upstream = load_with(
            "p-upstream",
            &provider(""),
            &["--upstream", "http://127.0.0.1:2"],
        )
        .expect_err("both");
        assert!(
            upstream.contains("so the flag --upstream has no effect"),
            "{upstream}"
        );
        let in_file = format!("upstream = \"http://127.0.0.1:2\"\n{}", provider(""));
        let in_file = load_with("p-upstream-file", &in_file, &[]).expect_err("both in the file");
        assert!(
            in_file.contains("so its key `upstream` has no effect")
                && !in_file.contains("--upstream")
                && !in_file.contains("GATEWAY_UPSTREAM"),
            "the error must blame the file's key, not the flag or the variable: {in_file}"
        );
        let key = load_with("p-key", &provider(""), &["--upstream-api-key", "sk-x"])
            .expect_err("a key for no provider");
        assert!(
            key.contains("the flag --upstream-api-key") && key.contains("api-key-env"),
            "{key}"
        );
        let key_in_file = format!("upstream-api-key = \"sk-x\"\n{}", provider(""));
        let key_in_file = load_with("p-key-file", &key_in_file, &[]).expect_err("key in file");
        assert!(
            key_in_file.contains("its key `upstream-api-key`"),
            "{key_in_file}"
        );
    }
}
