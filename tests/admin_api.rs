//! The admin API (docs/compatibility.md §9, hipache-api compatible) against a real redis-server and the real binary:
//! every endpoint's success and errors, authentication, the fixes (dead sets cleared on list changes,
//! SCAN, URL validation, no duplicates), prefixed and numbered databases, the file driver, bad input.

mod common;

use std::io::Write;
use std::time::Duration;

use common::admin::{enc, start_url_with_admin, start_with_admin, Admin};
use common::client::Conn;
use common::proxy::{config_for, run_cli};
use common::{free_port, get, wait_until, Backend, Proxy, RedisServer, TempDir};
use serde_json::json;

fn list(redis: &RedisServer, key: &str) -> Vec<String> {
    redis.cmd(&["LRANGE", key, "0", "-1"])
}

#[test]
fn every_endpoint_answers_like_hipache_api() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start_with_admin(&redis, json!({}), json!({}));
    let (u1, u2, u3) = (
        "http://10.0.0.1:8080",
        "http://10.0.0.2:8080",
        "http://10.0.0.3:8080",
    );

    // GET /frontends on an empty Redis.
    let a = admin.get("/frontends");
    assert_eq!(a.status, 200);
    assert_eq!(a.json, json!([]));
    assert_eq!(a.response.header("content-type"), Some("application/json"));

    // POST /frontends: host missing, created (form body), exists, created without backends (query).
    let a = admin.post("/frontends", "backends=http://x:1");
    assert_eq!(
        (a.status, a.error()),
        (400, "Missing parameter 'host'".into())
    );
    let a = admin.post(
        "/frontends",
        &format!("host=a.test&backends={}", enc(&format!("{u1},{u2}"))),
    );
    assert_eq!(a.status, 200, "{}", a.response.text());
    assert_eq!(a.json, json!({"message": "Frontend has been created"}));
    assert_eq!(list(&redis, "frontend:a.test"), ["a.test", u1, u2]);
    let a = admin.post("/frontends", "host=a.test");
    assert_eq!(
        (a.status, a.json.clone()),
        (
            400,
            json!({"status": 400, "error": "Frontend already exists"})
        )
    );
    let a = admin.call("POST", "/frontends?host=B.test.", &[], "");
    assert_eq!(a.status, 200);
    assert_eq!(
        list(&redis, "frontend:b.test"),
        ["b.test"],
        "normalised name"
    );

    // GET /frontends and /frontends/:name.
    assert_eq!(admin.get("/frontends").json, json!(["a.test", "b.test"]));
    assert_eq!(admin.get("/frontends/a.test").json, json!([u1, u2]));
    assert_eq!(admin.get("/frontends/b.test").json, json!([]));
    let a = admin.get("/frontends/nope.test");
    assert_eq!(
        (a.status, a.json.clone()),
        (
            404,
            json!({"status": 404, "error": "Frontend does not exist"})
        )
    );

    // POST /frontends/:name: appended, missing parameter, absent frontend; a JSON body works too.
    let a = admin.post("/frontends/a.test", &format!("backends={}", enc(u3)));
    assert_eq!(a.json, json!({"message": "Backends created"}));
    assert_eq!(list(&redis, "frontend:a.test"), ["a.test", u1, u2, u3]);
    let a = admin.post("/frontends/a.test", "");
    assert_eq!(
        (a.status, a.error()),
        (400, "Missing 'backends' parameter".into())
    );
    let a = admin.post("/frontends/nope.test", "backends=http://x:1");
    assert_eq!(a.status, 404);
    let a = admin.call(
        "POST",
        "/frontends/b.test",
        &[("Content-Type", "application/json")],
        r#"{"backends": ["http://10.0.0.9:1", "http://10.0.0.9:2"]}"#,
    );
    assert_eq!(a.status, 200, "{}", a.response.text());
    assert_eq!(
        list(&redis, "frontend:b.test"),
        ["b.test", "http://10.0.0.9:1", "http://10.0.0.9:2"]
    );

    // DELETE /frontends/:name/backend: removed, missing parameter, absent frontend.
    let a = admin.delete(&format!("/frontends/a.test/backend?backend={}", enc(u1)));
    assert_eq!(a.json, json!({"message": "Backend removed"}));
    assert_eq!(list(&redis, "frontend:a.test"), ["a.test", u2, u3]);
    let a = admin.delete("/frontends/a.test/backend");
    assert_eq!(
        (a.status, a.error()),
        (400, "Missing 'backend' parameter".into())
    );
    let a = admin.delete("/frontends/nope.test/backend?backend=http://x:1");
    assert_eq!(a.status, 404);
    // The identifier is never removed, even when it equals the backend named.
    redis.set_frontend(
        "same.test",
        "http://10.0.0.5:1",
        &["http://10.0.0.5:1".into()],
    );
    let a = admin.delete("/frontends/same.test/backend?backend=http://10.0.0.5:1");
    assert_eq!(a.status, 200);
    assert_eq!(list(&redis, "frontend:same.test"), ["http://10.0.0.5:1"]);

    // DELETE /frontends/:name, twice.
    let a = admin.delete("/frontends/a.test");
    assert_eq!(a.json, json!({"message": "Frontend has been deleted"}));
    assert!(list(&redis, "frontend:a.test").is_empty());
    assert_eq!(admin.delete("/frontends/a.test").status, 404);

    // POST /flush removes every frontend and every dead set, nothing else.
    let _: i64 = redis.cmd(&["SADD", "dead:b.test", "0"]);
    let _: () = redis.cmd(&["SET", "unrelated", "1"]);
    let a = admin.post("/flush", "");
    assert_eq!(a.json, json!({"message": "All frontends are now flushed"}));
    assert_eq!(admin.get("/frontends").json, json!([]));
    let dead: i64 = redis.cmd(&["EXISTS", "dead:b.test"]);
    assert_eq!(dead, 0);
    let unrelated: i64 = redis.cmd(&["EXISTS", "unrelated"]);
    assert_eq!(unrelated, 1);

    // Unknown endpoint, wrong method.
    let a = admin.get("/nope");
    assert_eq!(a.status, 404);
    assert!(a.error().contains("/nope"), "{}", a.error());
    let a = admin.call("PUT", "/frontends", &[], "");
    assert_eq!(a.status, 405);
    assert_eq!(a.response.header("allow"), Some("GET, POST"));
    assert_eq!(a.json["status"], 405);
    let a = admin.get("/flush");
    assert_eq!(a.status, 405);
}

