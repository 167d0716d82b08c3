//! PROXY protocol v1/v2 on `proxyProtocol` listeners and `server.trustedProxies` (README, "Behind a
//! load balancer: PROXY protocol"): real sockets to the real binary, headers written byte for byte
//! (whole, split, malformed, late), then HTTP or a real TLS handshake; the backend's echo and the access
//! log say which client address the proxy took.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::Conn;
use common::tls::{insecure_client_config, TestCa};
use common::{free_port, wait_until, Backend, Proxy, RedisServer, TempDir};
use hipache_tpc::dataplane::net::proxy_header::{encode_v1, encode_v2};
use serde_json::json;

struct Setup {
    _redis: RedisServer,
    _backend: Backend,
    _certs: TempDir,
    proxy: Proxy,
    https_port: u16,
}

/// A proxy whose plain and HTTPS listeners both expect PROXY headers, with a 1 s headerTimeout, and
/// `extra` merged into its configuration.
fn setup(extra: serde_json::Value) -> Setup {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("app.test", "app", &[backend.url()]);
    let ca = TestCa::new();
    let certs = TempDir::new("certs");
    let cert = ca.issue_files(certs.path(), "app", &["app.test"]);
    let https_port = free_port();
    let mut config = json!({
        "server": { "headerTimeout": 1 },
        "http": { "proxyProtocol": true },
        "https": {
            "port": https_port, "bind": [{ "address": "127.0.0.1", "proxyProtocol": true }],
            "key": cert.key.to_string_lossy(), "cert": cert.cert.to_string_lossy()
        }
    });
    common::proxy::merge(&mut config, extra);
    let proxy = Proxy::start(&redis, config);
    Setup {
        _redis: redis,
        _backend: backend,
        _certs: certs,
        proxy,
        https_port,
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A connection that has sent `header` (and nothing else yet).
fn with_header(port: u16, header: &[u8]) -> Conn {
    let mut c = Conn::open(port);
    c.send(header);
    c
}

fn get_with(c: &mut Conn, headers: &[(&str, &str)]) -> common::Response {
    c.request("GET", "app.test", "/", headers, b"")
}

#[test]
fn v1_and_v2_headers_name_the_client() {
    let s = setup(json!({}));
    let port = s.proxy.port;
    let dst = sa("192.0.2.80:80");

    let mut c = with_header(port, encode_v1(sa("203.0.113.7:4000"), dst).as_bytes());
    let r = get_with(&mut c, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("203.0.113.7"));
    // Keep-alive: the second request on the connection has the same client, no second header.
    let r = get_with(&mut c, &[]);
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("203.0.113.7"));

    let mut c = with_header(
        port,
        encode_v1(sa("[2001:db8::42]:4000"), sa("[2001:db8::1]:80")).as_bytes(),
    );
    let r = get_with(&mut c, &[]);
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("2001:db8::42"));

    // UNKNOWN: the socket address.
    let mut c = with_header(port, b"PROXY UNKNOWN\r\n");
    assert_eq!(
        get_with(&mut c, &[]).seen_header("x-real-ip").as_deref(),
        Some("127.0.0.1")
    );

    // v2 PROXY over IPv4 and IPv6, with TLVs (ALPN, authority, an unknown type, NOOP).
    let tlvs: Vec<u8> = [
        &[0x01, 0, 2, b'h', b'2'][..],
        &[0x02, 0, 8],
        b"app.test",
        &[0xe0, 0, 3, 1, 2, 3],
        &[0x04, 0, 0],
    ]
    .concat();
    let mut c = with_header(
        port,
        &encode_v2(Some((sa("198.51.100.9:1234"), dst)), &tlvs),
    );
    assert_eq!(
        get_with(&mut c, &[])
            .seen_header("x-forwarded-for")
            .as_deref(),
        Some("198.51.100.9")
    );
    let mut c = with_header(
        port,
        &encode_v2(
            Some((sa("[2001:db8::99]:1"), sa("[2001:db8::1]:80"))),
            &tlvs,
        ),
    );
    assert_eq!(
        get_with(&mut c, &[]).seen_header("x-real-ip").as_deref(),
        Some("2001:db8::99")
    );
    // v2 LOCAL (a load balancer's health check): the socket address.
    let mut c = with_header(port, &encode_v2(None, &[]));
    assert_eq!(
        get_with(&mut c, &[]).seen_header("x-real-ip").as_deref(),
        Some("127.0.0.1")
    );

    // Header and request in one write: the request bytes after the header are not lost.
    let mut c = Conn::open(port);
    let mut both = encode_v1(sa("203.0.113.8:1"), dst).into_bytes();
    both.extend_from_slice(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n");
    c.send(&both);
    let r = c.read_response(false).unwrap();
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("203.0.113.8"));

    // The access log shows the PROXY address.
    let lines = s.proxy.access_log_lines(8);
    assert!(
        lines.iter().any(|l| l.starts_with("203.0.113.7 - - [")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("2001:db8::99 - - [")),
        "{lines:?}"
    );
}

