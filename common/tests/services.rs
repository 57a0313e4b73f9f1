//! The harness itself against the real programs: each instance starts, answers, and is gone after
//! drop. Skips loudly (or fails under REQUIRE_SERVICES=1) where the package is missing.

use common::services::{Postgres, Redis};

#[test]
fn redis_starts_answers_survives_a_restart_and_stops() {
    let Some(mut redis) = Redis::start_for("redis_starts_answers_survives_a_restart_and_stops")
    else {
        return;
    };
    assert!(redis.ping());
    redis.kill();
    assert!(!redis.ping(), "a killed redis must not answer");
    redis.restart().expect("restart on the same port");
    assert!(redis.ping());
    let port = redis.port();
    drop(redis);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn postgres_starts_creates_databases_and_stops() {
    let Some(postgres) = Postgres::start_for("postgres_starts_creates_databases_and_stops") else {
        return;
    };
    let first = postgres.create_database("t").expect("createdb");
    let second = postgres.create_database("t").expect("createdb");
    assert_ne!(first, second);
    assert!(first.starts_with("postgres://postgres@127.0.0.1:"));
    let port = postgres.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(postgres);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// The shipped template renders, HAProxy accepts it, and the stats socket reports each server:
/// with nothing behind either, both are marked DOWN by the active check and a request gets 503.
#[test]
fn haproxy_renders_the_template_checks_its_servers_and_stops() {
    use common::services::haproxy::{BACKEND, Config, Server};
    use common::services::{Haproxy, free_port};
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let port = || free_port().expect("a free port");
    let config = Config {
        listen: addr(port()),
        stats: addr(port()),
        servers: (1..=2)
            .map(|i| Server {
                name: format!("gw{i}"),
                main: addr(port()),
                admin: addr(port()),
            })
            .collect(),
    };
    let Some(haproxy) = Haproxy::start_for(
        "haproxy_renders_the_template_checks_its_servers_and_stops",
        config,
    ) else {
        return;
    };
    let rows = haproxy.show_stat().expect("show stat");
    let servers: Vec<&str> = rows
        .iter()
        .filter(|r| r.proxy == BACKEND && r.server.starts_with("gw"))
        .map(|r| r.server.as_str())
        .collect();
    assert_eq!(servers, ["gw1", "gw2"]);
    // fall 2, inter 1s: DOWN within about 2 s of the first failed check.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while haproxy
        .server_status("gw1")
        .is_none_or(|s| !s.starts_with("DOWN"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "gw1 never marked DOWN"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let port = haproxy.config().listen.port();
    drop(haproxy);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

/// A detached Redis outlives its handle (what `cargo xtask fleet up` needs) and says how to
/// stop it.
#[test]
fn a_detached_redis_keeps_running_until_stopped_by_pid() {
    let Some(redis) = Redis::start_for("a_detached_redis_keeps_running_until_stopped_by_pid")
    else {
        return;
    };
    let port = redis.port();
    let detached = redis.detach();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(detached.dir.is_dir());
    let _ = std::process::Command::new("kill")
        .arg(detached.pid.to_string())
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(std::time::Instant::now() < deadline, "redis still answers");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&detached.dir);
}
