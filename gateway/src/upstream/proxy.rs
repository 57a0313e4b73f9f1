//! Which way each provider's client goes: straight to the upstream, or through the proxy the
//! environment names (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, lower-case too).
//!
//! Decided once per provider at start-up, since a provider has one base URL, and applied to
//! whichever client the mode builds through that client's own proxy setting (reqwest's
//! `Proxy::all` or `no_proxy`, ureq's `Config::proxy`). Two rules:
//!
//! - **A loopback upstream never goes through a proxy** (`127.0.0.0/8`, `::1`, `localhost`),
//!   whatever the environment says. A proxy elsewhere cannot reach this machine's loopback, and
//!   its own loopback is a different machine. A developer behind a corporate `HTTP_PROXY`
//!   running the mock on `127.0.0.1` used to get every request refused by the proxy.
//! - Otherwise the environment decides, by curl's rules: the variable of the upstream's scheme
//!   (`HTTP_PROXY` for `http://`, `HTTPS_PROXY` for `https://`), else `ALL_PROXY`; upper case
//!   before lower case; `NO_PROXY` lists hosts, domains (`.example.com` or `example.com`, with
//!   their subdomains), IP addresses and ranges (`10.0.0.0/8`) that go direct, `*` for all.
//!   These are the rules reqwest applies by default (its matcher is hyper-util's, used here to
//!   decide): the blocking client follows the same decision, so switching `--mode` never
//!   changes the way out (ureq's own reading of the variables would take `ALL_PROXY` first and
//!   knows no ranges).
//!
//! Why decide here rather than let each client read the environment: the start-up log can then
//! say which proxy each provider goes through, and an error can name that proxy. A request
//! through a proxy only ever connects to the proxy, so a refused connection is the proxy's, and
//! an error naming only the upstream sends the reader to the wrong machine.
//!
//! A proxy's user and password (`http://user:pass@proxy:3128`) go to the client, never to a log
//! line or an error: [`ProxyName`] is the scheme, host and port only.

use std::fmt;
use std::net::IpAddr;

use axum::http::Uri;
use hyper_util::client::proxy::matcher::Matcher;
use reqwest::Url;

use crate::error::StartError;

/// How a provider's client reaches its upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A loopback upstream: direct, whatever the environment says.
    Loopback,
    /// A proxy variable applies to the scheme, but `NO_PROXY` names the host.
    NoProxy,
    /// No proxy variable applies to the upstream's scheme.
    NoVariable,
    /// Through this proxy.
    Proxy(Proxy),
}

/// A proxy from the environment: the URL as written (credentials included, for the client) and
/// the name it may be shown by.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    url: String,
    name: ProxyName,
}

/// A proxy as logs and errors show it: `http://proxy:3128 (HTTPS_PROXY)`, never a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyName {
    /// Scheme, host and port.
    pub shown: String,
    /// The environment variable it came from.
    pub variable: &'static str,
}

impl fmt::Display for ProxyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.shown, self.variable)
    }
}

impl fmt::Debug for Proxy {
    /// The name only: the URL may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Proxy").field(&self.name).finish()
    }
}

impl fmt::Display for Route {
    /// The start-up log's words for it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Loopback => {
                f.write_str("direct: a loopback upstream never goes through a proxy")
            }
            Route::NoProxy => f.write_str("direct: NO_PROXY names its host"),
            Route::NoVariable => f.write_str("direct: no proxy variable applies"),
            Route::Proxy(proxy) => write!(f, "through proxy {}", proxy.name),
        }
    }
}

impl Route {
    /// The route to `url` by the process's environment.
    pub fn from_env(url: &Url) -> Self {
        Self::decide(url, |name| std::env::var(name).ok())
    }

