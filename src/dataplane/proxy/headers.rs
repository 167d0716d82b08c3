//! Writing heads for the next hop (docs/compatibility.md §4): the request toward the backend (hop-by-hop headers
//! dropped, X-Forwarded-* set to the true values, framing re-stated) and the response toward the client
//! (hop-by-hop headers dropped, the client connection's own `Connection` header, debug headers).
//!
//! Everything is appended to a reusable buffer in one pass over the parsed headers; no allocation once
//! the buffer has grown. Nothing here reads or writes sockets.

use crate::dataplane::access_log::push_u64;
use crate::dataplane::http1::head::{
    named_by_connection, Framing, HeaderKind, RequestHead, ResponseHead,
};
use crate::dataplane::proxy::error_pages::reason_phrase;

/// What the proxy knows about the client side of an exchange.
pub struct ClientSide<'a> {
    /// Peer address, written plainly (`127.0.0.1`, `2001:db8::1`).
    pub peer_ip: &'a str,
    /// `http` or `https`.
    pub proto: &'a str,
    /// The local port the client connected to.
    pub local_port: &'a str,
    /// Keep client-supplied X-Forwarded-Proto/-Protocol/-Port and X-Real-IP.
    pub trust_forwarded: bool,
    /// Keep the client's own X-Forwarded-For values before the peer (false: a `server.trustedProxies`
    /// list is set and the client is not in it, so only the client address is sent).
    pub keep_client_xff: bool,
    /// Forward headers whose names contain `_` (`server.allowUnderscoresInHeaders`); dropped otherwise.
    pub allow_underscores: bool,
}

