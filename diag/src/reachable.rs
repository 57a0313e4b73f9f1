//! Is anything listening? The check `diag load` and `diag llm` make before they measure, so that
//! a run against nothing stops with exit code 3 instead of counting connection errors.

use std::time::Duration;

use crate::Error;

/// The reachability check gives up after this long (or `--timeout`, if shorter).
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// Succeeds when something accepts a TCP connection at the URL's host and port: a run against
/// nothing would only count connection errors. Nothing is sent, so no side effect.
pub(crate) async fn check_reachable(url: &reqwest::Url, timeout: Duration) -> Result<(), Error> {
    let unreachable = |reason: String| Error::TargetUnreachable {
        url: url.to_string(),
        reason,
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| unreachable("the URL has no port".into()))?;
    // `[::1]` → `::1`: an IP literal is parsed, not looked up; a name is resolved.
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((host, port));
    let timeout = timeout.min(REACH_TIMEOUT);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(unreachable(error.to_string())),
        Err(_) => Err(unreachable(format!("no connection within {timeout:?}"))),
    }
}
