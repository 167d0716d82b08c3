//! Automatic certificates (README "Automatic HTTPS (ACME)") against Pebble, the ACME test server,
//! with real Redis, the real binary and loopback sockets only: explicit orders through the admin API,
//! on-demand orders through the fleet's queue, one order for a name across two instances, the
//! wildcard refusal, the backoff after a failed order, renewal, the HTTP-01 answers, a TLS-ALPN-01
//! order validated on the proxy's HTTPS listener, and an on-demand certificate obtained and served
//! through a real, verifying TLS handshake (then served by a second instance without a new order).

mod common;

use std::time::Duration;

use common::admin::{start_url_with_admin, Admin};
use common::pebble::{Pebble, PebbleOptions};
use common::{free_port, get, wait_until, Proxy, RedisServer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::json;

/// A proxy with ACME on (Pebble as the CA), an admin listener, on `http_port`.
fn start_proxy(
    redis: &RedisServer,
    pebble: &Pebble,
    http_port: u16,
    acme: serde_json::Value,
) -> (Proxy, Admin) {
    let mut extra = pebble.acme_config(acme);
    common::proxy::merge(
        &mut extra,
        json!({ "http": { "port": http_port, "bind": ["127.0.0.1"] } }),
    );
    start_url_with_admin(&redis.url(0), json!({}), extra)
}

/// `hipache_acme_orders_total{result=...}` of one instance.
fn orders(admin: &Admin, result: &str) -> u64 {
    let text = admin.get("/metrics").response.text();
    let wanted = format!("hipache_acme_orders_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {wanted} in /metrics:\n{text}"))
}

fn hget(redis: &RedisServer, key: &str, field: &str) -> Option<String> {
    redis.cmd::<Option<String>>(&["HGET", key, field])
}

/// Waits for `tls:<name>` to hold a certificate.
fn wait_for_certificate(redis: &RedisServer, name: &str, proxy: &Proxy, pebble: &Pebble) -> String {
    let key = format!("tls:{name}");
    let ok = wait_until(Duration::from_secs(30), || {
        hget(redis, &key, "certificate").is_some()
    });
    assert!(
        ok,
        "no certificate for {name}\nproxy log:\n{}\npebble log:\n{}",
        proxy.log(),
        pebble.log()
    );
    hget(redis, &key, "certificate").unwrap()
}

/// Serial and notAfter of the leaf of a PEM chain.
fn leaf_facts(chain: &str) -> (Vec<u8>, u64) {
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    hipache_tpc::control::acme::der::serial_and_not_after(leaf.as_ref()).unwrap()
}

