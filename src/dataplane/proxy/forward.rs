//! Phase 3, forward: send the request to a backend and relay the answer, with retries (docs/compatibility.md §3).
//!
//! 1. *Body in hand.* Up to `server.requestBufferSize` of the body is read before a backend connection
//!    is taken, so a slow upload holds no backend; a body that fits is read completely and the request
//!    can be retried; the rest of a larger one is streamed and it can only be retried while no byte of
//!    it has left the client buffer. Reading from the client is paced (`server.minBodyRate`, see
//!    `http1::body::BodyPace`).
//! 2. *Attempts.* Each attempt chooses a live backend at random (phase 2), takes a pooled connection or
//!    connects, sends the head (and the body in hand) and waits for the response head. A connection-level
//!    failure before any response byte marks the backend dead and tries again, up to
//!    `server.retryOnError` more times; a pooled connection found closed by the backend is retried once
//!    on a fresh connection without counting. No response head within the backend timeout: 504, marked.
//!    More than [`MAX_INTERIM`] interim (1xx) answers: 502, not marked (the backend is alive, only
//!    broken for this request).
//! 3. *Relay.* The response head is rewritten (hop-by-hop headers dropped) and sent with the first body
//!    bytes in one write (a small response ends there). The rest of the body goes through a read-ahead
//!    of pooled buffers, at most `server.responseBufferSize`: the backend is read as fast as it sends,
//!    the client written as fast as it reads, and the backend connection goes back to its pool (only if
//!    the exchange left it clean) as soon as the backend is done, however slowly the client reads.
//!    Writing to the client is paced (`server.minBodyRate`).
//!
//! Nothing here writes error pages: failures before any response byte are returned to the connection
//! loop, which answers them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::dataplane::upstream::stream::BackendStream;
use log::{debug, warn};
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::common::metrics::Counter;
use crate::dataplane::core::Core;
use crate::dataplane::http1::body::{BodyFraming, BodyPace};
use crate::dataplane::http1::head::{Framing, Parsed, ResponseHead};
use crate::dataplane::http1::io::{read_more, write_all_vec, write_range};
use crate::dataplane::proxy::choose::choose_backend;
use crate::dataplane::proxy::headers::{
    write_request_head, write_response_head, ClientSide, DebugInfo, ResponseDelivery,
};
use crate::dataplane::routing::Route;
use crate::dataplane::session::{ClientConn, ClientStream, Exchange};
use crate::dataplane::upstream::pool::{AcquireError, BackendConn};

/// Bodies up to this size are copied behind the head so both leave in one write.
const COALESCE_LIMIT: usize = 16 * 1024;

/// Interim (1xx) answers relayed per exchange; one more and the client gets 502 (README "Limits").
pub const MAX_INTERIM: usize = 16;

/// How the exchange ended.
pub enum Forwarded {
    /// The backend's response was relayed.
    Relayed { keep_client: bool },
    /// Nothing was sent to the client yet: answer with this status.
    Failed {
        status: u16,
        reason: &'static str,
        close_client: bool,
    },
    /// The exchange broke after bytes were sent, or the client went away: close the connection.
    Broken,
    /// The backend accepted a WebSocket upgrade; its `101` was relayed. The connection becomes a tunnel.
    Upgraded(BackendConn),
}

/// The request body as the forward phase sees it.
struct RequestBody {
    /// Body bytes in `c.buf` right after the head.
    in_hand: usize,
    /// The whole body is in hand (the request can be re-sent).
    complete: bool,
    /// Framing of the part still to come from the client (when not complete).
    rest: BodyFraming,
}

