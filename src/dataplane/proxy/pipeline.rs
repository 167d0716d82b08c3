//! The request pipeline: one request's phases, driven from one place, for HTTP/1.1 connections and
//! HTTP/2 streams alike (`h2::stream_io` presents a stream as a one-request connection):
//!
//! 1. **route** (`proxy::route`): Host → route, through the worker's cache (`__ping__` and ACME HTTP-01
//!    challenges are answered before it);
//! 2. **admit** (`proxy::policy`): the frontend's options may redirect or refuse;
//! 3. **choose → forward → relay** (`proxy::forward`, with `proxy::choose`/`balance`, `upload`,
//!    `relay`): attempts at backends, with retries, and the answer relayed;
//! 4. **tunnel** (`proxy::tunnel`) after a WebSocket upgrade;
//! 5. **log** (`access_log`): the exchange's line and metrics.
//!
//! A failing phase returns a [`ProxyError`]; [`fail_to_proxy`] is the one place that turns it into the
//! client's answer, the exchange's log fields and the metrics. The connection loop
//! (`http1::connection`) reads heads and calls [`serve_request`]; it knows nothing of the phases.

use log::debug;

use crate::common::metrics::{Counter, Gauge, Hist};
use crate::dataplane::access_log::LogFields;
use crate::dataplane::core::Core;
use crate::dataplane::http1::head::{HeadError, RequestHead};
use crate::dataplane::proxy::acme_challenge;
use crate::dataplane::proxy::error::{BodyLeft, ErrorKind, ProxyError};
use crate::dataplane::proxy::forward::forward;
use crate::dataplane::proxy::policy::Admission;
use crate::dataplane::proxy::relay::Relayed;
use crate::dataplane::proxy::respond::{
    respond_acme_challenge, respond_error, respond_ping, respond_skipping_body_with,
    skip_buffered_body,
};
use crate::dataplane::proxy::route::{find_route, RouteOutcome};
use crate::dataplane::routing::host::{normalize_host_into, HostError};
use crate::dataplane::session::{ClientConn, ClientStream, Exchange};
use crate::dataplane::upstream::pool::BackendConn;

/// The protocol label of a request for the access log.
fn protocol_label<S: ClientStream>(head: &RequestHead) -> &'static str {
    match S::LOG_VERSION {
        Some(label) => label,
        None if head.minor_version == 0 => "HTTP/1.0",
        None => "HTTP/1.1",
    }
}

/// What the connection does after an exchange.
pub enum Next {
    KeepAlive,
    Close,
    /// Become a tunnel to this backend connection (WebSocket).
    Tunnel(BackendConn),
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

/// Serves the request whose head is in `c.buf[..c.head.len]`: runs the phases and, unless the
/// connection becomes a tunnel ([`tunnel`] then logs), writes the access-log line.
pub async fn serve_request<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    ex: &mut Exchange,
) -> Next {
    let next = match phases(c, w, ex).await {
        Ok(next) => next,
        Err(e) => fail_to_proxy(c, w, ex, e).await,
    };
    if !matches!(next, Next::Tunnel(_)) {
        log_exchange(
            &c.peer_ip,
            &c.head,
            &c.buf,
            protocol_label::<S>(&c.head),
            w,
            ex,
        );
    }
    next
}

/// Answers a request whose head could not be read (the connection then closes) and logs it.
pub async fn reject<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    ex: &mut Exchange,
    err: HeadError,
) {
    // The head was not understood: answer from an empty one, log what we can.
    c.head = RequestHead::default();
    let e = ProxyError {
        kind: ErrorKind::BadHead(err),
        body: BodyLeft::Unconsumed,
    };
    fail_to_proxy(c, w, ex, e).await;
    log_rejected(c, w, ex);
}

