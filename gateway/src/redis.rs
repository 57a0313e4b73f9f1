//! The shared Redis (`--redis-url`): one connection every instance-spanning feature goes through.
//!
//! The response cache keeps its second tier here ([`crate::cache`]); the shared rate limits count
//! here too ([`crate::ratelimit`]), through the same connection. Whatever uses it, the rule is the same, and it lives in this one place: Redis
//! is an *optimisation*, never a dependency of a request. A Redis that is down, restarting, or
//! slow must cost a request a few milliseconds at most, and then the request goes on without it.
//!
//! - One connection, multiplexed: redis-rs's tokio [`ConnectionManager`] pipelines every
//!   caller's commands over a single socket and reconnects in the background after an I/O
//!   error. It is created *lazily*, so a gateway starts (and serves) with its Redis down.
//! - But the manager returns errors to the caller, and while it reconnects a call waits for the
//!   reconnection. So every call here is bounded by `--redis-timeout-ms` (connecting included),
//!   and a failure is returned as a [`RedisFailure`] the caller counts and gets past: a cache
//!   miss, a local limit. It is never turned into an error response.
//!
//! Below every layer that uses it: it knows the settings and nothing else (each caller counts
//! its own failures in its own metric).

use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{AsyncCommands as _, Client, FromRedisValue, ScriptInvocation};

use crate::config::RedisUrl;
use crate::error::StartError;

/// Why a Redis call gave no answer; the label of the caller's error counter.
#[derive(Debug)]
pub enum RedisFailure {
    /// No answer within `--redis-timeout-ms`: Redis is slow, or (re)connecting.
    Timeout,
    /// Redis answered with an error, or the connection failed (refused, reset).
    Error(::redis::RedisError),
}

impl std::fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RedisFailure::Timeout => f.write_str("no answer in time"),
            RedisFailure::Error(e) => write!(f, "{e}"),
        }
    }
}

/// A handle on the shared Redis; cloning is shallow (the manager is one `Arc`).
#[derive(Clone)]
pub struct SharedRedis {
    manager: ConnectionManager,
    /// `--redis-timeout-ms`: the bound on every call.
    timeout: Duration,
    /// For logs: the URL without its password.
    shown: String,
}

impl std::fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRedis")
            .field("url", &self.shown)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SharedRedis {
    /// A lazy connection to `url`: nothing is dialled until the first call, so a Redis that is
    /// down at start-up delays nothing. Must be called inside a Tokio runtime.
    pub fn connect(url: &RedisUrl, timeout: Duration) -> Result<Self, StartError> {
        let client = Client::open(url.expose())
            .map_err(|e| StartError::Config(format!("--redis-url {url}: {e}")))?;
        // One quick reconnection attempt per failure, bounded like every call: while Redis is
        // away, each call fails within `timeout` and the next one tries again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(timeout);
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StartError::Config(format!("--redis-url {url}: {e}")))?;
        Ok(Self {
            manager,
            timeout,
            shown: url.to_string(),
        })
    }

    /// The URL, password hidden.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// `GET key`, bounded.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RedisFailure> {
        let mut connection = self.manager.clone();
        self.bounded(async move { connection.get(key).await }).await
    }

    /// `SET key value EX ttl`, bounded. `ttl` is rounded up to a whole second (at least 1).
    pub async fn set_ex(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), RedisFailure> {
        let mut connection = self.manager.clone();
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        self.bounded(async move { connection.set_ex(key, value, seconds.max(1)).await })
            .await
    }

    /// Any command, bounded the same way, for the other users of the shared Redis.
    pub async fn query<T: FromRedisValue>(
        &self,
        command: &::redis::Cmd,
    ) -> Result<T, RedisFailure> {
        let mut connection = self.manager.clone();
        self.bounded(async move { command.query_async(&mut connection).await })
            .await
    }

    /// A Lua script, bounded the same way: `EVALSHA`, one round trip; a Redis that restarted
    /// has forgotten the script and answers `NOSCRIPT`, and then [`::redis::Script`] loads it
    /// and asks again (within the same bound).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisFailure> {
        let mut connection = self.manager.clone();
        self.bounded(async move { invocation.invoke_async(&mut connection).await })
            .await
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, RedisFailure> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(RedisFailure::Error(e)),
            Err(_) => Err(RedisFailure::Timeout),
        }
    }
}