enum HeadFailure {
    /// No complete head within the backend timeout.
    Timeout,
    /// Closed or reset; `any_bytes`: part of a head had arrived.
    Closed {
        any_bytes: bool,
    },
    Malformed(&'static str),
}

/// Forwards the request in `c` to one of `route`'s backends.
pub async fn forward<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    route: &Rc<Route>,
    ex: &mut Exchange,
) -> Forwarded {
    let s = &w.config.server;
    let mut body = match prepare_body(w, c, route.options.max_body).await {
        Ok(b) => b,
        Err(f) => return f,
    };
    let body_start = c.head.len;
    c.pos = body_start + body.in_hand;

    // The head (and a small body) for the backend, built once and re-sent as is on retries.
    c.out.clear();
    // README, "Behind a load balancer": with `server.trustedProxies`, only clients inside it keep
    // their X-Forwarded-* headers; `trustForwardedHeaders: true` still trusts everyone.
    let listed = s
        .trusted_proxies
        .as_deref()
        .map(|t| crate::dataplane::net::cidr::any_contains(t, c.peer_addr));
    let client = ClientSide {
        peer_ip: &c.peer_ip,
        proto: c.listener.proto,
        local_port: &c.listener.port,
        trust_forwarded: s.trust_forwarded_headers || listed == Some(true),
        keep_client_xff: s.trust_forwarded_headers || listed != Some(false),
        allow_underscores: s.allow_underscores_in_headers,
    };
    write_request_head(&mut c.out, &c.buf, &c.head, &client, s.http_keep_alive);
    let body_in_out = body.in_hand <= COALESCE_LIMIT;
    if body_in_out {
        c.out
            .extend_from_slice(&c.buf[body_start..body_start + body.in_hand]);
    }

    let mut relay = w.body_bufs.get();
    // The connection's response head is lent out for the exchange and returned after it.
    let mut resp = std::mem::replace(&mut c.resp, ResponseHead::empty());
    let result = attempts(
        w,
        c,
        route,
        ex,
        &mut body,
        body_in_out,
        &mut relay,
        &mut resp,
    )
    .await;
    c.resp = resp;
    w.body_bufs.put(relay);
    result
}