/// The phases up to the answer. `Err`: nothing was sent yet, or the exchange broke.
async fn phases<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    ex: &mut Exchange,
) -> Result<Next, ProxyError> {
    let host_span = c.head.host.ok_or(ErrorKind::MissingHost)?;
    let raw_host = host_span.of(&c.buf);
    if raw_host == b"__ping__" {
        return Ok(Next::from_keep(respond_ping(c, w, ex).await));
    }
    // HTTP-01 challenges are answered whatever the Host (README "Automatic HTTPS (ACME)").
    let target = c.head.absolute_origin.unwrap_or(c.head.target);
    if acme_challenge::wanted(
        w,
        c.listener.proto == "https",
        c.head.method.of(&c.buf),
        target.of(&c.buf),
    ) {
        return Ok(Next::from_keep(
            respond_acme_challenge(c, w, ex, target).await?,
        ));
    }
    crate::common::fault::maybe_panic(raw_host, w.id);
    let mut host = std::mem::take(&mut c.host);
    let normalized = normalize_host_into(raw_host, &mut host);
    c.host = host;
    normalized.map_err(|e| match e {
        HostError::TooLong => ErrorKind::HostTooLong,
        HostError::Empty | HostError::Invalid => ErrorKind::InvalidHost,
    })?;

    // Phase 1: route.
    let route = match find_route(w, &c.host).await {
        RouteOutcome::Found(route) => route,
        RouteOutcome::NoFrontend => return Err(ErrorKind::NoFrontend.into()),
        RouteOutcome::Unavailable(e) => {
            debug!("worker {}: no route for {}: {e}", w.id, c.host);
            return Err(ErrorKind::RoutesUnavailable.into());
        }
    };
    ex.route = Some(route.clone());

    // Phase 2: admit. Per-frontend options (README "Per-frontend options"): redirects and refusals
    // touch no backend. The max_connections slot, if any, is held until the exchange is over.
    let _slot = match crate::dataplane::proxy::policy::admit(w, c, &route) {
        Admission::Proceed(slot) => slot,
        Admission::Redirect(status, location) => {
            let keep =
                respond_skipping_body_with(c, w, ex, status, "redirected to https", &location)
                    .await;
            return Ok(Next::from_keep(keep));
        }
        Admission::Reject(status, reason, extra) => {
            let keep = respond_skipping_body_with(c, w, ex, status, reason, &extra).await;
            return Ok(Next::from_keep(keep));
        }
    };
    if route.backends.is_empty() {
        return Err(ErrorKind::NoBackend.into());
    }

    // Phases 3 and 4: choose a backend, forward (with retries), relay the answer.
    match forward(w, c, &route, ex).await? {
        Relayed::Done { keep_client } => Ok(Next::from_keep(keep_client)),
        Relayed::Upgraded(conn) => Ok(Next::Tunnel(conn)),
    }
}

/// The one place a failure becomes what the client, the log and the metrics see: the status and page
/// of its kind (`proxy::error`), or a closed connection when nothing can be answered.
pub async fn fail_to_proxy<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    ex: &mut Exchange,
    e: ProxyError,
) -> Next {
    ex.error = Some(e.kind);
    if let Some(counter) = e.kind.counter() {
        w.m().inc(counter);
    }
    let Some(status) = e.kind.status() else {
        return Next::Close;
    };
    debug!(
        "worker {}: {} {}: {status} ({:?} side: {})",
        w.id,
        c.peer_ip,
        c.host,
        e.kind.side(),
        e.kind.reason()
    );
    // The connection can carry another request only if this one's body is behind us.
    let body_done = match e.body {
        BodyLeft::Untouched => skip_buffered_body(c),
        BodyLeft::Consumed => true,
        BodyLeft::Unconsumed => false,
    };
    let close = !body_done || !c.head.keep_alive;
    Next::from_keep(respond_error(c, w, ex, status, e.kind.reason(), close, b"").await)
}

/// Turns the connection into a tunnel to the backend until both sides close, then logs the exchange.
pub async fn tunnel<S: ClientStream + 'static>(
    mut c: ClientConn<S>,
    conn: BackendConn,
    mut ex: Exchange,
    w: &Core,
) {
    let Some(backend) = conn.into_stream() else {
        return;
    };
    // The tunnel's small writes must not wait for ACKs.
    c.ensure_nodelay();
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
                client,
                early,
                backend,
                idle,
                w.config.server.splice,
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

/// Phase 5, log: counts the exchange and writes its access-log line.
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
