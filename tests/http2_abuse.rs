//! HTTP/2 abuse limits (issue 14): rapid reset on h2c and on h2 over TLS, CONTINUATION and oversized
//! header-block floods, SETTINGS / PING / empty DATA / WINDOW_UPDATE floods, and a panic in an HTTP/2
//! stream task. Real binary, real redis-server, real backends; the floods are raw frames written on
//! real sockets (tokio, plain or TLS), the server's frames parsed as they come back.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::h2client::{connect_h2_tls, connect_h2c, request, runtime};
use common::tls::TestCa;
use common::{free_port, Backend, Proxy, RedisServer, TempDir};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A GET of `/` for `authority`, HPACK-encoded without the dynamic table or Huffman codes.
fn get_block(authority: &str) -> Vec<u8> {
    // :method GET, :scheme http, :path / (static table), then :authority as a literal.
    let mut b = vec![0x82, 0x86, 0x84, 0x01, authority.len() as u8];
    b.extend_from_slice(authority.as_bytes());
    b
}

fn start_of_connection() -> Vec<u8> {
    let mut v = PREFACE.to_vec();
    v.extend(frame(SETTINGS, 0, 0, &[]));
    v
}

/// What the server did to a flooding connection.
#[derive(Debug, Default)]
struct Outcome {
    /// The first GOAWAY: (last stream id, error code).
    goaway: Option<(u32, u32)>,
    /// The server closed the connection.
    closed: bool,
    /// Batches written before the server stopped taking them (or all of them).
    batches_written: usize,
}

/// Writes the batches (stopping once a GOAWAY arrived or writing fails) while reading the server's
/// frames; waits for the server to close (at most 10 s).
async fn flood<S>(stream: S, first: Vec<u8>, batches: impl Iterator<Item = Vec<u8>>) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let goaway: Arc<Mutex<Option<(u32, u32)>>> = Arc::default();
    let seen = Arc::new(AtomicBool::new(false));
    let reader = {
        let goaway = goaway.clone();
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                let n = match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                while buf.len() >= 9 {
                    let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                    if buf.len() < 9 + len {
                        break;
                    }
                    if buf[3] == GOAWAY && len >= 8 {
                        let p = &buf[9..17];
                        let last = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                        let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                        goaway.lock().unwrap().get_or_insert((last, code));
                        seen.store(true, Ordering::SeqCst);
                    }
                    buf.drain(..9 + len);
                }
            }
        })
    };
    let mut out = Outcome::default();
    if wr.write_all(&first).await.is_ok() {
        for batch in batches {
            if seen.load(Ordering::SeqCst) {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(10), wr.write_all(&batch)).await {
                Ok(Ok(())) => out.batches_written += 1,
                _ => break,
            }
        }
    }
    out.closed = matches!(
        tokio::time::timeout(Duration::from_secs(10), reader).await,
        Ok(Ok(true))
    );
    out.goaway = *goaway.lock().unwrap();
    out
}

async fn tcp(port: u16) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

async fn tls(port: u16) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = common::tls::insecure_client_config(vec![b"h2".to_vec()]);
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("abuse.test".to_string()).unwrap();
    let s = connector.connect(name, tcp(port).await).await.expect("TLS");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    s
}

struct Setup {
    _redis: RedisServer,
    backend: Backend,
    proxy: Proxy,
    https_port: u16,
    _certs: TempDir,
}