#[allow(clippy::too_many_arguments)]
async fn attempts<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    route: &Rc<Route>,
    ex: &mut Exchange,
    body: &mut RequestBody,
    body_in_out: bool,
    relay: &mut Vec<u8>,
    resp: &mut ResponseHead,
) -> Forwarded {
    let s = &w.config.server;
    // `backend_timeout` of the frontend's options overrides the server's (README "Per-frontend options").
    let backend_timeout = route.options.backend_timeout.or(s.backend_timeout);
    let max_attempts = 1 + s.retry_on_error as usize;
    let mut attempt = 0;
    // Set when a pooled connection turned out closed: retry this backend once on a fresh connection.
    let mut fresh_retry: Option<usize> = None;
    let mut fresh_retry_used = false;

    // Set once body bytes beyond the buffer have been read from the client: the request can no longer
    // be re-sent, so any failure is final.
    let mut streamed = false;
    // The client connection must close after an error answer if its body was not entirely consumed.
    let failed = |status, reason, body: &RequestBody| Forwarded::Failed {
        status,
        reason,
        close_client: !body.complete,
    };
    loop {
        let (index, fresh_only) = match fresh_retry.take() {
            Some(i) => {
                w.m().inc(Counter::Retries);
                (i, true)
            }
            None => {
                attempt += 1;
                if attempt > 1 {
                    w.m().inc(Counter::Retries);
                }
                if attempt > max_attempts {
                    return failed(502, "backends failed (retries exhausted)", body);
                }
                let chosen = if route.options.is_default() {
                    choose_backend(route, &w.rng)
                } else {
                    let facts = crate::dataplane::proxy::balance::Facts {
                        client: crate::dataplane::proxy::policy::client_addr(
                            c,
                            s.trust_forwarded_headers,
                        ),
                        sticky: crate::dataplane::proxy::policy::sticky_cookie(&c.head, &c.buf),
                    };
                    crate::dataplane::proxy::balance::choose(route, &w.rng, &facts)
                };
                match chosen {
                    Some(i) => (i, false),
                    None => return failed(502, "all backends are marked dead (or drained)", body),
                }
            }
        };
        let backend = &route.backends[index];
        // Counted for `balance leastconn` until this attempt ends.
        let _in_flight = crate::dataplane::proxy::balance::InFlight::enter(route, index);
        let target = match &backend.target {
            Ok(t) => t,
            Err(why) => {
                // Logged once per version of the list when the route was built (routing::route).
                debug!(
                    "frontend {}: unusable backend entry: {why}",
                    route.frontend_key
                );
                continue;
            }
        };
        let addr = match w.pools.address_of(target).await {
            Ok(a) => a,
            Err(e) => {
                warn!(
                    "frontend {}: cannot resolve backend {}: {e}",
                    route.frontend_key, backend.url
                );
                backend_failed(w, route, &c.host, index);
                continue;
            }
        };
        let backend_start = Instant::now();
        relay.clear();
        let mut conn = match w.pools.acquire(addr, fresh_only, Some(c.peer_addr)).await {
            Ok(conn) => conn,
            Err(AcquireError::Saturated) => {
                return failed(503, "backend connection limit (maxSockets) reached", body)
            }
            Err(AcquireError::ClientLimit) => {
                return failed(
                    503,
                    "client connection limit (maxSocketsPerClient) reached",
                    body,
                )
            }
            Err(e) => {
                // Nothing was sent: always safe to try again.
                debug!("backend {} of {}: {e}", backend.url, c.host);
                backend_failed(w, route, &c.host, index);
                continue;
            }
        };

        // Send the head and the body in hand (still in the client buffer: a failure here can be retried).
        if let Err(e) = send_request(c, conn.stream(), body, body_in_out, backend_timeout).await {
            if conn.reused && !fresh_retry_used {
                fresh_retry_used = true;
                fresh_retry = Some(index);
                continue;
            }
            debug!("backend {} of {}: write failed: {e}", backend.url, c.host);
            backend_failed(w, route, &c.host, index);
            continue;
        }
        // Stream the rest of a large body. From here on the request cannot be re-sent.
        if !body.complete {
            streamed = true;
            let result =
                stream_request_body(w, c, conn.stream(), body, relay, route.options.max_body).await;
            // The relay buffer held request bytes; the response starts afresh.
            relay.clear();
            match result {
                Ok(()) => {}
                Err(BodyStreamError::Client) => return Forwarded::Broken,
                Err(BodyStreamError::TooLarge) => return too_large(w),
                Err(BodyStreamError::Malformed) => {
                    return Forwarded::Failed {
                        status: 400,
                        reason: "malformed chunked request body",
                        close_client: true,
                    }
                }
                Err(BodyStreamError::Backend) => {
                    // The backend stopped reading: it may have answered early (e.g. 413); relay that if so.
                    if read_response_head(
                        conn.stream(),
                        relay,
                        resp,
                        Some(Duration::from_secs(1)),
                        s.max_header_size,
                        c.head.is_head_method,
                    )
                    .await
                    .is_ok()
                    {
                        let _ = relay_response(
                            w,
                            c,
                            route,
                            conn,
                            relay,
                            resp,
                            index,
                            ex,
                            backend_start,
                            true,
                        )
                        .await;
                        return Forwarded::Broken;
                    }
                    return failed(502, "backend closed the connection during the upload", body);
                }
            }
        }
        // Wait for the response head, passing interim (1xx) answers on (a bounded number of them).
        let mut interim = 0usize;
        let head = loop {
            match read_response_head(
                conn.stream(),
                relay,
                resp,
                backend_timeout,
                s.max_header_size,
                c.head.is_head_method,
            )
            .await
            {
                Ok(()) if (100..200).contains(&resp.status) && resp.status != 101 => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        warn!(
                            "backend {} of {} sent more than {MAX_INTERIM} interim responses",
                            backend.url, c.host
                        );
                        return failed(502, "too many interim (1xx) responses from backend", body);
                    }
                    if let Err(r) = relay_interim(c, relay, resp).await {
                        return r;
                    }
                }
                other => break other,
            }
        };
        match head {
            Ok(()) => {}
            Err(HeadFailure::Timeout) => {
                warn!(
                    "backend {} of {} sent no response head within {:?}",
                    backend.url,
                    c.host,
                    backend_timeout.unwrap_or_default()
                );
                backend_failed(w, route, &c.host, index);
                return failed(504, "backend timed out", body);
            }
            Err(HeadFailure::Closed { any_bytes: false }) => {
                if conn.reused && !fresh_retry_used && !streamed {
                    fresh_retry_used = true;
                    fresh_retry = Some(index);
                    continue;
                }
                debug!(
                    "backend {} of {}: closed before answering",
                    backend.url, c.host
                );
                backend_failed(w, route, &c.host, index);
                if !streamed {
                    continue;
                }
                return failed(502, "backend closed the connection", body);
            }
            Err(HeadFailure::Closed { any_bytes: true }) => {
                return failed(502, "backend closed the connection mid-response", body)
            }
            Err(HeadFailure::Malformed(why)) => {
                warn!("backend {} of {}: {why}", backend.url, c.host);
                return failed(502, "invalid response from backend", body);
            }
        }
        if resp.status == 101 {
            if !c.head.websocket {
                return failed(502, "backend switched protocols unasked", body);
            }
            return answer_upgrade(w, c, route, conn, relay, resp, index, ex, backend_start).await;
        }
        // Status-based marks (docs/compatibility.md §3): 501, 502, 504-599; the answer itself is relayed unchanged.
        if s.dead_backend_on_500 && matches!(resp.status, 501 | 502 | 504..=599) {
            w.m().inc(Counter::BackendBadStatus);
            w.mark_dead(route, &c.host, index);
        }
        return relay_response(
            w,
            c,
            route,
            conn,
            relay,
            resp,
            index,
            ex,
            backend_start,
            false,
        )
        .await;
    }
}

