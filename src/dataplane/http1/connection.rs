//! The client connection loop: wait for a request, read and validate its head, run the request phases
//! (route → choose → forward), write the access-log line, and go around again while keep-alive allows.
//!
//! Requests on one connection are handled strictly in order, so pipelined requests are answered in
//! order. An idle connection waits with a read into a small buffer; when the idle timeout or shutdown
//! abandons that read, the connection is closed, so no bytes of a live connection are ever lost. See `LIFECYCLE.md` for the states.
//!
//! Bad input from one client only ever costs that client its connection; nothing here panics on
//! network data.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log::debug;
use monoio::io::AsyncReadRent;

use super::body::BodyFraming;
use super::head::{HeadError, Parsed, RequestHead, ResponseHead};
use super::io::{read_more, write_all_vec};
use crate::common::metrics::{Counter, Gauge, Hist};
use crate::dataplane::access_log::{push_u64, LogFields};
use crate::dataplane::core::{Core, HEAD_BUF};
use crate::dataplane::proxy::acme_challenge;
use crate::dataplane::proxy::error_pages::reason_phrase;
use crate::dataplane::proxy::forward::{forward, Forwarded};
use crate::dataplane::proxy::policy::Admission;
use crate::dataplane::proxy::route::{find_route, RouteOutcome};
use crate::dataplane::routing::host::{normalize_host_into, HostError};
use crate::dataplane::session::{ClientConn, ClientStream, Exchange, ListenerInfo};

/// The protocol label of a request for the access log.
fn protocol_label<S: ClientStream>(head: &RequestHead) -> &'static str {
    match S::LOG_VERSION {
        Some(label) => label,
        None if head.minor_version == 0 => "HTTP/1.0",
        None => "HTTP/1.1",
    }
}

/// What the connection does after an exchange.
enum Next {
    KeepAlive,
    Close,
    /// Become a tunnel to this backend connection (WebSocket).
    Tunnel(crate::dataplane::upstream::pool::BackendConn),
}

impl Next {
    fn from_keep(keep: bool) -> Next {
        if keep {
            Next::KeepAlive
        } else {
            Next::Close
        }
    }
}

enum ReadEnd {
    /// Closed, timed out, or draining: end the connection quietly.
    Closed,
    /// Malformed or oversized: answer with this status and close.
    Reject(HeadError),
}

/// Serves one client connection until it closes.
///
/// `initial` holds bytes already read from the connection (it may be empty). `peer` is the client
/// address: the PROXY protocol source when the listener has one, else the socket peer.
pub async fn serve_client<S: ClientStream + 'static>(
    io: S,
    fd: RawFd,
    peer: SocketAddr,
    listener: Rc<ListenerInfo>,
    w: &Core,
    initial: Vec<u8>,
) {
    let peer_addr = match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(*v6.ip()),
        },
        SocketAddr::V4(v4) => std::net::IpAddr::V4(*v4.ip()),
    };
    let peer_ip = peer_addr.to_string();
    let mut c = ClientConn {
        io,
        buf: initial,
        pos: 0,
        head: RequestHead::default(),
        peer_ip,
        peer_addr,
        listener,
        host: String::new(),
        out: Vec::new(),
        resp: ResponseHead::default(),
        send_timeout: w.config.server.tcp_timeout,
        fd,
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
        let mut ex = Exchange::new();
        match run_phases(&mut c, w, &mut ex).await {
            // The client was told it may send another request: even if draining started meanwhile,
            // wait for it (briefly, see DRAIN_IDLE_GRACE) rather than close under its feet.
            Next::KeepAlive => log_exchange(
                &c.peer_ip,
                &c.head,
                &c.buf,
                protocol_label::<S>(&c.head),
                w,
                &ex,
            ),
            Next::Close => {
                log_exchange(
                    &c.peer_ip,
                    &c.head,
                    &c.buf,
                    protocol_label::<S>(&c.head),
                    w,
                    &ex,
                );
                break;
            }
            Next::Tunnel(conn) => return run_tunnel(c, conn, ex, w).await,
        }
    }
    w.head_bufs.put(std::mem::take(&mut c.buf));
}