#[test]
fn authentication_by_parameter_or_bearer_token() {
    let redis = RedisServer::start();
    redis.set_frontend("a.test", "a", &["http://10.0.0.1:80".into()]);
    let (_proxy, admin) = start_with_admin(&redis, json!({ "key": "s3cret" }), json!({}));
    let missing = json!({"status": 401, "error": "Missing 'api_key' parameter"});
    let invalid = json!({"status": 401, "error": "Invalid api key"});

    let a = admin.get("/frontends");
    assert_eq!((a.status, a.json.clone()), (401, missing.clone()));
    assert!(a.response.header("www-authenticate").is_some());
    assert_eq!(admin.get("/frontends?api_key=").json, missing);
    assert_eq!(admin.get("/frontends?api_key=wrong").json, invalid);
    assert_eq!(admin.get("/frontends?api_key=s3cre").json, invalid);
    assert_eq!(admin.get("/frontends?api_key=s3cret2").json, invalid);
    let bearer = |k: &str| format!("Bearer {k}");
    let wrong = bearer("wrong");
    assert_eq!(
        admin
            .call("GET", "/frontends", &[("Authorization", &wrong)], "")
            .json,
        invalid
    );
    // Right: parameter (query or form body), or bearer token.
    let a = admin.get("/frontends?api_key=s3cret");
    assert_eq!((a.status, a.json.clone()), (200, json!(["a.test"])));
    let right = bearer("s3cret");
    let a = admin.call("GET", "/frontends/a.test", &[("Authorization", &right)], "");
    assert_eq!(
        (a.status, a.json.clone()),
        (200, json!(["http://10.0.0.1:80"]))
    );
    let a = admin.post("/frontends", "host=b.test&api_key=s3cret");
    assert_eq!(a.status, 200);
    // Unknown paths need the key too (nothing to learn without it).
    assert_eq!(admin.get("/nope").status, 401);
    // /metrics and /status are protected by default when a key is set.
    assert_eq!(admin.get("/metrics").status, 401);
    assert_eq!(admin.get("/status").status, 401);
    assert_eq!(admin.get("/metrics?api_key=s3cret").status, 200);
    // (/status says 503 until every worker's Redis connection is up.)
    assert!(wait_until(Duration::from_secs(5), || {
        admin
            .call("GET", "/status", &[("Authorization", &right)], "")
            .status
            == 200
    }));

    // protectMetrics: false leaves /metrics and /status open, not the API.
    let (_p2, open) = start_with_admin(
        &redis,
        json!({ "key": "s3cret", "protectMetrics": false }),
        json!({}),
    );
    assert_eq!(open.get("/metrics").status, 200);
    assert!(wait_until(Duration::from_secs(5), || open
        .get("/status")
        .status
        == 200));
    assert_eq!(open.get("/frontends").status, 401);
}