/// A connection-level failure: counted, and the backend marked dead (docs/compatibility.md §3).
fn backend_failed(w: &Core, route: &Route, host: &str, index: usize) {
    w.m().inc(Counter::BackendErrors);
    w.mark_dead(route, host, index);
}

/// Reads a body that fits the retry buffer, sends `100 Continue` when the client waits for it.
async fn prepare_body<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    max_body: Option<u64>,
) -> Result<RequestBody, Forwarded> {
    let s = &w.config.server;
    let start = c.head.len;
    let mut framing = BodyFraming::new(c.head.framing, false);
    if framing.is_done() {
        return Ok(RequestBody {
            in_hand: 0,
            complete: true,
            rest: BodyFraming::Done,
        });
    }
    let mut scanned = 0usize;
    let mut continue_sent = false;
    let mut pace = BodyPace::new(s.min_body_rate, s.tcp_timeout);
    loop {
        let end = c.buf.len();
        let progress = framing
            .take(&mut c.buf[start + scanned..end])
            .map_err(|_| Forwarded::Failed {
                status: 400,
                reason: "malformed chunked request body",
                close_client: true,
            })?;
        // Leading zeros of chunk sizes dropped by the scanner leave a gap behind the bytes to send.
        if progress.produced < progress.consumed {
            let at = start + scanned;
            c.buf.drain(at + progress.produced..at + progress.consumed);
        }
        scanned += progress.produced;
        if max_body.is_some_and(|max| scanned as u64 > max) {
            return Err(too_large(w));
        }
        if progress.done {
            return Ok(RequestBody {
                in_hand: scanned,
                complete: true,
                rest: BodyFraming::Done,
            });
        }
        // Too large to hold: the first `requestBufferSize` bytes are in hand, stream the rest.
        if scanned >= s.retry_body_buffer {
            if !continue_sent {
                send_continue(c).await?;
            }
            return Ok(RequestBody {
                in_hand: scanned,
                complete: false,
                rest: framing,
            });
        }
        if !continue_sent {
            send_continue(c).await?;
            continue_sent = true;
        }
        match read_paced(&mut c.io, &mut c.buf, &mut pace).await {
            Ok(0) | Err(_) => return Err(Forwarded::Broken),
            Ok(_) => {}
        }
    }
}

/// A body over the frontend's `max_body` (README "Per-frontend options"), found while reading it: 413,
/// and the connection closes (the rest of the body is not read).
fn too_large(w: &Core) -> Forwarded {
    w.m().inc(Counter::RejectedMaxBody);
    Forwarded::Failed {
        status: 413,
        reason: "request body over the frontend's max_body",
        close_client: true,
    }
}

/// One read from the client within what `pace` allows (its idle timeout, shortened for a client below
/// the minimum rate). A timeout is an error: the caller closes the connection.
async fn read_paced<R: AsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    pace: &mut BodyPace,
) -> io::Result<usize> {
    let timeout = pace.allowance()?;
    let started = Instant::now();
    let n = read_more(r, buf, timeout).await?;
    pace.record(started.elapsed(), n);
    Ok(n)
}

/// Writes `buf[start..end]` to the client, each write within what `pace` allows (see [`read_paced`]).
async fn write_paced<W: AsyncWriteRent>(
    w: &mut W,
    buf: &mut Vec<u8>,
    start: usize,
    end: usize,
    pace: &mut BodyPace,
) -> io::Result<()> {
    let mut pos = start;
    while pos < end {
        let timeout = pace.allowance()?;
        let started = Instant::now();
        let n = crate::dataplane::http1::io::write_once(w, buf, pos, end, timeout).await?;
        pace.record(started.elapsed(), n);
        pos += n;
    }
    Ok(())
}

