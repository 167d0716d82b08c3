//! Routing against a real redis-server (docs/compatibility.md §1-§2): host normalisation, the candidate table, dead
//! sets, the 400/502 rules, driver URL forms, the route cache.

mod common;

use std::time::Duration;

use common::client::Conn;
use common::{get, wait_until, Backend, Proxy, RedisServer};
use serde_json::json;

fn lrange_calls(redis: &RedisServer) -> u64 {
    let info: String = redis.cmd(&["INFO", "commandstats"]);
    info.lines()
        .find(|l| l.starts_with("cmdstat_lrange:"))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn candidate_table_exact_wildcards_depth_and_normalisation() {
    let redis = RedisServer::start();
    let exact = Backend::start("exact");
    let wild = Backend::start("wild");
    let deeper = Backend::start("deeper");
    let five = Backend::start("five");
    let six = Backend::start("six");
    let deep_exact = Backend::start("deep-exact");
    redis.set_frontend("www.a.com", "site-a", &[exact.url()]);
    redis.set_frontend("*.a.com", "wild-a", &[wild.url()]);
    redis.set_frontend("*.x.a.com", "wild-x", &[deeper.url()]);
    redis.set_frontend("*.c.d.e.f.g", "five-labels", &[five.url()]);
    redis.set_frontend("*.b.c.d.e.f.g", "six-labels", &[six.url()]);
    let deep = "l1.l2.l3.l4.l5.l6.l7.l8.l9.l10.l11.l12.com";
    redis.set_frontend(deep, "deep", &[deep_exact.url()]);
    let proxy = Proxy::start(&redis, json!({}));
    let p = proxy.port;

    // Exact, with normalisation: case, port, trailing dot.
    for host in [
        "www.a.com",
        "WWW.A.Com",
        "www.a.com:8080",
        "www.a.com.",
        "www.a.com.:80",
    ] {
        let r = get(p, host, "/");
        assert_eq!(
            (r.status, r.backend()),
            (200, "exact".into()),
            "Host: {host}"
        );
    }
    // Wildcard; the longest matching suffix wins; exact beats wildcard.
    assert_eq!(get(p, "other.a.com", "/").backend(), "wild");
    assert_eq!(get(p, "q.x.a.com", "/").backend(), "deeper");
    assert_eq!(get(p, "deep.er.a.com", "/").backend(), "wild");
    // A wildcard never serves the bare domain.
    assert_eq!(get(p, "a.com", "/").status, 400);
    // Wildcards of at most 5 labels: *.c.d.e.f.g matches, *.b.c.d.e.f.g is never a candidate.
    assert_eq!(get(p, "a.b.c.d.e.f.g", "/").backend(), "five");
    assert_eq!(six.requests(), 0);
    // Deep exact names (13 labels) still match exactly.
    assert_eq!(get(p, deep, "/").backend(), "deep-exact");
    // Unknown host: 400 "No Application Configured", with a Content-Length.
    let r = get(p, "unknown.org", "/");
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("No Application Configured"),
        "{}",
        r.text()
    );
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
}

#[test]
fn catch_all_and_host_errors() {
    let redis = RedisServer::start();
    let catch = Backend::start("catch-all");
    redis.set_frontend("*", "everything", &[catch.url()]);
    let proxy = Proxy::start(&redis, json!({}));
    assert_eq!(
        get(proxy.port, "anything.example", "/").backend(),
        "catch-all"
    );
    assert_eq!(get(proxy.port, "localhost", "/").backend(), "catch-all");

    // No Host header at all (HTTP/1.0 and HTTP/1.1): 400.
    for raw in ["GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.1\r\n\r\n"] {
        let mut c = Conn::open(proxy.port);
        c.send(raw.as_bytes());
        assert_eq!(c.read_response(false).unwrap().status, 400, "{raw:?}");
    }
    // A Host header that is not a host name.
    let mut c = Conn::open(proxy.port);
    c.send(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().status, 400);
    assert_eq!(catch.requests(), 2);
}

#[test]
fn dead_sets_identifier_only_and_bad_entries() {
    let redis = RedisServer::start();
    let b0 = Backend::start("b0");
    let b1 = Backend::start("b1");
    redis.set_frontend("two.com", "two", &[b0.url(), b1.url()]);
    let _: i64 = redis.cmd(&["SADD", "dead:two.com", "0"]);
    redis.set_frontend("*.w.com", "wild", &[b0.url(), b1.url()]);
    let _: i64 = redis.cmd(&["SADD", "dead:a.w.com", "0"]);
    redis.set_frontend("only-id.com", "lonely", &[]);
    redis.set_frontend("alldead.com", "dead", &[b0.url(), b1.url()]);
    let _: i64 = redis.cmd(&["SADD", "dead:alldead.com", "0", "1"]);
    redis.set_frontend("bad.com", "bad", &["not a url at all".into()]);
    redis.set_frontend("schemeless.com", "nos", &[format!("127.0.0.1:{}", b1.port)]);
    let proxy = Proxy::start(&redis, json!({}));
    let p = proxy.port;

    for _ in 0..20 {
        assert_eq!(get(p, "two.com", "/").backend(), "b1");
        // The dead set of the requested host applies, not the wildcard key's.
        assert_eq!(get(p, "a.w.com", "/").backend(), "b1");
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        seen.insert(get(p, "b.w.com", "/").backend());
    }
    assert_eq!(seen.len(), 2, "both backends serve b.w.com: {seen:?}");

    let r = get(p, "only-id.com", "/");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("Application Not Responding"));
    assert_eq!(get(p, "alldead.com", "/").status, 502);
    assert_eq!(get(p, "bad.com", "/").status, 502);
    assert!(
        wait_until(Duration::from_secs(2), || proxy
            .log()
            .contains("not a url at all")),
        "log names the bad entry:\n{}",
        proxy.log()
    );
    assert_eq!(get(p, "schemeless.com", "/").backend(), "b1");
}

