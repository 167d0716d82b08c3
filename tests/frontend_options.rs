//! Per-frontend options (`frontend-options:<key>`, README "Per-frontend options") against a real
//! redis-server, real backends, real clients and the real binary: balancing policies and weights,
//! sticky cookies, maintenance, max_connections, rate, max_body, backend_timeout, https_redirect, hsts
//! (HTTP/1.1 and HTTP/2), changes seen by every worker, malformed values, the admin endpoints and the
//! file driver's object form.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::start_with_admin;
use common::client::Conn;
use common::proxy::{config_for, wait_for_notifications};
use common::tls::{ClientOptions, TestCa};
use common::{free_port, get, wait_until, Backend, Proxy, RedisServer, TempDir};
use serde_json::json;

fn hset(redis: &RedisServer, key: &str, fields: &[(&str, &str)]) {
    let k = format!("frontend-options:{key}");
    let mut args = vec!["HSET", k.as_str()];
    for (f, v) in fields {
        args.push(f);
        args.push(v);
    }
    let _: i64 = redis.cmd(&args);
}

/// Replaces a list atomically (a lookup never sees it missing).
fn replace_list(redis: &RedisServer, host: &str, list: &[String]) {
    let key = format!("frontend:{host}");
    let mut args = vec![
        "EVAL",
        "redis.call('DEL', KEYS[1]); redis.call('RPUSH', KEYS[1], unpack(ARGV)); return 1",
        "1",
        key.as_str(),
    ];
    args.extend(list.iter().map(String::as_str));
    let _: i64 = redis.cmd(&args);
}

fn one_worker() -> serde_json::Value {
    json!({ "server": { "workers": 1 } })
}

#[test]
fn roundrobin_alternates_exactly_on_one_worker() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    let b = Backend::start("b");
    redis.set_frontend("rr.test", "rr", &[a.url(), b.url()]);
    hset(&redis, "rr.test", &[("balance", "roundrobin")]);
    let proxy = Proxy::start(&redis, one_worker());
    // Once notifications are on, nothing re-reads the route mid-test (a fresh read would start the
    // rotation again, which is allowed, but not what this test measures).
    wait_for_notifications(&proxy, 1);
    let mut seen = Vec::new();
    // New connections each time: the position is the worker's, not the connection's.
    for _ in 0..20 {
        let r = get(proxy.port, "rr.test", "/");
        assert_eq!(r.status, 200);
        seen.push(r.backend());
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "no exact alternation: {seen:?}");
    }
    let mut c = Conn::open(proxy.port);
    let first = c.get("rr.test", "/").backend();
    let second = c.get("rr.test", "/").backend();
    assert_ne!(first, second);
}

#[test]
fn weights_share_and_zero_drains_seen_by_every_worker() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    let b = Backend::start("b");
    redis.set_frontend("w.test", "w", &[a.url(), b.url()]);
    hset(&redis, "w.test", &[("weights", "3,1")]);
    let proxy = Proxy::start(&redis, json!({}));
    wait_for_notifications(&proxy, 2);
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut c = Conn::open(proxy.port);
    for i in 0..400 {
        if i % 50 == 0 {
            c = Conn::open(proxy.port);
        }
        *counts.entry(c.get("w.test", "/").backend()).or_default() += 1;
    }
    let (na, nb) = (counts["a"], counts["b"]);
    let ratio = na as f64 / nb as f64;
    assert!((2.2..4.2).contains(&ratio), "3:1 expected, got {na}:{nb}");

    // Weight 0: drained. Every worker must see the change (new connections land on both).
    hset(&redis, "w.test", &[("weights", "1,0")]);
    let changed = Instant::now();
    let mut streak = 0;
    assert!(
        wait_until(Duration::from_secs(5), || {
            if get(proxy.port, "w.test", "/").backend() == "a" {
                streak += 1;
            } else {
                streak = 0;
            }
            streak >= 40
        }),
        "backend b still chosen after the weights change"
    );
    eprintln!(
        "weights change seen everywhere within {:?}",
        changed.elapsed()
    );
    let before = b.requests();
    for _ in 0..100 {
        assert_eq!(get(proxy.port, "w.test", "/").backend(), "a");
    }
    assert_eq!(b.requests(), before, "a drained backend got new requests");
}

