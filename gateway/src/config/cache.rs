//! Settings of the response cache and of the shared Redis: which requests may be cached, how much
//! memory the in-process tier may hold, for how long, and where the shared tier lives.
//!
//! Settings types only (the cache itself is [`crate::cache`], the Redis connection
//! [`crate::redis`]); kept apart from the long list of flags in `config/mod.rs` so the rules that
//! tie them together (`--cache-max-bytes 0` needs a Redis; a Redis URL's password is never
//! printed) sit beside the types they check.

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;
use reqwest::Url;

use super::Config;

/// `--cache-mode`: which chat completions the gateway may answer from its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CacheMode {
    /// No cache: every request goes upstream, and responses carry no `x-gateway-cache`.
    Off,
    /// Only requests whose answer is meant to repeat: `temperature` 0, or a `seed`.
    Deterministic,
    /// Any request: a sampled answer, once cached, is the answer until it expires.
    All,
}

impl CacheMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheMode::Off => "off",
            CacheMode::Deterministic => "deterministic",
            CacheMode::All => "all",
        }
    }
}

/// `--redis-url`: `redis://[user:password@]host:port[/db]`. Its `Debug` and `Display` hide the
/// password, so the URL can be logged and printed by `--check-config`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Url);

impl RedisUrl {
    /// The URL as given, password included: for the Redis client only.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }
}

impl FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(s.trim())
            .map_err(|e| format!("not a URL ({e}); example: redis://127.0.0.1:6379"))?;
        match url.scheme() {
            "redis" if url.host().is_some() => Ok(Self(url)),
            "redis" => Err("the URL has no host; example: redis://127.0.0.1:6379".into()),
            "rediss" => Err(
                "rediss:// (TLS) is not built into this gateway; use redis:// on a private network"
                    .into(),
            ),
            other => Err(format!("scheme must be redis, not {other:?}")),
        }
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("<redacted>"));
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// The combinations clap cannot check: an in-process tier of 0 bytes leaves only Redis.
pub(super) fn check(config: &Config) -> Result<(), String> {
    if config.cache_mode != CacheMode::Off
        && config.cache_max_bytes == 0
        && config.redis_url.is_none()
    {
        return Err(
            "--cache-max-bytes 0 turns the in-process cache off, and there is no --redis-url: \
             the cache would have nowhere to keep anything"
                .into(),
        );
    }
    Ok(())
}

/// The `cache` and `redis` lines of the limits block.
pub(super) fn limits_lines(config: &Config) -> [String; 2] {
    let cache = match config.cache_mode {
        CacheMode::Off => "off".to_owned(),
        mode => format!(
            "{}{}; in process {}; TTL {} s; shared {}",
            mode.as_str(),
            if mode == CacheMode::Deterministic {
                " (temperature 0 or a seed)"
            } else {
                " (any request)"
            },
            match config.cache_max_bytes {
                0 => "off".to_owned(),
                bytes => format!("up to {bytes} bytes"),
            },
            config.cache_ttl_secs,
            if config.redis_url.is_some() {
                "through redis"
            } else {
                "off"
            },
        ),
    };
    let redis = config.redis_url.as_ref().map_or_else(
        || "none".to_owned(),
        |url| {
            format!(
                "{url}, each call bounded to {} ms (then a miss, counted)",
                config.redis_timeout_ms
            )
        },
    );
    [
        format!("response cache         {cache}"),
        format!("redis                  {redis}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_url_hides_its_password() {
        let url: RedisUrl = "redis://:s3cret@127.0.0.1:6379/0".parse().expect("valid");
        assert!(!url.to_string().contains("s3cret"), "{url}");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert!(url.expose().contains("s3cret"));
        assert!("rediss://127.0.0.1".parse::<RedisUrl>().is_err());
        assert!("http://127.0.0.1".parse::<RedisUrl>().is_err());
        assert!("redis://".parse::<RedisUrl>().is_err());
    }
}