#[test]
fn a_frontend_edited_through_the_api_is_served_right_after() {
    let redis = RedisServer::start();
    let one = Backend::start("one");
    let two = Backend::start("two");
    let (proxy, admin) = start_with_admin(&redis, json!({}), json!({}));
    assert_eq!(get(proxy.port, "edit.test", "/").status, 400);
    let a = admin.post(
        "/frontends",
        &format!("host=edit.test&backends={}", enc(&one.url())),
    );
    assert_eq!(a.status, 200);
    // The negative answer may be cached for up to the cache TTL (1 s by default).
    assert!(wait_until(Duration::from_secs(3), || {
        let r = get(proxy.port, "edit.test", "/x");
        r.status == 200 && r.backend() == "one"
    }));
    // Swap the backend: add two, remove one.
    assert_eq!(
        admin
            .post(
                "/frontends/edit.test",
                &format!("backends={}", enc(&two.url()))
            )
            .status,
        200
    );
    assert_eq!(
        admin
            .delete(&format!(
                "/frontends/edit.test/backend?backend={}",
                enc(&one.url())
            ))
            .status,
        200
    );
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..10 {
        let r = get(proxy.port, "edit.test", "/y");
        assert_eq!((r.status, r.backend()), (200, "two".to_string()));
    }
    assert_eq!(admin.delete("/frontends/edit.test").status, 200);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(get(proxy.port, "edit.test", "/z").status, 400);
}

#[test]
fn list_changes_delete_the_dead_sets_whose_indexes_they_invalidate() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start_with_admin(&redis, json!({}), json!({}));
    let exists = |k: &str| -> i64 { redis.cmd(&["EXISTS", k]) };
    let sadd = |k: &str| {
        let _: i64 = redis.cmd(&["SADD", k, "0"]);
    };
    redis.set_frontend(
        "d.test",
        "d",
        &["http://10.0.0.1:1".into(), "http://10.0.0.2:1".into()],
    );
    // Removing a backend shifts the indexes: dead:d.test goes.
    sadd("dead:d.test");
    admin.delete("/frontends/d.test/backend?backend=http://10.0.0.1:1");
    assert_eq!(exists("dead:d.test"), 0);
    // Appending goes through the same rule (any change through the API resets the marks).
    sadd("dead:d.test");
    admin.post("/frontends/d.test", "backends=http://10.0.0.3:1");
    assert_eq!(exists("dead:d.test"), 0);
    // Removing a backend that is not there changes nothing.
    sadd("dead:d.test");
    admin.delete("/frontends/d.test/backend?backend=http://10.0.0.7:1");
    assert_eq!(exists("dead:d.test"), 1);
    admin.delete("/frontends/d.test");
    assert_eq!(exists("dead:d.test"), 0);
    // Creating an exact frontend that takes a host over from a wildcard.
    sadd("dead:new.w.test");
    admin.post("/frontends", "host=new.w.test");
    assert_eq!(exists("dead:new.w.test"), 0);
    // A wildcard's change clears the dead sets of the hosts it serves, and only those.
    redis.set_frontend(
        "*.w.test",
        "w",
        &["http://10.0.0.1:1".into(), "http://10.0.0.2:1".into()],
    );
    for k in [
        "dead:x.w.test",
        "dead:a.b.w.test",
        "dead:other.test",
        "dead:w.test",
    ] {
        sadd(k);
    }
    let a = admin.delete(&format!(
        "/frontends/{}/backend?backend=http://10.0.0.1:1",
        enc("*.w.test")
    ));
    assert_eq!(a.status, 200, "{}", a.response.text());
    assert_eq!(
        list(&redis, "frontend:*.w.test"),
        ["w", "http://10.0.0.2:1"]
    );
    assert_eq!(exists("dead:x.w.test"), 0);
    assert_eq!(exists("dead:a.b.w.test"), 0);
    assert_eq!(exists("dead:other.test"), 1);
    assert_eq!(exists("dead:w.test"), 1, "*.w.test does not serve w.test");
}