    /// The route to `url` when `env` answers for the environment (a test gives its own).
    pub fn decide(url: &Url, env: impl Fn(&str) -> Option<String>) -> Self {
        if is_loopback(url) {
            return Route::Loopback;
        }
        let Ok(uri) = url.as_str().parse::<Uri>() else {
            return Route::NoVariable;
        };
        let first_set = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|name| env(name).map(|value| (name, value)))
        };
        let scheme = if url.scheme() == "https" {
            ["HTTPS_PROXY", "https_proxy"]
        } else {
            ["HTTP_PROXY", "http_proxy"]
        };
        let no_proxy = first_set(["NO_PROXY", "no_proxy"]).map_or_else(String::new, |(_, v)| v);
        // The scheme's own variable first, then ALL_PROXY; an empty or unusable value counts as
        // unset, as in reqwest.
        for (variable, value) in [first_set(scheme), first_set(["ALL_PROXY", "all_proxy"])]
            .into_iter()
            .flatten()
        {
            let Some(intercept) = Matcher::builder().all(&value).build().intercept(&uri) else {
                continue;
            };
            let excluded = Matcher::builder()
                .all(&value)
                .no(&no_proxy)
                .build()
                .intercept(&uri)
                .is_none();
            if excluded {
                return Route::NoProxy;
            }
            // hyper-util keeps the credentials apart: this URI has none.
            let proxy_uri = intercept.uri();
            let shown = match (proxy_uri.scheme_str(), proxy_uri.authority()) {
                (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
                _ => proxy_uri.to_string(),
            };
            // curl takes `proxy:3128` for `http://proxy:3128`; so does hyper-util, not every
            // client's parser.
            let url = if value.contains("://") {
                value
            } else {
                format!("http://{value}")
            };
            return Route::Proxy(Proxy {
                url,
                name: ProxyName { shown, variable },
            });
        }
        Route::NoVariable
    }

    /// The proxy's name, if the route goes through one.
    pub fn proxy_name(&self) -> Option<&ProxyName> {
        match self {
            Route::Proxy(proxy) => Some(&proxy.name),
            _ => None,
        }
    }

    /// This route as reqwest's setting.
    pub fn reqwest(
        &self,
        builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, StartError> {
        Ok(match self {
            Route::Proxy(proxy) => {
                proxy.check_scheme()?;
                let setting = reqwest::Proxy::all(&proxy.url).map_err(|e| unusable(proxy, e))?;
                builder.proxy(setting)
            }
            _ => builder.no_proxy(),
        })
    }

    /// This route as ureq's setting.
    pub fn ureq(&self) -> Result<Option<ureq::Proxy>, StartError> {
        match self {
            Route::Proxy(proxy) => {
                proxy.check_scheme()?;
                ureq::Proxy::new(&proxy.url)
                    .map(Some)
                    .map_err(|e| unusable(proxy, e))
            }
            _ => Ok(None),
        }
    }
}

impl Proxy {
    /// HTTP and HTTPS proxies only: neither client is built with SOCKS (reqwest would fail
    /// every request, ureq panics on a SOCKS proxy given to it).
    fn check_scheme(&self) -> Result<(), StartError> {
        if self.name.shown.starts_with("http://") || self.name.shown.starts_with("https://") {
            Ok(())
        } else {
            Err(unusable(
                self,
                "only http:// and https:// proxies are supported (no SOCKS); add the upstream's \
                 host to NO_PROXY to go direct",
            ))
        }
    }
}

/// A proxy the environment names but the client cannot use (a `socks5://` proxy, a bad URL):
/// a start-up error, rather than requests that fail one by one.
fn unusable(proxy: &Proxy, error: impl fmt::Display) -> StartError {
    StartError::Config(format!(
        "the proxy {} is not usable by the upstream client: {error}",
        proxy.name
    ))
}