#[test]
fn a_header_split_across_writes_is_reassembled() {
    let s = setup(json!({}));
    let v1 = encode_v1(sa("203.0.113.50:9"), sa("192.0.2.1:80")).into_bytes();
    let v2 = encode_v2(
        Some((sa("203.0.113.51:9"), sa("192.0.2.1:80"))),
        &[0x04, 0, 1, 0],
    );
    for (header, want) in [(v1, "203.0.113.50"), (v2, "203.0.113.51")] {
        let mut c = Conn::open(s.proxy.port);
        for chunk in header.chunks(5) {
            c.send(chunk);
            c.stream.flush().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        let r = get_with(&mut c, &[]);
        assert_eq!(r.seen_header("x-real-ip").as_deref(), Some(want));
    }
}

#[test]
fn bad_missing_and_late_headers_are_closed_without_an_answer() {
    let s = setup(json!({}));
    let port = s.proxy.port;
    let closed_silently = |bytes: &[u8], within: Duration| {
        let mut c = Conn::open(port);
        c.send(bytes);
        let start = Instant::now();
        assert!(
            c.is_closed_within(within),
            "{:?} was not closed",
            String::from_utf8_lossy(bytes)
        );
        // Closed, not answered: nothing was read before EOF.
        assert!(
            c.read_to_close().is_empty(),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        start.elapsed()
    };
    // A plain HTTP request where a header must be: refused at once.
    let t = closed_silently(
        b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(t < Duration::from_millis(900), "{t:?}");
    // Garbage, a malformed v1 line, a v2 signature with a bad version, an over-long v1 line.
    closed_silently(b"\x00\x01garbage", Duration::from_secs(5));
    closed_silently(b"PROXY TCP4 1.2.3.4 nope 1 2\r\n", Duration::from_secs(5));
    let mut bad_v2 = encode_v2(Some((sa("1.2.3.4:1"), sa("5.6.7.8:2"))), &[]);
    bad_v2[12] = 0x31;
    closed_silently(&bad_v2, Duration::from_secs(5));
    let long = format!("PROXY TCP4 {}", "9".repeat(120));
    let t = closed_silently(long.as_bytes(), Duration::from_secs(5));
    assert!(
        t < Duration::from_millis(900),
        "over-long line waited {t:?}"
    );
    // A v2 header declaring more payload than the bound.
    let mut huge = encode_v2(Some((sa("1.2.3.4:1"), sa("5.6.7.8:2"))), &[]);
    huge[14] = 0xff;
    closed_silently(&huge, Duration::from_secs(5));

    // Nothing at all, and half a header: closed after headerTimeout (1 s), not before.
    for partial in [&b""[..], b"PROXY TCP4 1.2.3.4 "] {
        let mut c = Conn::open(port);
        c.send(partial);
        let start = Instant::now();
        assert!(c.is_closed_within(Duration::from_secs(5)));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(4),
            "closed after {took:?}"
        );
    }
    assert!(wait_until(Duration::from_secs(5), || s
        .proxy
        .log()
        .contains("PROXY protocol header")));
}

#[test]
fn peers_outside_trusted_proxies_are_closed() {
    let s = setup(json!({ "server": { "trustedProxies": ["10.0.0.0/8", "2001:db8::/32"] } }));
    let mut c = with_header(
        s.proxy.port,
        encode_v1(sa("203.0.113.7:4000"), sa("192.0.2.1:80")).as_bytes(),
    );
    let _ = c
        .stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert!(c.is_closed_within(Duration::from_secs(5)));
    assert!(c.read_to_close().is_empty());
    assert!(wait_until(Duration::from_secs(5), || s
        .proxy
        .log()
        .contains("not in server.trustedProxies")));
}

#[test]
fn forwarded_headers_are_trusted_only_from_trusted_proxies() {
    let s = setup(json!({ "server": { "trustedProxies": ["127.0.0.0/8"] } }));
    let port = s.proxy.port;
    let dst = sa("192.0.2.1:80");
    let forged = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
    ];
    // A client (named by the header) outside trustedProxies: its X-Forwarded-* are not trusted.
    let mut c = with_header(port, encode_v1(sa("203.0.113.7:1"), dst).as_bytes());
    let r = get_with(&mut c, &forged);
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("203.0.113.7"));
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
    // A client inside (another proxy on 127.0.0.0/8): kept.
    let mut c = with_header(port, encode_v1(sa("127.0.0.9:1"), dst).as_bytes());
    let r = get_with(&mut c, &forged);
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("6.6.6.6, 127.0.0.9")
    );
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("6.6.6.6"));
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
}