#[test]
fn listing_scans_many_frontends_without_keys() {
    let redis = RedisServer::start();
    let mut conn = redis.conn(0);
    let mut pipe = redis::pipe();
    let mut expected: Vec<String> = (0..2500).map(|i| format!("h{i:04}.test")).collect();
    for h in &expected {
        pipe.cmd("RPUSH")
            .arg(format!("frontend:{h}"))
            .arg(h)
            .arg("http://10.0.0.1:80")
            .ignore();
    }
    for i in 0..500 {
        pipe.cmd("SADD")
            .arg(format!("dead:h{i:04}.test"))
            .arg(0)
            .ignore();
        pipe.cmd("SET").arg(format!("other:{i}")).arg(1).ignore();
    }
    pipe.cmd("RPUSH")
        .arg("frontend:*.wild.test")
        .arg("w")
        .ignore();
    let _: () = pipe.query(&mut conn).unwrap();
    expected.push("*.wild.test".into());
    expected.sort();
    let (_proxy, admin) = start_with_admin(&redis, json!({}), json!({}));
    let _: () = redis.cmd(&["CONFIG", "RESETSTAT"]);
    let a = admin.get("/frontends");
    assert_eq!(a.status, 200);
    let names: Vec<String> = serde_json::from_value(a.json).unwrap();
    assert_eq!(names, expected);
    let stats: String = redis.cmd(&["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_scan:"), "{stats}");
    assert!(!stats.contains("cmdstat_keys:"), "{stats}");
    // Flush goes through SCAN as well.
    assert_eq!(admin.post("/flush", "").status, 200);
    let left: Vec<String> = redis.cmd(&["KEYS", "frontend:*"]);
    assert!(left.is_empty());
    let others: Vec<String> = redis.cmd(&["KEYS", "other:*"]);
    assert_eq!(others.len(), 500);
}

#[test]
fn backend_urls_are_validated_and_duplicates_refused() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start_with_admin(&redis, json!({}), json!({}));
    let create = |backends: &str| {
        admin.post(
            "/frontends",
            &format!("host=v.test&backends={}", enc(backends)),
        )
    };
    for (bad, why) in [
        ("ftp://10.0.0.1", "unsupported scheme"),
        ("http://", "no host"),
        ("http://10.0.0.1:99999", "10.0.0.1:99999"),
        ("http://a b:80", "invalid host"),
        ("http://10.0.0.1:80,,http://10.0.0.2:80", "empty entry"),
        ("http://10.0.0.1:80,http://10.0.0.1", "Duplicate"),
        ("http://h.test:80,h.test", "Duplicate"),
    ] {
        let a = create(bad);
        assert_eq!(a.status, 400, "{bad}: {}", a.response.text());
        assert!(a.error().contains(why), "{bad}: {}", a.error());
        assert!(
            list(&redis, "frontend:v.test").is_empty(),
            "{bad}: nothing written"
        );
    }
    // A scheme-less host:port is stored with http:// (hipache-hchecker could not check it without).
    let a = create("10.0.0.1:81, http://10.0.0.2:82/path");
    assert_eq!(a.status, 200, "{}", a.response.text());
    assert_eq!(
        list(&redis, "frontend:v.test"),
        ["v.test", "http://10.0.0.1:81", "http://10.0.0.2:82/path"]
    );
    // Appending a backend already there (written differently) is refused, and writes nothing.
    let a = admin.post(
        "/frontends/v.test",
        &format!("backends={}", enc("http://10.0.0.3:1,http://10.0.0.1:81/")),
    );
    assert_eq!(a.status, 400);
    assert!(
        a.error().contains("already in the frontend"),
        "{}",
        a.error()
    );
    assert_eq!(list(&redis, "frontend:v.test").len(), 3);
    let a = admin.post(
        "/frontends/v.test",
        &format!("backends={}", enc("mailto:x")),
    );
    assert_eq!(a.status, 400);
    // Removing accepts the form it was given at creation.
    let a = admin.delete("/frontends/v.test/backend?backend=10.0.0.1:81");
    assert_eq!(a.status, 200);
    assert_eq!(
        list(&redis, "frontend:v.test"),
        ["v.test", "http://10.0.0.2:82/path"]
    );
    // Host names are validated too.
    for bad in ["a.test:8080", "a..test", "a*.test", "*.*.test", "a/b"] {
        let a = admin.post("/frontends", &format!("host={}", enc(bad)));
        assert_eq!(a.status, 400, "{bad}");
        assert!(
            a.error().starts_with("Invalid host"),
            "{bad}: {}",
            a.error()
        );
    }
}

