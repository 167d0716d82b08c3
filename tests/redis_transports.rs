//! Managed Redis (README "Running Redis for a fleet"): `rediss://` with a private CA (and without one:
//! refused, named), `?insecure=1`, Redis 6 ACL users with the minimal rule the README gives (routes,
//! dead marks and route-change notifications all work under it; a wrong password and a user without
//! `CLIENT` are named in the log and in `/status`), and `redis+unix://` sockets. Every server is a real
//! `redis-server`, with its plain port kept open for the test's own commands.

mod common;

use std::time::Duration;

use common::admin::start_url_with_admin;
use common::proxy::wait_for_notifications;
use common::tls::TestCa;
use common::{free_port, get, wait_until, Backend, Proxy, RedisServer, TempDir};
use serde_json::json;

/// A long cache TTL: a route change seen quickly proves the notifications (tracking) work.
fn long_ttl() -> serde_json::Value {
    json!({ "server": { "workers": 2, "lruCache": { "ttl": 60, "trackedTtl": 600 } } })
}

/// A redis-server with a TLS port (certificate for `localhost` and 127.0.0.1 from `ca`), no client
/// certificates required.
fn tls_redis(ca: &TestCa, dir: &TempDir) -> (RedisServer, u16) {
    let cert = ca.issue_files(dir.path(), "redis", &["localhost", "127.0.0.1"]);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let tls_port = free_port();
    let redis = RedisServer::start_args(&[
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        cert.cert.display().to_string(),
        "--tls-key-file".into(),
        cert.key.display().to_string(),
        "--tls-ca-cert-file".into(),
        ca_file.display().to_string(),
        "--tls-auth-clients".into(),
        "no".into(),
    ]);
    (redis, tls_port)
}

/// Every request for `host` reaches `backend` within `within`.
fn served_by(port: u16, host: &str, backend: &str, within: Duration) -> bool {
    wait_until(within, || {
        (0..6).all(|_| {
            let r = get(port, host, "/");
            r.status == 200 && r.backend() == backend
        })
    })
}

#[test]
fn rediss_with_a_private_ca_routes_and_notifies() {
    let dir = TempDir::new("rediss");
    let ca = TestCa::new();
    let (redis, tls_port) = tls_redis(&ca, &dir);
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    redis.set_frontend("tls.test", "t", &[a.url()]);
    let ca_path = dir.path().join("ca.pem");
    let url = format!("rediss://localhost:{tls_port}?ca={}", ca_path.display());
    let proxy = Proxy::start_url(&url, long_ttl());
    assert!(served_by(
        proxy.port,
        "tls.test",
        "a",
        Duration::from_secs(5)
    ));
    // The tracking connection runs over TLS too: a change is seen long before the 60 s TTL.
    wait_for_notifications(&proxy, 2);
    redis.set_frontend("tls.test", "t", &[b.url()]);
    assert!(
        served_by(proxy.port, "tls.test", "b", Duration::from_secs(2)),
        "a route change over rediss:// was not seen within 2 s:\n{}",
        proxy.log()
    );
    // The proxy's connections arrived on the TLS port (CLIENT LIST: laddr), none on the plain one
    // but the test's own.
    let clients: String = redis.cmd(&["CLIENT", "LIST"]);
    let on_tls = clients
        .lines()
        .filter(|l| l.contains(&format!("laddr=127.0.0.1:{tls_port} ")))
        .count();
    assert!(
        on_tls >= 4,
        "expected queries + tracking of 2 workers over TLS:\n{clients}"
    );
    assert!(
        clients
            .lines()
            .filter(|l| l.contains(&format!("laddr=127.0.0.1:{} ", redis.port)))
            .all(|l| !l.contains("name=hipache")),
        "{clients}"
    );
}

