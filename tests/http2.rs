//! HTTP/2 for clients (issue 9, docs/compatibility.md §11): h2c with prior knowledge and h2 over TLS, many concurrent
//! streams to several frontends, 10 MB bodies both ways, a slow stream beside fast ones, flow control,
//! error statuses, header conversion, malformed frames, oversized headers, graceful shutdown.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::backend::{fnv, pattern, FNV_START};
use common::h2client::{connect_h2_tls, connect_h2c, connect_h2c_with, request, runtime};
use common::tls::TestCa;
use common::{free_port, Backend, Proxy, RedisServer, TempDir};
use serde_json::json;

struct Setup {
    redis: RedisServer,
    _backends: Vec<Backend>,
    proxy: Proxy,
    https_port: u16,
    _certs: TempDir,
}

fn setup(extra: serde_json::Value) -> Setup {
    let redis = RedisServer::start();
    let backends: Vec<Backend> = ["a", "b", "c"].iter().map(|n| Backend::start(n)).collect();
    for b in &backends {
        redis.set_frontend(&format!("{}.test", b.name), &b.name, &[b.url()]);
    }
    let ca = TestCa::new();
    let certs = TempDir::new("h2certs");
    let cert = ca.issue_files(certs.path(), "h2", &["*.test"]);
    let https_port = free_port();
    let mut config = json!({ "https": { "port": https_port, "bind": ["127.0.0.1"],
        "key": cert.key.to_string_lossy(), "cert": cert.cert.to_string_lossy() } });
    common::proxy::merge(&mut config, extra);
    let proxy = Proxy::start(&redis, config);
    Setup {
        redis,
        _backends: backends,
        proxy,
        https_port,
        _certs: certs,
    }
}

#[test]
fn many_concurrent_streams_to_several_frontends_over_h2c_and_tls() {
    let s = setup(json!({}));
    let rt = runtime();
    rt.block_on(async {
        for tls in [false, true] {
            let send = if tls {
                connect_h2_tls(s.https_port, "a.test").await.unwrap()
            } else {
                connect_h2c(s.proxy.port).await.unwrap()
            };
            // One exchange first, so the server's SETTINGS (max concurrent streams) are known before
            // 300 streams are opened; streams beyond the limit would be refused (REFUSED_STREAM).
            assert_eq!(
                request(&send, "GET", "a.test", "/first", &[], None)
                    .await
                    .unwrap()
                    .status,
                200
            );
            let mut tasks = Vec::new();
            for i in 0..300 {
                let send = send.clone();
                tasks.push(tokio::spawn(async move {
                    let name = ["a", "b", "c"][i % 3];
                    let r = request(
                        &send,
                        "GET",
                        &format!("{name}.test"),
                        &format!("/s{i}"),
                        &[],
                        None,
                    )
                    .await
                    .unwrap();
                    (name, i, r)
                }));
            }
            for t in tasks {
                let (name, i, r) = t.await.unwrap();
                assert_eq!(r.status, 200);
                assert_eq!(r.backend(), name);
                assert_eq!(r.echo("path"), Some(format!("/s{i}")));
                assert_eq!(
                    r.seen_header("x-forwarded-proto").as_deref(),
                    Some(if tls { "https" } else { "http" })
                );
                assert_eq!(r.seen_header("host"), Some(format!("{name}.test")));
            }
        }
    });
    let log = s.proxy.access_log_lines(600);
    assert!(
        log.iter()
            .filter(|l| l.contains(" HTTP/2.0\" 200 "))
            .count()
            >= 600,
        "{:?}",
        &log[..3.min(log.len())]
    );
}

#[test]
fn ten_megabyte_bodies_both_ways() {
    let s = setup(json!({}));
    let rt = runtime();
    rt.block_on(async {
        let send = connect_h2c(s.proxy.port).await.unwrap();
        let big = pattern(10 * 1024 * 1024);
        let mut want = FNV_START;
        fnv(&mut want, &big);
        // Upload without content-length (re-framed as chunked for the backend), then with one.
        for headers in [vec![], vec![("content-length", "10485760")]] {
            let r = request(&send, "POST", "a.test", "/up", &headers, Some(big.clone()))
                .await
                .unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.echo("body-length"), Some(big.len().to_string()));
            assert_eq!(r.echo("body-hash"), Some(format!("{want:016x}")));
        }
        // Download: fixed length, chunked (decoded into DATA frames), close-delimited.
        for path in ["/size/10485760", "/chunked/10485760", "/close/10485760"] {
            let r = request(&send, "GET", "b.test", path, &[], None)
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.body.len(), big.len(), "{path}");
            assert!(r.body == big, "{path}: body corrupted");
            assert!(
                r.header("transfer-encoding").is_none() && r.header("connection").is_none(),
                "{path}"
            );
        }
    });
    assert!(
        s.proxy.proc_status_kb("VmHWM") < 120 * 1024,
        "peak RSS {} kB",
        s.proxy.proc_status_kb("VmHWM")
    );
}

