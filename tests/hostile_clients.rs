//! Hostile clients and hostile data, through the real proxy (one worker, so that one worker's memory is
//! what is measured): floods of long and of random Host names, frontend lists too large to cache, and
//! the conformance cases (absolute-form targets, chunk sizes with leading zeros, malformed requests,
//! headers with `_`, a closed stdout). Memory is read from /proc/<pid>/status (VmRSS).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::{fnv, FNV_START};
use common::client::Conn;
use common::proxy::{config_for, BIN};
use common::{wait_until, Backend, Proxy, RedisServer, TempDir};
use serde_json::json;

const MB: u64 = 1024;

fn one_worker(redis: &RedisServer, extra: serde_json::Value) -> Proxy {
    let mut cfg = json!({ "server": { "workers": 1 } });
    common::proxy::merge(&mut cfg, extra);
    Proxy::start(redis, cfg)
}

fn rss_kb(p: &Proxy) -> u64 {
    p.proc_status_kb("VmRSS")
}

/// Sends `requests` on one connection in batches (pipelined) and returns the statuses in order.
fn pipelined(conn: &mut Conn, requests: &[Vec<u8>], batch: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(requests.len());
    for group in requests.chunks(batch) {
        let bytes: Vec<u8> = group.concat();
        conn.send(&bytes);
        for _ in group {
            statuses.push(conn.read_response(false).expect("an answer").status);
        }
    }
    statuses
}

fn ping_time(port: u16) -> Duration {
    let start = Instant::now();
    let r = Conn::open(port).get("__ping__", "/");
    assert_eq!(r.status, 200);
    start.elapsed()
}

#[test]
fn long_host_flood_is_answered_in_bounded_memory() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("app.test", "app", &[backend.url()]);
    let proxy = one_worker(&redis, json!({}));
    let mut conn = Conn::open(proxy.port);
    assert_eq!(conn.get("app.test", "/").status, 200);
    let before = rss_kb(&proxy);
    let filler = "y".repeat(30 * 1024);
    let requests: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!("GET / HTTP/1.1\r\nHost: a.b.c.d.e.x{i}{filler}\r\n\r\n").into_bytes())
        .collect();
    let statuses = pipelined(&mut conn, &requests, 10);
    assert_eq!(statuses.len(), 3000, "every request answered");
    assert!(statuses.iter().all(|&s| s == 400), "every answer a 400");
    // The connection is still usable, and the answer says what was wrong.
    let r = conn.get(&format!("x{}.test", "y".repeat(300)), "/");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("malformed"), "{}", r.text());
    assert_eq!(conn.get("app.test", "/").status, 200);
    let growth = rss_kb(&proxy).saturating_sub(before);
    eprintln!("long-Host flood: RSS {before} kB -> +{growth} kB");
    assert!(growth < 64 * MB, "RSS grew by {growth} kB");
}

#[test]
fn a_scan_of_random_unknown_hosts_costs_bounded_memory() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("app.test", "app", &[backend.url()]);
    let proxy = one_worker(&redis, json!({}));
    let port = proxy.port;
    assert_eq!(Conn::open(port).get("app.test", "/").status, 200);
    let idle_ping = ping_time(port);
    let before = rss_kb(&proxy);
    let scanners: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                let mut conn = Conn::open(port);
                let requests: Vec<Vec<u8>> = (0..25_000)
                    .map(|i| {
                        format!(
                            "GET / HTTP/1.1\r\nHost: h{t}x{i}.scan{}.example\r\n\r\n",
                            i % 97
                        )
                        .into_bytes()
                    })
                    .collect();
                pipelined(&mut conn, &requests, 100)
            })
        })
        .collect();
    // While the scan runs, the load balancer probe stays fast.
    let mut slowest = Duration::ZERO;
    while !scanners.iter().all(|s| s.is_finished()) {
        slowest = slowest.max(ping_time(port));
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut answered = 0;
    for s in scanners {
        let statuses = s.join().expect("scanner");
        assert!(statuses.iter().all(|&s| s == 400));
        answered += statuses.len();
    }
    assert_eq!(answered, 50_000);
    let growth = rss_kb(&proxy).saturating_sub(before);
    eprintln!(
        "50,000 unknown hosts: +{growth} kB RSS, __ping__ {idle_ping:?} idle, {slowest:?} at worst during the scan"
    );
    assert!(growth < 64 * MB, "RSS grew by {growth} kB");
    assert!(
        slowest < Duration::from_millis(500),
        "__ping__ took {slowest:?}"
    );
    assert!(ping_time(port) < Duration::from_millis(100));
    assert_eq!(Conn::open(port).get("app.test", "/").status, 200);
}