#[test]
fn iphash_is_the_same_from_every_worker_and_instance() {
    let redis = RedisServer::start();
    let backends: Vec<Backend> = (0..4).map(|i| Backend::start(&format!("b{i}"))).collect();
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    redis.set_frontend("ip.test", "ip", &urls);
    hset(&redis, "ip.test", &[("balance", "iphash")]);
    let extra = json!({ "server": { "trustForwardedHeaders": true } });
    let p1 = Proxy::start(&redis, extra.clone());
    let p2 = Proxy::start(&redis, extra);
    wait_for_notifications(&p1, 2);
    let pick = |port: u16, client: &str| {
        Conn::open(port)
            .request("GET", "ip.test", "/", &[("X-Forwarded-For", client)], b"")
            .backend()
    };
    let mut chosen = HashMap::new();
    let mut used = std::collections::HashSet::new();
    for i in 1..=24 {
        let client = format!("10.9.{}.{}", i % 7, i);
        let first = pick(p1.port, &client);
        // New connections spread over both workers of both instances.
        for _ in 0..3 {
            assert_eq!(
                pick(p1.port, &client),
                first,
                "client {client} moved (instance 1)"
            );
            assert_eq!(
                pick(p2.port, &client),
                first,
                "client {client} moved (instance 2)"
            );
        }
        used.insert(first.clone());
        chosen.insert(client, first);
    }
    assert!(used.len() >= 3, "iphash uses the backends: {used:?}");
    // Remove one backend from the list: only its clients move.
    let gone = "b2".to_string();
    let rest: Vec<String> = std::iter::once("ip".to_string())
        .chain(backends.iter().filter(|b| b.name != gone).map(Backend::url))
        .collect();
    replace_list(&redis, "ip.test", &rest);
    let moved_client = chosen
        .iter()
        .find(|(_, b)| **b == gone)
        .map(|(c, _)| c.clone());
    if let Some(client) = &moved_client {
        assert!(wait_until(Duration::from_secs(5), || pick(p1.port, client) != gone));
    } else {
        std::thread::sleep(Duration::from_millis(500));
    }
    for (client, was) in &chosen {
        let now = pick(p1.port, client);
        if *was == gone {
            assert_ne!(now, gone);
        } else {
            assert_eq!(&now, was, "client {client} of a remaining backend moved");
        }
        assert_eq!(pick(p2.port, client), now);
    }
}

/// A backend that answers every request after `delay` (one thread per connection), counting them.
fn slow_backend(delay: Duration) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    c.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(delay);
                    let body = "backend: slow\n";
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, count)
}

