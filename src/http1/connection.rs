//! The client connection loop: wait for a request, read and validate its head, run the request phases
//! (route → choose → forward), write the access-log line, and go around again while keep-alive allows.
//!
//! Requests on one connection are handled strictly in order, so pipelined requests are answered in
//! order. An idle connection holds no buffer and waits with a cancel-safe readiness poll, so idle
//! timeouts and shutdown never lose bytes. See `LIFECYCLE.md` for the states.
//!
//! Bad input from one client only ever costs that client its connection; nothing here panics on
//! network data.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::debug;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use super::body::BodyFraming;
use super::head::{HeadError, Parsed, RequestHead};
use super::io::{read_more, write_all_vec};
use crate::access_log::{push_u64, LogFields};
use crate::proxy::error_pages::reason_phrase;
use crate::proxy::forward::{forward, Forwarded};
use crate::proxy::route::{find_route, RouteOutcome};
use crate::routing::host::normalize_host_into;
use crate::routing::Route;
use crate::worker::{Worker, HEAD_BUF};

/// A client byte stream the proxy can serve: readable, writable, and able to wait for input without
/// consuming it (so the wait can be abandoned safely).
pub trait ClientStream: AsyncReadRent + AsyncWriteRent {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>>;
}

impl ClientStream for TcpStream {
    fn wait_readable(&self) -> impl Future<Output = io::Result<()>> {
        self.readable(true)
    }
}

/// Facts about the listener a connection arrived on.
pub struct ListenerInfo {
    pub local: SocketAddr,
    /// The local port as text, for X-Forwarded-Port.
    pub port: String,
    /// `http` or `https`.
    pub proto: &'static str,
}

impl ListenerInfo {
    pub fn new(local: SocketAddr, tls: bool) -> Self {
        ListenerInfo {
            local,
            port: local.port().to_string(),
            proto: if tls { "https" } else { "http" },
        }
    }
}

/// One client connection and the request being served on it.
pub struct ClientConn<S> {
    pub io: S,
    /// Received bytes. During an exchange the request head is at `buf[..head.len]`.
    pub buf: Vec<u8>,
    /// First byte not yet consumed by the current exchange (the next request starts here).
    pub pos: usize,
    pub head: RequestHead,
    /// The peer address as written in headers and logs.
    pub peer_ip: String,
    pub listener: Rc<ListenerInfo>,
    /// The current request's normalised host.
    pub host: String,
    /// Scratch buffer for outgoing heads.
    pub out: Vec<u8>,
    /// A write to the client that makes no progress for this long fails (`server.tcpTimeout`).
    pub send_timeout: Option<Duration>,
}

/// What the log line needs to know about an exchange.
pub struct Exchange {
    pub start: Instant,
    pub status: u16,
    pub bytes_sent: u64,
    pub route: Option<Rc<Route>>,
    pub backend_secs: f64,
}

enum ReadEnd {
    /// Closed, timed out, or draining: end the connection quietly.
    Closed,
    /// Malformed or oversized: answer with this status and close.
    Reject(HeadError),
}

/// Serves one client connection until it closes.
pub async fn serve_client<S: ClientStream>(
    io: S,
    peer: SocketAddr,
    listener: Rc<ListenerInfo>,
    w: &Worker,
) {
    let peer_ip = match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.ip().to_string(),
        },
        SocketAddr::V4(v4) => v4.ip().to_string(),
    };
    let mut c = ClientConn {
        io,
        buf: Vec::new(),
        pos: 0,
        head: RequestHead::default(),
        peer_ip,
        listener,
        host: String::new(),
        out: Vec::new(),
        send_timeout: w.config.server.tcp_timeout,
    };
    let mut first = true;
    loop {
        match read_request(&mut c, w, first).await {
            Ok(()) => {}
            Err(ReadEnd::Closed) => break,
            Err(ReadEnd::Reject(err)) => {
                let mut ex = Exchange::new();
                debug!(
                    "worker {}: {} rejected: {} ({})",
                    w.id, c.peer_ip, err.status, err.reason
                );
                // The head was not understood: log what we can, answer, and close.
                c.head = RequestHead::default();
                respond_error(&mut c, w, &mut ex, err.status, err.reason, true).await;
                log_rejected(&c, w, &ex);
                linger(&mut c).await;
                break;
            }
        }
        first = false;
        let keep = handle_request(&mut c, w).await;
        if !keep {
            break;
        }
    }
    w.head_bufs.put(std::mem::take(&mut c.buf));
}