#[test]
fn huge_frontend_lists_are_read_bounded() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    let mut r = redis.conn(0);
    // 100,000 entries (all the same backend, so any chosen entry works).
    let mut pipe = redis::pipe();
    pipe.cmd("RPUSH").arg("frontend:big.test").arg("big");
    for chunk in 0..100 {
        let urls: Vec<String> = (0..1000).map(|_| backend.url()).collect();
        pipe.cmd("RPUSH")
            .arg("frontend:big.test")
            .arg(&urls)
            .ignore();
        let _ = chunk;
    }
    let _: () = pipe.query(&mut r).expect("rpush");
    // Eight frontends whose first backend entry is 10 MB.
    let huge = "h".repeat(10 << 20);
    for i in 0..8 {
        let key = format!("frontend:huge{i}.test");
        let _: i64 = redis::cmd("RPUSH")
            .arg(&key)
            .arg("huge")
            .arg(&huge)
            .arg(backend.url())
            .query(&mut r)
            .expect("rpush");
    }
    drop(huge);
    let proxy = one_worker(
        &redis,
        json!({ "server": { "debug": true, "lruCache": { "ttl": 0 } } }),
    );
    let mut conn = Conn::open(proxy.port);
    assert_eq!(conn.get("app-less.test", "/").status, 400);
    let before = rss_kb(&proxy);
    for _ in 0..20 {
        let r = conn.request("GET", "big.test", "/", &[("X-Debug", "1")], b"");
        assert_eq!(r.status, 200);
        let index: usize = r
            .header("x-debug-backend-id")
            .and_then(|v| v.parse().ok())
            .expect("backend index");
        assert!(index < 256, "only the first 256 backends are read: {index}");
    }
    for round in 0..3 {
        for i in 0..8 {
            let r = conn.get(&format!("huge{i}.test"), "/");
            assert_eq!(r.status, 200, "round {round}: the 10 MB entry is skipped");
        }
    }
    let growth = rss_kb(&proxy).saturating_sub(before);
    eprintln!("100,000-entry list and 8 lists with a 10 MB entry (ttl 0, every request a lookup): +{growth} kB RSS");
    assert!(growth < 64 * MB, "RSS grew by {growth} kB");
    assert!(ping_time(proxy.port) < Duration::from_millis(100));
}

#[test]
fn absolute_form_is_routed_and_forwarded_by_its_authority() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    let b = Backend::start("b");
    redis.set_frontend("a.test", "a", &[a.url()]);
    redis.set_frontend("b.test", "b", &[b.url()]);
    let proxy = one_worker(&redis, json!({}));
    let mut conn = Conn::open(proxy.port);
    conn.send(b"GET http://a.test/y?q=1 HTTP/1.1\r\nHost: b.test\r\n\r\n");
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "a", "routed by the target's authority");
    assert_eq!(r.echo("path").as_deref(), Some("/y?q=1"), "origin form");
    assert_eq!(r.seen_headers("host"), ["a.test"], "Host replaced");
    conn.send(b"GET http://A.test:80 HTTP/1.1\r\nHost: a.test\r\n\r\n");
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("path").as_deref(), Some("/"));
    assert_eq!(r.seen_headers("host"), ["A.test:80"]);
}

