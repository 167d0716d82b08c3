//! Per-frontend admission and answer policies (README "Per-frontend options"), applied between the
//! route phase and the forward phase: `https_redirect`, `maintenance`, `max_body` (by
//! `Content-Length`), `rate` and `max_connections`; and, on the way back, the headers the options add to
//! a backend's answer (`Strict-Transport-Security`, the sticky cookie).
//!
//! *Per core.* `max_connections` is divided across workers (each admits `ceil(N / workers)`), and
//! `rate` is a token bucket per worker and client address: both hold without any state shared between
//! threads, and both are approximate by design (README "Limits"). Their maps are bounded:
//! [`MAX_RATE_ENTRIES`] client buckets per worker, and in-flight counters only for frontends with
//! requests in flight (an entry goes when its count reaches 0).
//!
//! Nothing here writes to a socket: it decides, and the connection loop answers.

use std::net::IpAddr;
use std::time::Instant;

use crate::common::metrics::Counter;
use crate::dataplane::core::Core;
use crate::dataplane::http1::head::{HeaderKind, RequestHead, ResponseHead};
pub use crate::dataplane::proxy::limits::{PolicyState, Slot, MAX_RATE_ENTRIES};
use crate::dataplane::routing::route::STICKY_ID_LEN;
use crate::dataplane::routing::Route;
use crate::dataplane::session::{ClientConn, ClientStream};

/// Name of the sticky cookie.
pub const STICKY_COOKIE: &str = "hipache_tpc_backend";
/// `Retry-After` of a maintenance answer, seconds.
pub const MAINTENANCE_RETRY_AFTER: u64 = 30;
/// Requests under this path are never redirected (ACME HTTP-01 challenges).
const ACME_PATH: &[u8] = b"/.well-known/acme-challenge/";

/// What the admission step decided.
pub enum Admission<'a> {
    /// Go on to the backend (holding the `max_connections` slot, if any, until the exchange ends).
    Proceed(Option<Slot<'a>>),
    /// Answer with a redirect (`https_redirect`): status and the `Location` header line.
    Redirect(u16, Vec<u8>),
    /// Answer with an error page: status, reason (for `X-Debug-Error`), extra header lines.
    Reject(u16, &'static str, Vec<u8>),
}

/// The client address used by `iphash` and `rate`: the one `X-Forwarded-For` ends with, or, when
/// `server.trustForwardedHeaders` is on, the first address the client's own `X-Forwarded-For` names.
pub fn client_addr<S>(c: &ClientConn<S>, trust_forwarded: bool) -> IpAddr {
    if trust_forwarded {
        if let Some(h) = c
            .head
            .headers
            .iter()
            .find(|h| h.kind == HeaderKind::XForwardedFor)
        {
            let v = h.value.of(&c.buf);
            let first = v.split(|&b| b == b',').next().unwrap_or(b"");
            if let Some(ip) = std::str::from_utf8(crate::dataplane::http1::head::trim(first))
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok())
            {
                return ip;
            }
        }
    }
    c.peer_addr
}

/// The value of the request's `hipache_tpc_backend` cookie, if it has one of the right shape. Reads
/// every `Cookie` header (HTTP/2 cookie fields arrive joined), splits on `;`, never allocates.
pub fn sticky_cookie<'b>(head: &RequestHead, buf: &'b [u8]) -> Option<&'b [u8]> {
    for h in &head.headers {
        if h.kind != HeaderKind::Other || !h.name.of(buf).eq_ignore_ascii_case(b"cookie") {
            continue;
        }
        for pair in h.value.of(buf).split(|&b| b == b';') {
            let pair = crate::dataplane::http1::head::trim(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if &pair[..eq] != STICKY_COOKIE.as_bytes() {
                continue;
            }
            let mut v = crate::dataplane::http1::head::trim(&pair[eq + 1..]);
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v = &v[1..v.len() - 1];
            }
            if v.len() == STICKY_ID_LEN && v.iter().all(u8::is_ascii_hexdigit) {
                return Some(v);
            }
        }
    }
    None
}

/// The port clients are redirected to: the first HTTPS listener's (443 without one).
fn https_port(w: &Core) -> u16 {
    w.config
        .https
        .as_ref()
        .and_then(|h| h.listeners.first())
        .map_or(443, |l| l.addr.port())
}