/// Reads the next request head into `c.buf[..c.head.len]`.
async fn read_request<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Worker,
    first: bool,
) -> Result<(), ReadEnd> {
    let s = &w.config.server;
    if c.pos > 0 {
        c.buf.drain(..c.pos);
        c.pos = 0;
    }
    if c.buf.is_empty() {
        if w.draining.get() {
            return Err(ReadEnd::Closed);
        }
        // Idle: give the buffer back while waiting.
        w.head_bufs.put(std::mem::take(&mut c.buf));
        let limit = if first {
            Some(s.header_timeout)
        } else {
            s.tcp_timeout
        };
        if !wait_idle(&c.io, limit, w).await {
            return Err(ReadEnd::Closed);
        }
        c.buf = w.head_bufs.get();
    }
    let deadline = Instant::now() + s.header_timeout;
    loop {
        if !c.buf.is_empty() {
            match c.head.parse(&c.buf, s.max_header_size) {
                Ok(Parsed::Complete) => {
                    c.pos = c.head.len;
                    return Ok(());
                }
                Ok(Parsed::Partial) => {}
                Err(e) => return Err(ReadEnd::Reject(e)),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            debug!(
                "worker {}: {} sent no complete head within {:?}",
                w.id, c.peer_ip, s.header_timeout
            );
            return Err(ReadEnd::Closed);
        }
        if c.buf.capacity() < HEAD_BUF {
            c.buf.reserve(HEAD_BUF);
        }
        match read_more(&mut c.io, &mut c.buf, Some(left)).await {
            Ok(0) | Err(_) => return Err(ReadEnd::Closed),
            Ok(_) => {}
        }
    }
}

/// Waits for input on an idle connection. False: timed out, draining, or broken.
async fn wait_idle<S: ClientStream>(io: &S, limit: Option<Duration>, w: &Worker) -> bool {
    let readable = io.wait_readable();
    let drain = w.drain_notify.notified();
    match limit {
        Some(d) => monoio::select! {
            r = readable => r.is_ok(),
            _ = monoio::time::sleep(d) => false,
            _ = drain => false,
        },
        None => monoio::select! {
            r = readable => r.is_ok(),
            _ = drain => false,
        },
    }
}

impl Exchange {
    fn new() -> Self {
        Exchange {
            start: Instant::now(),
            status: 0,
            bytes_sent: 0,
            route: None,
            backend_secs: 0.0,
        }
    }
}

/// Runs the phases for the request whose head is in `c`, logs it, and says whether to keep going.
async fn handle_request<S: ClientStream>(c: &mut ClientConn<S>, w: &Worker) -> bool {
    let mut ex = Exchange::new();
    let keep = run_phases(c, w, &mut ex).await;
    log_exchange(c, w, &ex);
    keep && !w.draining.get()
}

async fn run_phases<S: ClientStream>(c: &mut ClientConn<S>, w: &Worker, ex: &mut Exchange) -> bool {
    let Some(host_span) = c.head.host else {
        return respond_error_skipping_body(c, w, ex, 400, "missing Host header").await;
    };
    let raw_host = host_span.of(&c.buf);
    if raw_host == b"__ping__" {
        return respond_ping(c, w, ex).await;
    }
    let mut host = std::mem::take(&mut c.host);
    let normalized = normalize_host_into(raw_host, &mut host);
    c.host = host;
    if normalized.is_err() {
        return respond_error_skipping_body(c, w, ex, 400, "invalid Host header").await;
    }
    // Phase 1: route.
    let route = match find_route(w, &c.host).await {
        RouteOutcome::Found(route) => route,
        RouteOutcome::NoFrontend => {
            return respond_error_skipping_body(c, w, ex, 400, "no frontend for this host").await
        }
        RouteOutcome::Unavailable(e) => {
            debug!("worker {}: no route for {}: {e}", w.id, c.host);
            return respond_error_skipping_body(
                c,
                w,
                ex,
                503,
                "routes unavailable (driver unreachable)",
            )
            .await;
        }
    };
    ex.route = Some(route.clone());
    if route.backends.is_empty() {
        return respond_error_skipping_body(c, w, ex, 502, "frontend has no backend").await;
    }
    // Phases 2 and 3: choose a backend and forward (with retries).
    match forward(w, c, &route, ex).await {
        Forwarded::Relayed { keep_client } => keep_client,
        Forwarded::Failed {
            status,
            reason,
            close_client,
        } => respond_error(c, w, ex, status, reason, close_client || !c.head.keep_alive).await,
        Forwarded::Broken => false,
    }
}

/// Answers a load balancer's `Host: __ping__` probe without touching the driver.
async fn respond_ping<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Worker,
    ex: &mut Exchange,
) -> bool {
    let close = !skip_buffered_body(c) || !c.head.keep_alive || w.draining.get();
    c.out.clear();
    c.out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nCache-Control: no-cache\r\n");
    push_connection(&mut c.out, close, c.head.minor_version == 0);
    c.out.extend_from_slice(b"\r\n");
    if !c.head.is_head_method {
        c.out.extend_from_slice(b"ok");
    }
    ex.status = 200;
    ex.bytes_sent = c.out.len() as u64;
    write_all_vec(&mut c.io, &mut c.out, c.send_timeout)
        .await
        .is_ok()
        && !close
}