/// Turns the connection into a tunnel to the backend until both sides close, then logs the exchange.
async fn run_tunnel<S: ClientStream + 'static>(
    c: ClientConn<S>,
    conn: crate::dataplane::upstream::pool::BackendConn,
    mut ex: Exchange,
    w: &Core,
) {
    let Some(backend) = conn.into_stream() else {
        return;
    };
    let ClientConn {
        io,
        buf,
        pos,
        head,
        peer_ip,
        ..
    } = c;
    // Bytes the client sent after its upgrade request go to the backend first.
    let early = buf.get(pos..).map(<[u8]>::to_vec).unwrap_or_default();
    let idle = w.config.server.websocket_idle_timeout;
    let opened = || {
        w.m().inc(Counter::WebsocketTunnels);
        w.m().gauge_add(Gauge::OpenTunnels, 1);
    };
    let bytes = match io.into_plain() {
        // Plain sockets on both sides: bytes move by direct non-blocking calls after readiness.
        Ok(client) => {
            opened();
            // Boxed, as below: the tunnel's state would otherwise enlarge every connection's task.
            Box::pin(crate::dataplane::proxy::tunnel::run_plain(
                client, early, backend, idle,
            ))
            .await
        }
        Err(io) => {
            let Some((client_read, client_write)) = io.into_tunnel() else {
                // Not reached: only HTTP/1.1 connections are upgraded.
                return;
            };
            opened();
            Box::pin(crate::dataplane::proxy::tunnel::run(
                client_read,
                client_write,
                early,
                backend,
                idle,
            ))
            .await
        }
    };
    w.m().gauge_add(Gauge::OpenTunnels, -1);
    ex.bytes_sent += bytes.to_client;
    log_exchange(&peer_ip, &head, &buf, protocol_label::<S>(&head), w, &ex);
}