#[test]
fn prefixed_driver_on_a_numbered_database() {
    let redis = RedisServer::start();
    // Keys of other prefixes and databases must stay untouched.
    redis.set_frontend("zero.test", "z", &["http://10.0.0.1:80".into()]);
    let _: i64 = redis.cmd_db(3, &["RPUSH", "frontend:unprefixed.test", "u"]);
    let _: i64 = redis.cmd_db(3, &["RPUSH", "other:frontend:x.test", "x"]);
    let url = format!("redis://127.0.0.1:{}/3#pfx:", redis.port);
    let (_proxy, admin) = start_url_with_admin(&url, json!({}), json!({}));
    let a = admin.post("/frontends", "host=p.test&backends=http://10.0.0.2:80");
    assert_eq!(a.status, 200);
    let l: Vec<String> = redis.cmd_db(3, &["LRANGE", "pfx:frontend:p.test", "0", "-1"]);
    assert_eq!(l, ["p.test", "http://10.0.0.2:80"]);
    assert_eq!(admin.get("/frontends").json, json!(["p.test"]));
    assert_eq!(
        admin.get("/frontends/p.test").json,
        json!(["http://10.0.0.2:80"])
    );
    assert_eq!(admin.get("/frontends/unprefixed.test").status, 404);
    let _: i64 = redis.cmd_db(3, &["SADD", "pfx:dead:p.test", "0"]);
    admin.post("/frontends/p.test", "backends=http://10.0.0.3:80");
    let dead: i64 = redis.cmd_db(3, &["EXISTS", "pfx:dead:p.test"]);
    assert_eq!(dead, 0);
    assert_eq!(admin.post("/flush", "").status, 200);
    let gone: i64 = redis.cmd_db(3, &["EXISTS", "pfx:frontend:p.test"]);
    assert_eq!(gone, 0);
    let kept: i64 = redis.cmd_db(
        3,
        &[
            "EXISTS",
            "frontend:unprefixed.test",
            "other:frontend:x.test",
        ],
    );
    assert_eq!(kept, 2);
    let zero: i64 = redis.cmd_db(0, &["EXISTS", "frontend:zero.test"]);
    assert_eq!(zero, 1);
}

#[test]
fn file_driver_refuses_the_api_but_serves_metrics_and_status() {
    let dir = TempDir::new("admin-file");
    let backend = Backend::start("file");
    std::fs::write(
        dir.path().join("routes.json"),
        json!({ "f.test": ["f", backend.url()] }).to_string(),
    )
    .unwrap();
    let port = free_port();
    let admin_port = free_port();
    let mut config = config_for(
        "",
        port,
        dir.path(),
        json!({ "admin": { "port": admin_port } }),
    );
    config["driver"] = json!("file:routes.json");
    let proxy = Proxy::start_config(dir, port, &config).unwrap();
    let admin = Admin { port: admin_port };
    let a = admin.get("/frontends");
    assert_eq!(a.status, 501);
    assert!(a.error().contains("file driver"), "{}", a.error());
    assert_eq!(admin.post("/flush", "").status, 501);
    assert_eq!(get(proxy.port, "f.test", "/").status, 200);
    let m = admin.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .response
        .text()
        .contains("hipache_responses_total{class=\"2xx\"} 1"));
    let s = admin.get("/status");
    assert_eq!(s.status, 200, "{}", s.response.text());
    assert_eq!(s.json["driver"], "file");
}