#[test]
fn a_slow_stream_does_not_stall_the_others() {
    let s = setup(json!({}));
    let rt = runtime();
    rt.block_on(async {
        // Small per-stream window, large connection window: an unread stream may only hold back its own
        // 64 KiB, never the connection.
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(64 * 1024)
            .initial_connection_window_size(64 * 1024 * 1024);
        let send = connect_h2c_with(s.proxy.port, builder).await.unwrap();
        // A slow backend answer, and a 20 MB download the client does not read yet...
        let slow = {
            let send = send.clone();
            tokio::spawn(
                async move { request(&send, "GET", "a.test", "/slow/2500", &[], None).await },
            )
        };
        let mut big_send = send.clone().ready().await.unwrap();
        let req = http::Request::builder()
            .uri("http://b.test/size/20971520")
            .body(())
            .unwrap();
        let (big_response, _) = big_send.send_request(req, true).unwrap();
        let big_response = big_response.await.unwrap();
        assert_eq!(big_response.status(), 200);
        // ...while other streams complete quickly.
        let start = Instant::now();
        for i in 0..30 {
            let r = request(&send, "GET", "c.test", &format!("/fast{i}"), &[], None)
                .await
                .unwrap();
            assert_eq!(r.status, 200);
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "fast streams took {:?}",
            start.elapsed()
        );
        assert!(
            !slow.is_finished(),
            "the slow stream should still be waiting for its backend"
        );
        assert_eq!(slow.await.unwrap().unwrap().status, 200);
        // Now read the big body slowly at first, releasing the window as we go.
        let mut body = big_response.into_body();
        let mut got = 0;
        let mut hash = FNV_START;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            fnv(&mut hash, &chunk);
            got += chunk.len();
            let _ = body.flow_control().release_capacity(chunk.len());
            if got < 1024 * 1024 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let mut want = FNV_START;
        fnv(&mut want, &pattern(20 * 1024 * 1024));
        assert_eq!(got, 20 * 1024 * 1024);
        assert_eq!(hash, want);
    });
    // The unread stream was held back by flow control, not buffered whole by the proxy.
    let peak = s.proxy.proc_status_kb("VmHWM");
    assert!(peak < 60 * 1024, "peak RSS {peak} kB");
}

#[test]
fn statuses_headers_and_cookies() {
    let s = setup(json!({ "server": { "debug": true } }));
    s.redis.set_frontend(
        "dead.test",
        "dead",
        &[format!("http://127.0.0.1:{}", free_port())],
    );
    let rt = runtime();
    rt.block_on(async {
        let send = connect_h2c(s.proxy.port).await.unwrap();
        let r = request(&send, "GET", "unknown.test", "/", &[], None)
            .await
            .unwrap();
        assert_eq!(r.status, 400);
        assert!(r.text().contains("No Application Configured"));
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
        assert_eq!(
            request(&send, "GET", "dead.test", "/", &[], None)
                .await
                .unwrap()
                .status,
            502
        );
        assert_eq!(
            request(&send, "GET", "__ping__", "/", &[], None)
                .await
                .unwrap()
                .text(),
            "ok"
        );
        // Several cookie fields are joined for the HTTP/1.1 backend.
        let r = request(
            &send,
            "GET",
            "a.test",
            "/c",
            &[("cookie", "a=1"), ("cookie", "b=2"), ("x-debug", "1")],
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.seen_headers("cookie"), vec!["a=1; b=2"]);
        assert_eq!(r.header("x-debug-vhost"), Some("a"));
        // Connection-specific fields of the backend's answer do not reach the HTTP/2 client.
        let r = request(&send, "GET", "a.test", "/hop-headers", &[], None)
            .await
            .unwrap();
        assert_eq!(r.header("x-kept"), Some("yes"));
        for gone in ["connection", "keep-alive", "proxy-connection", "x-hop"] {
            assert!(r.header(gone).is_none(), "{gone}");
        }
        // HEAD, 204 and 304: no body.
        let r = request(&send, "HEAD", "a.test", "/size/1000", &[], None)
            .await
            .unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
        assert_eq!(r.header("content-length"), Some("1000"));
        assert_eq!(
            request(&send, "GET", "a.test", "/204", &[], None)
                .await
                .unwrap()
                .status,
            204
        );
    });
}