/// The chain verifies against Pebble's issuing root, covers `name`, and `key` is its private key.
fn assert_valid(chain: &str, key: &str, name: &str, pebble: &Pebble) {
    let root_pem = pebble.issuing_root();
    let root = CertificateDer::from_pem_slice(root_pem.as_bytes())
        .unwrap_or_else(|e| panic!("Pebble's root {root_pem:?}: {e}"));
    let anchor = webpki::anchor_from_trusted_cert(&root).unwrap();
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(certs.len() >= 2, "leaf and chain expected: {chain}");
    let leaf = webpki::EndEntityCert::try_from(&certs[0]).unwrap();
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    leaf.verify_for_usage(
        algs.all,
        &[anchor],
        &certs[1..],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .expect("the chain verifies against Pebble's root");
    leaf.verify_is_valid_for_subject_name(&ServerName::try_from(name.to_string()).unwrap())
        .expect("the certificate covers the name");
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let ck = rustls::sign::CertifiedKey::new(certs, signer);
    ck.keys_match().expect("the key is the certificate's");
}

#[test]
fn explicit_order_through_the_admin_api() {
    let redis = RedisServer::start();
    let http_port = free_port();
    let pebble = Pebble::start(PebbleOptions {
        // Pebble rejects some good nonces: the client must retry on badNonce.
        nonce_reject: 20,
        ..PebbleOptions::http(http_port)
    });
    // Only a wildcard frontend serves the name: an explicit order is still made.
    redis.set_frontend("*.wild.test", "wild", &["http://127.0.0.1:9".into()]);
    let (proxy, admin) = start_proxy(&redis, &pebble, http_port, json!({}));
    // A wildcard name itself is refused.
    let refused = admin.post("/certificates/*.wild.test/acme", "");
    assert_eq!(refused.status, 400, "{:?}", refused.json);
    assert!(refused.error().contains("wildcard"), "{}", refused.error());
    let a = admin.post("/certificates/x.wild.test/acme", "");
    assert_eq!(a.status, 202, "{:?}", a.json);
    assert_eq!(a.json["status"], "queued");
    let chain = wait_for_certificate(&redis, "x.wild.test", &proxy, &pebble);
    let key = hget(&redis, "tls:x.wild.test", "key").unwrap();
    assert!(key.contains("BEGIN PRIVATE KEY"), "PKCS#8 PEM: {key}");
    assert_valid(&chain, &key, "x.wild.test", &pebble);
    assert_eq!(
        hget(&redis, "tls:x.wild.test", "acme").as_deref(),
        Some("1")
    );
    let (_, not_after) = leaf_facts(&chain);
    assert_eq!(
        hget(&redis, "tls:x.wild.test", "notAfter"),
        Some(not_after.to_string())
    );
    assert_eq!(orders(&admin, "ok"), 1);
    assert_eq!(orders(&admin, "failed"), 0);
    // The fleet's account is in Redis, and the challenge keys are gone.
    assert!(hget(&redis, "acme:account", "key").is_some());
    assert!(hget(&redis, "acme:account", "url")
        .unwrap()
        .starts_with("https://"));
    let left: Vec<String> = redis.cmd(&["KEYS", "acme:http01:*"]);
    assert!(left.is_empty(), "{left:?}");
    assert!(redis
        .cmd::<Option<String>>(&["GET", "acme:lock:x.wild.test"])
        .is_none());
    // Unknown endpoint forms and methods.
    assert_eq!(admin.get("/certificates/x.wild.test/acme").status, 405);
    assert_eq!(admin.post("/certificates/bad name/acme", "").status, 400);
}

#[test]
fn http01_answers_from_redis_whatever_the_host() {
    let redis = RedisServer::start();
    let http_port = free_port();
    let pebble = Pebble::start(PebbleOptions::http(http_port));
    let backend = common::Backend::start("site");
    redis.set_frontend("site.test", "site", &[backend.url()]);
    let (_proxy, _admin) = start_proxy(&redis, &pebble, http_port, json!({}));
    let _: () = redis.cmd(&["SET", "acme:http01:tok_en-1", "tok_en-1.thumb"]);
    for host in ["site.test", "unknown.test", "127.0.0.1"] {
        let r = get(http_port, host, "/.well-known/acme-challenge/tok_en-1");
        assert_eq!(r.status, 200, "{host}");
        assert_eq!(r.text(), "tok_en-1.thumb");
    }
    assert_eq!(
        get(http_port, "site.test", "/.well-known/acme-challenge/nope").status,
        404
    );
    assert_eq!(
        get(http_port, "site.test", "/.well-known/acme-challenge/a.b").status,
        404
    );
    let long = format!("/.well-known/acme-challenge/{}", "a".repeat(200));
    assert_eq!(get(http_port, "site.test", &long).status, 404);
    // Other paths are routed as always.
    assert_eq!(
        get(http_port, "site.test", "/.well-known/other").status,
        200
    );
}

#[test]
fn on_demand_orders_pass_the_gate() {
    let redis = RedisServer::start();
    let http_port = free_port();
    let pebble = Pebble::start(PebbleOptions::http(http_port));
    redis.set_frontend("od.acme.test", "od", &["http://127.0.0.1:9".into()]);
    redis.set_frontend("*.wild.test", "wild", &["http://127.0.0.1:9".into()]);
    let (proxy, admin) = start_proxy(&redis, &pebble, http_port, json!({}));
    // As workers would: a name without a frontend, one only a wildcard serves, junk, the good one.
    for name in [
        "nofront.acme.test",
        "y.wild.test",
        "*.wild.test",
        "bad name",
        "od.acme.test",
    ] {
        let _: i64 = redis.cmd(&["RPUSH", "acme:queue", name]);
    }
    let chain = wait_for_certificate(&redis, "od.acme.test", &proxy, &pebble);
    let key = hget(&redis, "tls:od.acme.test", "key").unwrap();
    assert_valid(&chain, &key, "od.acme.test", &pebble);
    assert!(hget(&redis, "tls:nofront.acme.test", "certificate").is_none());
    assert!(hget(&redis, "tls:y.wild.test", "certificate").is_none());
    assert_eq!(orders(&admin, "ok"), 1);
    // A name that now has a certificate is not ordered again.
    let _: i64 = redis.cmd(&["RPUSH", "acme:queue", "od.acme.test"]);
    assert!(wait_until(Duration::from_secs(10), || proxy
        .log()
        .matches("od.acme.test: nothing to order")
        .count()
        >= 1));
    assert_eq!(orders(&admin, "ok"), 1);
}

#[test]
fn a_flooded_queue_is_bounded_and_costs_no_order() {
    let redis = RedisServer::start();
    let http_port = free_port();
    let pebble = Pebble::start(PebbleOptions::http(http_port));
    let (proxy, admin) = start_proxy(&redis, &pebble, http_port, json!({}));
    // 30,000 random names no frontend serves, as a scanner's handshakes could produce.
    let mut conn = redis.conn(0);
    for chunk in 0..3 {
        let names: Vec<String> = (0..10_000)
            .map(|i| format!("scan{chunk}-{i}.random.test"))
            .collect();
        let _: i64 = redis::cmd("RPUSH")
            .arg("acme:queue")
            .arg(&names)
            .query(&mut conn)
            .unwrap();
    }
    // Trimmed to 10,000 at the first busy poll, then drained.
    assert!(wait_until(Duration::from_secs(5), || redis
        .cmd::<i64>(&["LLEN", "acme:queue"])
        <= 10_000));
    assert!(
        wait_until(Duration::from_secs(30), || redis
            .cmd::<i64>(&["LLEN", "acme:queue"])
            == 0),
        "{}",
        proxy.log()
    );
    assert_eq!(orders(&admin, "ok") + orders(&admin, "failed"), 0);
    assert!(!proxy.log().contains("ACME: ordering"));
    // Still serving: an explicit order goes through afterwards.
    assert_eq!(
        admin.post("/certificates/after.acme.test/acme", "").status,
        202
    );
    wait_for_certificate(&redis, "after.acme.test", &proxy, &pebble);
}

#[test]
fn two_instances_make_one_order_for_twenty_requests() {
    let redis = RedisServer::start();
    let http_port = free_port();
    let pebble = Pebble::start(PebbleOptions::http(http_port));
    redis.set_frontend("dup.acme.test", "dup", &["http://127.0.0.1:9".into()]);
    // Both instances start together (one shared account is made) and share the queue; Pebble
    // validates on the first one's port, which answers from Redis whichever instance ordered.
    let (p1, a1) = start_proxy(&redis, &pebble, http_port, json!({}));
    let (p2, a2) = start_proxy(&redis, &pebble, free_port(), json!({}));
    for _ in 0..20 {
        let _: i64 = redis.cmd(&["RPUSH", "acme:queue", "dup.acme.test"]);
    }
    wait_for_certificate(&redis, "dup.acme.test", &p1, &pebble);
    assert!(wait_until(Duration::from_secs(10), || redis
        .cmd::<i64>(&["LLEN", "acme:queue"])
        == 0));
    // Every batch taken from the queue was handled (ordered, skipped under another's lock, or found
    // done): 20 requests are at least two batches (names are deduplicated within one).
    let handled = |p: &Proxy| {
        let log = p.log();
        log.matches("ACME: ordering a certificate for dup.acme.test")
            .count()
            + log.matches("dup.acme.test: nothing to order").count()
            + log
                .matches("dup.acme.test: another instance is ordering it")
                .count()
            + log
                .matches("dup.acme.test: done by another instance meanwhile")
                .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || handled(&p1) + handled(&p2) >= 2),
        "{}\n{}",
        p1.log(),
        p2.log()
    );
    assert_eq!(orders(&a1, "ok") + orders(&a2, "ok"), 1);
    assert_eq!(orders(&a1, "failed") + orders(&a2, "failed"), 0);
    let ordering = p1.log().matches("ACME: ordering a certificate").count()
        + p2.log().matches("ACME: ordering a certificate").count();
    assert_eq!(ordering, 1);
    // One account key for the fleet.
    let created = p1.log().matches("created the fleet's account key").count()
        + p2.log().matches("created the fleet's account key").count();
    assert!(created <= 1, "{created} account keys made");
}

