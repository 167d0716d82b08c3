//! WebSocket tunnels (docs/compatibility.md §5, issue 4) over ws:// and wss://: routing and headers, echo of text and a
//! 10 MB binary message, 200 concurrent tunnels, half-close, early data in both directions, backend
//! refusals, unknown hosts, h2c not tunnelled, non-101 answers, idle timeout, draining, and 8 MiB
//! each way through a plain tunnel (copied and spliced) to a slow reader, with its logged byte count.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::client::Conn;
use common::tls::TestCa;
use common::ws::{start_raw_upgrade, upgrade_request, ws_connect, wss_connect, WsEcho};
use common::{free_port, Backend, Proxy, RedisServer, TempDir};
use serde_json::json;
use tungstenite::Message;

fn echo_round_trip<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) {
    ws.send(Message::Text("hello through the proxy".into()))
        .unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Text("hello through the proxy".into())
    );
    let big: Vec<u8> = (0..10 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    ws.send(Message::Binary(big.clone().into())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert!(b.as_ref() == big.as_slice(), "10 MB message corrupted"),
        other => panic!("expected binary, got {other:?}"),
    }
    ws.close(None).unwrap();
}

#[test]
fn echo_over_ws_and_wss_with_forwarded_headers() {
    let redis = RedisServer::start();
    let echo = WsEcho::start();
    redis.set_frontend("ws.test", "ws", &[echo.url()]);
    let ca = TestCa::new();
    let dir = TempDir::new("ws-tls");
    let cert = ca.issue_files(dir.path(), "ws", &["ws.test"]);
    let https_port = free_port();
    let proxy = Proxy::start(
        &redis,
        json!({ "https": { "port": https_port, "bind": ["127.0.0.1"],
            "key": cert.key.to_string_lossy(), "cert": cert.cert.to_string_lossy() } }),
    );
    let mut ws = ws_connect(proxy.port, "ws.test", "/chat").unwrap();
    echo_round_trip(&mut ws);
    assert_eq!(
        echo.last_header("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        echo.last_header("x-forwarded-proto").as_deref(),
        Some("http")
    );
    assert_eq!(echo.last_header("host").as_deref(), Some("ws.test"));

    let mut wss = wss_connect(https_port, "ws.test", "/chat").unwrap();
    echo_round_trip(&mut wss);
    assert_eq!(
        echo.last_header("x-forwarded-proto").as_deref(),
        Some("https")
    );
    assert_eq!(
        echo.last_header("x-forwarded-port"),
        Some(https_port.to_string())
    );
    assert_eq!(echo.upgrades.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The tunnel is logged when it ends, with status 101.
    let lines = proxy.access_log_lines(2);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("\"GET /chat HTTP/1.1\" 101 ")),
        "{lines:?}"
    );
}

#[test]
fn two_hundred_concurrent_tunnels() {
    let redis = RedisServer::start();
    let echo = WsEcho::start();
    redis.set_frontend("many.test", "many", &[echo.url()]);
    let proxy = Proxy::start(&redis, json!({}));
    let port = proxy.port;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(200));
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut ws = ws_connect(port, "many.test", &format!("/c{i}")).expect("upgrade");
                // All 200 tunnels are open at the same time.
                barrier.wait();
                for j in 0..10 {
                    let text = format!("client {i} message {j}");
                    ws.send(Message::Text(text.clone().into())).unwrap();
                    assert_eq!(ws.read().unwrap(), Message::Text(text.into()));
                }
                ws.close(None).unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().expect("tunnel client");
    }
}

#[test]
fn half_close_and_early_data_in_both_directions() {
    let redis = RedisServer::start();
    let raw = start_raw_upgrade(b"GREETING");
    redis.set_frontend("raw.test", "raw", &[format!("http://127.0.0.1:{raw}")]);
    let proxy = Proxy::start(&redis, json!({}));
    let mut s = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The upgrade request and the first bytes of the tunnel in one write.
    let mut first = upgrade_request("raw.test").into_bytes();
    first.extend_from_slice(b"EARLY");
    s.write_all(&first).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(5).any(|w| w == b"EARLY") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    // The backend's bytes sent with its 101, then the echo of our early bytes.
    assert_eq!(body, "GREETINGEARLY");
    // More traffic, then half-close: the backend sees EOF but can still answer.
    s.write_all(b"more").unwrap();
    let mut echo = [0u8; 4];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"more");
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = String::new();
    s.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "EOF after 9 bytes");
}