async fn send_continue<S: ClientStream>(c: &mut ClientConn<S>) -> Result<(), Forwarded> {
    if c.head.expect_continue && c.head.minor_version == 1 {
        c.head.expect_continue = false;
        c.out.clear();
        c.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        write_all_vec(&mut c.io, &mut c.out, c.send_timeout)
            .await
            .map_err(|_| Forwarded::Broken)?;
    }
    Ok(())
}

async fn send_request<S: ClientStream>(
    c: &mut ClientConn<S>,
    stream: &mut BackendStream,
    body: &RequestBody,
    body_in_out: bool,
    timeout: Option<Duration>,
) -> io::Result<()> {
    write_all_vec(stream, &mut c.out, timeout).await?;
    if !body_in_out && body.in_hand > 0 {
        let start = c.head.len;
        write_range(stream, &mut c.buf, start, start + body.in_hand, timeout).await?;
    }
    Ok(())
}

enum BodyStreamError {
    Client,
    /// Over the frontend's `max_body`.
    TooLarge,
    Backend,
    Malformed,
}

/// Copies the rest of the request body from the client to the backend. Bytes that arrive after the body
/// (a pipelined request) are kept in the client buffer.
async fn stream_request_body<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    backend: &mut BackendStream,
    body: &mut RequestBody,
    relay: &mut Vec<u8>,
    max_body: Option<u64>,
) -> Result<(), BodyStreamError> {
    // Everything in the client buffer so far was head or body.
    c.pos = c.buf.len();
    let mut total = body.in_hand as u64;
    let s = &w.config.server;
    let mut pace = BodyPace::new(s.min_body_rate, s.tcp_timeout);
    while !body.rest.is_done() {
        relay.clear();
        match read_paced(&mut c.io, relay, &mut pace).await {
            Ok(0) | Err(_) => return Err(BodyStreamError::Client),
            Ok(_) => {}
        }
        let n = relay.len();
        let p = body
            .rest
            .take(&mut relay[..n])
            .map_err(|_| BodyStreamError::Malformed)?;
        if p.consumed < n {
            c.buf.extend_from_slice(&relay[p.consumed..n]);
        }
        total += p.produced as u64;
        if max_body.is_some_and(|max| total > max) {
            return Err(BodyStreamError::TooLarge);
        }
        write_range(
            backend,
            relay,
            0,
            p.produced,
            w.config.server.backend_timeout,
        )
        .await
        .map_err(|_| BodyStreamError::Backend)?;
    }
    body.complete = true;
    Ok(())
}

/// Reads a response head into `relay[..resp.len]` (body bytes may follow it).
async fn read_response_head(
    stream: &mut BackendStream,
    relay: &mut Vec<u8>,
    resp: &mut ResponseHead,
    timeout: Option<Duration>,
    max_len: usize,
    request_was_head: bool,
) -> Result<(), HeadFailure> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if !relay.is_empty() {
            match resp.parse(relay, max_len, request_was_head) {
                Ok(Parsed::Complete) => return Ok(()),
                Ok(Parsed::Partial) => {}
                Err(why) => return Err(HeadFailure::Malformed(why)),
            }
        }
        let left = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(HeadFailure::Timeout);
                }
                Some(left)
            }
            None => None,
        };
        match read_more(stream, relay, left).await {
            Ok(0) => {
                return Err(HeadFailure::Closed {
                    any_bytes: !relay.is_empty(),
                })
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(HeadFailure::Timeout),
            Err(_) => {
                return Err(HeadFailure::Closed {
                    any_bytes: !relay.is_empty(),
                })
            }
        }
    }
}

/// Passes a 1xx answer to an HTTP/1.1 client and removes it from the buffer.
async fn relay_interim<S: ClientStream>(
    c: &mut ClientConn<S>,
    relay: &mut Vec<u8>,
    resp: &ResponseHead,
) -> Result<(), Forwarded> {
    if c.head.minor_version == 1 {
        c.out.clear();
        let how = ResponseDelivery {
            client_http10: false,
            close: false,
            decode_chunked: false,
            upgrade: false,
        };
        write_response_head(&mut c.out, relay, resp, &how, None);
        write_all_vec(&mut c.io, &mut c.out, c.send_timeout)
            .await
            .map_err(|_| Forwarded::Broken)?;
    }
    relay.drain(..resp.len);
    Ok(())
}

