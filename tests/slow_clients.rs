//! Misbehaving backends and slow clients (README "Limits"): a backend flooding interim answers, slow
//! uploads and slow downloads by hundreds of clients next to normal traffic, pool slots after every
//! failure path, the per-client cap and the minimum body rate. Real binary, real backends, real sockets;
//! client addresses spread over 127.0.0.0/8 so that per-address limits can be told apart.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::backend::pattern;
use common::client::Conn;
use common::{wait_until, Backend, Proxy, RedisServer};
use serde_json::json;
use socket2::{Domain, Socket, Type};

/// A TCP connection to the proxy from source address `from`, with a small receive buffer if asked.
fn connect_from(from: Ipv4Addr, port: u16, rcvbuf: Option<usize>) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind source address");
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .expect("connect to proxy");
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

/// The `i`-th address of a /16 under 127.0.0.0/8 (`net` 1-254), never 127.0.0.1.
fn addr(net: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, net, (i / 250) as u8, (i % 250) as u8 + 2)
}

fn start(redis: &RedisServer, backend: &Backend, host: &str, server: serde_json::Value) -> Proxy {
    redis.set_frontend(host, "app", &[backend.url()]);
    Proxy::start(redis, json!({ "server": server }))
}

#[test]
fn a_flood_of_interim_answers_gets_502_quickly() {
    let redis = RedisServer::start();
    let backend = Backend::start("b1");
    let proxy = start(&redis, &backend, "interim.test", json!({}));

    let started = Instant::now();
    let mut conn = Conn::open(proxy.port);
    conn.send(b"GET /continues/10000 HTTP/1.1\r\nHost: interim.test\r\n\r\n");
    let mut interim = 0;
    let status = loop {
        let r = conn.read_one(false).expect("an answer");
        if r.status < 200 {
            interim += 1;
        } else {
            break r.status;
        }
    };
    let took = started.elapsed();
    assert_eq!(status, 502, "after {interim} interim answers");
    assert_eq!(interim, 16, "interim answers relayed before the 502");
    assert!(took < Duration::from_secs(3), "502 took {took:?}");
    // The proxy and the backend are fine.
    let r = common::get(proxy.port, "interim.test", "/after");
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "b1");
}

#[test]
fn slow_uploads_and_slow_downloads_do_not_starve_a_backend() {
    const SLOW: usize = 300;
    const RESPONSE: usize = 1_000_000;
    let redis = RedisServer::start();
    let backend = Backend::start("b1");
    let proxy = start(
        &redis,
        &backend,
        "slow.test",
        json!({ "maxSockets": 20, "workers": 2 }),
    );
    let rss_before = proxy.proc_status_kb("VmRSS");

    // 300 uploads of 100 KB, one byte at a time, each from its own address.
    let mut uploads: Vec<TcpStream> = (0..SLOW)
        .map(|i| {
            let mut s = connect_from(addr(1, i), proxy.port, None);
            s.write_all(
                b"POST /upload HTTP/1.1\r\nHost: slow.test\r\nContent-Length: 100000\r\n\r\nx",
            )
            .unwrap();
            s
        })
        .collect();
    let trickle = |uploads: &mut Vec<TcpStream>| {
        for s in uploads.iter_mut() {
            s.write_all(b"y").expect("slow upload still accepted");
        }
    };

    // 300 downloads of 1 MB by clients that read nothing (4 KiB receive buffers), each from its own
    // address. In batches of 20 (one pool's worth): every batch must reach the backend, which it
    // cannot if the earlier downloads still hold the backend's connections.
    let mut downloads = Vec::new();
    for batch in 0..SLOW / 20 {
        for i in batch * 20..(batch + 1) * 20 {
            let mut s = connect_from(addr(2, i), proxy.port, Some(4096));
            s.write_all(
                format!("GET /size/{RESPONSE} HTTP/1.1\r\nHost: slow.test\r\n\r\n").as_bytes(),
            )
            .unwrap();
            downloads.push(s);
        }
        let want = (batch + 1) * 20;
        assert!(
            wait_until(Duration::from_secs(10), || backend.requests() >= want),
            "only {} of {want} slow downloads reached the backend",
            backend.requests()
        );
        trickle(&mut uploads);
    }
    let rss_loaded = proxy.proc_status_kb("VmRSS");

    // Meanwhile, normal clients of that backend, from yet another address.
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let started = Instant::now();
        let mut conn =
            Conn::from_stream(connect_from(Ipv4Addr::new(127, 0, 0, 2), proxy.port, None));
        let r = conn.get("slow.test", &format!("/normal/{i}"));
        let took = started.elapsed();
        assert_eq!(r.status, 200, "normal request {i}: {}", r.text());
        assert!(
            took < Duration::from_secs(2),
            "normal request {i} took {took:?}"
        );
        slowest = slowest.max(took);
        if i % 10 == 0 {
            trickle(&mut uploads);
        }
    }
    // No slow upload ever reached the backend: their bodies are still being buffered.
    assert_eq!(backend.requests(), SLOW + 50);

    // The slow downloads are intact when finally read.
    for s in downloads.iter_mut().take(3) {
        let mut conn = Conn::from_stream(s.try_clone().unwrap());
        let r = conn.read_response(false).expect("slow download");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), RESPONSE);
        assert!(r.body == pattern(RESPONSE), "slow download corrupted");
    }
    println!(
        "slow clients: {SLOW} uploads + {SLOW} downloads; slowest normal request {slowest:?}; \
         proxy RSS {rss_before} kB before, {rss_loaded} kB with all slow clients connected"
    );
    drop(uploads);
    drop(downloads);
}