/// Sends 8 MiB through a tunnel (the first bytes with the upgrade request) to the raw echo backend
/// behind `port`, from a client that starts reading late through a small receive buffer (so the
/// proxy has to hold bytes back), then half-closes. Returns everything the client received.
fn bulk_through_slow_reader(port: u16, host: &str) -> (Vec<u8>, Vec<u8>) {
    let data: Vec<u8> = (0..8usize << 20).map(|i| (i * 7 % 251) as u8).collect();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(8192).unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let (host, sent) = (host.to_string(), data.clone());
    let writer = std::thread::spawn(move || {
        let mut first = upgrade_request(&host).into_bytes();
        first.extend_from_slice(&sent[..1000]);
        w.write_all(&first).unwrap();
        for chunk in sent[1000..].chunks(64 * 1024) {
            w.write_all(chunk).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    // A slow reader: the echo backs up into the proxy meanwhile.
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().expect("writer");
    (data, got)
}

#[test]
fn eight_mib_each_way_through_a_plain_tunnel_with_half_close_and_logged_bytes() {
    let redis = RedisServer::start();
    let raw = start_raw_upgrade(b"G");
    redis.set_frontend("bulk.test", "bulk", &[format!("http://127.0.0.1:{raw}")]);
    // Without and with an idle timeout (the copy tasks then also wait for the watchdog).
    for server in [
        json!({}),
        json!({ "server": { "websocketIdleTimeout": 30 } }),
    ] {
        let proxy = Proxy::start(&redis, server);
        let (data, got) = bulk_through_slow_reader(proxy.port, "bulk.test");
        let end = got
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head")
            + 4;
        assert!(got.starts_with(b"HTTP/1.1 101 "));
        let body = &got[end..];
        let tail = format!("EOF after {} bytes", data.len());
        assert_eq!(
            body.len(),
            1 + data.len() + tail.len(),
            "bytes lost or added"
        );
        assert_eq!(body[0], b'G');
        assert!(
            body[1..1 + data.len()] == data[..],
            "tunnel corrupted the bytes"
        );
        // The backend saw the half-close after every byte and could still answer.
        assert_eq!(&body[1 + data.len()..], tail.as_bytes());
        // The access log counts every byte the client received.
        let lines = proxy.access_log_lines(1);
        assert!(
            lines[0].contains(&format!("\" 101 {} ", got.len())),
            "{lines:?}, {} bytes received",
            got.len()
        );
    }
}

#[test]
fn refusals_unknown_hosts_h2c_and_plain_answers() {
    let redis = RedisServer::start();
    let plain = Backend::start("plain");
    redis.set_frontend(
        "refused.test",
        "refused",
        &[format!("http://127.0.0.1:{}", free_port())],
    );
    redis.set_frontend("plain.test", "plain", &[plain.url()]);
    let proxy = Proxy::start(&redis, json!({}));
    let raw_status = |req: String| {
        let mut c = Conn::open(proxy.port);
        c.send(req.as_bytes());
        c.read_response(false).unwrap()
    };
    assert_eq!(raw_status(upgrade_request("refused.test")).status, 502);
    assert_eq!(raw_status(upgrade_request("unknown.test")).status, 400);
    // A backend that does not upgrade: its answer is relayed and the connection stays HTTP.
    let mut c = Conn::open(proxy.port);
    c.send(upgrade_request("plain.test").as_bytes());
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.seen_header("upgrade").as_deref(),
        Some("websocket"),
        "the WebSocket upgrade is forwarded"
    );
    assert_eq!(
        c.get("plain.test", "/after").echo("path").as_deref(),
        Some("/after")
    );
    // h2c is never tunnelled: the Upgrade header is dropped and the request proxied as HTTP/1.1.
    let r = raw_status(
        "GET /h2c HTTP/1.1\r\nHost: plain.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n".into(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.seen_header("upgrade"), None);
    assert_eq!(r.seen_header("http2-settings"), None);
    assert_eq!(r.seen_header("connection"), None);
}

#[test]
fn idle_tunnels_stay_open_unless_an_idle_timeout_is_set() {
    let redis = RedisServer::start();
    let echo = WsEcho::start();
    redis.set_frontend("idle.test", "idle", &[echo.url()]);
    let default = Proxy::start(&redis, json!({ "server": { "tcpTimeout": 1 } }));
    let mut ws = ws_connect(default.port, "idle.test", "/").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    ws.send(Message::Text("still here".into())).unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Text("still here".into()),
        "tcpTimeout does not apply to tunnels"
    );

    let limited = Proxy::start(&redis, json!({ "server": { "websocketIdleTimeout": 1 } }));
    let mut ws = ws_connect(limited.port, "idle.test", "/").unwrap();
    ws.send(Message::Text("ping".into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Text("ping".into()));
    let start = Instant::now();
    assert!(ws.read().is_err(), "the idle tunnel must be closed");
    let took = start.elapsed();
    assert!(
        took > Duration::from_millis(700) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[test]
fn open_tunnels_finish_while_draining() {
    let redis = RedisServer::start();
    let echo = WsEcho::start();
    redis.set_frontend("drain.test", "drain", &[echo.url()]);
    let mut proxy = Proxy::start(&redis, json!({ "server": { "drainTimeout": 10 } }));
    let port = proxy.port;
    let mut ws = ws_connect(port, "drain.test", "/").unwrap();
    ws.send(Message::Text("before".into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Text("before".into()));
    proxy.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused, the open tunnel still works.
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "{}",
        proxy.log()
    );
    ws.send(Message::Text("during drain".into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Text("during drain".into()));
    ws.close(None).unwrap();
    let _ = ws.read();
    drop(ws);
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .expect("exits once the tunnel closed");
    assert!(status.success());
}