#[test]
fn leastconn_sends_fewer_requests_to_a_slow_backend() {
    let redis = RedisServer::start();
    let fast = Backend::start("fast");
    let (slow_port, slow_count) = slow_backend(Duration::from_millis(300));
    redis.set_frontend(
        "lc.test",
        "lc",
        &[fast.url(), format!("http://127.0.0.1:{slow_port}")],
    );
    hset(&redis, "lc.test", &[("balance", "leastconn")]);
    let proxy = Proxy::start(&redis, one_worker());
    let port = proxy.port;
    let threads: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                for _ in 0..15 {
                    assert_eq!(c.get("lc.test", "/").status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (f, s) = (fast.requests(), slow_count.load(Ordering::SeqCst));
    assert_eq!(f + s, 90);
    assert!(s * 3 < f, "the slow backend got {s}, the fast one {f}");
}

fn sticky_of(r: &common::Response) -> Option<String> {
    r.headers_named("set-cookie")
        .iter()
        .find_map(|v| v.strip_prefix("hipache_tpc_backend="))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
}

#[test]
fn sticky_cookie_holds_across_connections_reorderings_and_moves_when_gone() {
    let redis = RedisServer::start();
    let backends: Vec<Backend> = ["a", "b", "c"].iter().map(|n| Backend::start(n)).collect();
    let urls: Vec<String> = backends.iter().map(Backend::url).collect();
    redis.set_frontend("st.test", "st", &urls);
    hset(&redis, "st.test", &[("sticky", "cookie")]);
    let proxy = Proxy::start(&redis, json!({ "server": { "debug": true } }));
    wait_for_notifications(&proxy, 2);
    let first = get(proxy.port, "st.test", "/");
    let cookie = sticky_of(&first).expect("a sticky cookie on the first answer");
    let set = first.header("set-cookie").unwrap();
    assert!(set.contains("Path=/") && set.contains("HttpOnly"), "{set}");
    assert!(!set.contains("Secure"), "no Secure over plain HTTP: {set}");
    let chosen = first.backend();
    let header = format!("hipache_tpc_backend={cookie}");
    let req = |extra: &[(&str, &str)]| {
        let mut h = vec![("Cookie", header.as_str()), ("X-Debug", "1")];
        h.extend_from_slice(extra);
        Conn::open(proxy.port).request("GET", "st.test", "/", &h, b"")
    };
    for _ in 0..12 {
        let r = req(&[]);
        assert_eq!(r.backend(), chosen);
        assert_eq!(sticky_of(&r), None, "no new cookie while it holds");
    }
    // Another cookie header and other cookies around it.
    let r = Conn::open(proxy.port).request(
        "GET",
        "st.test",
        "/",
        &[("Cookie", "x=1"), ("Cookie", &format!("y=2; {header}; z"))],
        b"",
    );
    assert_eq!(r.backend(), chosen);

    // Reordered list: the cookie names the URL, not the position.
    let index_of = |r: &common::Response| r.header("x-debug-backend-id").map(str::to_string);
    let old_index = index_of(&req(&[]));
    // Rotated (not reversed: the middle one would keep its index), so every index changes.
    let mut rotated = vec!["st".to_string()];
    rotated.extend(urls[1..].iter().cloned());
    rotated.push(urls[0].clone());
    replace_list(&redis, "st.test", &rotated);
    assert!(
        wait_until(Duration::from_secs(5), || index_of(&req(&[])) != old_index),
        "the reordered list was never seen"
    );
    for _ in 0..12 {
        assert_eq!(req(&[]).backend(), chosen);
    }
    // The chosen backend removed: re-balanced, with a new cookie.
    let without: Vec<String> = std::iter::once("st".to_string())
        .chain(
            backends
                .iter()
                .filter(|b| b.name != chosen)
                .map(Backend::url),
        )
        .collect();
    replace_list(&redis, "st.test", &without);
    assert!(wait_until(Duration::from_secs(5), || req(&[]).backend() != chosen));
    let r = req(&[]);
    let new_cookie = sticky_of(&r).expect("a new cookie once the backend is gone");
    assert_ne!(new_cookie, cookie);
    let new_backend = r.backend();
    let header2 = format!("hipache_tpc_backend={new_cookie}");
    for _ in 0..8 {
        let r = Conn::open(proxy.port).request("GET", "st.test", "/", &[("Cookie", &header2)], b"");
        assert_eq!(r.backend(), new_backend);
    }
}

#[test]
fn maintenance_answers_503_and_touches_no_backend() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    redis.set_frontend("m.test", "m", &[a.url()]);
    hset(&redis, "m.test", &[("maintenance", "1")]);
    let admin_port = free_port();
    let proxy = Proxy::start(&redis, json!({ "admin": { "port": admin_port } }));
    for _ in 0..5 {
        let r = get(proxy.port, "m.test", "/");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("30"));
    }
    let r = Conn::open(proxy.port).request("POST", "m.test", "/", &[], b"data");
    assert_eq!(r.status, 503);
    assert_eq!(a.requests(), 0, "a backend was touched");
    assert_eq!(get(proxy.port, "__ping__", "/").status, 200);
    let metrics = get(admin_port, "127.0.0.1", "/metrics").text();
    assert!(
        metrics.contains("hipache_policy_rejections_total{reason=\"maintenance\"} 6"),
        "{metrics}"
    );
}

