//! Certificates from Redis (README "Certificates in Redis", issue 16): `tls:<name>` then
//! `tls:*.<parent>`, then the listener's files, then its default; broken, mismatched and expired
//! certificates fall through and are counted; changes reach the handshakes through notifications; the
//! per-core cache is bounded (RSS against 10,000 stored keys and a flood of random names); one lookup
//! for many simultaneous handshakes; Redis down; TLS-ALPN-01 challenge certificates. Real Redis, real
//! proxy binary, real rustls client reading the certificate chain served.

mod common;

use std::time::{Duration, Instant};

use common::tls::{connect, ClientOptions, TestCa};
use common::{free_port, wait_until, Backend, Proxy, RedisServer, TempDir};
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().to_string()
}

/// A proxy with one HTTPS listener whose files hold `default.test` (default) and `file.test`.
struct Setup {
    proxy: Proxy,
    https: u16,
    admin: u16,
    ca: TestCa,
    _certs: TempDir,
}

fn start(redis_url: &str, extra: Value) -> Setup {
    let ca = TestCa::new();
    let certs = TempDir::new("certs");
    let default = ca.issue_files(certs.path(), "default", &["default.test"]);
    let file = ca.issue_files(certs.path(), "file", &["file.test", "*.filewild.test"]);
    let https = free_port();
    let admin = free_port();
    let mut config = json!({
        "admin": { "port": admin },
        "https": {
            "port": https, "bind": ["127.0.0.1"],
            "key": path(&default.key), "cert": path(&default.cert),
            "certificates": [ { "cert": path(&file.cert), "key": path(&file.key) } ]
        }
    });
    common::proxy::merge(&mut config, extra);
    let proxy = Proxy::start_url(redis_url, config);
    Setup {
        proxy,
        https,
        admin,
        ca,
        _certs: certs,
    }
}

impl Setup {
    /// The SAN names of the leaf served for `sni` (`None`: no SNI).
    fn names(&self, sni: Option<&str>) -> Vec<String> {
        let mut opts = ClientOptions::sni(sni.unwrap_or("x"));
        opts.sni = sni.map(str::to_string);
        connect(self.https, opts)
            .unwrap_or_else(|e| panic!("handshake for {sni:?}: {e}\n{}", self.proxy.log()))
            .leaf_names()
    }

    fn metric(&self, name: &str) -> u64 {
        let r = common::client::get(self.admin, "127.0.0.1", "/metrics");
        r.text()
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .map(|v| v.trim().parse::<f64>().unwrap_or(0.0) as u64)
            })
            .unwrap_or(0)
    }
}

fn hset_cert(redis: &RedisServer, key: &str, cert: &str, pkey: &str) {
    redis.cmd::<()>(&["HSET", key, "certificate", cert, "key", pkey]);
}

