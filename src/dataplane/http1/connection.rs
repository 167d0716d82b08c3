//! The client connection loop: wait for a request, read and validate its head, hand it to the request
//! pipeline (`proxy::pipeline`: route → choose → forward → relay/tunnel → log), and go around again while
//! keep-alive allows.
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

use super::head::{HeadError, Parsed, RequestHead, ResponseHead};
use super::io::read_more;
use crate::dataplane::core::{Core, HEAD_BUF};
use crate::dataplane::proxy::pipeline::{self, Next};
use crate::dataplane::session::{ClientConn, ClientStream, Exchange, ListenerInfo};

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
        nodelay: S::NODELAY_AT_ACCEPT,
    };
    let mut first = true;
    loop {
        match read_request(&mut c, w, first).await {
            Ok(()) => {}
            Err(ReadEnd::Closed) => break,
            Err(ReadEnd::Reject(err)) => {
                debug!(
                    "worker {}: {} rejected: {} ({})",
                    w.id, c.peer_ip, err.status, err.reason
                );
                pipeline::reject(&mut c, w, &mut Exchange::new(), err).await;
                linger(&mut c).await;
                break;
            }
        }
        first = false;
        let mut ex = Exchange::new();
        match pipeline::serve_request(&mut c, w, &mut ex).await {
            // The client was told it may send another request: even if draining started meanwhile,
            // wait for it (briefly, see DRAIN_IDLE_GRACE) rather than close under its feet.
            Next::KeepAlive => {
                c.ensure_nodelay();
                // A buffer grown for a request body (past what a large head needs) is not kept by an
                // idle connection: it is freed once nothing of the next request is in it.
                if c.buf.capacity() > 16 * HEAD_BUF && c.pos == c.buf.len() {
                    c.buf = Vec::new();
                    c.pos = 0;
                }
            }
            Next::Close => break,
            Next::Tunnel(conn) => return pipeline::tunnel(c, conn, ex, w).await,
        }
    }
    w.head_bufs.put(std::mem::take(&mut c.buf));
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

/// After answering a request we could not read, drain what the client is still sending for a moment
/// before closing, so that our answer is not destroyed by a TCP reset (RFC 9112 §9.6).
async fn linger<S: ClientStream>(c: &mut ClientConn<S>) {
    super::io::linger(&mut c.io, &mut c.buf, Duration::from_secs(2)).await;
}
