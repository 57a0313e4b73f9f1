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