/// Decides what happens to a request routed to `route`, before any backend is touched.
pub fn admit<'w, S: ClientStream>(w: &'w Core, c: &ClientConn<S>, route: &Route) -> Admission<'w> {
    let o = &route.options;
    if o.is_default() {
        return Admission::Proceed(None);
    }
    let m = w.m();
    let target = c.head.absolute_origin.unwrap_or(c.head.target).of(&c.buf);
    if o.https_redirect && c.listener.proto == "http" && !target.starts_with(ACME_PATH) {
        m.inc(Counter::Redirects);
        let method = c.head.method.of(&c.buf);
        let status = if method == b"GET" || method == b"HEAD" {
            301
        } else {
            308
        };
        let mut location = Vec::with_capacity(32 + c.host.len() + target.len());
        location.extend_from_slice(b"Location: https://");
        // A literal IPv6 host is normalised without its brackets.
        if c.host.contains(':') {
            location.push(b'[');
            location.extend_from_slice(c.host.as_bytes());
            location.push(b']');
        } else {
            location.extend_from_slice(c.host.as_bytes());
        }
        let port = https_port(w);
        if port != 443 {
            location.push(b':');
            crate::dataplane::access_log::push_u64(&mut location, u64::from(port));
        }
        if !target.starts_with(b"/") {
            location.push(b'/');
        }
        location.extend_from_slice(target);
        location.extend_from_slice(b"\r\n");
        return Admission::Redirect(status, location);
    }
    if o.maintenance {
        m.inc(Counter::RejectedMaintenance);
        let mut h = b"Retry-After: ".to_vec();
        crate::dataplane::access_log::push_u64(&mut h, MAINTENANCE_RETRY_AFTER);
        h.extend_from_slice(b"\r\n");
        return Admission::Reject(503, "frontend in maintenance", h);
    }
    if let (Some(limit), crate::dataplane::http1::head::Framing::Length(n)) =
        (o.max_body, c.head.framing)
    {
        if n > limit {
            m.inc(Counter::RejectedMaxBody);
            return Admission::Reject(413, "request body over the frontend's max_body", Vec::new());
        }
    }
    if let Some(rate) = o.rate {
        let client = client_addr(c, w.config.server.trust_forwarded_headers);
        if let Err(wait) = w
            .policy
            .take_token(&route.frontend_key, client, rate, Instant::now())
        {
            m.inc(Counter::RejectedRate);
            let mut h = b"Retry-After: ".to_vec();
            crate::dataplane::access_log::push_u64(&mut h, wait);
            h.extend_from_slice(b"\r\n");
            return Admission::Reject(429, "request rate over the frontend's rate", h);
        }
    }
    if let Some(max) = o.max_connections {
        let workers = w.config.server.workers.max(1) as u32;
        let per_core = max.div_ceil(workers);
        return match w.policy.enter(&route.frontend_key, per_core) {
            Some(slot) => Admission::Proceed(Some(slot)),
            None => {
                m.inc(Counter::RejectedMaxConnections);
                Admission::Reject(
                    503,
                    "frontend's max_connections reached",
                    b"Retry-After: 1\r\n".to_vec(),
                )
            }
        };
    }
    Admission::Proceed(None)
}

/// `Strict-Transport-Security` for an HTTPS answer of `route` (none on plain HTTP).
pub fn push_hsts(out: &mut Vec<u8>, route: &Route, https: bool) {
    if let (Some(secs), true) = (route.options.hsts, https) {
        out.extend_from_slice(b"Strict-Transport-Security: max-age=");
        crate::dataplane::access_log::push_u64(out, secs);
        out.extend_from_slice(b"\r\n");
    }
}

/// Adds the option headers to a response head already written to `c.out` (ending in an empty line):
/// `Strict-Transport-Security` on HTTPS when the backend sent none, and the sticky cookie when the
/// request did not already carry the chosen backend's. Costs nothing for a frontend without options.
pub fn extend_response_head<S>(
    c: &mut ClientConn<S>,
    route: &Route,
    index: usize,
    relay: &[u8],
    resp: &ResponseHead,
) {
    let o = &route.options;
    let https = c.listener.proto == "https";
    let hsts = https
        && o.hsts.is_some()
        && !resp.headers.iter().any(|h| {
            h.name
                .of(relay)
                .eq_ignore_ascii_case(b"strict-transport-security")
        });
    let cookie = o.sticky
        && !crate::dataplane::proxy::balance::sticky_matches(
            route,
            index,
            sticky_cookie(&c.head, &c.buf),
        );
    let out = &mut c.out;
    if (!hsts && !cookie) || !out.ends_with(b"\r\n\r\n") {
        return;
    }
    out.truncate(out.len() - 2);
    if hsts {
        push_hsts(out, route, true);
    }
    if let (true, Some(id)) = (cookie, route.sticky_ids.get(index)) {
        out.extend_from_slice(b"Set-Cookie: ");
        out.extend_from_slice(STICKY_COOKIE.as_bytes());
        out.push(b'=');
        out.extend_from_slice(id);
        out.extend_from_slice(b"; Path=/; HttpOnly");
        if https {
            out.extend_from_slice(b"; Secure");
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[test]
    fn rate_buckets_refill_and_stay_bounded() {
        let s = PolicyState::default();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(s.take_token("a", ip, 5, t0).is_ok());
        }
        assert_eq!(s.take_token("a", ip, 5, t0), Err(1));
        assert!(s.take_token("b", ip, 5, t0).is_ok(), "per frontend");
        assert!(s
            .take_token("a", ip, 5, t0 + Duration::from_millis(250))
            .is_ok());
        for i in 0..100_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            let _ = s.take_token("a", ip, 1, t0);
            assert!(s.rate_entries() <= MAX_RATE_ENTRIES);
        }
    }

    #[test]
    fn slots_are_released() {
        let s = PolicyState::default();
        let a = s.enter("f", 2);
        let b = s.enter("f", 2);
        assert!(a.is_some() && b.is_some());
        assert!(s.enter("f", 2).is_none());
        drop(a);
        assert!(s.enter("f", 2).is_some());
        drop(b);
        assert!(s.in_flight.borrow().is_empty(), "entries go at 0");
    }

    #[test]
    fn sticky_cookie_is_parsed_safely() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: x=1; hipache_tpc_backend=0123456789ab ; y\r\n\r\n";
        let mut head = RequestHead::default();
        head.parse(raw, 8192).unwrap();
        assert_eq!(sticky_cookie(&head, raw), Some(&b"0123456789ab"[..]));
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: a\r\nCookie: hipache_tpc_backend=zz\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\nCookie: ;;;=;hipache_tpc_backend\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let mut head = RequestHead::default();
            head.parse(bad, 8192).unwrap();
            assert_eq!(sticky_cookie(&head, bad), None);
        }
    }
}