/// Relays a `101 Switching Protocols` and any bytes the backend sent after it; the caller then runs the
/// tunnel.
#[allow(clippy::too_many_arguments)]
async fn answer_upgrade<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    route: &Rc<Route>,
    conn: BackendConn,
    relay: &[u8],
    resp: &ResponseHead,
    index: usize,
    ex: &mut Exchange,
    backend_start: Instant,
) -> Forwarded {
    let how = ResponseDelivery {
        client_http10: false,
        close: false,
        decode_chunked: false,
        upgrade: true,
    };
    let debug_info;
    let debug = if w.config.server.debug && c.head.x_debug {
        debug_info = DebugInfo {
            backend_url: &route.backends[index].url,
            backend_index: index,
            identifier: &route.identifier,
            frontend_key: &c.host,
            total_ms: ex.start.elapsed().as_millis() as u64,
            backend_ms: backend_start.elapsed().as_millis() as u64,
        };
        Some(&debug_info)
    } else {
        None
    };
    c.out.clear();
    write_response_head(&mut c.out, relay, resp, &how, debug);
    if !route.options.is_default() {
        crate::dataplane::proxy::policy::extend_response_head(c, route, index, relay, resp);
    }
    // Bytes the backend sent right after its 101 belong to the tunnel.
    c.out.extend_from_slice(&relay[resp.len..]);
    ex.status = 101;
    ex.bytes_sent = c.out.len() as u64;
    ex.backend_secs = backend_start.elapsed().as_secs_f64();
    if write_all_vec(&mut c.io, &mut c.out, c.send_timeout)
        .await
        .is_err()
    {
        return Forwarded::Broken;
    }
    Forwarded::Upgraded(conn)
}

/// Sends the response head and body to the client; returns the backend connection to its pool when clean.
#[allow(clippy::too_many_arguments)]
async fn relay_response<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    route: &Rc<Route>,
    conn: BackendConn,
    relay: &mut Vec<u8>,
    resp: &mut ResponseHead,
    index: usize,
    ex: &mut Exchange,
    backend_start: Instant,
    force_close: bool,
) -> Forwarded {
    let s = &w.config.server;
    let client_http10 = c.head.minor_version == 0;
    let decode = resp.framing == Framing::Chunked && client_http10;
    let close = force_close
        || !c.head.keep_alive
        || resp.framing == Framing::UntilClose
        || decode
        || w.draining.get();
    let how = ResponseDelivery {
        client_http10,
        close,
        decode_chunked: decode,
        upgrade: false,
    };
    let debug_info;
    let debug = if s.debug && c.head.x_debug {
        debug_info = DebugInfo {
            backend_url: &route.backends[index].url,
            backend_index: index,
            identifier: &route.identifier,
            frontend_key: &c.host,
            total_ms: ex.start.elapsed().as_millis() as u64,
            backend_ms: backend_start.elapsed().as_millis() as u64,
        };
        Some(&debug_info)
    } else {
        None
    };
    c.out.clear();
    write_response_head(&mut c.out, relay, resp, &how, debug);
    if !route.options.is_default() {
        crate::dataplane::proxy::policy::extend_response_head(c, route, index, relay, resp);
    }
    ex.status = resp.status;

    // The body bytes that came with the head.
    let mut framing = BodyFraming::new(resp.framing, decode);
    let start = resp.len;
    let end = relay.len();
    let first = match framing.take(&mut relay[start..end]) {
        Ok(p) => p,
        Err(_) => {
            // The head is not sent yet: the client can still get a clean 502.
            return Forwarded::Failed {
                status: 502,
                reason: "malformed chunked response from backend",
                close_client: !c.head.keep_alive,
            };
        }
    };
    let extra = end - start > first.consumed;
    let clean_head = resp.keep_alive && !resp.must_close && resp.framing != Framing::UntilClose;
    let mut pace = BodyPace::new(s.min_body_rate, c.send_timeout);
    if first.done {
        // The whole response is in hand: the backend is free before the client has read a byte.
        ex.backend_secs = backend_start.elapsed().as_secs_f64();
        w.pools.release(conn, clean_head && !extra);
        let result = write_first(
            c,
            relay,
            start,
            first.produced,
            &mut pace,
            &mut ex.bytes_sent,
        );
        if result.await.is_err() {
            return Forwarded::Broken;
        }
        return Forwarded::Relayed {
            keep_client: !close,
        };
    }
    // The rest of the body: read ahead of the client while it is written, from the very first bytes
    // (a client that reads nothing does not hold the backend).
    let ahead = ReadAhead::new(s.response_buffer_size.max(1));
    let reader = read_ahead(
        w,
        conn,
        route.options.backend_timeout.or(s.backend_timeout),
        &mut framing,
        resp.framing == Framing::UntilClose,
        clean_head,
        extra,
        &ahead,
        backend_start,
    );
    let sent = &mut ex.bytes_sent;
    let writer = async {
        write_first(c, relay, start, first.produced, &mut pace, sent).await?;
        write_behind(w, &mut c.io, &ahead, pace, sent).await
    };
    // Boxed: the two halves' state lives on the heap only for responses that need it, instead of
    // enlarging every connection task (idle ones included).
    let written = Box::pin(run_both(reader, writer)).await;
    // Buffers the reader left behind (the client went away first) go back to the pool.
    ahead.drain_into(&w.body_bufs);
    ex.backend_secs = ahead
        .backend_secs
        .get()
        .unwrap_or_else(|| backend_start.elapsed().as_secs_f64());
    if written.is_err() || ahead.end.get() != Some(true) {
        if ahead.end.get() == Some(false) {
            debug!(
                "backend {} closed, stalled or broke framing mid-body for {}",
                route.backends[index].url, c.host
            );
        }
        return Forwarded::Broken;
    }
    Forwarded::Relayed {
        keep_client: !close,
    }
}