#[test]
fn rediss_without_the_ca_is_refused_and_named_in_status() {
    let dir = TempDir::new("rediss-noca");
    let ca = TestCa::new();
    let (redis, tls_port) = tls_redis(&ca, &dir);
    let a = Backend::start("a");
    redis.set_frontend("tls.test", "t", &[a.url()]);
    // The system roots do not know the test CA.
    let url = format!("rediss://localhost:{tls_port}");
    let (proxy, admin) =
        start_url_with_admin(&url, json!({}), json!({ "server": { "workers": 1 } }));
    assert!(
        wait_until(Duration::from_secs(5), || proxy
            .log()
            .contains("TLS handshake")),
        "no TLS handshake error in the log:\n{}",
        proxy.log()
    );
    assert_eq!(get(proxy.port, "tls.test", "/").status, 503);
    let status = admin.get("/status");
    assert_eq!(status.status, 503, "{:?}", status.json);
    let problems = status.json["problems"].to_string();
    assert!(
        problems.contains("TLS handshake") && problems.contains("rediss://localhost"),
        "{problems}"
    );

    // ?insecure=1: served, with a warning at start-up.
    let insecure = format!("rediss://localhost:{tls_port}?insecure=1");
    let proxy = Proxy::start_url(&insecure, json!({ "server": { "workers": 1 } }));
    assert!(served_by(
        proxy.port,
        "tls.test",
        "a",
        Duration::from_secs(5)
    ));
    assert!(
        proxy.log().contains("skips TLS certificate verification"),
        "{}",
        proxy.log()
    );
}

/// The rule README "Running Redis for a fleet" gives for proxies (no admin API, no health checker).
const PROXY_ACL: &str = "on >proxy-secret ~frontend:* ~frontend-options:* ~dead:* ~hipache-tpc-probe:* ~hchecker_ping &dead \
    +auth +hello +select +ping +client|setname +client|tracking +lrange +hgetall +smembers +get +set +sadd +expire +publish";

/// `redis-server` arguments creating the user `proxy` with [`PROXY_ACL`].
fn proxy_user() -> Vec<String> {
    let mut args = vec!["--user".to_string(), "proxy".to_string()];
    args.extend(PROXY_ACL.split_whitespace().map(str::to_string));
    args
}

#[test]
fn an_acl_user_with_the_minimal_rule_routes_marks_and_notifies() {
    let args = proxy_user();
    // The default user keeps full access for the test's own commands.
    let redis = RedisServer::start_args(&args);
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let refused = format!("http://127.0.0.1:{}", free_port());
    redis.set_frontend("acl.test", "x", &[a.url()]);
    redis.set_frontend("pair.test", "p", &[refused.clone(), b.url()]);
    let url = format!("redis://proxy:proxy-secret@127.0.0.1:{}", redis.port);
    let proxy = Proxy::start_url(&url, long_ttl());
    assert!(served_by(
        proxy.port,
        "acl.test",
        "a",
        Duration::from_secs(5)
    ));
    wait_for_notifications(&proxy, 2);
    redis.set_frontend("acl.test", "x", &[b.url()]);
    assert!(served_by(
        proxy.port,
        "acl.test",
        "b",
        Duration::from_secs(2)
    ));
    // A refused backend is marked dead by the ACL user (SADD + EXPIRE + PUBLISH allowed). Requests go
    // on until a random choice has picked the refused one and the mark is there.
    assert!(
        wait_until(Duration::from_secs(5), || {
            assert_eq!(get(proxy.port, "pair.test", "/").backend(), "b");
            let members: Vec<String> = redis.cmd(&["SMEMBERS", "dead:pair.test"]);
            members == ["0"]
        }),
        "no dead mark written:\n{}",
        proxy.log()
    );
    assert!(!proxy.log().contains("refused by Redis"), "{}", proxy.log());
    assert!(!proxy.log().contains("NOPERM"), "{}", proxy.log());
}