#[test]
fn max_connections_refuses_beyond_the_limit() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    redis.set_frontend("mc.test", "mc", &[a.url()]);
    hset(&redis, "mc.test", &[("max_connections", "2")]);
    let proxy = Proxy::start(&redis, one_worker());
    let port = proxy.port;
    let slow: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || get(port, "mc.test", "/slow/1500").status))
        .collect();
    assert!(wait_until(Duration::from_secs(5), || a.requests() >= 2));
    let r = get(port, "mc.test", "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(a.requests(), 2);
    for t in slow {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert_eq!(get(port, "mc.test", "/").status, 200, "slots are released");
}

#[test]
fn rate_limits_each_client_with_429() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    redis.set_frontend("rate.test", "r", &[a.url()]);
    hset(&redis, "rate.test", &[("rate", "5")]);
    let proxy = Proxy::start(
        &redis,
        json!({ "server": { "workers": 1, "trustForwardedHeaders": true } }),
    );
    let mut c = Conn::open(proxy.port);
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..15 {
        let r = c.request(
            "GET",
            "rate.test",
            "/",
            &[("X-Forwarded-For", "10.1.1.1")],
            b"",
        );
        match r.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                assert_eq!(r.header("retry-after"), Some("1"));
            }
            s => panic!("status {s}"),
        }
    }
    assert!((5..=7).contains(&ok), "{ok} allowed");
    assert!(limited >= 8, "{limited} limited");
    assert_eq!(a.requests(), ok, "a limited request reached the backend");
    // Another client has its own bucket.
    let r = c.request(
        "GET",
        "rate.test",
        "/",
        &[("X-Forwarded-For", "10.1.1.2")],
        b"",
    );
    assert_eq!(r.status, 200);
    // And the bucket refills.
    assert!(wait_until(Duration::from_secs(3), || c
        .request(
            "GET",
            "rate.test",
            "/",
            &[("X-Forwarded-For", "10.1.1.1")],
            b""
        )
        .status
        == 200));
}

#[test]
fn max_body_answers_413_without_a_backend_and_backend_timeout_overrides() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    redis.set_frontend("mb.test", "mb", &[a.url()]);
    redis.set_frontend("plain.test", "p", &[a.url()]);
    hset(
        &redis,
        "mb.test",
        &[("max_body", "100"), ("backend_timeout", "0.5")],
    );
    let proxy = Proxy::start(&redis, json!({ "server": { "backendTimeout": 30 } }));
    let r = Conn::open(proxy.port).request("POST", "mb.test", "/", &[], &[b'x'; 200]);
    assert_eq!(r.status, 413);
    // Chunked: cut at the limit.
    let mut c = Conn::open(proxy.port);
    let chunk = "x".repeat(80);
    c.send(
        format!(
            "POST / HTTP/1.1\r\nHost: mb.test\r\nTransfer-Encoding: chunked\r\n\r\n50\r\n{chunk}\r\n50\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response(false).unwrap().status, 413);
    assert_eq!(a.requests(), 0, "a backend saw an oversized body");
    let r = Conn::open(proxy.port).request("POST", "mb.test", "/", &[], &[b'x'; 100]);
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("body-length").as_deref(), Some("100"));
    // backend_timeout 0.5 s instead of the server's 30 s.
    let started = Instant::now();
    assert_eq!(get(proxy.port, "mb.test", "/slow/3000").status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(get(proxy.port, "plain.test", "/slow/1000").status, 200);
}

struct TlsSetup {
    proxy: Proxy,
    https_port: u16,
    _certs: TempDir,
}

fn tls_proxy(redis: &RedisServer) -> TlsSetup {
    let ca = TestCa::new();
    let certs = TempDir::new("optcerts");
    let cert = ca.issue_files(certs.path(), "opt", &["*.test"]);
    let https_port = free_port();
    let proxy = Proxy::start(
        redis,
        json!({ "https": { "port": https_port, "bind": ["127.0.0.1"],
            "key": cert.key.to_string_lossy(), "cert": cert.cert.to_string_lossy() } }),
    );
    TlsSetup {
        proxy,
        https_port,
        _certs: certs,
    }
}

#[test]
fn https_redirect_and_hsts_over_http1_and_http2() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    redis.set_frontend("www.sec.test", "sec", &[a.url()]);
    redis.set_frontend("open.test", "open", &[a.url()]);
    hset(
        &redis,
        "www.sec.test",
        &[("https_redirect", "1"), ("hsts", "600")],
    );
    let s = tls_proxy(&redis);
    let p = s.proxy.port;
    let r = get(p, "WWW.Sec.Test:8080", "/x/y?q=1&r=%20");
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("https://www.sec.test:{}/x/y?q=1&r=%20", s.https_port).as_str())
    );
    assert_eq!(
        r.header("strict-transport-security"),
        None,
        "no HSTS on plain HTTP"
    );
    let r = Conn::open(p).request("POST", "www.sec.test", "/form", &[], b"a=1");
    assert_eq!(r.status, 308);
    let r = Conn::open(p).request("HEAD", "www.sec.test", "/h", &[], b"");
    assert_eq!(r.status, 301);
    // ACME HTTP-01 challenges go through.
    let r = get(p, "www.sec.test", "/.well-known/acme-challenge/token123");
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "a");
    assert_eq!(r.header("strict-transport-security"), None);
    assert_eq!(a.requests(), 1, "only the challenge reached the backend");
    // Over HTTPS: served, with HSTS; not on a frontend without it.
    let mut tls = common::tls::connect(s.https_port, ClientOptions::sni("www.sec.test")).unwrap();
    let r = tls.get("www.sec.test", "/secure");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("strict-transport-security"), Some("max-age=600"));
    let r = tls.get("open.test", "/");
    assert_eq!(r.header("strict-transport-security"), None);
    // HTTP/2: h2c is redirected, h2 over TLS gets HSTS.
    let rt = common::h2client::runtime();
    rt.block_on(async {
        let send = common::h2client::connect_h2c(p).await.unwrap();
        let r = common::h2client::request(&send, "GET", "www.sec.test", "/h2", &[], None)
            .await
            .unwrap();
        assert_eq!(r.status, 301);
        assert_eq!(
            r.header("location"),
            Some(format!("https://www.sec.test:{}/h2", s.https_port).as_str())
        );
        let send = common::h2client::connect_h2_tls(s.https_port, "www.sec.test")
            .await
            .unwrap();
        let r = common::h2client::request(&send, "GET", "www.sec.test", "/h2", &[], None)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("strict-transport-security"), Some("max-age=600"));
    });
}