#[test]
fn choice_order_chain_changes_and_bad_certificates() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("www.red.test", "red", &[backend.url()]);
    let s = start(&redis.url(0), json!({}));
    common::proxy::wait_for_notifications(&s.proxy, 2);

    // Exact key, with its chain (leaf then CA) served as stored.
    let (cert, key) = s.ca.issue_pem(&["www.red.test"]);
    let chain_pem = format!("{cert}{}", s.ca.pem);
    hset_cert(&redis, "tls:www.red.test", &chain_pem, &key);
    let mut tls = connect(s.https, ClientOptions::sni("www.red.test")).unwrap();
    assert_eq!(tls.leaf_names(), vec!["www.red.test"]);
    assert_eq!(tls.chain.len(), 2, "leaf and CA served");
    let ca_der = rustls::pki_types::CertificateDer::from_pem_slice(s.ca.pem.as_bytes()).unwrap();
    assert_eq!(tls.chain[1], ca_der);
    // HTTP over it as before.
    let r = tls.get("www.red.test", "/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));

    // Wildcard key.
    let (wc, wk) = s.ca.issue_pem(&["*.wild.test"]);
    hset_cert(&redis, "tls:*.wild.test", &wc, &wk);
    assert_eq!(s.names(Some("a.wild.test")), vec!["*.wild.test"]);
    assert_eq!(s.names(Some("A.Wild.Test.")), vec!["*.wild.test"]);
    // The exact key wins over the wildcard.
    let (ec, ek) = s.ca.issue_pem(&["b.wild.test"]);
    hset_cert(&redis, "tls:b.wild.test", &ec, &ek);
    assert_eq!(s.names(Some("b.wild.test")), vec!["b.wild.test"]);
    // Files, then the default; no SNI: the default.
    assert_eq!(
        s.names(Some("file.test")),
        vec!["file.test", "*.filewild.test"]
    );
    assert_eq!(
        s.names(Some("x.filewild.test")),
        vec!["file.test", "*.filewild.test"]
    );
    assert_eq!(s.names(Some("nothing.test")), vec!["default.test"]);
    assert_eq!(s.names(None), vec!["default.test"]);
    // Redis wins over files for the same name.
    let (fc, fk) = s.ca.issue_pem(&["file.test", "redis-copy.test"]);
    hset_cert(&redis, "tls:file.test", &fc, &fk);
    assert_eq!(
        s.names(Some("file.test")),
        vec!["file.test", "redis-copy.test"]
    );

    // Replaced: the new certificate is served within 1 s (notification drops the cached one).
    let (c2, k2) = s.ca.issue_pem(&["www.red.test", "v2.red.test"]);
    let t = Instant::now();
    hset_cert(&redis, "tls:www.red.test", &c2, &k2);
    assert!(
        wait_until(Duration::from_secs(1), || s
            .names(Some("www.red.test"))
            .len()
            == 2),
        "replaced certificate not served within 1 s"
    );
    eprintln!("replaced certificate served after {:?}", t.elapsed());
    // Deleted: back to the default.
    redis.cmd::<()>(&["DEL", "tls:www.red.test"]);
    assert!(wait_until(Duration::from_secs(1), || s
        .names(Some("www.red.test"))
        == vec!["default.test"]));

    // Broken PEM, key mismatch, expired, not covering the name: each falls through, and counts.
    let errors_before = s.metric("hipache_tls_certificate_errors_total");
    hset_cert(
        &redis,
        "tls:broken.wild.test",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        &wk,
    );
    assert_eq!(
        s.names(Some("broken.wild.test")),
        vec!["*.wild.test"],
        "falls through to the wildcard"
    );
    let (_, other_key) = s.ca.issue_pem(&["mismatch.wild.test"]);
    let (mc, _) = s.ca.issue_pem(&["mismatch.wild.test"]);
    hset_cert(&redis, "tls:mismatch.wild.test", &mc, &other_key);
    assert_eq!(s.names(Some("mismatch.wild.test")), vec!["*.wild.test"]);
    let (xc, xk) = s.ca.issue_pem_with(&["expired.wild.test"], |p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    hset_cert(&redis, "tls:expired.wild.test", &xc, &xk);
    assert_eq!(s.names(Some("expired.wild.test")), vec!["*.wild.test"]);
    let (nc, nk) = s.ca.issue_pem(&["elsewhere.test"]);
    hset_cert(&redis, "tls:uncovered.wild.test", &nc, &nk);
    assert_eq!(s.names(Some("uncovered.wild.test")), vec!["*.wild.test"]);
    // An exact key with nothing behind it: to the files / default.
    hset_cert(&redis, "tls:nothing2.test", &nc, &nk);
    assert_eq!(s.names(Some("nothing2.test")), vec!["default.test"]);
    assert!(wait_until(Duration::from_secs(2), || s
        .metric("hipache_tls_certificate_errors_total")
        >= errors_before + 5));
    let log = s.proxy.log();
    assert!(
        log.contains("tls:expired.wild.test skipped: the certificate expired"),
        "{log}"
    );
    assert!(
        log.contains("tls:mismatch.wild.test skipped: the key does not belong"),
        "{log}"
    );
    assert!(
        log.contains("tls:uncovered.wild.test skipped: the certificate does not cover"),
        "{log}"
    );
    // Logged once per change of the key, not once per handshake; repeated handshakes hit the cache.
    let hits = s.metric("hipache_tls_certificate_cache_hits_total");
    for _ in 0..6 {
        assert_eq!(s.names(Some("expired.wild.test")), vec!["*.wild.test"]);
    }
    assert!(s.metric("hipache_tls_certificate_cache_hits_total") > hits);
    // Each core parses for itself: at most once per core (2 workers).
    let logged = s
        .proxy
        .log()
        .matches("tls:expired.wild.test skipped")
        .count();
    assert!((1..=2).contains(&logged), "logged {logged} times");
}

#[test]
fn driver_prefix_applies() {
    let redis = RedisServer::start();
    let s = start(&format!("{}#pfx:", redis.url(0)), json!({}));
    let (c, k) = s.ca.issue_pem(&["p.test"]);
    hset_cert(&redis, "tls:p.test", &c, &k);
    assert_eq!(
        s.names(Some("p.test")),
        vec!["default.test"],
        "unprefixed key ignored"
    );
    hset_cert(&redis, "pfx:tls:p.test", &c, &k);
    assert!(wait_until(Duration::from_secs(1), || s
        .names(Some("p.test"))
        == vec!["p.test"]));
}

#[test]
fn switched_off() {
    let redis = RedisServer::start();
    let s = start(
        &redis.url(0),
        json!({ "https": { "redisCertificates": false } }),
    );
    let (c, k) = s.ca.issue_pem(&["off.test"]);
    hset_cert(&redis, "tls:off.test", &c, &k);
    assert_eq!(s.names(Some("off.test")), vec!["default.test"]);
}

#[test]
fn simultaneous_handshakes_share_one_lookup() {
    let redis = RedisServer::start();
    let s = start(&redis.url(0), json!({}));
    // Notifications on first: their start marks everything fetched before as stale.
    common::proxy::wait_for_notifications(&s.proxy, 2);
    let (c, k) = s.ca.issue_pem(&["many.test"]);
    hset_cert(&redis, "tls:many.test", &c, &k);
    // The key's own invalidation (one per worker) must not race the lookups counted below.
    let seen = |s: &Setup| s.metric("hipache_cache_invalidations_total");
    assert!(wait_until(Duration::from_secs(2), || seen(&s) >= 2));
    redis.cmd::<()>(&["CONFIG", "RESETSTAT"]);
    let https = s.https;
    let threads: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                connect(https, ClientOptions::sni("many.test")).map(|t| t.leaf_names())
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), vec!["many.test"]);
    }
    let stats: String = redis.cmd(&["INFO", "commandstats"]);
    let calls = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_hmget:calls="))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    // One lookup per core at most (2 workers), whatever the interleaving; a lookup is one round
    // trip of two HMGET (the exact key and the wildcard).
    assert!(
        (2..=4).contains(&calls),
        "{calls} HMGET for 20 handshakes:\n{stats}"
    );
}

