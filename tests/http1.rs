//! HTTP/1.1 on both sides, through the real proxy: keep-alive, streaming with bounded memory, message
//! framing, pipelining, HTTP/1.0, Expect, malformed input, header rewriting, error pages, access log.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::backend::{fnv, pattern, FNV_START};
use common::client::Conn;
use common::{get, wait_until, Backend, Proxy, RedisServer};
use serde_json::json;

struct Setup {
    _redis: RedisServer,
    backend: Backend,
    proxy: Proxy,
}

fn setup(extra: serde_json::Value) -> Setup {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("app.test", "app", &[backend.url()]);
    let proxy = Proxy::start(&redis, extra);
    Setup {
        _redis: redis,
        backend,
        proxy,
    }
}

#[test]
fn keep_alive_is_reused_on_both_sides() {
    let s = setup(json!({ "server": { "workers": 1 } }));
    let mut c = Conn::open(s.proxy.port);
    for i in 0..50 {
        let r = c.get("app.test", &format!("/n/{i}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.echo("path"), Some(format!("/n/{i}")));
    }
    assert_eq!(
        s.backend.connections(),
        1,
        "one backend connection for 50 requests on one client connection"
    );
    // New client connections reuse the pooled backend connection too.
    for _ in 0..20 {
        assert_eq!(get(s.proxy.port, "app.test", "/").status, 200);
    }
    assert_eq!(s.backend.connections(), 1);
    assert_eq!(s.backend.requests(), 70);
}

/// One worker with an admin listener, in front of one backend for `app.test`; `splice`: `server.splice`.
fn setup_with_admin(splice: bool) -> (RedisServer, Backend, Proxy, common::admin::Admin) {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("app.test", "app", &[backend.url()]);
    let server = json!({ "server": { "workers": 1, "splice": splice } });
    let (proxy, admin) = common::admin::start_with_admin(&redis, json!({}), server);
    (redis, backend, proxy, admin)
}

/// The value of the sample `name` (with its labels) in `/metrics`.
fn sample(admin: &common::admin::Admin, name: &str) -> u64 {
    let text = admin.get("/metrics").response.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Large bodies of known length between plain sockets are spliced (README "Large responses"), intact,
/// and both connections go on afterwards: the client's carries the next request, the backend's goes
/// back to its pool (also under `TEST_PROXY_IO=epoll`).
#[test]
fn spliced_bodies_leave_both_connections_reusable() {
    let (_redis, backend, proxy, admin) = setup_with_admin(true);
    let mut c = Conn::open(proxy.port);
    let sizes = [3_000_000usize, 70_000, 100, 5_000_000, 65_536 + 1000];
    for (i, size) in sizes.iter().enumerate() {
        let r = c.get("app.test", &format!("/size/{size}"));
        assert_eq!(r.status, 200, "response {i}");
        assert!(
            r.body == pattern(*size),
            "response {i} ({size} bytes) corrupted"
        );
        // A small request between the large ones, on the same connection.
        let r = c.get("app.test", &format!("/n/{i}"));
        assert_eq!(r.echo("path"), Some(format!("/n/{i}")));
    }
    assert_eq!(
        backend.connections(),
        1,
        "the backend connection of spliced bodies was not reused"
    );
    let count = |end: &str| {
        sample(
            &admin,
            &format!("hipache_response_bodies_spliced_total{{end=\"{end}\"}}"),
        )
    };
    // The 3 MB and 5 MB bodies at least (the smaller ones may all come with the head), spliced to
    // their end or, when this client fell behind (a busy machine), until then.
    let (to_end, fell_back) = (count("client"), count("read_ahead"));
    assert!(
        to_end + fell_back >= 2,
        "spliced bodies: {to_end} to their end, {fell_back} until the client fell behind"
    );
}

/// Large uploads of known length from a plain client are spliced to the backend too (README "Large
/// responses"): intact, counted, and both connections go on afterwards.
#[test]
fn spliced_uploads_arrive_intact_and_leave_both_connections_reusable() {
    let (_redis, backend, proxy, admin) = setup_with_admin(true);
    let mut c = Conn::open(proxy.port);
    for (i, size) in [20_000_000usize, 3_000_000, 70_000].iter().enumerate() {
        let body = pattern(*size);
        let r = c.request("POST", "app.test", &format!("/up/{i}"), &[], &body);
        assert_eq!(r.status, 200, "upload {i}");
        assert_eq!(r.echo("body-length"), Some(size.to_string()), "upload {i}");
        let mut want = FNV_START;
        fnv(&mut want, &body);
        assert_eq!(
            r.echo("body-hash"),
            Some(format!("{want:016x}")),
            "upload {i} ({size} bytes) corrupted"
        );
        let r = c.get("app.test", &format!("/n/{i}"));
        assert_eq!(r.echo("path"), Some(format!("/n/{i}")));
    }
    assert_eq!(
        backend.connections(),
        1,
        "the backend connection was not reused"
    );
    let spliced = sample(&admin, "hipache_request_bodies_spliced_total");
    // The 20 MB and 3 MB uploads at least (past requestBufferSize, the rest is spliced).
    assert!(spliced >= 2, "spliced uploads: {spliced}");
}

/// `server.splice: false`: the same large download and upload arrive intact, and nothing is spliced.
#[test]
fn splicing_can_be_turned_off() {
    let (_redis, _backend, proxy, admin) = setup_with_admin(false);
    let mut c = Conn::open(proxy.port);
    let r = c.get("app.test", "/size/3000000");
    assert!(r.body == pattern(3_000_000), "download corrupted");
    let body = pattern(3_000_000);
    let r = c.request("POST", "app.test", "/up", &[], &body);
    assert_eq!(r.echo("body-length"), Some("3000000".to_string()));
    for name in [
        "hipache_response_bodies_spliced_total{end=\"client\"}",
        "hipache_response_bodies_spliced_total{end=\"read_ahead\"}",
        "hipache_request_bodies_spliced_total",
    ] {
        assert_eq!(sample(&admin, name), 0, "{name} with splicing off");
    }
}

#[test]
fn backend_closing_idle_connections_is_invisible_to_clients() {
    let s = setup(json!({ "server": { "workers": 1 } }));
    let mut c = Conn::open(s.proxy.port);
    assert_eq!(c.get("app.test", "/").status, 200);
    for _ in 0..5 {
        // The backend drops its keep-alive connections (like a short keep-alive timeout would).
        s.backend.close_connections();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.get("app.test", "/").status, 200);
    }
}

const BIG: usize = 100 * 1024 * 1024;

#[test]
fn hundred_megabyte_chunked_upload_streams_in_bounded_memory() {
    let s = setup(json!({}));
    let rss_before = s.proxy.proc_status_kb("VmRSS");
    let mut stream = TcpStream::connect(("127.0.0.1", s.proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let piece = pattern(256 * 1024);
    let mut hash = FNV_START;
    let mut sent = 0;
    while sent < BIG {
        let n = piece.len().min(BIG - sent);
        stream.write_all(format!("{n:x}\r\n").as_bytes()).unwrap();
        stream.write_all(&piece[..n]).unwrap();
        stream.write_all(b"\r\n").unwrap();
        fnv(&mut hash, &piece[..n]);
        sent += n;
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
    let mut c = Conn::from_stream(stream);
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200, "{}", s.proxy.log());
    assert_eq!(r.echo("body-length"), Some(BIG.to_string()));
    assert_eq!(r.echo("body-hash"), Some(format!("{hash:016x}")));
    let peak = s.proxy.proc_status_kb("VmHWM");
    assert!(
        peak < rss_before + 40 * 1024,
        "peak RSS {peak} kB (before: {rss_before} kB) for a 100 MB upload"
    );
}

#[test]
fn hundred_megabyte_download_streams_in_bounded_memory() {
    let s = setup(json!({}));
    let rss_before = s.proxy.proc_status_kb("VmRSS");
    let mut stream = TcpStream::connect(("127.0.0.1", s.proxy.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(format!("GET /size/{BIG} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
        .unwrap();
    // Read the head, then hash the body as it streams.
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = Vec::new();
    let head_end = loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("Content-Length: {BIG}")), "{head}");
    let expected = pattern(BIG);
    let mut hash = FNV_START;
    fnv(&mut hash, &got[head_end..]);
    let mut total = got.len() - head_end;
    while total < BIG {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended after {total} bytes");
        fnv(&mut hash, &buf[..n]);
        total += n;
    }
    let mut want = FNV_START;
    fnv(&mut want, &expected);
    assert_eq!(total, BIG);
    assert_eq!(hash, want, "body corrupted");
    let peak = s.proxy.proc_status_kb("VmHWM");
    assert!(
        peak < rss_before + 40 * 1024,
        "peak RSS {peak} kB (before: {rss_before} kB) for a 100 MB download"
    );
}

#[test]
fn chunked_and_close_delimited_responses() {
    let s = setup(json!({}));
    let mut c = Conn::open(s.proxy.port);
    // Chunked, with extensions and a trailer, forwarded as chunked to an HTTP/1.1 client.
    let r = c.get("app.test", "/chunked/100000");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, pattern(100_000));
    assert_eq!(
        r.trailers,
        vec![("X-Checksum".to_string(), "done".to_string())]
    );
    // The connection is still usable.
    assert_eq!(c.get("app.test", "/").status, 200);
    // Delimited by close: the client connection closes after it.
    let r = c.get("app.test", "/close/5000");
    assert_eq!(r.body, pattern(5000));
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn head_204_304_have_no_body_and_keep_the_connection() {
    let s = setup(json!({}));
    let mut c = Conn::open(s.proxy.port);
    let r = c.request("HEAD", "app.test", "/size/12345", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("12345"));
    let r = c.get("app.test", "/204");
    assert_eq!(r.status, 204);
    let r = c.get("app.test", "/304");
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some("\"x\""));
    // A HEAD on a chunked resource: no body either.
    let r = c.request("HEAD", "app.test", "/chunked/10", &[], b"");
    assert_eq!(r.status, 200);
    // If any of these had carried a body, this response would be garbage.
    let r = c.get("app.test", "/after");
    assert_eq!(r.echo("path").as_deref(), Some("/after"));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = setup(json!({}));
    let mut c = Conn::open(s.proxy.port);
    c.send(
        b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello\
          POST /three HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /four HTTP/1.1\r\nHost: app.test\r\n\r\n",
    );
    for (path, len) in [("/one", 0), ("/two", 5), ("/three", 3), ("/four", 0)] {
        let r = c.read_response(false).unwrap();
        assert_eq!(r.echo("path").as_deref(), Some(path));
        assert_eq!(r.echo("body-length"), Some(len.to_string()));
    }
}

#[test]
fn http10_clients() {
    let s = setup(json!({}));
    // No keep-alive unless asked; the backend still gets HTTP/1.1 with keep-alive.
    let mut c = Conn::open(s.proxy.port);
    c.send(b"GET /a HTTP/1.0\r\nHost: app.test\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("version").as_deref(), Some("1.1"));
    assert!(c.is_closed_within(Duration::from_secs(2)));
    // Keep-alive on request.
    let mut c = Conn::open(s.proxy.port);
    c.send(b"GET /a HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    // A chunked response is decoded for an HTTP/1.0 client and delimited by close.
    c.send(b"GET /chunked/20000 HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert!(r.header("transfer-encoding").is_none());
    assert_eq!(r.body, pattern(20_000));
}

#[test]
fn expect_100_continue() {
    let s = setup(json!({}));
    let mut c = Conn::open(s.proxy.port);
    c.send(
        b"PUT /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = c.read_one(false).unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"hello world");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.echo("body-length").as_deref(), Some("11"));
    assert!(
        r.seen_header("expect").is_none(),
        "Expect is answered by the proxy, not forwarded"
    );
    // An unknown host gets its 400 without a 100 first.
    let mut c = Conn::open(s.proxy.port);
    c.send(b"PUT /up HTTP/1.1\r\nHost: nope.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(c.read_one(false).unwrap().status, 400);
}

/// Sends raw bytes on a new connection; returns (status, closed afterwards).
fn raw_status(port: u16, raw: &[u8]) -> (u16, bool) {
    let mut c = Conn::open(port);
    c.send(raw);
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", String::from_utf8_lossy(raw)));
    (r.status, c.is_closed_within(Duration::from_secs(3)))
}

#[test]
fn malformed_requests_get_400_or_431_and_are_closed_without_hurting_others() {
    let s = setup(json!({ "server": { "maxHeaderSize": 4096 } }));
    let p = s.proxy.port;
    // A good client with a keep-alive connection open throughout.
    let mut good = Conn::open(p);
    assert_eq!(good.get("app.test", "/").status, 200);
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: app.test\r\n{}\r\n",
        "X-H: v\r\n".repeat(200)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("CL with TE", b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("differing CL", b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), 400),
        ("bad CL", b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5x\r\n\r\nhello".to_vec(), 400),
        ("bad chunk size", b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(), 400),
        ("chunk without CRLF", b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n".to_vec(), 400),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A: a\rb\r\n\r\n".to_vec(), 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: app.test\r\nX-A: a\r\n folded\r\n\r\n".to_vec(), 400),
        ("bad request line", b"GET  / HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(), 400),
        ("bad version", b"GET / HTTP/9.9\r\nHost: app.test\r\n\r\n".to_vec(), 400),
        ("bad target", b"GET nopath HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(), 400),
        ("two Host", b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: other\r\n\r\n".to_vec(), 400),
        ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("head too large", long_header.into_bytes(), 431),
        ("too many headers", many_headers.into_bytes(), 431),
        ("unknown transfer coding", b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 501),
    ];
    for (name, raw, want) in cases {
        let (status, closed) = raw_status(p, &raw);
        assert_eq!(status, want, "{name}");
        assert!(closed, "{name}: connection must be closed");
    }
    // None of that reached the backend, and the good client is unaffected.
    assert_eq!(good.get("app.test", "/still").status, 200);
    assert_eq!(s.backend.requests(), 2);
}

#[test]
fn slow_header_client_is_dropped_after_the_header_timeout() {
    let s = setup(json!({ "server": { "headerTimeout": 1 } }));
    let mut c = Conn::open(s.proxy.port);
    c.send(b"GET / HTTP/1.1\r\nHost: app");
    let start = Instant::now();
    assert!(c.is_closed_within(Duration::from_secs(4)));
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[test]
fn forwarded_and_hop_by_hop_headers() {
    let s = setup(json!({}));
    let mut c = Conn::open(s.proxy.port);
    let r = c.request(
        "GET",
        "App.Test:8080",
        "/h",
        &[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Port", "443"),
            ("Connection", "keep-alive, X-Private"),
            ("X-Private", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic x"),
            ("TE", "trailers"),
        ],
        b"",
    );
    assert_eq!(
        r.seen_header("host").as_deref(),
        Some("App.Test:8080"),
        "Host reaches the backend unchanged"
    );
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("1.2.3.4, 127.0.0.1")
    );
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        r.seen_header("x-forwarded-protocol").as_deref(),
        Some("http")
    );
    assert_eq!(
        r.seen_header("x-forwarded-port"),
        Some(s.proxy.port.to_string())
    );
    for gone in [
        "x-private",
        "keep-alive",
        "upgrade",
        "proxy-authorization",
        "te",
        "connection",
    ] {
        assert_eq!(r.seen_header(gone), None, "{gone} must not be forwarded");
    }
    // Hop-by-hop headers of the response are not passed on either.
    let r = c.get("app.test", "/hop-headers");
    assert_eq!(r.header("x-kept"), Some("yes"));
    for gone in ["x-hop", "keep-alive", "proxy-connection"] {
        assert!(r.header(gone).is_none(), "{gone} leaked to the client");
    }
    assert!(r.header("connection").is_none());
}

#[test]
fn trusted_forwarded_headers_option() {
    let s = setup(json!({ "server": { "trustForwardedHeaders": true } }));
    let r = Conn::open(s.proxy.port).request(
        "GET",
        "app.test",
        "/",
        &[("X-Real-IP", "6.6.6.6"), ("X-Forwarded-Proto", "https")],
        b"",
    );
    assert_eq!(r.seen_header("x-real-ip").as_deref(), Some("6.6.6.6"));
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        r.seen_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}

#[test]
fn debug_headers_only_with_server_debug() {
    let off = setup(json!({}));
    let r = Conn::open(off.proxy.port).request("GET", "app.test", "/", &[("X-Debug", "1")], b"");
    assert!(r.header("x-debug-backend-url").is_none());
    let on = setup(json!({ "server": { "debug": true } }));
    let r = Conn::open(on.proxy.port).request("GET", "app.test", "/", &[("X-Debug", "1")], b"");
    assert_eq!(
        r.header("x-debug-backend-url"),
        Some(on.backend.url().as_str())
    );
    assert_eq!(r.header("x-debug-vhost"), Some("app"));
    assert_eq!(r.header("x-debug-frontend-key"), Some("app.test"));
    assert!(r.header("x-debug-time-total").is_some());
    let r = Conn::open(on.proxy.port).request("GET", "nope.test", "/", &[("X-Debug", "1")], b"");
    assert_eq!(r.status, 400);
    assert!(r.header("x-debug-error").is_some());
    // Without X-Debug, nothing.
    let r = get(on.proxy.port, "app.test", "/");
    assert!(r.header("x-debug-backend-url").is_none());
}

#[test]
fn static_error_pages_are_read_live() {
    let pages = common::TempDir::new("pages");
    std::fs::write(pages.path().join("error_400.html"), "custom four hundred").unwrap();
    let s = setup(json!({ "server": { "staticDir": pages.path().to_string_lossy() } }));
    let r = get(s.proxy.port, "nope.test", "/");
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), "custom four hundred");
    assert_eq!(r.header("content-length"), Some("19"));
    // error_default.html covers other codes; edits show up without a restart.
    std::fs::write(pages.path().join("error_default.html"), "default page v1").unwrap();
    assert!(wait_until(Duration::from_secs(3), || {
        let mut c = Conn::open(s.proxy.port);
        c.send(b"GET / HTTP/1.1\r\n\r\n"); // no Host: 400 page
        let _ = c.read_response(false);
        std::fs::write(pages.path().join("error_400.html"), "custom v2").unwrap();
        get(s.proxy.port, "nope.test", "/").text() == "custom v2"
    }));
}

#[test]
fn access_log_lines_and_reopen_on_sigusr1() {
    let s = setup(json!({}));
    let mut c = Conn::open(s.proxy.port);
    c.request(
        "GET",
        "app.test",
        "/logged?x=\"1\"",
        &[("Referer", "http://ref/"), ("User-Agent", "tester/1.0")],
        b"",
    );
    c.get("nope.test", "/unknown");
    let lines = s.proxy.access_log_lines(2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok = &lines[0];
    assert!(ok.starts_with("127.0.0.1 - - ["), "{ok}");
    assert!(
        ok.contains("] \"GET /logged?x=\\x221\\x22 HTTP/1.1\" 200 "),
        "{ok}"
    );
    assert!(
        ok.contains(" \"http://ref/\" \"tester/1.0\" \"app\" "),
        "{ok}"
    );
    let fields: Vec<&str> = ok.rsplitn(3, ' ').collect();
    assert!(
        fields[0].parse::<f64>().is_ok() && fields[1].parse::<f64>().is_ok(),
        "{ok}"
    );
    let err = &lines[1];
    assert!(
        err.contains("\"GET /unknown HTTP/1.1\" 400 ") && err.contains("\"-\" "),
        "{err}"
    );

    // Rotation: move the file away, SIGUSR1, new lines go to a new file.
    let log_path = s.proxy.dir.path().join("access.log");
    std::fs::rename(&log_path, s.proxy.dir.path().join("access.log.1")).unwrap();
    s.proxy.signal(libc::SIGUSR1);
    assert!(wait_until(Duration::from_secs(3), || {
        c.get("app.test", "/after-rotation");
        std::fs::read_to_string(&log_path).is_ok_and(|t| t.contains("/after-rotation"))
    }));
}

#[test]
fn an_idle_keep_alive_connection_costs_little_memory() {
    // Each idle connection holds its task and a head buffer (8.5 KiB here at the time of writing); a
    // task grown by large, inlined states (the TLS and HTTP/2 branches) took it to 15.6 KiB once, which
    // the 12 KiB bound catches (the bench's target is 16 KiB with its own measurement). 800
    // connections keep the test within a 1024-descriptor limit.
    let s = setup(json!({ "server": { "workers": 1, "accessLog": false } }));
    let open = |n: usize| -> Vec<Conn> {
        (0..n)
            .map(|_| {
                let mut c = Conn::open(s.proxy.port);
                assert_eq!(c.get("app.test", "/").status, 200);
                c
            })
            .collect()
    };
    let warm = open(100);
    drop(warm);
    std::thread::sleep(Duration::from_millis(200));
    let before = s.proxy.proc_status_kb("VmRSS");
    let idle = open(800);
    std::thread::sleep(Duration::from_millis(200));
    let during = s.proxy.proc_status_kb("VmRSS");
    let per_conn = (during.saturating_sub(before)) as f64 / idle.len() as f64;
    eprintln!("idle connections: {per_conn:.1} KiB each (RSS {before} -> {during} kB)");
    assert!(
        per_conn <= 12.0,
        "{per_conn:.1} KiB per idle connection (RSS {before} -> {during} kB)"
    );
    // Still served.
    let mut last = idle.into_iter().last().unwrap();
    assert_eq!(last.get("app.test", "/").status, 200);
}

#[test]
fn connections_that_come_and_go_leave_no_memory_behind() {
    let s = setup(json!({ "server": { "workers": 1, "accessLog": false } }));
    let churn = |n: usize| {
        for i in 0..n {
            let mut c = Conn::open(s.proxy.port);
            // Idle a moment before the request, so the connection waits on the idle path.
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            assert_eq!(c.get("app.test", "/").status, 200);
        }
    };
    churn(1000);
    let warm = s.proxy.proc_status_kb("VmRSS");
    churn(5000);
    let after = s.proxy.proc_status_kb("VmRSS");
    // A few bytes kept per connection would show as megabytes here.
    assert!(
        after < warm + 3 * 1024,
        "RSS grew from {warm} kB to {after} kB over 5000 connections"
    );
}
