//! The proxy's own answers, sent on the client connection: the load balancer's `__ping__`, ACME HTTP-01
//! challenges, redirects and refusals of the frontend's options, and error pages (docs/compatibility.md
//! §6; the bytes of the pages come from `proxy::error_pages`).
//!
//! Sends what it is told to: which status a failure gets is decided in `proxy::error`, and
//! `proxy::pipeline` decides when to answer.

use crate::dataplane::access_log::push_u64;
use crate::dataplane::core::Core;
use crate::dataplane::http1::body::BodyFraming;
use crate::dataplane::http1::head::Span;
use crate::dataplane::http1::io::write_all_vec;
use crate::dataplane::proxy::acme_challenge;
use crate::dataplane::proxy::error::{ErrorKind, NO_FRONTEND};
use crate::dataplane::proxy::error_pages::reason_phrase;
use crate::dataplane::session::{ClientConn, ClientStream, Exchange};

/// Answers a load balancer's `Host: __ping__` probe without touching the driver.
pub async fn respond_ping<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
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

/// Answers an HTTP-01 challenge from Redis (`proxy::acme_challenge`).
pub async fn respond_acme_challenge<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    ex: &mut Exchange,
    target: Span,
) -> Result<bool, ErrorKind> {
    let path = target.of(&c.buf).to_vec();
    let body = match acme_challenge::answer(w, &path).await {
        acme_challenge::ChallengeAnswer::Found(body) => body,
        acme_challenge::ChallengeAnswer::NotFound => return Err(ErrorKind::AcmeChallengeNotFound),
        acme_challenge::ChallengeAnswer::Unavailable => {
            return Err(ErrorKind::AcmeChallengeUnavailable)
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
    Ok(write_all_vec(&mut c.io, &mut c.out, c.send_timeout)
        .await
        .is_ok()
        && !close)
}

/// Consumes the request body if it is entirely in the buffer. False when it is not (the connection
/// must then close, since the rest of the body would be read as the next request).
pub fn skip_buffered_body<S>(c: &mut ClientConn<S>) -> bool {
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

/// An answer (a redirect or a refusal) to a request whose body was not looked at, with extra header
/// lines (`Location`, `Retry-After`): the body is skipped if it is all in the buffer, else the
/// connection closes.
pub async fn respond_skipping_body_with<S: ClientStream>(
    c: &mut ClientConn<S>,
    w: &Core,
    ex: &mut Exchange,
    status: u16,
    reason: &'static str,
    extra: &[u8],
) -> bool {
    let close = !skip_buffered_body(c) || !c.head.keep_alive;
    respond_error(c, w, ex, status, reason, close, extra).await
}

/// Sends one of the proxy's own answers (docs/compatibility.md §6), with `extra` header lines (each
/// ending in CRLF, or none). On HTTPS, a route with the `hsts` option adds `Strict-Transport-Security`
/// to the proxy's own answers too. Returns whether the connection may continue.
pub async fn respond_error<S: ClientStream>(
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