#[test]
fn failed_order_sets_the_backoff() {
    let redis = RedisServer::start();
    // Pebble validates on a port nothing listens on: every HTTP-01 validation fails.
    let pebble = Pebble::start(PebbleOptions::http(free_port()));
    redis.set_frontend("fail.acme.test", "f", &["http://127.0.0.1:9".into()]);
    let (proxy, admin) = start_proxy(&redis, &pebble, free_port(), json!({}));
    assert_eq!(
        admin.post("/certificates/fail.acme.test/acme", "").status,
        202
    );
    assert!(
        wait_until(Duration::from_secs(30), || redis
            .cmd::<Option<String>>(&["GET", "acme:fail:fail.acme.test"])
            .is_some()),
        "{}",
        proxy.log()
    );
    assert_eq!(
        redis
            .cmd::<Option<String>>(&["GET", "acme:fail:fail.acme.test"])
            .as_deref(),
        Some("60")
    );
    let ttl: i64 = redis.cmd(&["TTL", "acme:fail:fail.acme.test"]);
    assert!((1..=60).contains(&ttl), "{ttl}");
    assert_eq!(orders(&admin, "failed"), 1);
    assert_eq!(orders(&admin, "ok"), 0);
    // The CA's problem document is in the log, with the key to delete.
    let log = proxy.log();
    assert!(log.contains("urn:ietf:params:acme:error:"), "{log}");
    assert!(log.contains("delete acme:fail:fail.acme.test"), "{log}");
    assert!(hget(&redis, "tls:fail.acme.test", "certificate").is_none());
    // On demand, the name is not tried again during the backoff.
    let _: i64 = redis.cmd(&["RPUSH", "acme:queue", "fail.acme.test"]);
    assert!(wait_until(Duration::from_secs(10), || proxy
        .log()
        .contains("fail.acme.test: nothing to order (OnDemand)")));
    assert_eq!(orders(&admin, "failed"), 1);
    // An explicit order is made anyway; its failure doubles the backoff.
    assert_eq!(
        admin.post("/certificates/fail.acme.test/acme", "").status,
        202
    );
    assert!(wait_until(Duration::from_secs(30), || orders(
        &admin, "failed"
    ) == 2));
    assert_eq!(
        redis
            .cmd::<Option<String>>(&["GET", "acme:fail:fail.acme.test"])
            .as_deref(),
        Some("120")
    );
}