#[test]
fn pool_slots_come_back_after_every_failure() {
    let redis = RedisServer::start();
    let backend = Backend::start("b1");
    let proxy = start(
        &redis,
        &backend,
        "fail.test",
        json!({ "maxSockets": 1, "workers": 1, "responseBufferSize": 65536 }),
    );
    for i in 0..20 {
        // The backend ends the connection halfway through the body.
        let mut conn = Conn::open(proxy.port);
        conn.send(b"GET /reset-mid/400000 HTTP/1.1\r\nHost: fail.test\r\n\r\n");
        let got = conn.read_to_close();
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "reset {i}: {:?}",
            &got[..got.len().min(40)]
        );
        assert!(got.len() < 400_000, "reset {i}: the whole body arrived?");
        // The same with a small body (read in full before the head is written, when it comes): the
        // client gets no more than half of it and a closed connection, never a hang.
        let mut conn = Conn::open(proxy.port);
        conn.send(b"GET /reset-mid/8000 HTTP/1.1\r\nHost: fail.test\r\n\r\n");
        let got = conn.read_to_close();
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 200"),
            "small reset {i}: {:?}",
            &got[..got.len().min(40)]
        );
        assert!(
            got.len() < 4000 + 200,
            "small reset {i}: more than the backend sent"
        );
        // Closed before answering.
        let r = common::get(proxy.port, "fail.test", "/reset");
        assert_eq!(r.status, 502);
        // Too many interim answers.
        let r = common::get(proxy.port, "fail.test", "/continues/100");
        assert_eq!(r.status, 502);
        // The client goes away in the middle of a large response.
        let mut conn = Conn::open(proxy.port);
        conn.send(b"GET /size/20000000 HTTP/1.1\r\nHost: fail.test\r\n\r\n");
        let mut head = [0u8; 1024];
        let _ = conn.stream.read(&mut head);
        drop(conn);
        // The proxy notices the client is gone on its next write; with one slot, wait for that
        // exchange to end (its log line) before the next round, or the next request gets 503.
        assert!(wait_until(Duration::from_secs(5), || {
            proxy.access_log().matches("GET /size/20000000").count() > i
        }));
    }
    // With one slot per backend, any slot lost above would make these 503.
    for i in 0..20 {
        let started = Instant::now();
        let r = common::get(proxy.port, "fail.test", &format!("/ok/{i}"));
        assert_eq!(
            r.status,
            200,
            "request {i} after the failures: {}",
            r.text()
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

#[test]
fn one_client_address_cannot_take_every_backend_connection() {
    let redis = RedisServer::start();
    let backend = Backend::start("b1");
    let proxy = start(
        &redis,
        &backend,
        "cap.test",
        json!({ "maxSockets": 50, "maxSocketsPerClient": 3, "workers": 1, "responseBufferSize": 65536 }),
    );
    let greedy = Ipv4Addr::new(127, 0, 0, 5);
    // Three downloads much larger than the read-ahead, not read: each holds a backend connection.
    let mut holders: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect_from(greedy, proxy.port, Some(4096));
            s.write_all(b"GET /size/50000000 HTTP/1.1\r\nHost: cap.test\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || backend.requests() >= 3));

    // A fourth from the same address: 503 at once.
    let started = Instant::now();
    let mut conn = Conn::from_stream(connect_from(greedy, proxy.port, None));
    let r = conn.get("cap.test", "/fourth");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(900));
    // Another address is served.
    let mut conn = Conn::from_stream(connect_from(Ipv4Addr::new(127, 0, 0, 6), proxy.port, None));
    assert_eq!(conn.get("cap.test", "/other").status, 200);

    // Once one holder goes, the address may take a connection again.
    drop(holders.pop());
    assert!(wait_until(Duration::from_secs(5), || {
        let mut conn = Conn::from_stream(connect_from(greedy, proxy.port, None));
        conn.get("cap.test", "/again").status == 200
    }));
    drop(holders);
}

#[test]
fn clients_below_the_minimum_rate_are_cut() {
    let redis = RedisServer::start();
    let backend = Backend::start("b1");
    let proxy = start(
        &redis,
        &backend,
        "rate.test",
        json!({ "tcpTimeout": 2, "minBodyRate": 1000, "workers": 1, "requestBufferSize": 4096 }),
    );
    // An upload larger than the request buffer, one byte every 100 ms: every byte arrives well within
    // tcpTimeout, but 10 B/s is far below 1000 B/s.
    let mut conn = Conn::open(proxy.port);
    let mut body =
        b"POST /up HTTP/1.1\r\nHost: rate.test\r\nContent-Length: 100000\r\n\r\n".to_vec();
    body.extend_from_slice(&[b'x'; 5000]);
    conn.send(&body);
    let started = Instant::now();
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(10) {
        if conn.stream.write_all(b"y").is_err() || conn.is_closed_within(Duration::from_millis(100))
        {
            cut = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(cut, "a 10 B/s upload was not cut in 10 s");
    assert!(
        took >= Duration::from_millis(1500),
        "cut too early: {took:?}"
    );

    // A download read 10 bytes every 100 ms ends too: the exchange is logged, short of its size.
    let mut s = connect_from(Ipv4Addr::new(127, 0, 0, 7), proxy.port, Some(4096));
    s.write_all(b"GET /size/5000000 HTTP/1.1\r\nHost: rate.test\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 10];
    let logged = wait_until(Duration::from_secs(12), || {
        let _ = s.read(&mut buf);
        std::thread::sleep(Duration::from_millis(90));
        proxy.access_log().contains("/size/5000000")
    });
    assert!(
        logged,
        "slow download still going after {:?}",
        started.elapsed()
    );
    // A fast client is not affected.
    let r = common::get(proxy.port, "rate.test", "/size/3000000");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 3_000_000);
}

/// A download larger than any socket buffer, by a client that reads nothing: with a read-ahead large
/// enough the backend connection is free while the client has not read a byte; with a small one it
/// is held (the control that shows the first half is the read-ahead's doing, not the kernel's).
#[test]
fn the_read_ahead_frees_the_backend_before_the_client_reads() {
    const SIZE: usize = 12_000_000;
    let redis = RedisServer::start();
    let backend = Backend::start("b1");
    redis.set_frontend("ahead.test", "app", &[backend.url()]);
    for (buffer, freed) in [(16 * 1024 * 1024, true), (65536, false)] {
        let proxy = Proxy::start(
            &redis,
            json!({ "server": { "maxSockets": 1, "workers": 1, "responseBufferSize": buffer } }),
        );
        let mut slow = connect_from(Ipv4Addr::new(127, 0, 0, 8), proxy.port, Some(4096));
        slow.write_all(format!("GET /size/{SIZE} HTTP/1.1\r\nHost: ahead.test\r\n\r\n").as_bytes())
            .unwrap();
        let served = wait_until(Duration::from_secs(3), || {
            let mut c =
                Conn::from_stream(connect_from(Ipv4Addr::new(127, 0, 0, 9), proxy.port, None));
            c.get("ahead.test", "/other").status == 200
        });
        assert_eq!(served, freed, "responseBufferSize {buffer}");
        // Either way the slow client gets the whole response, intact.
        let mut conn = Conn::from_stream(slow);
        let r = conn.read_response(false).expect("slow download");
        assert_eq!(r.body.len(), SIZE);
        assert!(
            r.body == pattern(SIZE),
            "download corrupted (responseBufferSize {buffer})"
        );
    }
}

/// A spliced body whose client stops reading: once the client's socket is full, what the pipe held
/// and the rest of the body go through the read-ahead, so the backend is still freed early and the
/// client still gets every byte in order.
#[test]
fn a_client_behind_a_spliced_body_falls_back_to_the_read_ahead() {
    const SIZE: usize = 6_000_000;
    let redis = RedisServer::start();
    let backend = Backend::start("b1");
    redis.set_frontend("splice.test", "app", &[backend.url()]);
    let (proxy, admin) = common::admin::start_with_admin(
        &redis,
        json!({}),
        json!({ "server": { "maxSockets": 1, "workers": 1, "responseBufferSize": 16 << 20 } }),
    );
    let mut slow = connect_from(Ipv4Addr::new(127, 0, 0, 8), proxy.port, Some(4096));
    slow.write_all(format!("GET /size/{SIZE} HTTP/1.1\r\nHost: splice.test\r\n\r\n").as_bytes())
        .unwrap();
    let fell_back = "hipache_response_bodies_spliced_total{end=\"read_ahead\"}";
    assert!(
        wait_until(Duration::from_secs(5), || metric(&admin, fell_back) == 1.0),
        "no fallback to the read-ahead: {}",
        metric(&admin, fell_back)
    );
    // The only backend slot is free while the slow client has read nothing.
    let mut c = Conn::from_stream(connect_from(Ipv4Addr::new(127, 0, 0, 9), proxy.port, None));
    assert_eq!(c.get("splice.test", "/other").status, 200);
    let mut conn = Conn::from_stream(slow);
    let r = conn.read_response(false).expect("slow download");
    assert_eq!(r.body.len(), SIZE);
    assert!(r.body == pattern(SIZE), "download corrupted");
    // The same connection goes on (its socket is blocking again for io_uring).
    let r = conn.get("splice.test", "/after");
    assert_eq!(r.status, 200);
}

/// The value of an unlabelled sample in `/metrics`.
fn metric(admin: &common::admin::Admin, name: &str) -> f64 {
    let text = admin.get("/metrics").response.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn a_flood_of_large_responses_stays_within_the_large_buffer_bound() {
    // 120 clients that read nothing, each fetching 8 MiB: every exchange reads ahead up to
    // responseBufferSize (1 MiB) and wants large buffers for it; the worker lends at most 64 (16 MiB),
    // the others use 64 KiB ones. When the clients go, every large buffer is accounted for again.
    const CLIENTS: usize = 120;
    const RESPONSE: usize = 8 << 20;
    const BOUND: f64 = 64.0;
    let redis = RedisServer::start();
    let backend = Backend::start("b1");
    redis.set_frontend("big.test", "big", &[backend.url()]);
    let (proxy, admin) = common::admin::start_with_admin(
        &redis,
        json!({}),
        json!({ "server": { "workers": 1, "maxSockets": 1000 } }),
    );
    let rss_before = proxy.proc_status_kb("VmRSS");
    let mut downloads: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| {
            let mut s = connect_from(addr(3, i), proxy.port, Some(4096));
            s.write_all(
                format!("GET /size/{RESPONSE} HTTP/1.1\r\nHost: big.test\r\n\r\n").as_bytes(),
            )
            .unwrap();
            s
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || backend.requests() >= CLIENTS),
        "only {} of {CLIENTS} downloads reached the backend",
        backend.requests()
    );
    // The read-aheads fill up to the bound, never past it.
    let mut most = 0.0f64;
    let reached = wait_until(Duration::from_secs(20), || {
        let lent = metric(&admin, "hipache_large_body_buffers");
        most = most.max(lent);
        lent >= BOUND
    });
    for _ in 0..5 {
        most = most.max(metric(&admin, "hipache_large_body_buffers"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        reached,
        "large buffers lent peaked at {most}, below the bound"
    );
    assert!(most <= BOUND, "{most} large buffers lent, bound {BOUND}");
    // The small-buffer read-aheads go on filling after the large buffers ran out: RSS once it settles.
    let mut rss_loaded = proxy.proc_status_kb("VmRSS");
    wait_until(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(300));
        let now = proxy.proc_status_kb("VmRSS");
        let settled = now <= rss_loaded + rss_loaded / 100;
        rss_loaded = now;
        settled
    });
    // Per exchange: responseBufferSize plus two buffers (the one being read into, the last one
    // partly filled), at most 1 MiB + 512 KiB.
    let per_exchange_kb = 1024 + 512;
    assert!(
        rss_loaded < rss_before + (CLIENTS * per_exchange_kb) as u64,
        "RSS {rss_before} kB → {rss_loaded} kB for {CLIENTS} read-aheads"
    );

    // Downloads that went through large buffers and through small ones are intact.
    for s in downloads.iter_mut().take(2) {
        let mut conn = Conn::from_stream(s.try_clone().unwrap());
        let r = conn.read_response(false).expect("large download");
        assert_eq!(r.status, 200);
        assert!(r.body == pattern(RESPONSE), "large download corrupted");
    }
    for s in downloads.iter_mut().rev().take(2) {
        let mut conn = Conn::from_stream(s.try_clone().unwrap());
        let r = conn.read_response(false).expect("large download");
        assert!(r.body == pattern(RESPONSE), "large download corrupted");
    }
    // The clients go away mid-body: their buffers come back (or are credited back), none leaks.
    drop(downloads);
    assert!(
        wait_until(Duration::from_secs(10), || metric(
            &admin,
            "hipache_large_body_buffers"
        ) == 0.0),
        "large buffers still lent after every client left: {}",
        metric(&admin, "hipache_large_body_buffers")
    );
    let r = common::get(proxy.port, "big.test", &format!("/size/{RESPONSE}"));
    assert!(r.body == pattern(RESPONSE), "a download after the flood");
    let rss_after = proxy.proc_status_kb("VmRSS");
    println!(
        "large-response flood: {CLIENTS} × {RESPONSE} B unread; large buffers lent at most {most}; \
         RSS {rss_before} kB before, {rss_loaded} kB loaded, {rss_after} kB after"
    );
}