/// Appends the request head for the backend to `out`.
pub fn write_request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    client: &ClientSide<'_>,
    backend_keep_alive: bool,
) {
    out.extend_from_slice(head.method.of(buf));
    out.push(b' ');
    match head.absolute_origin {
        // Absolute form (`GET http://a.test/x`): origin form toward the backend, and the target's
        // authority as Host instead of the client's Host header (RFC 9112 §3.2.2).
        Some(origin) => {
            let origin = origin.of(buf);
            if origin.first() != Some(&b'/') {
                out.push(b'/');
            }
            out.extend_from_slice(origin);
            out.extend_from_slice(b" HTTP/1.1\r\n");
            if let Some(authority) = head.host {
                push_header(out, b"Host", authority.of(buf));
            }
        }
        None => {
            out.extend_from_slice(head.target.of(buf));
            out.extend_from_slice(b" HTTP/1.1\r\n");
        }
    }
    let mut kept_proto = false;
    let mut kept_protocol = false;
    let mut kept_port = false;
    let mut kept_real_ip = false;
    let mut xff_values = 0;
    for h in &head.headers {
        match h.kind {
            HeaderKind::XForwardedFor => {
                xff_values += 1;
                continue;
            }
            HeaderKind::XForwardedProto
            | HeaderKind::XForwardedProtocol
            | HeaderKind::XForwardedPort
            | HeaderKind::XRealIp => {
                if !client.trust_forwarded {
                    continue;
                }
                match h.kind {
                    HeaderKind::XForwardedProto => kept_proto = true,
                    HeaderKind::XForwardedProtocol => kept_protocol = true,
                    HeaderKind::XForwardedPort => kept_port = true,
                    _ => kept_real_ip = true,
                }
            }
            // The proxy answers `100-continue` itself, before reading the body.
            HeaderKind::Expect => continue,
            HeaderKind::Host if head.absolute_origin.is_some() => continue,
            // nginx's default (`underscores_in_headers off`): `X_Real_IP` must not reach a backend
            // that reads it as `X-Real-IP`. No header the proxy knows has an underscore.
            HeaderKind::Other if !client.allow_underscores && h.name.of(buf).contains(&b'_') => {
                continue
            }
            kind if kind.is_hop_by_hop() => continue,
            HeaderKind::Other
                if head.connection.other
                    && named_by_connection(buf, &head.headers, h.name.of(buf)) =>
            {
                continue
            }
            _ => {}
        }
        push_header(out, h.name.of(buf), h.value.of(buf));
    }
    if head.framing == Framing::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    // X-Forwarded-For: every value the client sent, in order, then the peer.
    out.extend_from_slice(b"X-Forwarded-For: ");
    if xff_values > 0 && client.keep_client_xff {
        for h in head
            .headers
            .iter()
            .filter(|h| h.kind == HeaderKind::XForwardedFor)
        {
            let v = crate::dataplane::http1::head::trim(h.value.of(buf));
            if !v.is_empty() {
                out.extend_from_slice(v);
                out.extend_from_slice(b", ");
            }
        }
    }
    out.extend_from_slice(client.peer_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    if !kept_real_ip {
        push_header(out, b"X-Real-IP", client.peer_ip.as_bytes());
    }
    if !kept_proto {
        push_header(out, b"X-Forwarded-Proto", client.proto.as_bytes());
    }
    if !kept_protocol {
        push_header(out, b"X-Forwarded-Protocol", client.proto.as_bytes());
    }
    if !kept_port {
        push_header(out, b"X-Forwarded-Port", client.local_port.as_bytes());
    }
    if head.websocket {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
        for h in head
            .headers
            .iter()
            .filter(|h| h.kind == HeaderKind::Upgrade)
        {
            push_header(out, b"Upgrade", h.value.of(buf));
        }
    } else if !backend_keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Debug information echoed to clients that send `X-Debug` when `server.debug` is on.
pub struct DebugInfo<'a> {
    pub backend_url: &'a str,
    pub backend_index: usize,
    pub identifier: &'a str,
    pub frontend_key: &'a str,
    pub total_ms: u64,
    pub backend_ms: u64,
}

/// How the response is delivered to the client.
pub struct ResponseDelivery {
    /// The client speaks HTTP/1.0 (`Connection: keep-alive` must be explicit).
    pub client_http10: bool,
    /// The client connection closes after this response.
    pub close: bool,
    /// A chunked body is decoded for an HTTP/1.0 client (Transfer-Encoding not forwarded).
    pub decode_chunked: bool,
    /// This is the 101 answer of a WebSocket upgrade (Connection/Upgrade forwarded).
    pub upgrade: bool,
}

/// Appends the response head for the client to `out`.
pub fn write_response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    resp: &ResponseHead,
    how: &ResponseDelivery,
    debug: Option<&DebugInfo<'_>>,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(resp.status));
    out.push(b' ');
    let reason = resp.reason.of(buf);
    if reason.is_empty() {
        out.extend_from_slice(reason_phrase(resp.status).as_bytes());
    } else {
        out.extend_from_slice(reason);
    }
    out.extend_from_slice(b"\r\n");
    let te_present = resp
        .headers
        .iter()
        .any(|h| h.kind == HeaderKind::TransferEncoding);
    for h in &resp.headers {
        match h.kind {
            // Forwarded unchanged when the body is forwarded unchanged.
            HeaderKind::TransferEncoding
                if !how.decode_chunked && resp.framing == Framing::Chunked => {}
            // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3); never send both.
            HeaderKind::ContentLength if te_present => continue,
            HeaderKind::Upgrade if how.upgrade => {}
            kind if kind.is_hop_by_hop() => continue,
            HeaderKind::Other
                if resp.connection.other
                    && named_by_connection(buf, &resp.headers, h.name.of(buf)) =>
            {
                continue
            }
            _ => {}
        }
        push_header(out, h.name.of(buf), h.value.of(buf));
    }
    if how.upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if how.close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if how.client_http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    if let Some(d) = debug {
        write_debug_headers(out, d);
    }
    out.extend_from_slice(b"\r\n");
}