#[test]
fn due_certificates_are_renewed() {
    let redis = RedisServer::start();
    let http_port = free_port();
    // Certificates valid for 2 days.
    let pebble = Pebble::start(PebbleOptions {
        validity: Some(2 * 86_400),
        ..PebbleOptions::http(http_port)
    });
    let (p1, a1) = start_proxy(&redis, &pebble, http_port, json!({ "renewBeforeDays": 1 }));
    assert_eq!(
        a1.post("/certificates/renew.acme.test/acme", "").status,
        202
    );
    let first = wait_for_certificate(&redis, "renew.acme.test", &p1, &pebble);
    let (serial1, not_after1) = leaf_facts(&first);
    // A second instance renewing 3 days before expiry finds it due at its first pass.
    let (p2, a2) = start_proxy(
        &redis,
        &pebble,
        free_port(),
        json!({ "renewBeforeDays": 3 }),
    );
    let renewed = wait_until(Duration::from_secs(30), || {
        hget(&redis, "tls:renew.acme.test", "certificate")
            .is_some_and(|c| leaf_facts(&c).0 != serial1)
    });
    assert!(renewed, "not renewed:\n{}\n{}", p1.log(), p2.log());
    let second = hget(&redis, "tls:renew.acme.test", "certificate").unwrap();
    let key = hget(&redis, "tls:renew.acme.test", "key").unwrap();
    assert_valid(&second, &key, "renew.acme.test", &pebble);
    let (_, not_after2) = leaf_facts(&second);
    assert!(not_after2 >= not_after1);
    assert_eq!(
        hget(&redis, "tls:renew.acme.test", "notAfter"),
        Some(not_after2.to_string())
    );
    assert!(orders(&a2, "ok") >= 1);
    assert!(p2.log().contains("renew.acme.test (Renewal)"));
    // The first instance (renewBeforeDays 1) found nothing due.
    assert_eq!(orders(&a1, "ok"), 1);
}

/// TLS-ALPN-01 end to end: Pebble validates on the proxy's HTTPS listener, whose workers answer
/// ClientHellos offering only `acme-tls/1` with the validation certificate from `acme:alpn:<name>`.
#[test]
fn tls_alpn01_order() {
    let redis = RedisServer::start();
    let https_port = free_port();
    let ca = common::tls::TestCa::new();
    let dir = common::TempDir::new("alpn");
    let default = ca.issue_files(dir.path(), "default", &["default.test"]);
    let pebble = Pebble::start(PebbleOptions {
        tls_port: https_port,
        ..PebbleOptions::http(free_port())
    });
    let acme = json!({ "challenge": "tls-alpn-01" });
    let mut config = pebble.acme_config(acme);
    common::proxy::merge(
        &mut config,
        json!({ "https": { "port": https_port, "bind": ["127.0.0.1"], "key": default.key, "cert": default.cert } }),
    );
    let (proxy, admin) = start_url_with_admin(&redis.url(0), json!({}), config);
    assert_eq!(
        admin.post("/certificates/alpn.acme.test/acme", "").status,
        202
    );
    let chain = wait_for_certificate(&redis, "alpn.acme.test", &proxy, &pebble);
    let key = hget(&redis, "tls:alpn.acme.test", "key").unwrap();
    assert_valid(&chain, &key, "alpn.acme.test", &pebble);
}