#[test]
fn malformed_options_are_ignored_with_a_warning() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    let b = Backend::start("b");
    redis.set_frontend("bad.test", "bad", &[a.url(), b.url()]);
    hset(
        &redis,
        "bad.test",
        &[
            ("balance", "fastest"),
            ("rate", "-5"),
            ("colour", "blue"),
            ("weights", "1,1,1,1"),
            ("max_body", &"9".repeat(400)),
        ],
    );
    let proxy = Proxy::start(&redis, json!({}));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let r = Conn::open(proxy.port).request("POST", "bad.test", "/", &[], &[b'x'; 1000]);
        assert_eq!(r.status, 200);
        seen.insert(r.backend());
    }
    assert_eq!(seen.len(), 2, "random balance over both: {seen:?}");
    let log = proxy.log();
    for field in ["balance", "rate", "colour", "weights", "max_body"] {
        assert!(
            log.lines()
                .any(|l| l.contains("frontend-options:bad.test") && l.contains(field)),
            "no warning naming {field}:\n{log}"
        );
    }
    let warnings = log
        .lines()
        .filter(|l| l.contains("frontend-options:bad.test") && l.contains("colour"))
        .count();
    assert!(
        warnings <= 2,
        "one warning per worker, not per request: {warnings}"
    );
}