#[test]
fn bad_input_gets_json_errors_and_never_hurts_the_listener() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start_with_admin(&redis, json!({}), json!({}));
    let raw = |bytes: &[u8]| -> (u16, serde_json::Value) {
        let mut c = Conn::open(admin.port);
        c.send(bytes);
        let r = c.read_response(false).expect("an answer");
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or_default(),
        )
    };
    let (s, j) = raw(b"GARBAGE\r\n\r\n");
    assert_eq!(s, 400);
    assert_eq!(j["status"], 400);
    let (s, _) = raw(b"GET /frontends HTTP/1.1\r\nX: \x01\r\n\r\n");
    assert_eq!(s, 400);
    let mut big = b"GET /frontends HTTP/1.1\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(raw(&big).0, 431);
    assert_eq!(
        raw(b"POST /frontends HTTP/1.1\r\nContent-Length: 100000\r\n\r\n").0,
        413
    );
    assert_eq!(
        raw(b"POST /frontends HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").0,
        411
    );
    let (s, j) = raw(b"GET /frontends/%zz HTTP/1.1\r\n\r\n");
    assert_eq!(s, 400);
    assert!(j["error"].as_str().unwrap_or("").contains("malformed path"));
    let a = admin.call(
        "POST",
        "/frontends",
        &[("Content-Type", "text/xml")],
        "<host/>",
    );
    assert_eq!(a.status, 415);
    let a = admin.call(
        "POST",
        "/frontends",
        &[("Content-Type", "application/json")],
        "{",
    );
    assert_eq!(a.status, 400);
    let a = admin.post("/frontends", "host=%");
    assert_eq!(a.status, 400);
    // A client that connects and sends nothing, or half a head, does not block the others.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", admin.port)).unwrap();
    idle.write_all(b"GET /fron").unwrap();
    // Keep-alive: several requests on one connection.
    let mut c = Conn::open(admin.port);
    for _ in 0..3 {
        let r = c.get("127.0.0.1", "/frontends");
        assert_eq!(r.status, 200);
    }
    // HEAD answers without a body.
    let r = c.request("HEAD", "127.0.0.1", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    drop(idle);
}

#[test]
fn the_admin_section_is_validated_and_the_key_censored() {
    let redis = RedisServer::start();
    let dir = TempDir::new("admin-cli");
    let write = |extra: serde_json::Value| {
        let config = config_for(&redis.url(0), free_port(), dir.path(), extra);
        let path = dir.path().join("c.json");
        std::fs::write(&path, config.to_string()).unwrap();
        path.to_string_lossy().to_string()
    };
    let path = write(json!({ "admin": { "port": 9999, "key": "topsecret" },
                             "healthcheck": { "enabled": true, "interval": 2 } }));
    let (code, out, err) = run_cli(&["--dry", "-c", &path], None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("topsecret"), "{out}");
    let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["admin"]["key"], "***");
    assert_eq!(dry["admin"]["address"], "127.0.0.1");
    assert_eq!(dry["admin"]["port"], 9999);
    assert_eq!(dry["healthcheck"]["enabled"], true);
    assert_eq!(dry["healthcheck"]["interval"], 2.0);
    assert_eq!(dry["healthcheck"]["uri"], "/CloudHealthCheck");
    for (extra, key) in [
        (json!({ "admin": { "port": 0 } }), "admin.port"),
        (json!({ "admin": "yes" }), "admin"),
        (
            json!({ "admin": { "address": "no such host.invalid" } }),
            "admin.address",
        ),
        (
            json!({ "healthcheck": { "interval": 0 } }),
            "healthcheck.interval",
        ),
        (
            json!({ "healthcheck": { "method": "get it" } }),
            "healthcheck.method",
        ),
        (
            json!({ "healthcheck": { "uri": "nope" } }),
            "healthcheck.uri",
        ),
        (
            json!({ "healthcheck": { "enabled": true }, "driver": "file:routes.json" }),
            "healthcheck.enabled",
        ),
    ] {
        let path = write(extra.clone());
        let (code, _, err) = run_cli(&["--dry", "-c", &path], None, &[]);
        assert_eq!(code, 1, "{extra}");
        assert!(err.contains(&format!("key `{key}`")), "{extra}: {err}");
    }
    // The admin port must not be a proxy port, and a port held by someone else stops the start-up.
    let port = free_port();
    let config = config_for(
        &redis.url(0),
        port,
        dir.path(),
        json!({ "admin": { "port": port } }),
    );
    std::fs::write(dir.path().join("c.json"), config.to_string()).unwrap();
    let (code, _, err) = run_cli(&["--dry", "-c", &path], None, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("admin.port"), "{err}");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap().port();
    let config = config_for(
        &redis.url(0),
        free_port(),
        dir.path(),
        json!({ "admin": { "port": held } }),
    );
    match Proxy::start_config(TempDir::new("admin-held"), free_port(), &config) {
        Ok(_) => panic!("started on a held admin port"),
        Err(log) => assert!(log.contains("already in use"), "{log}"),
    }
}