#[test]
fn malformed_frames_and_oversized_headers_are_rejected_cleanly() {
    let s = setup(json!({ "server": { "maxHeaderSize": 8192 } }));
    let port = s.proxy.port;
    let rt = runtime();
    // A healthy connection opened first keeps working through all of it.
    let good = rt.block_on(connect_h2c(port)).unwrap();
    // Garbage after the preface: the server answers with GOAWAY and closes.
    let mut raw = TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(common_preface()).unwrap();
    raw.write_all(&[0, 0, 4, 0xff, 0, 0, 0, 0, 1, 1, 2, 3, 4])
        .unwrap(); // bogus frame on stream 1
    raw.write_all(&[0, 0, 8, 7, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap(); // GOAWAY on stream 3: protocol error
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "malformed connection kept open"
    );
    assert!(
        frame_types(&got).contains(&7),
        "expected a GOAWAY frame, got frame types {:?}",
        frame_types(&got)
    );
    // A frame larger than the default maximum: connection error, not a panic.
    let mut raw = TcpStream::connect(("127.0.0.1", port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(common_preface()).unwrap();
    raw.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // empty SETTINGS
    raw.write_all(&[0x01, 0x00, 0x00, 0x00, 0x01, 0, 0, 0, 1])
        .unwrap(); // DATA of 16 MiB announced
    let _ = raw.read_to_end(&mut got);
    rt.block_on(async {
        // Oversized header list: refused for that stream only.
        let huge = "x".repeat(20_000);
        let result = request(
            &good,
            "GET",
            "a.test",
            "/",
            &[("x-huge", huge.as_str())],
            None,
        )
        .await;
        assert!(
            result.as_ref().map(|r| r.status == 431).unwrap_or(true),
            "{:?}",
            result.map(|r| r.status)
        );
        // The good connection, and new ones, still work.
        assert_eq!(
            request(&good, "GET", "a.test", "/still", &[], None)
                .await
                .unwrap()
                .status,
            200
        );
        let fresh = connect_h2c(port).await.unwrap();
        assert_eq!(
            request(&fresh, "GET", "b.test", "/", &[], None)
                .await
                .unwrap()
                .status,
            200
        );
    });
    // HTTP/1.1 on the same plain listener is unaffected by the preface detection.
    assert_eq!(common::get(port, "a.test", "/h1").status, 200);
}

/// The types of the HTTP/2 frames in a byte stream (9-byte headers: length, type, flags, stream).
fn frame_types(mut bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while bytes.len() >= 9 {
        let len =
            (usize::from(bytes[0]) << 16) | (usize::from(bytes[1]) << 8) | usize::from(bytes[2]);
        types.push(bytes[3]);
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    types
}

fn common_preface() -> &'static [u8] {
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
}

#[test]
fn graceful_shutdown_lets_streams_finish() {
    let mut s = setup(json!({ "server": { "drainTimeout": 10 } }));
    let rt = runtime();
    let port = s.proxy.port;
    let (status, _) = rt.block_on(async {
        let send = connect_h2c(port).await.unwrap();
        let slow = {
            let send = send.clone();
            tokio::spawn(
                async move { request(&send, "GET", "a.test", "/slow/1500", &[], None).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.proxy.signal(libc::SIGTERM);
        let r = slow.await.unwrap().unwrap();
        (r.status, ())
    });
    assert_eq!(status, 200, "the stream in flight finished");
    let exit = s
        .proxy
        .wait_exit(Duration::from_secs(5))
        .expect("the proxy exits after draining");
    assert!(exit.success());
}

#[test]
fn http2_can_be_turned_off() {
    let s = setup(json!({ "server": { "http2": false } }));
    let rt = runtime();
    assert!(
        rt.block_on(connect_h2_tls(s.https_port, "a.test")).is_err(),
        "ALPN h2 must not be offered"
    );
    // Without h2c, the preface is an invalid HTTP/1.1 request.
    let mut raw = TcpStream::connect(("127.0.0.1", s.proxy.port)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(common_preface()).unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}