#[test]
fn a_wrong_password_and_a_missing_permission_are_named() {
    let mut args = proxy_user();
    // A user like the proxy's, without CLIENT TRACKING.
    args.extend(
        "--user notrack on >pw ~* &* +@all -client"
            .split_whitespace()
            .map(str::to_string),
    );
    let redis = RedisServer::start_args(&args);
    let a = Backend::start("a");
    redis.set_frontend("acl.test", "x", &[a.url()]);

    let wrong = format!("redis://proxy:not-the-password@127.0.0.1:{}", redis.port);
    let (proxy, admin) =
        start_url_with_admin(&wrong, json!({}), json!({ "server": { "workers": 1 } }));
    assert!(
        wait_until(Duration::from_secs(5), || proxy.log().contains("WRONGPASS")),
        "{}",
        proxy.log()
    );
    assert!(
        proxy
            .log()
            .contains("check the user name and password in the driver URL"),
        "{}",
        proxy.log()
    );
    assert!(!proxy.log().contains("not-the-password"), "password logged");
    let status = admin.get("/status");
    assert_eq!(status.status, 503);
    let problems = status.json["problems"].to_string();
    assert!(
        problems.contains("WRONGPASS") && problems.contains("redis://proxy:***@"),
        "{problems}"
    );
    assert!(!problems.contains("not-the-password"), "{problems}");

    let notrack = format!("redis://notrack:pw@127.0.0.1:{}", redis.port);
    let (proxy, admin) =
        start_url_with_admin(&notrack, json!({}), json!({ "server": { "workers": 1 } }));
    assert!(served_by(
        proxy.port,
        "acl.test",
        "a",
        Duration::from_secs(5)
    ));
    assert!(
        wait_until(Duration::from_secs(5), || proxy
            .log()
            .contains("CLIENT TRACKING refused: NOPERM")),
        "{}",
        proxy.log()
    );
    // The workers' gauges are refreshed by their housekeeping tick: wait for it.
    assert!(
        wait_until(Duration::from_secs(5), || admin.get("/status").json
            ["problems"]
            .to_string()
            .contains("route-change notifications are off on 1 of 1 workers")),
        "{:?}",
        admin.get("/status").json
    );
}

#[test]
fn a_unix_socket_driver_routes_and_notifies() {
    let dir = TempDir::new("redis-unix");
    let sock = dir.path().join("redis.sock");
    let redis = RedisServer::start_args(&[
        "--unixsocket".into(),
        sock.display().to_string(),
        "--unixsocketperm".into(),
        "700".into(),
    ]);
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    // Database 2: the URL's ?db= is honoured over the socket.
    let set = |backend: String| {
        let _: () = redis.cmd_db(2, &["DEL", "frontend:unix.test"]);
        let _: i64 = redis.cmd_db(2, &["RPUSH", "frontend:unix.test", "u", &backend]);
    };
    set(a.url());
    let url = format!("redis+unix://{}?db=2", sock.display());
    let proxy = Proxy::start_url(&url, long_ttl());
    assert!(served_by(
        proxy.port,
        "unix.test",
        "a",
        Duration::from_secs(5)
    ));
    wait_for_notifications(&proxy, 2);
    set(b.url());
    assert!(served_by(
        proxy.port,
        "unix.test",
        "b",
        Duration::from_secs(2)
    ));
    // A socket that is not there: a clear message naming it.
    let missing = dir.path().join("nope.sock");
    let proxy = Proxy::start_url(
        &format!("redis+unix://{}", missing.display()),
        json!({ "server": { "workers": 1 } }),
    );
    assert!(
        wait_until(Duration::from_secs(5), || proxy.log().contains(&format!(
            "cannot connect to the unix socket {}",
            missing.display()
        ))),
        "{}",
        proxy.log()
    );
}

#[test]
fn dry_run_checks_the_redis_urls() {
    let dir = TempDir::new("redis-dry");
    let write = |driver: &str| {
        let path = dir.path().join("config.json");
        let config = json!({ "server": { "accessLog": false }, "http": { "port": free_port() }, "driver": driver, "user": "root" });
        std::fs::write(&path, config.to_string()).unwrap();
        path
    };
    let cases = [
        (
            "rediss://r.example?ca=missing-ca.pem",
            "the Redis CA (?ca=): cannot read the certificate file",
        ),
        (
            "redis://r.example?ca=x.pem",
            "`ca` applies to TLS only: write rediss://",
        ),
        (
            "redis+unix:///run/r.sock?tls=1",
            "unknown parameter `tls` (known: db, ca, insecure, role, sentinelPassword)",
        ),
        ("redis+unix://", "names no socket"),
    ];
    for (driver, message) in cases {
        let path = write(driver);
        let (code, out, err) =
            common::proxy::run_cli(&["--dry", "-c", path.to_str().unwrap()], None, &[]);
        assert_eq!(code, 1, "{driver}: {out}{err}");
        assert!(
            err.contains(message),
            "{driver}: expected {message:?} in:\n{err}"
        );
    }
    // A private CA that exists: relative to the configuration's folder.
    std::fs::write(dir.path().join("ca.pem"), TestCa::new().pem).unwrap();
    let path = write("rediss://r.example:6380/0?ca=ca.pem");
    let (code, out, err) =
        common::proxy::run_cli(&["--dry", "-c", path.to_str().unwrap()], None, &[]);
    assert_eq!(code, 0, "{out}{err}");
}
