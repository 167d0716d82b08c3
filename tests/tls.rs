//! HTTPS listeners (docs/compatibility.md §7, issue 4): SNI (exact, wildcard, default), certificate sets per listener,
//! chains, encrypted keys, start-up errors, TLS versions, ALPN, hostile handshakes. Certificates are
//! generated per test; a real rustls client reads the certificate served.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::client::Conn;
use common::proxy::run_cli;
use common::tls::{connect, ClientOptions, TestCa};
use common::{free_port, Backend, Proxy, RedisServer, TempDir};
use serde_json::json;

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().to_string()
}

#[test]
fn sni_picks_exact_then_wildcard_then_default() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("www.site.test", "site", &[backend.url()]);
    let ca = TestCa::new();
    let certs = TempDir::new("certs");
    let default = ca.issue_files(certs.path(), "default", &["default.test"]);
    let exact = ca.issue_files(certs.path(), "exact", &["www.site.test"]);
    let wild = ca.issue_files(certs.path(), "wild", &["*.wild.test"]);
    let https_port = free_port();
    let proxy = Proxy::start(
        &redis,
        json!({ "https": {
            "port": https_port, "bind": ["127.0.0.1"],
            "key": path(&default.key), "cert": path(&default.cert),
            "certificates": [
                { "cert": path(&exact.cert), "key": path(&exact.key) },
                { "cert": path(&wild.cert), "key": path(&wild.key) }
            ]
        }}),
    );
    let names = |sni: Option<&str>| {
        let mut opts = ClientOptions::sni(sni.unwrap_or("x"));
        opts.sni = sni.map(str::to_string);
        connect(https_port, opts).unwrap().leaf_names()
    };
    assert_eq!(names(Some("www.site.test")), vec!["www.site.test"]);
    assert_eq!(names(Some("WWW.Site.Test")), vec!["www.site.test"]);
    assert_eq!(names(Some("a.wild.test")), vec!["*.wild.test"]);
    assert_eq!(
        names(Some("deep.a.wild.test")),
        vec!["default.test"],
        "a wildcard covers one label"
    );
    assert_eq!(names(Some("unknown.test")), vec!["default.test"]);
    assert_eq!(names(None), vec!["default.test"]);

    // A request over TLS is proxied with the true scheme and port.
    let mut tls = connect(https_port, ClientOptions::sni("www.site.test")).unwrap();
    assert_eq!(tls.alpn(), None);
    let r = tls.get("www.site.test", "/over-tls");
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        r.seen_header("x-forwarded-protocol").as_deref(),
        Some("https")
    );
    assert_eq!(
        r.seen_header("x-forwarded-port"),
        Some(https_port.to_string())
    );
    // Keep-alive over TLS.
    assert_eq!(tls.get("www.site.test", "/again").status, 200);
    // Plain HTTP keeps working beside it.
    assert_eq!(
        common::get(proxy.port, "www.site.test", "/")
            .seen_header("x-forwarded-proto")
            .as_deref(),
        Some("http")
    );
}

#[test]
fn certificate_folder_chain_and_per_listener_certificates() {
    let redis = RedisServer::start();
    let ca = TestCa::new();
    let dir = TempDir::new("certdir");
    // A .pem holding chain and key, and a .crt/.key pair.
    let (cert_a, key_a) = ca.issue_pem(&["a.folder.test"]);
    std::fs::write(dir.path().join("a.pem"), format!("{cert_a}{key_a}")).unwrap();
    ca.issue_files(dir.path(), "b", &["b.folder.test"]);
    let other = TempDir::new("other");
    let own = ca.issue_files(other.path(), "own", &["own.test"]);
    let ca_file = other.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let (p1, p2) = (free_port(), free_port());
    let _proxy = Proxy::start(
        &redis,
        json!({ "https": {
            "bind": [
                { "address": "127.0.0.1", "port": p1, "certificatesDir": path(dir.path()) },
                { "address": "127.0.0.1", "port": p2, "key": path(&own.key), "cert": path(&own.cert), "ca": path(&ca_file) }
            ]
        }}),
    );
    assert_eq!(
        connect(p1, ClientOptions::sni("a.folder.test"))
            .unwrap()
            .leaf_names(),
        vec!["a.folder.test"]
    );
    assert_eq!(
        connect(p1, ClientOptions::sni("b.folder.test"))
            .unwrap()
            .leaf_names(),
        vec!["b.folder.test"]
    );
    // Listeners serve only their own certificates.
    let c = connect(p2, ClientOptions::sni("a.folder.test")).unwrap();
    assert_eq!(c.leaf_names(), vec!["own.test"]);
    // `ca` is sent as the chain after the leaf.
    assert_eq!(c.chain.len(), 2);
}