/// Reads the next request head into `c.buf[..c.head.len]`.
async fn read_request<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    first: bool,
) -> Result<(), ReadEnd> {
    let s = &w.config.server;
    if c.pos > 0 {
        c.buf.drain(..c.pos);
        c.pos = 0;
    }
    if c.buf.is_empty() {
        // While draining, an idle connection waits at most DRAIN_IDLE_GRACE (see wait_idle).
        let limit = if first {
            Some(s.first_byte_timeout())
        } else {
            s.tcp_timeout
        };
        // Idle: wait with a read (one operation per request; a readiness poll first would be two). A
        // read abandoned on timeout or drain may hold bytes, so the connection is then closed.
        if c.buf.capacity() == 0 {
            c.buf = w.head_bufs.get();
        }
        if !read_idle(&mut c.io, &mut c.buf, limit, w).await {
            return Err(ReadEnd::Closed);
        }
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

/// How long an idle connection stays open once draining starts (shutdown, or a reload handing over to
/// a new process). A request the client had already sent, or sends within this time, is still served
/// (with `Connection: close`), so a keep-alive client never sees its request cut off by the drain; the
/// client then opens a new connection, which the new process (or nobody, on shutdown) accepts.
pub const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

/// Waits for a request by reading. False: timed out, idle through the drain grace, closed or broken;
/// the connection must then be closed (the abandoned read may hold bytes).
pub async fn read_idle<S: AsyncReadRent>(
    io: &mut S,
    buf: &mut Vec<u8>,
    limit: Option<Duration>,
    w: &Core,
) -> bool {
    let limit = if w.draining.get() {
        Some(limit.map_or(DRAIN_IDLE_GRACE, |d| d.min(DRAIN_IDLE_GRACE)))
    } else {
        limit
    };
    let mut read = std::pin::pin!(read_more(io, buf, limit));
    let drain = w.drain_notify.notified();
    monoio::select! {
        r = &mut read => matches!(r, Ok(n) if n > 0),
        _ = drain => {
            matches!(monoio::time::timeout(DRAIN_IDLE_GRACE, read).await, Ok(Ok(n)) if n > 0)
        }
    }
}

async fn run_phases<S: ClientStream>(c: &mut ClientConn<S>, w: &Core, ex: &mut Exchange) -> Next {
    let Some(host_span) = c.head.host else {
        return Next::from_keep(
            respond_error_skipping_body(c, w, ex, 400, "missing Host header").await,
        );
    };
    let raw_host = host_span.of(&c.buf);
    if raw_host == b"__ping__" {
        return Next::from_keep(respond_ping(c, w, ex).await);
    }
    // HTTP-01 challenges are answered whatever the Host (README "Automatic HTTPS (ACME)").
    let target = c.head.absolute_origin.unwrap_or(c.head.target);
    if acme_challenge::wanted(
        w,
        c.listener.proto == "https",
        c.head.method.of(&c.buf),
        target.of(&c.buf),
    ) {
        return Next::from_keep(respond_acme_challenge(c, w, ex, target).await);
    }
    crate::common::fault::maybe_panic(raw_host, w.id);
    let mut host = std::mem::take(&mut c.host);
    let normalized = normalize_host_into(raw_host, &mut host);
    c.host = host;
    if let Err(e) = normalized {
        let reason = match e {
            HostError::TooLong => "Host name too long (over 253 bytes, or a label over 63)",
            HostError::Empty | HostError::Invalid => "invalid Host header",
        };
        return Next::from_keep(respond_error_skipping_body(c, w, ex, 400, reason).await);
    }
    // Phase 1: route.
    let route = match find_route(w, &c.host).await {
        RouteOutcome::Found(route) => route,
        RouteOutcome::NoFrontend => {
            return Next::from_keep(respond_error_skipping_body(c, w, ex, 400, NO_FRONTEND).await)
        }
        RouteOutcome::Unavailable(e) => {
            debug!("worker {}: no route for {}: {e}", w.id, c.host);
            return Next::from_keep(
                respond_error_skipping_body(
                    c,
                    w,
                    ex,
                    503,
                    "routes unavailable (driver unreachable)",
                )
                .await,
            );
        }
    };
    ex.route = Some(route.clone());
    // Per-frontend options (README "Per-frontend options"): redirects and refusals touch no backend.
    // The max_connections slot, if any, is held until the exchange is over.
    let _slot = match crate::dataplane::proxy::policy::admit(w, c, &route) {
        Admission::Proceed(slot) => slot,
        Admission::Redirect(status, location) => {
            return Next::from_keep(
                respond_skipping_body_with(c, w, ex, status, "redirected to https", &location)
                    .await,
            )
        }
        Admission::Reject(status, reason, extra) => {
            return Next::from_keep(
                respond_skipping_body_with(c, w, ex, status, reason, &extra).await,
            )
        }
    };
    if route.backends.is_empty() {
        return Next::from_keep(
            respond_error_skipping_body(c, w, ex, 502, "frontend has no backend").await,
        );
    }
    // Phases 2 and 3: choose a backend and forward (with retries).
    match forward(w, c, &route, ex).await {
        Forwarded::Relayed { keep_client } => Next::from_keep(keep_client),
        Forwarded::Failed {
            status,
            reason,
            close_client,
        } => Next::from_keep(
            respond_error(c, w, ex, status, reason, close_client || !c.head.keep_alive).await,
        ),
        Forwarded::Broken => Next::Close,
        Forwarded::Upgraded(conn) => Next::Tunnel(conn),
    }
}

/// Answers a load balancer's `Host: __ping__` probe without touching the driver.
async fn respond_ping<S: ClientStream>(c: &mut ClientConn<S>, w: &Core, ex: &mut Exchange) -> bool {
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

/// Answers an HTTP-01 challenge from Redis (`proxy::acme_challenge`).
async fn respond_acme_challenge<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    ex: &mut Exchange,
    target: super::head::Span,
) -> bool {
    let path = target.of(&c.buf).to_vec();
    let body = match acme_challenge::answer(w, &path).await {
        acme_challenge::ChallengeAnswer::Found(body) => body,
        acme_challenge::ChallengeAnswer::NotFound => {
            return respond_error_skipping_body(c, w, ex, 404, "no such ACME challenge").await
        }
        acme_challenge::ChallengeAnswer::Unavailable => {
            return respond_error_skipping_body(c, w, ex, 503, "ACME challenge: Redis unavailable")
                .await
        }
    };
    let close = !skip_buffered_body(c) || !c.head.keep_alive || w.draining.get();
    c.out.clear();
    c.out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-cache\r\nContent-Length: ",
    );
    push_u64(&mut c.out, body.len() as u64);
    c.out.extend_from_slice(b"\r\n");
    push_connection(&mut c.out, close, c.head.minor_version == 0);
    c.out.extend_from_slice(b"\r\n");
    if !c.head.is_head_method {
        c.out.extend_from_slice(&body);
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
    w: &Core,
    ex: &mut Exchange,
    status: u16,
    reason: &'static str,
) -> bool {
    let close = !skip_buffered_body(c) || !c.head.keep_alive;
    respond_error(c, w, ex, status, reason, close).await
}

/// As [`respond_error_skipping_body`], with extra header lines (`Location`, `Retry-After`).
async fn respond_skipping_body_with<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    ex: &mut Exchange,
    status: u16,
    reason: &'static str,
    extra: &[u8],
) -> bool {
    let close = !skip_buffered_body(c) || !c.head.keep_alive;
    respond_error_with(c, w, ex, status, reason, close, extra).await
}

/// The reason of the 400 for a host no frontend serves (the only 400 with the "No Application
/// Configured" page).
const NO_FRONTEND: &str = "no frontend for this host";

/// Sends one of the proxy's own answers (docs/compatibility.md §6). Returns whether the connection may
/// continue.
pub async fn respond_error<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    ex: &mut Exchange,
    status: u16,
    reason: &str,
    close: bool,
) -> bool {
    respond_error_with(c, w, ex, status, reason, close, b"").await
}