#[test]
fn ping_answers_without_redis() {
    // Nothing listens on this port: the driver is down.
    let dead_port = common::free_port();
    let proxy = Proxy::start_url(&format!("redis://127.0.0.1:{dead_port}"), json!({}));
    let r = get(proxy.port, "__ping__", "/anything");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // Other hosts: 503, quickly.
    let start = std::time::Instant::now();
    assert_eq!(get(proxy.port, "a.com", "/").status, 503);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn driver_prefix_database_and_password() {
    let redis = RedisServer::start_with(Some("s3cret"));
    let b = Backend::start("pfx");
    let plain = Backend::start("plain");
    // Keys in database 3 with prefix "pfx": only those must be used.
    let _: i64 = redis.cmd_db(3, &["RPUSH", "pfxfrontend:p.com", "p", &b.url()]);
    let _: i64 = redis.cmd_db(3, &["RPUSH", "frontend:p.com", "p", &plain.url()]);
    let _: i64 = redis.cmd_db(0, &["RPUSH", "pfxfrontend:p.com", "p", &plain.url()]);
    let url = format!("redis://:s3cret@127.0.0.1:{}/3#pfx", redis.port);
    let proxy = Proxy::start_url(&url, json!({}));
    for _ in 0..5 {
        assert_eq!(get(proxy.port, "p.com", "/").backend(), "pfx");
    }
    assert_eq!(plain.requests(), 0);

    // A wrong password: routes unavailable (503) and the log says why.
    let wrong = Proxy::start_url(
        &format!("redis://:nope@127.0.0.1:{}/3#pfx", redis.port),
        json!({}),
    );
    assert_eq!(get(wrong.port, "p.com", "/").status, 503);
    assert!(
        wait_until(Duration::from_secs(3), || wrong
            .log()
            .contains("authentication failed")),
        "{}",
        wrong.log()
    );
}

#[test]
fn legacy_redis_keys_are_honoured() {
    let redis = RedisServer::start();
    let b = Backend::start("legacy");
    redis.set_frontend("old.com", "old", &[b.url()]);
    let dir = common::TempDir::new("legacy");
    let port = common::free_port();
    let config = json!({
        "server": { "accessLog": false, "port": port, "address": ["127.0.0.1"], "workers": 1 },
        "redisHost": "127.0.0.1",
        "redisPort": redis.port
    });
    let proxy = Proxy::start_config(dir, port, &config).expect("legacy config starts");
    assert_eq!(get(proxy.port, "old.com", "/").backend(), "legacy");
    assert!(
        proxy.log().contains("legacy key `server.port`"),
        "{}",
        proxy.log()
    );
}

#[test]
fn cache_hits_cost_no_redis_round_trip_and_ttl_bounds_staleness() {
    let redis = RedisServer::start();
    let v1 = Backend::start("v1");
    let v2 = Backend::start("v2");
    redis.set_frontend("c.com", "c", &[v1.url()]);
    let proxy = Proxy::start(
        &redis,
        json!({ "server": { "lruCache": { "size": 100, "ttl": 1 } } }),
    );
    let mut conn = Conn::open(proxy.port);
    assert_eq!(conn.get("c.com", "/").backend(), "v1");
    let before = lrange_calls(&redis);
    for _ in 0..300 {
        assert_eq!(conn.get("c.com", "/").status, 200);
    }
    let after = lrange_calls(&redis);
    // 300 requests within the TTL on one connection (one worker): at most one refresh (3 candidates).
    assert!(
        after - before <= 3,
        "LRANGE calls went from {before} to {after}"
    );

    // A change is seen once the TTL has passed, on the same keep-alive connection.
    redis.set_frontend("c.com", "c", &[v2.url()]);
    assert!(wait_until(Duration::from_millis(2500), || conn
        .get("c.com", "/")
        .backend()
        == "v2"));
}

#[test]
fn ttl_zero_asks_redis_on_every_request() {
    let redis = RedisServer::start();
    let b = Backend::start("b");
    redis.set_frontend("z.com", "z", &[b.url()]);
    let proxy = Proxy::start(
        &redis,
        json!({ "server": { "lruCache": { "size": 100, "ttl": 0 } } }),
    );
    let mut conn = Conn::open(proxy.port);
    conn.get("z.com", "/");
    let before = lrange_calls(&redis);
    for _ in 0..20 {
        conn.get("z.com", "/");
    }
    // 3 candidates (z.com, *.com, *) per request.
    assert_eq!(lrange_calls(&redis) - before, 60);
}

#[test]
fn concurrent_misses_for_one_host_cost_one_lookup_per_worker() {
    let redis = RedisServer::start();
    let b = Backend::start("b");
    redis.set_frontend("sf.com", "sf", &[b.url()]);
    let proxy = Proxy::start(&redis, json!({ "server": { "redisTimeout": 3 } }));
    // Warm the workers' Redis connections with another host.
    get(proxy.port, "warm.com", "/");
    let before = lrange_calls(&redis);
    // Freeze Redis so that every request arrives while the first lookup is in flight.
    let pid = redis.pid().expect("redis pid") as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let port = proxy.port;
    let clients: Vec<_> = (0..40)
        .map(|_| std::thread::spawn(move || get(port, "sf.com", "/").status))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let calls = lrange_calls(&redis) - before;
    // 2 workers, 3 candidates (sf.com, *.com, *) each: at most 6 LRANGE, not 40 x 3.
    assert!(calls <= 6, "{calls} LRANGE calls for 40 concurrent misses");
}
