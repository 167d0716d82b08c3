//! `unix:/path` backend entries (README, "Unix-socket backends"): a real HTTP/1.1 server on a unix
//! socket behind the real binary: requests with `Host` unchanged, keep-alive pooling, a WebSocket-style
//! upgrade tunnelled through, a dead socket path (marked dead, retried on a TCP backend, 502 alone),
//! an over-long path skipped, and the active health checker marking it dead and alive again.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::client::Conn;
use common::unix_backend::UnixBackend;
use common::{wait_until, Backend, Proxy, RedisServer, TempDir};
use serde_json::json;

fn members(redis: &RedisServer, key: &str) -> Vec<String> {
    let mut m: Vec<String> = redis.cmd(&["SMEMBERS", key]);
    m.sort();
    m
}

#[test]
fn requests_reach_a_unix_backend_over_one_pooled_connection() {
    let redis = RedisServer::start();
    let dir = TempDir::new("unix");
    let app = UnixBackend::start("u", &dir.path().join("http.sock"));
    redis.set_frontend("u.test", "u", &[app.url()]);
    let proxy = Proxy::start(&redis, json!({}));
    let mut c = Conn::open(proxy.port);
    for i in 0..10 {
        let r = c.get("u.test", &format!("/n/{i}"));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), "u");
        assert_eq!(r.echo("path").as_deref(), Some(format!("/n/{i}").as_str()));
        assert_eq!(r.seen_header("host").as_deref(), Some("u.test"));
        assert_eq!(
            r.seen_header("x-forwarded-for").as_deref(),
            Some("127.0.0.1")
        );
    }
    assert_eq!(app.requests(), 10);
    assert_eq!(
        app.connections(),
        1,
        "keep-alive: one backend connection for 10 requests"
    );
}

#[test]
fn an_upgrade_is_tunnelled_to_a_unix_backend() {
    let redis = RedisServer::start();
    let dir = TempDir::new("unix");
    let app = UnixBackend::start("u", &dir.path().join("ws.sock"));
    redis.set_frontend("ws.test", "ws", &[app.url()]);
    let proxy = Proxy::start(&redis, json!({}));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut echoed = got[end..].to_vec();
    let payload: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
    s.write_all(&payload).unwrap();
    while echoed.len() < payload.len() {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "tunnel closed after {} bytes", echoed.len());
        echoed.extend_from_slice(&tmp[..n]);
    }
    assert!(echoed == payload, "tunnel corrupted the bytes");
}

#[test]
fn a_dead_socket_path_is_marked_dead_and_retried_on_tcp() {
    let redis = RedisServer::start();
    let dir = TempDir::new("unix");
    let missing = format!("unix:{}", dir.path().join("nobody.sock").display());
    let tcp = Backend::start("tcp");
    redis.set_frontend("mix.test", "mix", &[missing.clone(), tcp.url()]);
    redis.set_frontend("alone.test", "alone", std::slice::from_ref(&missing));
    let long = format!("unix:/{}", "x".repeat(120));
    redis.set_frontend("long.test", "long", &[long, tcp.url()]);
    let proxy = Proxy::start(&redis, json!({}));
    // Whichever backend the random choice takes first, every request is answered by the TCP one.
    for _ in 0..10 {
        let r = common::get(proxy.port, "mix.test", "/");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.backend(), "tcp");
    }
    assert!(
        wait_until(Duration::from_secs(5), || members(&redis, "dead:mix.test")
            == ["0"]),
        "not marked dead: {:?}\n{}",
        members(&redis, "dead:mix.test"),
        proxy.log()
    );
    assert_eq!(common::get(proxy.port, "alone.test", "/").status, 502);
    // A path longer than sun_path holds is skipped like a bad URL.
    for _ in 0..5 {
        let r = common::get(proxy.port, "long.test", "/");
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), "tcp");
    }
    // A socket file that exists but nobody listens on (a crashed app): refused, same handling.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    redis.set_frontend(
        "stale.test",
        "stale",
        &[format!("unix:{}", stale.display())],
    );
    assert!(UnixStream::connect(&stale).is_err());
    assert!(wait_until(Duration::from_secs(5), || common::get(
        proxy.port,
        "stale.test",
        "/"
    )
    .status
        == 502));
}

#[test]
fn the_health_checker_marks_a_unix_backend_dead_and_alive() {
    let redis = RedisServer::start();
    let dir = TempDir::new("unix");
    let app = UnixBackend::start("u", &dir.path().join("hc.sock"));
    let tcp = Backend::start("tcp");
    redis.set_frontend("hc.test", "hc", &[app.url(), tcp.url()]);
    let proxy = Proxy::start(
        &redis,
        json!({ "healthcheck": { "enabled": true, "interval": 1, "connectTimeout": 1, "timeout": 1 } }),
    );
    app.status.store(500, std::sync::atomic::Ordering::SeqCst);
    // Tell the checker about the backend as a proxy's passive failure would.
    let msg = format!("hc.test;{};0;2", app.url());
    assert!(wait_until(Duration::from_secs(10), || {
        let n: i64 = redis.cmd(&["PUBLISH", "dead", &msg]);
        n >= 1
    }));
    assert!(
        wait_until(Duration::from_secs(6), || members(&redis, "dead:hc.test")
            == ["0"]),
        "not marked dead:\n{}",
        proxy.log()
    );
    app.status.store(200, std::sync::atomic::Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(6), || members(&redis, "dead:hc.test")
            .is_empty()),
        "not alive again:\n{}",
        proxy.log()
    );
}