/// As [`respond_error`], with extra header lines (each ending in CRLF). On HTTPS, a route with the
/// `hsts` option adds `Strict-Transport-Security` to the proxy's own answers too.
pub async fn respond_error_with<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    ex: &mut Exchange,
    status: u16,
    reason: &str,
    close: bool,
    extra: &[u8],
) -> bool {
    let close = close || w.draining.get();
    // "No Application Configured" is the page for an unknown host; any other 400 means the request
    // itself was malformed.
    let body = if status == 400 && reason != NO_FRONTEND {
        w.error_pages.malformed()
    } else {
        w.error_pages.body(status)
    };
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
    c.out.extend_from_slice(extra);
    if let Some(route) = &ex.route {
        crate::dataplane::proxy::policy::push_hsts(&mut c.out, route, c.listener.proto == "https");
    }
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

/// Phase 4: counts the exchange and writes its access-log line.
fn log_exchange(
    peer_ip: &str,
    head: &RequestHead,
    buf: &[u8],
    protocol: &str,
    w: &Core,
    ex: &Exchange,
) {
    let total_secs = ex.start.elapsed().as_secs_f64();
    record(w, ex, total_secs);
    let mut log = w.access_log.borrow_mut();
    if !log.enabled() {
        return;
    }
    log.log(&LogFields {
        client: peer_ip,
        method: head.method.of(buf),
        target: head.target.of(buf),
        protocol,
        status: ex.status,
        bytes: ex.bytes_sent,
        referer: head.referer.map(|s| s.of(buf)),
        user_agent: head.user_agent.map(|s| s.of(buf)),
        identifier: ex.route.as_ref().map(|r| &*r.identifier),
        total_secs,
        backend_secs: ex.backend_secs,
    });
}

fn record(w: &Core, ex: &Exchange, total_secs: f64) {
    let m = w.m();
    m.response(ex.status);
    m.observe(Hist::Total, total_secs);
    if ex.backend_secs > 0.0 {
        m.observe(Hist::Backend, ex.backend_secs);
    }
}

/// Logs a request whose head could not be parsed (method and target may be unknown).
fn log_rejected<S: ClientStream>(c: &ClientConn<S>, w: &Core, ex: &Exchange) {
    w.m().inc(Counter::RejectedRequests);
    record(w, ex, ex.start.elapsed().as_secs_f64());
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
        protocol: S::LOG_VERSION.unwrap_or("HTTP/1.1"),
        status: ex.status,
        bytes: ex.bytes_sent,
        referer: None,
        user_agent: None,
        identifier: None,
        total_secs: ex.start.elapsed().as_secs_f64(),
        backend_secs: 0.0,
    });
}