pub fn write_debug_headers(out: &mut Vec<u8>, d: &DebugInfo<'_>) {
    push_header(out, b"X-Debug-Backend-Url", d.backend_url.as_bytes());
    out.extend_from_slice(b"X-Debug-Backend-Id: ");
    push_u64(out, d.backend_index as u64);
    out.extend_from_slice(b"\r\n");
    push_header(out, b"X-Debug-Vhost", d.identifier.as_bytes());
    push_header(out, b"X-Debug-Frontend-Key", d.frontend_key.as_bytes());
    out.extend_from_slice(b"X-Debug-Time-Total: ");
    push_u64(out, d.total_ms);
    out.extend_from_slice(b"\r\nX-Debug-Time-Backend: ");
    push_u64(out, d.backend_ms);
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::http1::head::Parsed;

    fn forward(raw: &str, trust: bool) -> String {
        let mut head = RequestHead::default();
        assert_eq!(head.parse(raw.as_bytes(), 8192), Ok(Parsed::Complete));
        let mut out = Vec::new();
        let client = ClientSide {
            allow_underscores: false,
            peer_ip: "10.1.1.1",
            proto: "http",
            local_port: "8080",
            trust_forwarded: trust,
            keep_client_xff: true,
        };
        write_request_head(&mut out, raw.as_bytes(), &head, &client, true);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_the_authority_as_host() {
        let out = forward(
            "GET http://user@A.test:8080/y?z#frag HTTP/1.1\r\nHost: b.test\r\nAccept: */*\r\n\r\n",
            false,
        );
        assert!(
            out.starts_with("GET /y?z HTTP/1.1\r\nHost: A.test:8080\r\nAccept: */*\r\n"),
            "{out}"
        );
        assert!(!out.contains("b.test"), "{out}");
        let out = forward("GET http://a.test HTTP/1.1\r\n\r\n", false);
        assert!(
            out.starts_with("GET / HTTP/1.1\r\nHost: a.test\r\n"),
            "{out}"
        );
        let out = forward(
            "GET http://a.test?q HTTP/1.1\r\nHost: a.test\r\n\r\n",
            false,
        );
        assert!(
            out.starts_with("GET /?q HTTP/1.1\r\nHost: a.test\r\nX-"),
            "{out}"
        );
    }

    #[test]
    fn client_xff_values_are_dropped_for_untrusted_clients() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
        let mut head = RequestHead::default();
        assert_eq!(head.parse(raw.as_bytes(), 8192), Ok(Parsed::Complete));
        for (keep, want) in [(true, "6.6.6.6, 10.1.1.1"), (false, "10.1.1.1")] {
            let mut out = Vec::new();
            let client = ClientSide {
                allow_underscores: false,
                peer_ip: "10.1.1.1",
                proto: "http",
                local_port: "8080",
                trust_forwarded: false,
                keep_client_xff: keep,
            };
            write_request_head(&mut out, raw.as_bytes(), &head, &client, true);
            let out = String::from_utf8(out).unwrap();
            assert!(
                out.contains(&format!("X-Forwarded-For: {want}\r\n")),
                "{out}"
            );
        }
    }

    #[test]
    fn underscore_headers_are_dropped_unless_allowed() {
        let raw =
            "GET / HTTP/1.1\r\nHost: a\r\nX_Real_IP: 6.6.6.6\r\nMy_Header: 1\r\nX-Ok: 2\r\n\r\n";
        let out = forward(raw, false);
        assert!(
            !out.contains("X_Real_IP") && !out.contains("My_Header"),
            "{out}"
        );
        assert!(out.contains("X-Ok: 2\r\n"), "{out}");
        let mut head = RequestHead::default();
        assert_eq!(head.parse(raw.as_bytes(), 8192), Ok(Parsed::Complete));
        let mut out = Vec::new();
        let client = ClientSide {
            allow_underscores: true,
            peer_ip: "10.1.1.1",
            proto: "http",
            local_port: "8080",
            trust_forwarded: false,
            keep_client_xff: true,
        };
        write_request_head(&mut out, raw.as_bytes(), &head, &client, true);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("My_Header: 1\r\n") && out.contains("X_Real_IP"),
            "{out}"
        );
    }

    #[test]
    fn forwarded_headers_are_set_to_true_values() {
        let out = forward(
            "GET /p?q HTTP/1.1\r\nHost: A.com\r\nX-Forwarded-For: 1.2.3.4\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: x\r\nUpgrade: h2c\r\n\r\n",
            false,
        );
        assert!(
            out.starts_with("GET /p?q HTTP/1.1\r\nHost: A.com\r\n"),
            "{out}"
        );
        assert!(
            out.contains("X-Forwarded-For: 1.2.3.4, 10.1.1.1\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Real-IP: 10.1.1.1\r\n"), "{out}");
        assert!(out.contains("X-Forwarded-Proto: http\r\n"), "{out}");
        assert!(out.contains("X-Forwarded-Port: 8080\r\n"), "{out}");
        for gone in [
            "6.6.6.6",
            "https",
            "X-Secret",
            "Keep-Alive",
            "TE:",
            "Proxy-Authorization",
            "h2c",
            "Connection",
        ] {
            assert!(!out.contains(gone), "{gone} leaked: {out}");
        }
    }

    #[test]
    fn trusted_mode_keeps_client_values() {
        let out = forward(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n",
            true,
        );
        assert!(out.contains("X-Real-IP: 6.6.6.6\r\n"));
        assert!(out.contains("X-Forwarded-Proto: https\r\n"));
        assert!(out.contains("X-Forwarded-For: 10.1.1.1\r\n"));
    }
}