#[test]
fn admin_endpoints_read_write_and_validate_options() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    let b = Backend::start("b");
    redis.set_frontend("adm.test", "adm", &[a.url(), b.url()]);
    let (proxy, admin) = start_with_admin(&redis, json!({}), json!({}));
    let json_ct = [("Content-Type", "application/json")];
    let r = admin.get("/frontends/adm.test/options");
    assert_eq!((r.status, r.json.clone()), (200, json!({})));
    let r = admin.call(
        "PUT",
        "/frontends/adm.test/options",
        &json_ct,
        r#"{"balance": "roundrobin", "weights": [1, 0], "hsts": 60, "maintenance": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.response.text());
    assert_eq!(r.json["balance"], "roundrobin");
    assert_eq!(r.json["weights"], "1,0");
    let stored: HashMap<String, String> = redis.cmd(&["HGETALL", "frontend-options:adm.test"]);
    assert_eq!(stored.get("hsts").map(String::as_str), Some("60"));
    // The proxy follows: b is drained.
    assert!(wait_until(Duration::from_secs(5), || (0..10).all(|_| get(
        proxy.port, "adm.test", "/"
    )
    .backend()
        == "a")));
    for (body, field) in [
        (r#"{"balance": "fast"}"#, "balance"),
        (r#"{"nope": 1}"#, "nope"),
        (r#"{"weights": "1,1,1"}"#, "weights"),
        (r#"{"rate": 0}"#, "rate"),
    ] {
        let r = admin.call("PUT", "/frontends/adm.test/options", &json_ct, body);
        assert_eq!(r.status, 400, "{body}");
        assert!(r.error().contains(field), "{body}: {}", r.error());
    }
    let stored: HashMap<String, String> = redis.cmd(&["HGETALL", "frontend-options:adm.test"]);
    assert_eq!(stored.len(), 4, "a refused PUT changed nothing");
    assert_eq!(admin.delete("/frontends/adm.test/options").status, 200);
    assert_eq!(admin.get("/frontends/adm.test/options").json, json!({}));
    assert_eq!(admin.delete("/frontends/adm.test/options").status, 404);
    assert_eq!(admin.get("/frontends/bad host/options").status, 400);
}

#[test]
fn file_driver_object_form() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let dir = TempDir::new("file-options");
    let routes = json!({
        "rr.test": { "backends": ["rr", a.url(), b.url()], "options": { "balance": "roundrobin" } },
        "m.test": { "backends": ["m", a.url()], "options": { "maintenance": true } },
        "plain.test": ["p", a.url()]
    });
    std::fs::write(dir.path().join("routes.json"), routes.to_string()).unwrap();
    let port = free_port();
    let mut config = config_for("", port, dir.path(), one_worker());
    config["driver"] = json!("file:routes.json");
    let proxy = Proxy::start_config(dir, port, &config).unwrap_or_else(|l| panic!("{l}"));
    let picks: Vec<String> = (0..6)
        .map(|_| get(proxy.port, "rr.test", "/").backend())
        .collect();
    for pair in picks.windows(2) {
        assert_ne!(pair[0], pair[1], "{picks:?}");
    }
    let before = a.requests() + b.requests();
    assert_eq!(get(proxy.port, "m.test", "/").status, 503);
    assert_eq!(a.requests() + b.requests(), before);
    assert_eq!(get(proxy.port, "plain.test", "/").status, 200);
}

#[test]
fn dead_backends_are_skipped_by_every_policy_and_sticky_is_secure_on_https() {
    let redis = RedisServer::start();
    let alive = Backend::start("alive");
    let dead = Backend::start("dead");
    dead.stop();
    let policies: [(&str, &[(&str, &str)]); 4] = [
        ("rr.test", &[("balance", "roundrobin")]),
        ("ip.test", &[("balance", "iphash")]),
        ("lc.test", &[("balance", "leastconn")]),
        ("st.test", &[("sticky", "cookie"), ("weights", "1,5")]),
    ];
    for (host, fields) in policies {
        redis.set_frontend(host, host, &[alive.url(), dead.url()]);
        hset(&redis, host, fields);
    }
    let s = tls_proxy(&redis);
    for (host, _) in policies {
        for _ in 0..15 {
            let r = get(s.proxy.port, host, "/");
            assert_eq!((r.status, r.backend()), (200, "alive".into()), "{host}");
        }
    }
    // A sticky cookie naming the dead backend is re-balanced, with a new cookie.
    // The cookie value is the first 12 hex digits of FNV-1a 64 of the URL (the same everywhere).
    let id_of = |url: String| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in url.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        format!("{h:016x}")[..12].to_string()
    };
    let dead_id = id_of(dead.url());
    let mut tls = common::tls::connect(s.https_port, ClientOptions::sni("st.test")).unwrap();
    let cookie = format!("hipache_tpc_backend={dead_id}");
    let r = tls
        .conn
        .request("GET", "st.test", "/", &[("Cookie", &cookie)], b"");
    assert_eq!(r.backend(), "alive");
    let set = r.header("set-cookie").expect("a new cookie");
    assert!(set.contains("; Secure"), "Secure on HTTPS: {set}");
    assert_eq!(sticky_of(&r), Some(id_of(alive.url())));
}