/// Writes the response head in `c.out` and the first body bytes `relay[start..start + produced]` (in one
/// write when small), counting what is sent in `sent`.
async fn write_first<S: ClientStream>(
    c: &mut ClientConn<S>,
    relay: &mut Vec<u8>,
    start: usize,
    produced: usize,
    pace: &mut BodyPace,
    sent: &mut u64,
) -> io::Result<()> {
    if c.out.len() + produced <= COALESCE_LIMIT {
        c.out.extend_from_slice(&relay[start..start + produced]);
        *sent = c.out.len() as u64;
        let n = c.out.len();
        write_paced(&mut c.io, &mut c.out, 0, n, pace).await
    } else {
        *sent = (c.out.len() + produced) as u64;
        let n = c.out.len();
        write_paced(&mut c.io, &mut c.out, 0, n, pace).await?;
        write_paced(&mut c.io, relay, start, start + produced, pace).await
    }
}

/// Response body bytes read from the backend and not yet written to the client: a queue of pooled
/// buffers shared by the two halves of one exchange ([`read_ahead`], [`write_behind`]), polled by one task
/// ([`run_both`]), so one waker slot serves both.
struct ReadAhead {
    /// Every buffer but the last is full, so memory is about `queued` (plus one buffer).
    chunks: RefCell<VecDeque<Vec<u8>>>,
    /// Bytes queued.
    queued: Cell<usize>,
    /// `responseBufferSize`: no read while this much is queued (one read may pass it by a buffer).
    limit: usize,
    /// Set when the reader stops: `true` if the body ended cleanly.
    end: Cell<Option<bool>>,
    /// When the backend finished (for the access log).
    backend_secs: Cell<Option<f64>>,
    waker: RefCell<Option<Waker>>,
}

