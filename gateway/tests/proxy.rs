//! Proxies: a loopback upstream is reached directly whatever `HTTP_PROXY` says, in every mode
//! (both HTTP clients); any other upstream goes through the environment's proxy, and when that
//! proxy cannot be reached the error names the proxy, not the upstream.
//!
//! Each gateway is the real binary with the proxy variables set on the child only: the test
//! process's own environment never changes. The proxy is a port nobody listens on, so a request
//! that went through it fails at once, and no request ever leaves this machine.
#![allow(clippy::unwrap_used)]

mod support;

use reqwest::StatusCode;
use support::process::GatewayProcess;
use support::{Mock, chat_body, dead_upstream, json_of, post_chat};

/// The modes and the client each uses: fixed (reqwest), broken and inline (ureq).
const ALL_MODES: [&str; 3] = ["fixed", "broken", "inline"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loopback_upstream_never_goes_through_the_proxy() {
    let mock = Mock::fast();
    let proxy = dead_upstream();
    for mode in ALL_MODES {
        let gw = GatewayProcess::start_with_env(
            &["--mode", mode, "--upstream", &mock.url(), "--retries", "0"],
            &[("HTTP_PROXY", &proxy), ("https_proxy", &proxy)],
        );
        let (status, body) = json_of(post_chat(&gw.url(), &chat_body(false), &[]).await).await;
        assert_eq!(status, StatusCode::OK, "{mode}: {body}\n{}", gw.log());
        let said = "direct: a loopback upstream never goes through a proxy";
        let log = gw.log_once_it_has(said);
        assert!(
            log.contains(said),
            "{mode}: the start-up log does not say how the upstream is reached:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_proxy_is_named_in_the_error() {
    let proxy = dead_upstream();
    // A non-routable address: were it ever dialled directly, the connect would hang, not fail.
    let upstream = "http://10.255.255.1:9";
    for mode in ALL_MODES {
        let gw = GatewayProcess::start_with_env(
            &["--mode", mode, "--upstream", upstream, "--retries", "0"],
            &[("HTTP_PROXY", &proxy)],
        );
        let named = format!("through proxy {proxy} (HTTP_PROXY)");
        let log = gw.log_once_it_has(&named);
        assert!(
            log.contains(&named),
            "{mode}: the start-up log does not name the proxy:\n{log}"
        );
        let (status, body) = json_of(post_chat(&gw.url(), &chat_body(false), &[]).await).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{mode}: {body}");
        assert_eq!(
            body["error"]["code"], "upstream_unreachable",
            "{mode}: {body}"
        );
        assert!(
            message.contains(&named)
                && message.contains("cannot connect to the proxy")
                && message.contains(upstream),
            "{mode}: the message must name the proxy and the upstream: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_is_honoured_and_credentials_are_never_logged() {
    let proxy = dead_upstream().replace("http://", "http://user:s3cret@");
    let upstream = "http://10.255.255.1:9";
    let gw = GatewayProcess::start_with_env(
        &["--mode", "fixed", "--upstream", upstream, "--retries", "0"],
        &[("ALL_PROXY", &proxy)],
    );
    let log = gw.log_once_it_has("(ALL_PROXY)");
    assert!(log.contains("(ALL_PROXY)"), "{log}");
    assert!(!log.contains("s3cret") && !log.contains("user:"), "{log}");
    drop(gw);

    let gw = GatewayProcess::start_with_env(
        &["--mode", "broken", "--upstream", upstream, "--retries", "0"],
        &[("HTTP_PROXY", &proxy), ("NO_PROXY", "10.255.255.1")],
    );
    let said = "direct: NO_PROXY names its host";
    let log = gw.log_once_it_has(said);
    assert!(log.contains(said), "{log}");
}

/// A proxy neither client can use (SOCKS) is a start-up error, exit 1, naming the proxy and
/// its variable, in every mode: not requests that fail one by one later.
#[test]
fn a_socks_proxy_stops_the_gateway_with_exit_1() {
    for mode in ALL_MODES {
        let output = support::process::command(&[("ALL_PROXY", "socks5://127.0.0.1:1080")])
            .args([
                "--mode",
                mode,
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "off",
            ])
            .args(["--upstream", "http://10.0.0.1:9"])
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(1), "{mode}: {log}");
        assert!(
            log.contains("socks5://127.0.0.1:1080 (ALL_PROXY)") && log.contains("no SOCKS"),
            "{mode}: {log}"
        );
    }
}