#[test]
fn memory_follows_certificates_in_use_not_stored() {
    let ca = TestCa::new();
    let (c, k) = ca.issue_pem(&["*.bulk.test"]);
    let rss_after = |stored: usize| -> (u64, Setup, RedisServer) {
        let redis = RedisServer::start();
        let mut con = redis.conn(0);
        let mut pipe = redis::pipe();
        for i in 0..stored {
            pipe.cmd("HSET")
                .arg(format!("tls:n{i}.bulk.test"))
                .arg("certificate")
                .arg(&c)
                .arg("key")
                .arg(&k)
                .ignore();
            if i % 1000 == 999 || i + 1 == stored {
                pipe.query::<()>(&mut con).unwrap();
                pipe = redis::pipe();
            }
        }
        let s = start(&redis.url(0), json!({}));
        for i in 0..50 {
            assert_eq!(
                s.names(Some(&format!("n{i}.bulk.test"))),
                vec!["*.bulk.test"]
            );
        }
        (s.proxy.proc_status_kb("VmRSS"), s, redis)
    };
    let (small, _s1, _r1) = rss_after(50);
    let (large, s, _r) = rss_after(10_000);
    eprintln!("RSS with 50 stored: {small} kB, with 10,000 stored: {large} kB");
    assert!(
        large < small + 16 * 1024,
        "RSS grew with stored certificates: {small} kB -> {large} kB"
    );

    // A flood of 5,000 random names: bounded memory, still serving.
    let before = s.proxy.proc_status_kb("VmRSS");
    let https = s.https;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..1250 {
                    let name = format!("r{t}x{i}.scan{}.test", i * 7919 % 1000);
                    connect(https, ClientOptions::sni(&name)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let after = s.proxy.proc_status_kb("VmRSS");
    eprintln!("RSS before the flood of 5,000 names: {before} kB, after: {after} kB");
    assert!(after < before + 32 * 1024, "{before} kB -> {after} kB");
    assert_eq!(s.names(Some("n1.bulk.test")), vec!["*.bulk.test"]);
    assert!(s.metric("hipache_tls_certificate_cache_entries") <= 2 * 11_000);
}

#[test]
fn redis_down_serves_cached_and_default_at_once() {
    let mut redis = RedisServer::start();
    let s = start(&redis.url(0), json!({}));
    let (c, k) = s.ca.issue_pem(&["cached.test"]);
    hset_cert(&redis, "tls:cached.test", &c, &k);
    // Cached on both workers (connections spread over the cores).
    for _ in 0..8 {
        assert_eq!(s.names(Some("cached.test")), vec!["cached.test"]);
    }
    redis.kill();
    assert!(wait_until(Duration::from_secs(5), || s
        .metric("hipache_redis_up")
        == 0));
    for _ in 0..8 {
        assert_eq!(s.names(Some("cached.test")), vec!["cached.test"]);
    }
    let t = Instant::now();
    assert_eq!(s.names(Some("uncached.test")), vec!["default.test"]);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn acme_tls_alpn_challenge_is_served_and_closed() {
    let redis = RedisServer::start();
    let s = start(&redis.url(0), json!({}));
    // A challenge certificate (a real one carries the acmeIdentifier extension; the proxy only serves).
    let (c, k) = s.ca.issue_pem(&["acme.test"]);
    redis.cmd::<()>(&["HSET", "acme:alpn:acme.test", "certificate", &c, "key", &k]);
    let mut opts = ClientOptions::sni("acme.test");
    opts.alpn = vec![b"acme-tls/1".to_vec()];
    let mut tls = connect(s.https, opts).unwrap();
    assert_eq!(tls.leaf_names(), vec!["acme.test"]);
    assert_eq!(tls.alpn().as_deref(), Some(&b"acme-tls/1"[..]));
    let t = Instant::now();
    assert!(common::tls::read_all(&mut tls.conn.stream).is_empty());
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        t.elapsed()
    );
    // Without a challenge certificate: refused (never a real certificate with acme-tls/1).
    let mut opts = ClientOptions::sni("no-challenge.test");
    opts.alpn = vec![b"acme-tls/1".to_vec()];
    assert!(connect(s.https, opts).is_err());
    // acme-tls/1 among others is an ordinary handshake.
    let mut opts = ClientOptions::sni("acme.test");
    opts.alpn = vec![b"acme-tls/1".to_vec(), b"http/1.1".to_vec()];
    let tls = connect(s.https, opts).unwrap();
    assert_eq!(tls.leaf_names(), vec!["default.test"]);
    assert_eq!(tls.alpn().as_deref(), Some(&b"http/1.1"[..]));
}

/// How many times Redis ran `cmd` since the last `CONFIG RESETSTAT` (INFO commandstats).
fn command_calls(redis: &RedisServer, cmd: &str) -> u64 {
    let stats: String = redis.cmd(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{cmd}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
}

fn alpn_only(name: &str) -> ClientOptions {
    let mut opts = ClientOptions::sni(name);
    opts.alpn = vec![b"acme-tls/1".to_vec()];
    opts
}

#[test]
fn acme_tls_alpn_flood_costs_bounded_lookups_and_new_challenges_are_served() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    // The per-core budget of README "Certificates in Redis" (src/tls/redis_certs.rs).
    const BURST: f64 = 20.0;
    const PER_SEC: f64 = 20.0;
    const WORKERS: f64 = 2.0;
    let redis = RedisServer::start();
    let s = start(&redis.url(0), json!({}));
    common::proxy::wait_for_notifications(&s.proxy, 2);
    // A name asked for before its challenge exists: both cores remember "none".
    for _ in 0..8 {
        assert!(connect(s.https, alpn_only("late.test")).is_err());
    }
    // A flood of acme-tls/1 ClientHellos for random names: every one refused, and Redis asked at
    // most the budget's worth.
    let https = s.https;
    let flood = |threads: usize, each: usize, stop: Arc<AtomicBool>, done: Arc<AtomicUsize>| {
        (0..threads)
            .map(|t| {
                let (stop, done) = (stop.clone(), done.clone());
                std::thread::spawn(move || {
                    let seed = std::process::id() as usize;
                    for i in 0..each {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let name = format!("f{seed}x{t}x{i}.flood.test");
                        assert!(connect(https, alpn_only(&name)).is_err(), "{name} served");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect::<Vec<_>>()
    };
    redis.cmd::<()>(&["CONFIG", "RESETSTAT"]);
    let skipped_before = s.metric("hipache_tls_acme_challenge_lookups_skipped_total");
    let done = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    for h in flood(4, 100, Arc::new(AtomicBool::new(false)), done.clone()) {
        h.join().unwrap();
    }
    let elapsed = t.elapsed().as_secs_f64();
    let flooded = done.load(Ordering::Relaxed) as u64;
    let lookups = command_calls(&redis, "hmget");
    let skipped = s.metric("hipache_tls_acme_challenge_lookups_skipped_total") - skipped_before;
    let bound = (WORKERS * (BURST + PER_SEC * elapsed.ceil())) as u64;
    eprintln!(
        "{flooded} acme-tls/1 handshakes for random names in {elapsed:.2} s: {lookups} Redis \
         lookups (bound {bound}), {skipped} refused without one"
    );
    assert_eq!(flooded, 400);
    assert!(
        lookups <= bound,
        "{lookups} lookups for {flooded} handshakes"
    );
    // Every handshake of the flood was either looked up or refused by the budget.
    assert!(
        lookups + skipped >= flooded,
        "{lookups} + {skipped} < {flooded}"
    );

    // A challenge written now, while a flood keeps the budget spent, is served within a second
    // (its notification drops the remembered "none" and lets its lookup through).
    let stop = Arc::new(AtomicBool::new(false));
    let background = flood(2, 1_000_000, stop.clone(), Arc::new(AtomicUsize::new(0)));
    let (c, k) = s.ca.issue_pem(&["late.test"]);
    let t = Instant::now();
    redis.cmd::<()>(&["HSET", "acme:alpn:late.test", "certificate", &c, "key", &k]);
    let served = |s: &Setup| {
        connect(s.https, alpn_only("late.test")).is_ok_and(|t| t.leaf_names() == ["late.test"])
    };
    let in_time = wait_until(Duration::from_secs(1), || served(&s));
    let took = t.elapsed();
    // Both cores serve it (connections spread over them).
    let all = (0..8).all(|_| served(&s));
    stop.store(true, Ordering::Relaxed);
    for h in background {
        h.join().unwrap();
    }
    assert!(in_time, "challenge not served within 1 s during a flood");
    assert!(all, "a core did not serve the challenge");
    eprintln!("challenge served {took:?} after it was written, during a flood");
    assert!(s.metric("hipache_tls_acme_challenge_lookups_skipped_total") > skipped);
}

#[test]
fn admin_certificates_endpoints() {
    let redis = RedisServer::start();
    let s = start(&redis.url(0), json!({}));
    let admin = common::admin::Admin { port: s.admin };
    let json_body = |cert: &str, key: &str| json!({ "certificate": cert, "key": key }).to_string();
    let put = |name: &str, body: &str| {
        admin.call(
            "PUT",
            &format!("/certificates/{name}"),
            &[("Content-Type", "application/json")],
            body,
        )
    };
    // Valid: written, then served.
    let (c, k) = s.ca.issue_pem(&["api.test"]);
    let a = put("api.test", &json_body(&c, &k));
    assert_eq!(a.status, 200, "{}", a.response.text());
    assert_eq!(a.json["issuer"], "hipache-tpc test CA");
    assert!(wait_until(Duration::from_secs(1), || s
        .names(Some("api.test"))
        == vec!["api.test"]));
    // Invalid: 400 naming the reason, nothing written.
    let (other, _) = s.ca.issue_pem(&["api.test"]);
    let a = put("api.test", &json_body(&other, &k));
    assert_eq!(a.status, 400);
    assert!(a.error().contains("key does not belong"), "{}", a.error());
    let a = put("nope.test", &json_body(&c, &k));
    assert_eq!(a.status, 400);
    assert!(
        a.error().contains("does not cover nope.test"),
        "{}",
        a.error()
    );
    let (xc, xk) = s.ca.issue_pem_with(&["old.test"], |p| {
        p.not_before = rcgen::date_time_ymd(2019, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 1);
    });
    let a = put("old.test", &json_body(&xc, &xk));
    assert_eq!(a.status, 400);
    assert!(a.error().contains("expired"), "{}", a.error());
    let a = put("bad.test", &json_body("not a pem", &k));
    assert_eq!(a.status, 400);
    let exists: i64 = redis.cmd(&["EXISTS", "tls:nope.test", "tls:old.test", "tls:bad.test"]);
    assert_eq!(exists, 0);
    // ACME-issued ones say so.
    let (ac, ak) = s.ca.issue_pem(&["issued.test"]);
    redis.cmd::<()>(&[
        "HSET",
        "tls:issued.test",
        "certificate",
        &ac,
        "key",
        &ak,
        "acme",
        "1",
    ]);
    // List: Redis, ACME and file certificates, with notAfter and issuer.
    let a = admin.get("/certificates");
    assert_eq!(a.status, 200);
    let list = a.json.as_array().unwrap().clone();
    let find = |name: &str| {
        list.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {list:?}"))
            .clone()
    };
    assert_eq!(find("api.test")["source"], "redis");
    assert_eq!(find("issued.test")["source"], "acme");
    assert_eq!(find("file.test")["source"], "file");
    assert_eq!(find("default.test")["source"], "file");
    assert_eq!(find("api.test")["issuer"], "hipache-tpc test CA");
    assert!(find("api.test")["notAfter"].as_str().is_some());
    let a = admin.get("/certificates/api.test");
    assert_eq!(a.status, 200);
    assert!(a.json["certificate"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(
        a.json.get("key").is_none(),
        "the private key is never shown"
    );
    // Delete.
    assert_eq!(admin.delete("/certificates/api.test").status, 200);
    assert_eq!(admin.delete("/certificates/api.test").status, 404);
    assert_eq!(admin.get("/certificates/api.test").status, 404);
    assert!(wait_until(Duration::from_secs(1), || s
        .names(Some("api.test"))
        == vec!["default.test"]));
}

#[test]
fn admin_certificates_are_listed_a_page_at_a_time() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    let s = start(&redis.url(0), json!({}));
    let admin = common::admin::Admin { port: s.admin };
    // 250 certificates in Redis among other keys (SCAN walks them all), and the listener's files.
    let (c, k) = s.ca.issue_pem(&["*.page.test"]);
    let mut con = redis.conn(0);
    let mut pipe = redis::pipe();
    let stored: std::collections::BTreeSet<String> =
        (0..250).map(|i| format!("n{i}.page.test")).collect();
    for name in &stored {
        pipe.cmd("HSET")
            .arg(format!("tls:{name}"))
            .arg("certificate")
            .arg(&c)
            .arg("key")
            .arg(&k)
            .ignore();
        pipe.cmd("RPUSH")
            .arg(format!("frontend:{name}"))
            .arg("p")
            .arg(backend.url())
            .ignore();
    }
    pipe.query::<()>(&mut con).unwrap();
    const COUNT: usize = 40;
    let mut cursor = "0".to_string();
    let mut pages = 0;
    let mut redis_names = std::collections::BTreeSet::new();
    let mut file_names = Vec::new();
    loop {
        pages += 1;
        assert!(pages <= 100, "the walk does not end");
        let a = admin.get(&format!("/certificates?cursor={cursor}&count={COUNT}"));
        assert_eq!(a.status, 200, "{}", a.response.text());
        let page = a.json["certificates"].as_array().unwrap().clone();
        assert!(page.len() <= 2 * COUNT, "{} on a page", page.len());
        for e in &page {
            let name = e["name"].as_str().unwrap().to_string();
            match e["source"].as_str().unwrap() {
                "redis" => {
                    assert!(e["notAfter"].as_str().is_some(), "{e}");
                    assert!(file_names.is_empty(), "Redis names come before the files");
                    redis_names.insert(name);
                }
                "file" => file_names.push(name),
                other => panic!("source {other}"),
            }
        }
        match &a.json["next"] {
            Value::Null => break,
            Value::String(next) => cursor = next.clone(),
            other => panic!("next: {other}"),
        }
    }
    eprintln!("250 certificates in Redis listed in {pages} pages of at most {COUNT}");
    assert!(pages >= 250 / (2 * COUNT), "{pages} pages");
    assert_eq!(redis_names, stored);
    let mut sorted = file_names.clone();
    sorted.sort();
    assert_eq!(file_names, sorted, "files sorted by name");
    for name in ["default.test", "file.test", "*.filewild.test"] {
        assert!(
            file_names.iter().any(|n| n == name),
            "{name}: {file_names:?}"
        );
    }
    // Pages of one: the files one by one too, and the same set.
    let mut cursor = "0".to_string();
    let mut seen = 0;
    for _ in 0..2_000 {
        let a = admin.get(&format!("/certificates?cursor={cursor}&count=1"));
        assert_eq!(a.status, 200);
        seen += a.json["certificates"].as_array().unwrap().len();
        match &a.json["next"] {
            Value::String(next) => cursor = next.clone(),
            _ => break,
        }
    }
    assert!(seen >= 250 + file_names.len(), "{seen}");
    // Bad parameters.
    for q in [
        "cursor=x",
        "cursor=r12x",
        "count=0",
        "count=501",
        "count=many",
    ] {
        assert_eq!(admin.get(&format!("/certificates?{q}")).status, 400, "{q}");
    }
    // The plain list is unchanged: every name at once.
    let all = admin.get("/certificates");
    assert_eq!(all.json.as_array().unwrap().len(), 250 + file_names.len());
}

#[test]
fn on_demand_acme_queues_routed_names_and_waits_for_the_certificate() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("od.test", "od", &[backend.url()]);
    redis.set_frontend("*.wildonly.test", "w", &[backend.url()]);
    redis.set_frontend("failed.test", "f", &[backend.url()]);
    redis.cmd::<()>(&["SET", "acme:fail:failed.test", "1"]);
    let s = start(
        &redis.url(0),
        json!({ "acme": { "directory": "https://127.0.0.1:9/directory", "handshakeWait": 3 } }),
    );
    // The proxy's own ACME client consumes acme:queue (LPOP) as workers fill it, so what was queued
    // is counted from the RPUSH calls Redis saw, not read back from the list.
    let rpushes = || -> u64 {
        let stats: String = redis.cmd(&["INFO", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_rpush:calls="))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let initial = rpushes();
    // A name only a wildcard routes, an unrouted name, a name whose order failed: never queued,
    // never waiting.
    for name in ["a.wildonly.test", "unrouted.test", "failed.test"] {
        let t = Instant::now();
        assert_eq!(s.names(Some(name)), vec!["default.test"]);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "{name}: {:?}",
            t.elapsed()
        );
    }
    let before = rpushes();
    assert_eq!(
        before, initial,
        "a name that must not be ordered was queued"
    );
    let queue: Vec<String> = redis.cmd(&["LRANGE", "acme:queue", "0", "-1"]);
    assert!(queue.is_empty(), "{queue:?}");
    // A routed name: queued, and the handshake completes with the certificate issued meanwhile.
    let https = s.https;
    let waiting = std::thread::spawn(move || {
        connect(https, ClientOptions::sni("od.test")).map(|t| t.leaf_names())
    });
    assert!(wait_until(Duration::from_secs(2), || rpushes() > before));
    let (c, k) = s.ca.issue_pem(&["od.test"]);
    hset_cert(&redis, "tls:od.test", &c, &k);
    assert_eq!(waiting.join().unwrap().unwrap(), vec!["od.test"]);
    // Queued once per core per minute: another name that never gets one falls back after the wait.
    redis.set_frontend("slow.test", "s", &[backend.url()]);
    let t = Instant::now();
    assert_eq!(s.names(Some("slow.test")), vec!["default.test"]);
    assert!(
        t.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
}