impl ReadAhead {
    fn new(limit: usize) -> Self {
        ReadAhead {
            chunks: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            limit,
            end: Cell::new(None),
            backend_secs: Cell::new(None),
            waker: RefCell::new(None),
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn park(&self, cx: &Context<'_>) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
    }

    /// Waits until the queue holds less than its limit.
    async fn room(&self) {
        poll_fn(|cx| {
            if self.queued.get() < self.limit {
                Poll::Ready(())
            } else {
                self.park(cx);
                Poll::Pending
            }
        })
        .await
    }

    /// Queues the bytes of `buf`, filling the last queued buffer first (it only waits there when the
    /// client is behind, so packing costs a copy only then). Returns `true` if `buf` itself was queued
    /// (the caller needs a new buffer), `false` if its bytes were all copied (it is left empty).
    fn push(&self, buf: &mut Vec<u8>) -> bool {
        if buf.is_empty() {
            return false;
        }
        self.queued.set(self.queued.get() + buf.len());
        let mut chunks = self.chunks.borrow_mut();
        if let Some(last) = chunks.back_mut() {
            let k = (last.capacity() - last.len()).min(buf.len());
            last.extend_from_slice(&buf[..k]);
            if k == buf.len() {
                buf.clear();
                drop(chunks);
                self.wake();
                return false;
            }
            buf.drain(..k);
        }
        chunks.push_back(std::mem::take(buf));
        drop(chunks);
        self.wake();
        true
    }

    fn finish(&self, clean: bool, backend_secs: f64) {
        self.end.set(Some(clean));
        self.backend_secs.set(Some(backend_secs));
        self.wake();
    }

    /// The next buffer to write, or `None` once the reader stopped and everything was written.
    async fn next(&self) -> Option<Vec<u8>> {
        poll_fn(|cx| {
            if let Some(buf) = self.chunks.borrow_mut().pop_front() {
                self.queued.set(self.queued.get() - buf.len());
                self.wake();
                return Poll::Ready(Some(buf));
            }
            if self.end.get().is_some() {
                return Poll::Ready(None);
            }
            self.park(cx);
            Poll::Pending
        })
        .await
    }

    fn drain_into(&self, pool: &crate::dataplane::buffers::BufPool) {
        for buf in self.chunks.borrow_mut().drain(..) {
            pool.put(buf);
        }
    }
}

/// Reads the rest of a response body from the backend into `ahead` as fast as the backend sends and
/// the read-ahead has room, then hands the connection back to its pool at once (or closes it).
#[allow(clippy::too_many_arguments)]
async fn read_ahead(
    w: &Core,
    mut conn: BackendConn,
    timeout: Option<Duration>,
    framing: &mut BodyFraming,
    until_close: bool,
    clean_head: bool,
    mut extra: bool,
    ahead: &ReadAhead,
    backend_start: Instant,
) {
    let mut buf = w.body_bufs.get();
    let clean = loop {
        ahead.room().await;
        let before = buf.len();
        match read_more(conn.stream(), &mut buf, timeout).await {
            Ok(0) if until_close => break true,
            Ok(0) | Err(_) => break false,
            Ok(_) => {}
        }
        let n = buf.len() - before;
        let p = match framing.take(&mut buf[before..]) {
            Ok(p) => p,
            Err(_) => break false,
        };
        extra |= n > p.consumed;
        // Decoding (HTTP/1.0 clients) produces fewer bytes than it consumes; bytes past the body are
        // not the client's.
        buf.truncate(before + p.produced);
        if ahead.push(&mut buf) {
            buf = w.body_bufs.get();
        }
        if p.done {
            break true;
        }
    };
    w.body_bufs.put(buf);
    let backend_secs = backend_start.elapsed().as_secs_f64();
    if clean {
        w.pools.release(conn, clean_head && !extra);
    } else {
        drop(conn);
    }
    ahead.finish(clean, backend_secs);
}

/// Writes what [`read_ahead`] queued to the client, paced; `Err` if the client failed or was too slow.
async fn write_behind<S: ClientStream>(
    w: &Core,
    io: &mut S,
    ahead: &ReadAhead,
    mut pace: BodyPace,
    sent: &mut u64,
) -> io::Result<()> {
    while let Some(mut buf) = ahead.next().await {
        let n = buf.len();
        write_paced(io, &mut buf, 0, n, &mut pace).await?;
        *sent += n as u64;
        w.body_bufs.put(buf);
    }
    Ok(())
}

/// Runs the reader and the writer of one response body in the calling task, until the writer is done.
/// A writer that fails first drops the reader (and with it the backend connection, which then closes).
async fn run_both<R, W, T>(reader: R, writer: W) -> T
where
    R: Future<Output = ()>,
    W: Future<Output = T>,
{
    let mut reader = pin!(reader);
    let mut writer = pin!(writer);
    let mut reader_done = false;
    poll_fn(|cx| {
        if !reader_done && reader.as_mut().poll(cx).is_ready() {
            reader_done = true;
        }
        writer.as_mut().poll(cx)
    })
    .await
}