#[test]
fn encrypted_key_with_passphrase() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("enc.test", "enc", &[backend.url()]);
    let ca = TestCa::new();
    let dir = TempDir::new("enc");
    let issued = ca.issue_files(dir.path(), "enc", &["enc.test"]);
    let encrypted = dir.path().join("enc.encrypted.key");
    let status = std::process::Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:s3cret",
            "-in",
        ])
        .arg(&issued.key)
        .arg("-out")
        .arg(&encrypted)
        .status()
        .expect("openssl must be installed");
    assert!(status.success());
    assert!(std::fs::read_to_string(&encrypted)
        .unwrap()
        .contains("ENCRYPTED PRIVATE KEY"));
    let port = free_port();
    let https = |pass: Option<&str>| {
        let mut h = json!({ "port": port, "bind": "127.0.0.1", "key": path(&encrypted), "cert": path(&issued.cert) });
        if let Some(p) = pass {
            h["passphrase"] = json!(p);
        }
        h
    };
    let proxy = Proxy::start(&redis, json!({ "https": https(Some("s3cret")) }));
    let mut c = connect(port, ClientOptions::sni("enc.test")).unwrap();
    assert_eq!(c.get("enc.test", "/").status, 200);
    drop(proxy);

    // Wrong or missing passphrase: start-up errors naming the file, also in --dry.
    for (pass, want) in [
        (Some("wrong"), "cannot decrypt the key"),
        (None, "is encrypted: set `passphrase`"),
    ] {
        let dir2 = TempDir::new("enc-bad");
        let config = common::proxy::config_for(
            &redis.url(0),
            free_port(),
            dir2.path(),
            json!({ "https": https(pass) }),
        );
        let cfg_path = dir2.path().join("c.json");
        std::fs::write(&cfg_path, config.to_string()).unwrap();
        for args in [vec!["--dry", "-c"], vec!["-c"]] {
            let mut a = args.clone();
            let p = path(&cfg_path);
            a.push(&p);
            let (code, _, err) = run_cli(&a, None, &[]);
            assert_eq!(code, 1, "{args:?}: {err}");
            assert!(
                err.contains(want) && err.contains("enc.encrypted.key"),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn bad_certificates_and_keys_are_startup_errors() {
    let ca = TestCa::new();
    let dir = TempDir::new("badcerts");
    let good = ca.issue_files(dir.path(), "good", &["good.test"]);
    let other = ca.issue_files(dir.path(), "other", &["other.test"]);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM").unwrap();
    let missing = dir.path().join("missing.crt");
    let cases = [
        (
            json!({ "key": path(&good.key), "cert": path(&missing) }),
            "cannot read the certificate file",
        ),
        (
            json!({ "key": path(&good.key), "cert": path(&garbage) }),
            "holds no certificate",
        ),
        (
            json!({ "key": path(&garbage), "cert": path(&good.cert) }),
            "holds no private key",
        ),
        (
            json!({ "key": path(&other.key), "cert": path(&good.cert) }),
            "does not belong to the certificate",
        ),
        (json!({ "cert": path(&good.cert) }), "without a `key`"),
        (json!({}), "no certificate for this listener"),
        (
            json!({ "certificatesDir": path(&dir.path().join("nope")) }),
            "cannot read",
        ),
    ];
    for (https, want) in cases {
        let mut h = https.clone();
        h["port"] = json!(free_port());
        h["bind"] = json!("127.0.0.1");
        let cfg = json!({ "server": { "accessLog": false }, "http": { "port": free_port(), "bind": "127.0.0.1" }, "https": h });
        let cfg_path = dir.path().join("c.json");
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let (code, _, err) = run_cli(&["-c", &path(&cfg_path)], None, &[]);
        assert_eq!(code, 1, "{https}: {err}");
        assert!(err.contains(want), "{https}: expected {want:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn tls_versions_alpn_and_openssl_only_keys() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("v.test", "v", &[backend.url()]);
    let ca = TestCa::new();
    let dir = TempDir::new("ver");
    let c = ca.issue_files(dir.path(), "v", &["v.test"]);
    let port = free_port();
    let proxy = Proxy::start(
        &redis,
        json!({ "https": { "port": port, "bind": ["127.0.0.1"], "key": path(&c.key), "cert": path(&c.cert),
            "ciphers": "ECDHE-RSA-AES128-GCM-SHA256", "honorCipherOrder": true, "secureProtocol": "TLSv1_2_method" } }),
    );
    assert!(
        proxy
            .log()
            .contains("`https.ciphers` is an OpenSSL setting and is ignored"),
        "{}",
        proxy.log()
    );
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut opts = ClientOptions::sni("v.test");
        opts.versions = vec![version];
        let mut conn = connect(port, opts).unwrap();
        assert_eq!(conn.version(), Some(version.version));
        assert_eq!(conn.get("v.test", "/").status, 200);
    }
    // ALPN: h2 preferred, http/1.1 still offered.
    let mut opts = ClientOptions::sni("v.test");
    opts.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    assert_eq!(connect(port, opts).unwrap().alpn(), Some(b"h2".to_vec()));
    let mut opts = ClientOptions::sni("v.test");
    opts.alpn = vec![b"http/1.1".to_vec()];
    assert_eq!(
        connect(port, opts).unwrap().alpn(),
        Some(b"http/1.1".to_vec())
    );
}

#[test]
fn garbage_and_silent_handshakes_do_not_disturb_others() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("g.test", "g", &[backend.url()]);
    let ca = TestCa::new();
    let dir = TempDir::new("garbage");
    let c = ca.issue_files(dir.path(), "g", &["g.test"]);
    let port = free_port();
    let _proxy = Proxy::start(
        &redis,
        json!({ "https": { "port": port, "bind": ["127.0.0.1"], "key": path(&c.key), "cert": path(&c.cert), "handshakeTimeout": 1 } }),
    );
    let mut good = connect(port, ClientOptions::sni("g.test")).unwrap();
    assert_eq!(good.get("g.test", "/").status, 200);
    // Garbage instead of a ClientHello: dropped at once.
    let mut garbage = Conn::over(TcpStream::connect(("127.0.0.1", port)).unwrap());
    garbage
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    garbage
        .stream
        .write_all(b"GET / HTTP/1.1\r\nHost: g.test\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    let _ = garbage.read_to_close();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "garbage kept open {:?}",
        start.elapsed()
    );
    // Silence: dropped after the handshake timeout.
    let mut silent = Conn::over(TcpStream::connect(("127.0.0.1", port)).unwrap());
    silent
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let start = Instant::now();
    let _ = silent.read_to_close();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Many of both, while the good client keeps working.
    let hostile: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            if i % 2 == 0 {
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3]);
            }
            s
        })
        .collect();
    for _ in 0..10 {
        assert_eq!(good.get("g.test", "/").status, 200);
    }
    drop(hostile);
}