/// A proxy with an HTTPS listener (a test CA's `default.test` as its default certificate), a plain
/// HTTP listener on `http_port` (HTTP-01 answers), ACME on with `acme` merged in, and an admin
/// listener. Returns the HTTPS port too.
fn start_https_proxy(
    redis: &RedisServer,
    pebble: &Pebble,
    http_port: u16,
    default: &common::tls::IssuedCert,
    acme: serde_json::Value,
) -> (Proxy, Admin, u16) {
    let https_port = free_port();
    let mut extra = pebble.acme_config(acme);
    common::proxy::merge(
        &mut extra,
        json!({
            "http": { "port": http_port, "bind": ["127.0.0.1"] },
            "https": { "port": https_port, "bind": ["127.0.0.1"], "key": default.key, "cert": default.cert }
        }),
    );
    let (proxy, admin) = start_url_with_admin(&redis.url(0), json!({}), extra);
    (proxy, admin, https_port)
}

/// A real, verifying rustls handshake with SNI `name`, trusting only Pebble's issuing root: it fails
/// unless the proxy presents a chain to that root covering `name`. Returns the connection (HTTP over
/// TLS) and the leaf's serial.
fn verified_connect(
    port: u16,
    name: &str,
    root_pem: &str,
) -> Result<
    (
        common::client::Conn<impl std::io::Read + std::io::Write>,
        Vec<u8>,
    ),
    String,
> {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(root_pem.as_bytes()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), server_name).map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    // Longer than the default handshakeWait (10 s): the first handshake waits for issuance.
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| e.to_string())?;
    }
    let leaf = stream
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no peer certificate")?;
    let (serial, _) = hipache_tpc::control::acme::der::serial_and_not_after(leaf.as_ref())?;
    Ok((common::client::Conn::over(stream), serial))
}

#[test]
fn on_demand_through_a_real_handshake() {
    let redis = RedisServer::start();
    let http_port = free_port();
    let pebble = Pebble::start(PebbleOptions::http(http_port));
    let root = pebble.issuing_root();
    let backend = common::Backend::start("shop");
    let ca = common::tls::TestCa::new();
    let dir = common::TempDir::new("ondemand");
    let default = ca.issue_files(dir.path(), "default", &["default.test"]);
    let (p1, a1, https1) = start_https_proxy(&redis, &pebble, http_port, &default, json!({}));
    let _: i64 = redis.cmd(&["RPUSH", "frontend:shop.test", "shop", &backend.url()]);
    // The first handshake for shop.test queues the name and waits (handshakeWait, 10 s by default)
    // for the certificate the control plane orders from Pebble: it completes with it, verified.
    let t = std::time::Instant::now();
    let (mut conn, serial) = verified_connect(https1, "shop.test", &root).unwrap_or_else(|e| {
        panic!(
            "first handshake: {e} after {:?}\nproxy log:\n{}\npebble log:\n{}",
            t.elapsed(),
            p1.log(),
            pebble.log()
        )
    });
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let r = conn.get("shop.test", "/checkout");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "shop");
    assert_eq!(backend.requests(), 1);
    // What was served is what is stored.
    let chain = hget(&redis, "tls:shop.test", "certificate").expect("tls:shop.test stored");
    let key = hget(&redis, "tls:shop.test", "key").expect("its key");
    assert_valid(&chain, &key, "shop.test", &pebble);
    assert_eq!(leaf_facts(&chain).0, serial);
    assert_eq!(orders(&a1, "ok"), 1);
    // A second instance on the same Redis serves the same certificate at once, with no new order.
    let (p2, a2, https2) = start_https_proxy(&redis, &pebble, free_port(), &default, json!({}));
    let t = std::time::Instant::now();
    let (mut conn2, serial2) = verified_connect(https2, "shop.test", &root)
        .unwrap_or_else(|e| panic!("second instance: {e}\n{}", p2.log()));
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(serial2, serial, "the same certificate");
    let r = conn2.get("shop.test", "/");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.backend(), "shop");
    assert_eq!(orders(&a1, "ok") + orders(&a2, "ok"), 1);
    assert_eq!(orders(&a1, "failed") + orders(&a2, "failed"), 0);
    assert_eq!(redis.cmd::<i64>(&["LLEN", "acme:queue"]), 0);
    let ordering = p1.log().matches("ACME: ordering a certificate").count()
        + p2.log().matches("ACME: ordering a certificate").count();
    assert_eq!(ordering, 1, "{}\n{}", p1.log(), p2.log());
}
