//! Backends and Redis failing (docs/compatibility.md §3): passive dead marks, retries, timeouts, connection limits,
//! Redis outages, slow clients. Real redis-server, real backends that die, hang and come back.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::backend::{start_dropper, BlackHole};
use common::client::Conn;
use common::{free_port, get, wait_until, Backend, Proxy, RedisServer};
use serde_json::json;

/// Subscribes to the `dead` channel; messages arrive on the returned receiver.
fn subscribe_dead(redis: &RedisServer) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let mut conn = redis.conn(0);
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut pubsub = conn.as_pubsub();
        pubsub.subscribe("dead").unwrap();
        ready_tx.send(()).unwrap();
        while let Ok(msg) = pubsub.get_message() {
            if let Ok(payload) = msg.get_payload::<String>() {
                if tx.send(payload).is_err() {
                    break;
                }
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    rx
}

fn dead_set(redis: &RedisServer, host: &str) -> Vec<String> {
    let mut members: Vec<String> = redis.cmd(&["SMEMBERS", &format!("dead:{host}")]);
    members.sort();
    members
}

#[test]
fn killed_backend_under_load_is_invisible_for_gets() {
    let redis = RedisServer::start();
    let doomed = Backend::start("doomed");
    let healthy = Backend::start("healthy");
    redis.set_frontend("load.test", "load", &[doomed.url(), healthy.url()]);
    let proxy = Proxy::start(&redis, json!({}));
    let dead = subscribe_dead(&redis);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let port = proxy.port;
    let clients: Vec<_> = (0..6)
        .map(|i| {
            let (stop, errors, ok) = (stop.clone(), errors.clone(), ok.clone());
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let r = c.get("load.test", &format!("/c{i}/{n}"));
                    if r.status == 200 {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let served_by_doomed = doomed.requests();
    doomed.stop();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    assert!(
        served_by_doomed > 0,
        "the doomed backend served traffic before dying"
    );
    assert_eq!(
        errors.load(Ordering::SeqCst),
        0,
        "{} requests succeeded",
        ok.load(Ordering::SeqCst)
    );
    assert_eq!(dead_set(&redis, "load.test"), vec!["0"]);
    let ttl: i64 = redis.cmd(&["TTL", "dead:load.test"]);
    assert!((1..=30).contains(&ttl), "TTL {ttl}");
    let msg = dead.recv_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(msg, format!("load.test;{};0;2", doomed.url()));
}

#[test]
fn hung_backend_gets_504_within_the_timeout_and_is_marked_dead() {
    let redis = RedisServer::start();
    let hole = BlackHole::start();
    let healthy = Backend::start("healthy");
    redis.set_frontend("hung.test", "hung", &[hole.url(), healthy.url()]);
    // Index 1 is marked dead so that the black hole is chosen.
    let _: i64 = redis.cmd(&["SADD", "dead:hung.test", "1"]);
    redis.set_frontend("solo.test", "solo", &[hole.url()]);
    let proxy = Proxy::start(&redis, json!({ "server": { "backendTimeout": 1 } }));
    let start = Instant::now();
    let r = get(proxy.port, "hung.test", "/");
    assert_eq!(r.status, 504);
    assert!(r.text().contains("Application Not Responding"));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    assert_eq!(dead_set(&redis, "hung.test"), vec!["0", "1"]);
    // A frontend with one backend is never marked (docs/compatibility.md §3).
    assert_eq!(get(proxy.port, "solo.test", "/").status, 504);
    assert!(dead_set(&redis, "solo.test").is_empty());
}

#[test]
fn status_501_marks_but_500_and_503_do_not() {
    let redis = RedisServer::start();
    let a = Backend::start("a");
    let b = Backend::start("b");
    for host in ["m501.test", "m500.test", "m503.test", "m504.test"] {
        redis.set_frontend(host, host, &[a.url(), b.url()]);
    }
    let proxy = Proxy::start(&redis, json!({}));
    let r = get(proxy.port, "m501.test", "/status/501");
    assert_eq!(r.status, 501, "the answer itself is relayed");
    assert!(r.text().starts_with("status 501"));
    assert_eq!(dead_set(&redis, "m501.test").len(), 1);
    assert_eq!(get(proxy.port, "m504.test", "/status/504").status, 504);
    assert_eq!(dead_set(&redis, "m504.test").len(), 1);
    for (host, path) in [("m500.test", "/status/500"), ("m503.test", "/status/503")] {
        for _ in 0..5 {
            assert_eq!(
                get(proxy.port, host, path).status.to_string(),
                path.trim_start_matches("/status/")
            );
        }
        assert!(
            dead_set(&redis, host).is_empty(),
            "{host} must not be marked"
        );
    }
    // deadBackendOn500 = false: statuses never mark.
    let proxy2 = Proxy::start(&redis, json!({ "server": { "deadBackendOn500": false } }));
    redis.set_frontend("quiet.test", "quiet", &[a.url(), b.url()]);
    assert_eq!(get(proxy2.port, "quiet.test", "/status/502").status, 502);
    assert!(dead_set(&redis, "quiet.test").is_empty());
}

#[test]
fn retried_post_with_a_small_body_succeeds_on_the_healthy_backend() {
    let redis = RedisServer::start();
    let refused = format!("http://127.0.0.1:{}", free_port());
    let healthy = Backend::start("healthy");
    redis.set_frontend("post.test", "post", &[refused.clone(), healthy.url()]);
    let proxy = Proxy::start(&redis, json!({ "server": { "workers": 1 } }));
    let body = vec![b'x'; 1000];
    let mut c = Conn::open(proxy.port);
    for _ in 0..20 {
        let r = c.request("POST", "post.test", "/submit", &[], &body);
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), "healthy");
        assert_eq!(r.echo("body-length").as_deref(), Some("1000"));
    }
    assert_eq!(dead_set(&redis, "post.test"), vec!["0"]);
    // A large body whose backend refuses before anything is sent is retried too.
    redis.set_frontend("big.test", "big", &[refused, healthy.url()]);
    let big = vec![b'y'; 2 * 1024 * 1024];
    for _ in 0..5 {
        let r = c.request("POST", "big.test", "/big", &[], &big);
        assert_eq!(r.status, 200);
        assert_eq!(r.echo("body-length"), Some(big.len().to_string()));
    }
}

#[test]
fn a_backend_dying_mid_upload_gives_502_at_once() {
    let redis = RedisServer::start();
    let dropper = start_dropper(200 * 1024);
    redis.set_frontend(
        "drop.test",
        "drop",
        &[format!("http://127.0.0.1:{dropper}")],
    );
    let proxy = Proxy::start(&redis, json!({}));
    let mut c = Conn::open(proxy.port);
    let head = format!(
        "POST /up HTTP/1.1\r\nHost: drop.test\r\nContent-Length: {}\r\n\r\n",
        8 * 1024 * 1024
    );
    c.send(head.as_bytes());
    let start = Instant::now();
    // Keep sending the body from another thread; the proxy must answer without waiting for all of it.
    let mut writer = c.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 0..128 {
            if std::io::Write::write_all(&mut writer, &chunk).is_err() {
                break;
            }
        }
    });
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn an_active_checker_owns_the_dead_sets() {
    let redis = RedisServer::start();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let _: () = redis.cmd(&["SET", "hchecker_ping", &now.to_string()]);
    let refused = format!("http://127.0.0.1:{}", free_port());
    let healthy = Backend::start("healthy");
    redis.set_frontend("chk.test", "chk", &[refused.clone(), healthy.url()]);
    let proxy = Proxy::start(&redis, json!({}));
    assert!(
        wait_until(Duration::from_secs(5), || proxy
            .log()
            .matches("active health checker detected")
            .count()
            == 2),
        "{}",
        proxy.log()
    );
    let dead = subscribe_dead(&redis);
    for _ in 0..10 {
        assert_eq!(get(proxy.port, "chk.test", "/").status, 200);
    }
    let msg = dead
        .recv_timeout(Duration::from_secs(2))
        .expect("a dead message is published");
    assert_eq!(msg, format!("chk.test;{refused};0;2"));
    assert!(
        dead_set(&redis, "chk.test").is_empty(),
        "the proxy must leave dead:* to the checker"
    );
}

#[test]
fn redis_killed_and_restarted_mid_run() {
    let mut redis = RedisServer::start();
    let b = Backend::start("b");
    redis.set_frontend("cached.test", "cached", &[b.url()]);
    let proxy = Proxy::start(
        &redis,
        json!({ "server": { "lruCache": { "size": 100, "ttl": 0.5 } } }),
    );
    let mut c = Conn::open(proxy.port);
    assert_eq!(c.get("cached.test", "/").status, 200);
    redis.kill();
    // Cached hosts keep working well past their TTL; uncached ones get 503 fast.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert_eq!(c.get("cached.test", "/").status, 200);
        let start = Instant::now();
        assert_eq!(get(proxy.port, "uncached.test", "/").status, 503);
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "503 took {:?}",
            start.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Redis comes back (empty: it keeps no data); the proxy recovers on its own.
    redis.restart();
    redis.set_frontend("cached.test", "cached", &[b.url()]);
    redis.set_frontend("uncached.test", "now-known", &[b.url()]);
    assert!(wait_until(Duration::from_secs(5), || get(
        proxy.port,
        "uncached.test",
        "/"
    )
    .status
        == 200));
    assert_eq!(c.get("cached.test", "/").status, 200);
    assert!(
        proxy.log().contains("connection to redis://127.0.0.1"),
        "{}",
        proxy.log()
    );
}

#[test]
fn starting_with_redis_down() {
    let redis_port = free_port();
    let proxy = Proxy::start_url(&format!("redis://127.0.0.1:{redis_port}"), json!({}));
    assert_eq!(get(proxy.port, "__ping__", "/").status, 200);
    let start = Instant::now();
    assert_eq!(get(proxy.port, "late.test", "/").status, 503);
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert!(
        wait_until(Duration::from_secs(3), || proxy
            .log()
            .contains("cannot connect to redis://127.0.0.1")),
        "{}",
        proxy.log()
    );
    let redis = RedisServer::start_on(redis_port, None);
    let b = Backend::start("b");
    redis.set_frontend("late.test", "late", &[b.url()]);
    assert!(wait_until(Duration::from_secs(5), || get(
        proxy.port,
        "late.test",
        "/"
    )
    .status
        == 200));
}

#[test]
fn slow_header_clients_do_not_hold_up_others() {
    let redis = RedisServer::start();
    let b = Backend::start("b");
    redis.set_frontend("fast.test", "fast", &[b.url()]);
    let proxy = Proxy::start(&redis, json!({ "server": { "headerTimeout": 2 } }));
    let mut slow: Vec<Conn> = (0..300)
        .map(|_| {
            let mut c = Conn::open(proxy.port);
            c.send(b"GET / HTTP/1.1\r\nHost: fast");
            c
        })
        .collect();
    for _ in 0..20 {
        let start = Instant::now();
        assert_eq!(get(proxy.port, "fast.test", "/").status, 200);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    let closed = slow
        .iter_mut()
        .map(|c| c.is_closed_within(Duration::from_millis(500)))
        .filter(|closed| *closed)
        .count();
    assert_eq!(
        closed, 300,
        "slow-header connections are closed after headerTimeout"
    );
}

#[test]
fn max_sockets_bounds_backend_connections_with_a_short_wait_then_503() {
    let redis = RedisServer::start();
    let b = Backend::start("slow");
    redis.set_frontend("busy.test", "busy", &[b.url()]);
    let proxy = Proxy::start(
        &redis,
        // All four clients come from 127.0.0.1: no per-client cap, so maxSockets alone is measured.
        json!({ "server": { "workers": 1, "maxSockets": 2, "maxSocketsPerClient": 0 } }),
    );
    let port = proxy.port;
    let started = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get(port, "busy.test", "/slow/2000").status))
        .collect();
    let mut statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 503, 503]);
    assert!(
        b.connections() <= 2,
        "{} backend connections",
        b.connections()
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn a_client_that_stops_reading_is_dropped_after_tcp_timeout() {
    let redis = RedisServer::start();
    let b = Backend::start("big");
    redis.set_frontend("big.test", "big", &[b.url()]);
    let proxy = Proxy::start(&redis, json!({ "server": { "tcpTimeout": 1 } }));
    let mut c = Conn::open(proxy.port);
    let total = 200 * 1024 * 1024;
    c.send(format!("GET /size/{total} HTTP/1.1\r\nHost: big.test\r\n\r\n").as_bytes());
    // Do not read: the proxy's writes stop making progress once the socket buffers are full.
    std::thread::sleep(Duration::from_secs(4));
    let received = c.read_to_close().len();
    assert!(
        received < total / 2,
        "received {received} bytes: the stalled client was not dropped"
    );
    // Other clients are served normally meanwhile.
    assert_eq!(get(proxy.port, "big.test", "/").status, 200);
}

#[test]
fn a_proxy_that_cannot_authenticate_to_redis_says_not_ready() {
    let redis = RedisServer::start_with(Some("s3cret"));
    let (proxy, admin) = common::admin::start_url_with_admin(
        &format!("redis://:wrong@127.0.0.1:{}", redis.port),
        json!({}),
        json!({}),
    );
    let log = proxy.log();
    let ready = log.lines().find(|l| l.contains(" ready: ")).unwrap_or("");
    assert!(ready.contains("not ready: 2 workers listening on"), "{log}");
    assert!(
        ready.contains("2 of 2 workers have no Redis connection (cannot connect to redis://"),
        "{ready}"
    );
    assert!(ready.contains("authentication failed"), "{ready}");
    let status = admin.get("/status");
    assert_eq!(status.status, 503);
    let problems = status.json["problems"].to_string();
    assert!(problems.contains("authentication failed"), "{problems}");
}

#[test]
fn bad_backend_entries_are_logged_once_per_version_of_the_list() {
    let redis = RedisServer::start();
    let b = Backend::start("b");
    redis.set_frontend("bad.test", "bad", &["ftp://nope".to_string(), b.url()]);
    redis.set_frontend("only.test", "lonely", &[]);
    let proxy = Proxy::start(&redis, json!({}));
    for _ in 0..20 {
        // The unusable entry is skipped (a request that keeps drawing it may end in 502).
        let _ = get(proxy.port, "bad.test", "/");
        assert_eq!(get(proxy.port, "only.test", "/").status, 502);
    }
    let count = |needle: &str| proxy.log().matches(needle).count();
    let bad = "frontend bad.test: backend entry 1 \"ftp://nope\" is not usable and is skipped";
    let lonely = "frontend only.test has only its identifier \"lonely\" and no backend: its requests get 502";
    // Once per worker at most (two workers), not once per request or attempt.
    assert!((1..=2).contains(&count(bad)), "{}", proxy.log());
    assert!((1..=2).contains(&count(lonely)), "{}", proxy.log());
    // A new version of the list is reported again.
    let before = count(bad);
    redis.cmd::<i64>(&["rpush", "frontend:bad.test", &b.url()]);
    assert!(wait_until(Duration::from_secs(5), || {
        let _ = get(proxy.port, "bad.test", "/");
        count(bad) > before
    }));
}