/// Consumes the request body if it is entirely in the buffer. False when it is not (the connection
/// must then close, since the rest of the body would be read as the next request).
fn skip_buffered_body<S>(c: &mut ClientConn<S>) -> bool {
    let start = c.head.len;
    let mut framing = BodyFraming::new(c.head.framing, false);
    if framing.is_done() {
        return true;
    }
    let end = c.buf.len();
    match framing.take(&mut c.buf[start..end]) {
        Ok(p) if p.done => {
            c.pos = start + p.consumed;
            true
        }
        _ => false,
    }
}

async fn respond_error_skipping_body<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Worker,
    ex: &mut Exchange,
    status: u16,
    reason: &'static str,
) -> bool {
    let close = !skip_buffered_body(c) || !c.head.keep_alive;
    respond_error(c, w, ex, status, reason, close).await
}

/// Sends one of the proxy's own answers (spec §6). Returns whether the connection may continue.
pub async fn respond_error<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Worker,
    ex: &mut Exchange,
    status: u16,
    reason: &str,
    close: bool,
) -> bool {
    let close = close || w.draining.get();
    let body = w.error_pages.body(status);
    c.out.clear();
    c.out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(&mut c.out, u64::from(status));
    c.out.push(b' ');
    c.out.extend_from_slice(reason_phrase(status).as_bytes());
    c.out.extend_from_slice(
        b"\r\nContent-Type: text/html\r\nCache-Control: no-cache\r\nContent-Length: ",
    );
    push_u64(&mut c.out, body.len() as u64);
    c.out.extend_from_slice(b"\r\n");
    push_connection(&mut c.out, close, c.head.minor_version == 0);
    if w.config.server.debug && c.head.x_debug {
        c.out.extend_from_slice(b"X-Debug-Error: ");
        c.out.extend_from_slice(reason.as_bytes());
        c.out.extend_from_slice(b"\r\n");
    }
    c.out.extend_from_slice(b"\r\n");
    if !c.head.is_head_method {
        c.out.extend_from_slice(&body);
    }
    ex.status = status;
    ex.bytes_sent = c.out.len() as u64;
    write_all_vec(&mut c.io, &mut c.out, c.send_timeout)
        .await
        .is_ok()
        && !close
}

fn push_connection(out: &mut Vec<u8>, close: bool, http10: bool) {
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
}

/// After answering a request we could not read, drain what the client is still sending for a moment
/// before closing, so that our answer is not destroyed by a TCP reset (RFC 9112 §9.6).
async fn linger<S: ClientStream>(c: &mut ClientConn<S>) {
    let _ = c.io.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut scratch = std::mem::take(&mut c.buf);
    scratch.clear();
    let mut drained = 0usize;
    while drained < 1 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        scratch.clear();
        match read_more(&mut c.io, &mut scratch, Some(left)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    c.buf = scratch;
}

fn log_exchange<S>(c: &ClientConn<S>, w: &Worker, ex: &Exchange) {
    let mut log = w.access_log.borrow_mut();
    if !log.enabled() {
        return;
    }
    log.log(&LogFields {
        client: &c.peer_ip,
        method: c.head.method.of(&c.buf),
        target: c.head.target.of(&c.buf),
        minor_version: c.head.minor_version,
        status: ex.status,
        bytes: ex.bytes_sent,
        referer: c.head.referer.map(|s| s.of(&c.buf)),
        user_agent: c.head.user_agent.map(|s| s.of(&c.buf)),
        identifier: ex.route.as_ref().map(|r| &*r.identifier),
        total_secs: ex.start.elapsed().as_secs_f64(),
        backend_secs: ex.backend_secs,
    });
}

/// Logs a request whose head could not be parsed (method and target may be unknown).
fn log_rejected<S>(c: &ClientConn<S>, w: &Worker, ex: &Exchange) {
    let mut log = w.access_log.borrow_mut();
    if !log.enabled() {
        return;
    }
    let line_end = c
        .buf
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(c.buf.len())
        .min(256);
    let first_line = &c.buf[..line_end];
    let mut parts = first_line.splitn(3, |&b| b == b' ');
    let method = parts.next().unwrap_or(b"-");
    let target = parts.next().unwrap_or(b"-");
    log.log(&LogFields {
        client: &c.peer_ip,
        method: if method.is_empty() { b"-" } else { method },
        target,
        minor_version: 1,
        status: ex.status,
        bytes: ex.bytes_sent,
        referer: None,
        user_agent: None,
        identifier: None,
        total_secs: ex.start.elapsed().as_secs_f64(),
        backend_secs: 0.0,
    });
}