/// `127.0.0.0/8`, `::1` (and `::ffff:127.x.y.z`), or the name `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // An IPv6 host comes in brackets: `[::1]`.
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => host.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(url: &str, env: &[(&str, &str)]) -> Route {
        let url = Url::parse(url).expect("url");
        Route::decide(&url, |name| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn shown(route: &Route) -> String {
        route
            .proxy_name()
            .map_or_else(|| route.to_string(), ToString::to_string)
    }

    #[test]
    fn loopback_is_direct_whatever_the_environment_says() {
        let env = [
            ("HTTP_PROXY", "http://proxy:3128"),
            ("ALL_PROXY", "http://proxy:3128"),
        ];
        for url in [
            "http://127.0.0.1:8001",
            "http://127.8.9.10/",
            "http://[::1]:8001",
            "http://[::ffff:127.0.0.1]:8001",
            "http://localhost:8001",
            "http://LOCALHOST.:8001",
        ] {
            assert_eq!(route(url, &env), Route::Loopback, "{url}");
        }
        assert_ne!(route("http://10.0.0.1", &env), Route::Loopback);
        assert_ne!(route("http://localhost.example.com", &env), Route::Loopback);
    }

    #[test]
    fn the_schemes_variable_then_all_proxy() {
        let env = [
            ("HTTP_PROXY", "http://plain:3128"),
            ("https_proxy", "http://secure:3128"),
            ("ALL_PROXY", "http://all:3128"),
        ];
        assert_eq!(
            shown(&route("http://10.0.0.1", &env)),
            "http://plain:3128 (HTTP_PROXY)"
        );
        assert_eq!(
            shown(&route("https://api.example.com", &env)),
            "http://secure:3128 (https_proxy)"
        );
        let all = [("ALL_PROXY", "http://all:3128"), ("HTTP_PROXY", "")];
        assert_eq!(
            shown(&route("http://10.0.0.1", &all)),
            "http://all:3128 (ALL_PROXY)"
        );
        assert_eq!(route("http://10.0.0.1", &[]), Route::NoVariable);
        assert_eq!(
            route(
                "https://api.example.com",
                &[("HTTP_PROXY", "http://plain:3128")]
            ),
            Route::NoVariable,
            "HTTP_PROXY is for http:// upstreams only"
        );
    }

    #[test]
    fn no_proxy_takes_hosts_domains_and_ranges() {
        let proxy = ("ALL_PROXY", "http://proxy:3128");
        for (no_proxy, url) in [
            ("10.0.0.0/8", "http://10.1.2.3:8001"),
            ("example.com", "https://api.example.com"),
            (".example.com", "https://api.example.com"),
            ("a.test, 192.168.1.5", "http://192.168.1.5"),
            ("*", "https://anywhere.test"),
        ] {
            let env = [proxy, ("no_proxy", no_proxy)];
            assert_eq!(route(url, &env), Route::NoProxy, "{no_proxy} / {url}");
        }
        let env = [proxy, ("NO_PROXY", "example.com")];
        assert!(matches!(
            route("https://example.org", &env),
            Route::Proxy(_)
        ));
    }

    #[test]
    fn credentials_are_never_shown() {
        let env = [("HTTP_PROXY", "http://user:p%40ss@proxy:3128")];
        let route = route("http://10.0.0.1", &env);
        assert_eq!(shown(&route), "http://proxy:3128 (HTTP_PROXY)");
        let debug = format!("{route:?} {route}");
        assert!(
            !debug.contains("p%40ss") && !debug.contains("user"),
            "{debug}"
        );
        assert!(route.ureq().expect("ureq takes it").is_some());
        assert!(route.reqwest(reqwest::Client::builder()).is_ok());
    }

    #[test]
    fn a_socks_proxy_is_refused_at_start_up() {
        let route = route(
            "http://10.0.0.1",
            &[("ALL_PROXY", "socks5://127.0.0.1:1080")],
        );
        let error = route
            .ureq()
            .expect_err("ureq would panic on it")
            .to_string();
        assert!(
            error.contains("socks5://127.0.0.1:1080 (ALL_PROXY)"),
            "{error}"
        );
        assert!(route.reqwest(reqwest::Client::builder()).is_err());
    }

    #[test]
    fn a_proxy_without_a_scheme_is_http_and_both_clients_take_it() {
        let route = route("http://10.0.0.1", &[("http_proxy", "proxy.internal:3128")]);
        assert_eq!(shown(&route), "http://proxy.internal:3128 (http_proxy)");
        assert!(route.ureq().expect("ureq takes it").is_some());
        assert!(route.reqwest(reqwest::Client::builder()).is_ok());
    }
}