/// A backend that records the raw bytes of one request (until the end of a chunked body) and answers
/// 200.
fn raw_backend() -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"\r\n0\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            *store.lock().unwrap() = got;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    (url, seen)
}

#[test]
fn chunk_sizes_with_leading_zeros_are_accepted_and_normalised() {
    let redis = RedisServer::start();
    let echo = Backend::start("e");
    let (raw_url, seen) = raw_backend();
    redis.set_frontend("echo.test", "e", &[echo.url()]);
    redis.set_frontend("raw.test", "r", &[raw_url]);
    let proxy = one_worker(&redis, json!({}));
    let body = b"0000000000000000000000000005\r\nhello\r\n00000000000000000000006\r\n world\r\n00000000000000000000\r\n\r\n";
    let mut conn = Conn::open(proxy.port);
    let mut req =
        b"POST /up HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(body);
    conn.send(&req);
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    let mut hash = FNV_START;
    fnv(&mut hash, b"hello world");
    assert_eq!(r.echo("body-length").as_deref(), Some("11"));
    assert_eq!(r.echo("body-hash"), Some(format!("{hash:016x}")));
    // What the backend receives has no run of leading zeros.
    let mut req =
        b"POST /up HTTP/1.1\r\nHost: raw.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(body);
    conn.send(&req);
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    let got = seen.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.ends_with("\r\n\r\n05\r\nhello\r\n06\r\n world\r\n0\r\n\r\n"),
        "{text}"
    );
    // 17 significant hex digits are still too many.
    let mut c2 = Conn::open(proxy.port);
    c2.send(b"POST /up HTTP/1.1\r\nHost: echo.test\r\nTransfer-Encoding: chunked\r\n\r\n000011111111111111111\r\n");
    assert_eq!(c2.read_response(false).unwrap().status, 400);
}

#[test]
fn malformed_requests_get_a_page_that_says_so() {
    let redis = RedisServer::start();
    let proxy = one_worker(&redis, json!({}));
    let mut conn = Conn::open(proxy.port);
    conn.send(b"GET / HTTP/1.1\r\nHost: a.test\r\nBad Header\r\n\r\n");
    let r = conn.read_response(false).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("malformed"), "{}", r.text());
    assert!(!r.text().contains("No Application Configured"));
    let r = Conn::open(proxy.port).get("unknown.test", "/");
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("No Application Configured"),
        "{}",
        r.text()
    );
}

#[test]
fn headers_with_underscores_are_dropped_unless_allowed() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("app.test", "app", &[backend.url()]);
    let headers = [
        ("X_Real_IP", "6.6.6.6"),
        ("My_Header", "1"),
        ("My-Header", "2"),
    ];
    let proxy = one_worker(&redis, json!({}));
    let r = Conn::open(proxy.port).request("GET", "app.test", "/", &headers, b"");
    assert_eq!(r.status, 200);
    assert!(r.seen_header("X_Real_IP").is_none() && r.seen_header("My_Header").is_none());
    assert_eq!(r.seen_headers("My-Header"), ["2"]);
    drop(proxy);
    let proxy = one_worker(
        &redis,
        json!({ "server": { "allowUnderscoresInHeaders": true } }),
    );
    let r = Conn::open(proxy.port).request("GET", "app.test", "/", &headers, b"");
    assert_eq!(r.seen_headers("My_Header"), ["1"]);
    assert_eq!(r.seen_headers("X_Real_IP"), ["6.6.6.6"]);
}

#[test]
fn dry_run_survives_a_closed_stdout() {
    let dir = TempDir::new("dry-pipe");
    let cfg = config_for("redis://127.0.0.1:1", 8999, dir.path(), json!({}));
    let path = dir.path().join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    // `hipache-tpc --dry | head -0`: the reader is gone before anything is written.
    let mut child = Command::new(BIN)
        .args(["--dry", "-c"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut status = None;
    assert!(wait_until(Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    }));
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{err}");
}