fn setup(env: &[(&str, &str)]) -> Setup {
    let redis = RedisServer::start();
    let backend = Backend::start("abuse");
    redis.set_frontend("abuse.test", "abuse", &[backend.url()]);
    let ca = TestCa::new();
    let certs = TempDir::new("h2abuse-certs");
    let cert = ca.issue_files(certs.path(), "abuse", &["*.test", "abuse.test"]);
    let https_port = free_port();
    let dir = TempDir::new("h2abuse");
    let port = free_port();
    let config = common::proxy::config_for(
        &redis.url(0),
        port,
        dir.path(),
        json!({
            "server": { "workers": 1 },
            "https": { "port": https_port, "bind": ["127.0.0.1"],
                "key": cert.key.to_string_lossy(), "cert": cert.cert.to_string_lossy() }
        }),
    );
    let proxy =
        Proxy::start_config_env(dir, port, &config, env).unwrap_or_else(|log| panic!("{log}"));
    Setup {
        _redis: redis,
        backend,
        proxy,
        https_port,
        _certs: certs,
    }
}

/// The connection after an abusive one is served, over h2c and over TLS.
async fn next_connections_are_served(s: &Setup) {
    let send = connect_h2c(s.proxy.port).await.unwrap();
    let r = request(&send, "GET", "abuse.test", "/after", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let send = connect_h2_tls(s.https_port, "abuse.test").await.unwrap();
    let r = request(&send, "GET", "abuse.test", "/after-tls", &[], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

/// 50 pairs of HEADERS + RST_STREAM per batch, up to 50,000 resets in all.
fn rapid_reset_batches() -> impl Iterator<Item = Vec<u8>> {
    let block = get_block("abuse.test");
    (0..1000u32).map(move |b| {
        let mut v = Vec::new();
        for i in 0..50u32 {
            let id = 2 * (b * 50 + i) + 1;
            v.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
            v.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
        }
        v
    })
}

#[test]
fn rapid_reset_gets_goaway_on_h2c_and_tls_and_costs_little() {
    let s = setup(&[]);
    let rt = runtime();
    rt.block_on(next_connections_are_served(&s));
    let rss_before = s.proxy.proc_status_kb("VmRSS");
    for over_tls in [false, true] {
        let requests_before = s.backend.requests();
        let started = Instant::now();
        let out = rt.block_on(async {
            if over_tls {
                flood(
                    tls(s.https_port).await,
                    start_of_connection(),
                    rapid_reset_batches(),
                )
                .await
            } else {
                flood(
                    tcp(s.proxy.port).await,
                    start_of_connection(),
                    rapid_reset_batches(),
                )
                .await
            }
        });
        let (last, code) = out
            .goaway
            .unwrap_or_else(|| panic!("no GOAWAY (tls {over_tls}): {out:?}"));
        assert_eq!(code, ENHANCE_YOUR_CALM, "{out:?}");
        // The GOAWAY came before the 20,000th reset (stream id 39,999).
        assert!(last < 2 * 20_000, "GOAWAY only after stream {last}");
        assert!(out.closed, "connection left open: {out:?}");
        assert!(started.elapsed() < Duration::from_secs(15));
        rt.block_on(next_connections_are_served(&s));
        // At most a few hundred of the reset streams reached the backend (2 are the checks above).
        let reached = s.backend.requests() - requests_before;
        assert!(
            reached <= 300,
            "{reached} reset streams reached the backend"
        );
        eprintln!(
            "rapid reset (tls {over_tls}): GOAWAY at stream {last}, {} batches of 50 written, {reached} backend requests",
            out.batches_written
        );
    }
    let rss_after = s.proxy.proc_status_kb("VmRSS");
    eprintln!("rapid reset: RSS {rss_before} kB -> {rss_after} kB");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
    assert!(s.proxy.log().contains("rapid reset"), "{}", s.proxy.log());
}

#[test]
fn continuation_floods_and_oversized_header_blocks_get_goaway() {
    let s = setup(&[]);
    let rt = runtime();
    let rss_before = s.proxy.proc_status_kb("VmRSS");
    // Many empty CONTINUATION frames after a HEADERS without END_HEADERS (never ending the block).
    let tiny = (0..1000).map(|_| {
        let mut v = Vec::new();
        for _ in 0..100 {
            v.extend(frame(CONTINUATION, 0, 1, &[]));
        }
        v
    });
    // A header block that keeps growing: 16 KiB CONTINUATION frames of complete header fields (up
    // to 100 MB), each decodable on its own, so only a bound on the block as a whole stops it.
    let mut field = vec![0x00, 0x03];
    field.extend_from_slice(b"x-a");
    field.push(0x7f);
    let mut rest: u32 = 4000 - 127;
    while rest >= 128 {
        field.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    field.push(rest as u8);
    field.extend_from_slice(&[b'a'; 4000]);
    let big = (0..6_400).map(move |_| frame(CONTINUATION, 0, 1, &field.repeat(4)));
    let mut first = start_of_connection();
    first.extend(frame(HEADERS, 0, 1, &get_block("abuse.test")));
    for (name, out) in [
        (
            "empty CONTINUATIONs",
            rt.block_on(async { flood(tcp(s.proxy.port).await, first.clone(), tiny).await }),
        ),
        (
            "large header block",
            rt.block_on(async { flood(tls(s.https_port).await, first.clone(), big).await }),
        ),
    ] {
        let (_, code) = out
            .goaway
            .unwrap_or_else(|| panic!("{name}: no GOAWAY: {out:?}"));
        assert_eq!(code, ENHANCE_YOUR_CALM, "{name}: {out:?}");
        assert!(out.closed, "{name}: {out:?}");
        eprintln!("{name}: GOAWAY after {} batches", out.batches_written);
    }
    let rss_after = s.proxy.proc_status_kb("VmRSS");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "{rss_before} -> {rss_after} kB"
    );
    rt.block_on(next_connections_are_served(&s));
    assert_eq!(s.backend.requests(), 2, "the floods reached the backend");
}

#[test]
fn settings_ping_empty_data_and_window_update_floods_get_goaway() {
    let s = setup(&[]);
    let rt = runtime();
    let repeat = |f: Vec<u8>, per_batch: usize, batches: usize| {
        (0..batches).map(move |_| f.repeat(per_batch))
    };
    let mut open_stream = start_of_connection();
    // A POST whose body never ends: a stream that can carry DATA frames.
    let mut post = vec![0x83, 0x86, 0x84, 0x01, 10];
    post.extend_from_slice(b"abuse.test");
    open_stream.extend(frame(HEADERS, END_HEADERS, 1, &post));
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, usize)> = vec![
        (
            "SETTINGS",
            start_of_connection(),
            frame(SETTINGS, 0, 0, &[]),
            100,
        ),
        (
            "PING",
            start_of_connection(),
            frame(PING, 0, 0, &[7; 8]),
            100,
        ),
        ("empty DATA", open_stream, frame(DATA, 0, 1, &[]), 100),
        (
            "WINDOW_UPDATE",
            start_of_connection(),
            frame(WINDOW_UPDATE, 0, 0, &1u32.to_be_bytes()),
            10_000,
        ),
    ];
    for (name, first, f, per_batch) in cases {
        let started = Instant::now();
        let out = rt.block_on(async {
            flood(tcp(s.proxy.port).await, first, repeat(f, per_batch, 100)).await
        });
        let (_, code) = out
            .goaway
            .unwrap_or_else(|| panic!("{name} flood: no GOAWAY: {out:?}"));
        assert_eq!(code, ENHANCE_YOUR_CALM, "{name}: {out:?}");
        assert!(out.closed, "{name}: {out:?}");
        assert!(started.elapsed() < Duration::from_secs(15), "{name}");
        eprintln!(
            "{name} flood: GOAWAY after {} batches of {per_batch}",
            out.batches_written
        );
    }
    rt.block_on(next_connections_are_served(&s));
    let log = s.proxy.log();
    for what in [
        "floods SETTINGS",
        "floods PING",
        "floods empty DATA",
        "floods WINDOW_UPDATE",
    ] {
        assert!(log.contains(what), "{what}:\n{log}");
    }
}

#[test]
fn ordinary_traffic_is_not_mistaken_for_abuse() {
    let s = setup(&[]);
    let rt = runtime();
    rt.block_on(async {
        let send = connect_h2c(s.proxy.port).await.unwrap();
        // 1,000 sequential requests and 200 concurrent ones on one connection: no GOAWAY.
        for i in 0..1000 {
            let r = request(&send, "GET", "abuse.test", &format!("/r{i}"), &[], None)
                .await
                .unwrap();
            assert_eq!(r.status, 200);
        }
        let mut tasks = Vec::new();
        for i in 0..200 {
            let send = send.clone();
            tasks.push(tokio::spawn(async move {
                request(&send, "GET", "abuse.test", &format!("/c{i}"), &[], None).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().status, 200);
        }
    });
    assert!(
        !s.proxy.log().contains("ENHANCE_YOUR_CALM"),
        "{}",
        s.proxy.log()
    );
}

#[test]
fn a_panic_in_an_http2_stream_task_costs_only_that_stream() {
    let s = setup(&[("HIPACHE_TPC_FAULT_INJECTION", "1")]);
    let rt = runtime();
    rt.block_on(async {
        // Another connection on the same (only) worker, mid-way through its work.
        let other = connect_h2c(s.proxy.port).await.unwrap();
        assert_eq!(
            request(&other, "GET", "abuse.test", "/1", &[], None)
                .await
                .unwrap()
                .status,
            200
        );
        let send = connect_h2c(s.proxy.port).await.unwrap();
        let r = request(
            &send,
            "GET",
            "panic-h2.fault-injection.invalid",
            "/",
            &[],
            None,
        )
        .await;
        assert!(
            r.is_err(),
            "the panicking stream answered: {:?}",
            r.map(|r| r.status)
        );
        // The same connection goes on, and so do the other connection and new ones.
        assert_eq!(
            request(&send, "GET", "abuse.test", "/2", &[], None)
                .await
                .unwrap()
                .status,
            200
        );
        assert_eq!(
            request(&other, "GET", "abuse.test", "/3", &[], None)
                .await
                .unwrap()
                .status,
            200
        );
        next_connections_are_served(&s).await;
    });
    let log = s.proxy.log();
    assert!(
        log.contains("fault injection: an HTTP/2 stream task"),
        "{log}"
    );
    assert!(log.contains("it ended alone"), "{log}");
    // The worker was not replaced.
    assert!(!log.contains("replacing it"), "{log}");
    assert!(!log.contains("this worker stops accepting"), "{log}");
}

/// Property: any bytes after the preface (random, or random frame headers with random payloads): the
/// connection ends or stays, the worker neither panics nor hangs, and the next connection is served.
/// One proxy for all 64 cases (each case is one connection), owned by this test so it is stopped.
#[test]
fn any_bytes_after_the_preface_leave_the_proxy_serving() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let s = setup(&[]);
    let rt = runtime();
    let input = (
        proptest::collection::vec(any::<u8>(), 0..2048),
        proptest::collection::vec(
            (
                0u8..12,
                any::<u8>(),
                0u32..8,
                proptest::collection::vec(any::<u8>(), 0..64),
            ),
            0..32,
        ),
    );
    let mut runner = TestRunner::new(Config::with_cases(64));
    let result = runner.run(&input, |(raw, frames)| {
        let mut bytes = start_of_connection();
        for (kind, flags, stream, payload) in &frames {
            bytes.extend(frame(*kind, *flags, *stream, payload));
        }
        bytes.extend_from_slice(&raw);
        rt.block_on(async {
            let mut c = tcp(s.proxy.port).await;
            let _ = c.write_all(&bytes).await;
            let _ = c.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut sink)).await;
            next_connections_are_served(&s).await;
        });
        prop_assert!(!s.proxy.log().contains("panicked"), "{}", s.proxy.log());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