#[test]
fn https_listener_reads_the_header_before_the_tls_handshake() {
    let s = setup(json!({}));
    for whole in [false, true] {
        let mut tcp = TcpStream::connect(("127.0.0.1", s.https_port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let header = encode_v2(Some((sa("198.51.100.77:5"), sa("192.0.2.1:443"))), &[]);
        let config: Arc<rustls::ClientConfig> = insecure_client_config(Vec::new());
        let name = rustls::pki_types::ServerName::try_from("app.test").unwrap();
        let mut tls = rustls::ClientConnection::new(config, name).unwrap();
        if whole {
            // The header and the ClientHello in one segment, as load balancers send them.
            let mut hello = Vec::new();
            tls.write_tls(&mut hello).unwrap();
            let mut both = header.clone();
            both.extend_from_slice(&hello);
            tcp.write_all(&both).unwrap();
        } else {
            tcp.write_all(&header).unwrap();
        }
        let mut stream = rustls::StreamOwned::new(tls, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        let mut c = Conn::over(stream);
        let r = c.request("GET", "app.test", "/", &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("198.51.100.77"));
        assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    }
    // A TLS ClientHello without a header: closed.
    let mut tcp = TcpStream::connect(("127.0.0.1", s.https_port)).unwrap();
    let config = insecure_client_config(Vec::new());
    let name = rustls::pki_types::ServerName::try_from("app.test").unwrap();
    let mut tls = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    tcp.write_all(&hello).unwrap();
    let mut c = Conn::from_stream(tcp);
    assert!(c.is_closed_within(Duration::from_secs(5)));
}

#[test]
fn a_bad_trusted_proxy_is_a_config_error_naming_it() {
    let dir = TempDir::new("cfg");
    let path = dir.path().join("c.json");
    std::fs::write(
        &path,
        serde_json::to_string(&json!({
            "server": { "accessLog": false, "trustedProxies": ["10.0.0.0/8", "10.0.0.1/8"] },
            "http": { "port": free_port(), "bind": ["127.0.0.1"], "proxyProtocol": true },
            "driver": "redis://127.0.0.1:1"
        }))
        .unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(common::proxy::BIN)
        .arg("--dry")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("server.trustedProxies[1]") && text.contains("10.0.0.1/8"),
        "{text}"
    );
}
