//! Reading the PROXY protocol header off a new connection on a `proxyProtocol` listener, before
//! anything else (before the TLS ClientHello on HTTPS). README, "Behind a load balancer: PROXY protocol".
//!
//! The header must arrive whole within `server.headerTimeout`, from a peer inside
//! `server.trustedProxies` when that is set; otherwise the connection is closed without an answer (it
//! is not HTTP yet), logged at debug and counted in `hipache_proxy_protocol_errors_total`. Bytes read
//! past the header stay in the caller's buffer and are served as the client's first bytes: nothing is
//! read twice or lost. This module must not answer the client nor hold the connection past the timeout.

use std::net::SocketAddr;
use std::time::Instant;

use log::debug;
use monoio::io::AsyncReadRent;

use super::proxy_header::{parse, Parsed, ProxyHeader, MAX_HEADER};
use crate::common::metrics::Counter;
use crate::dataplane::core::Core;

/// Reads the header into `buf` (empty on entry) and returns the client address it names (the socket
/// peer for `LOCAL` and `UNKNOWN`); `buf` then holds only the bytes that followed the header. `None`:
/// the connection must be closed (already logged and counted).
pub async fn read_client<S: AsyncReadRent>(
    io: &mut S,
    peer: SocketAddr,
    buf: &mut Vec<u8>,
    w: &Core,
) -> Option<SocketAddr> {
    let refuse = |why: &dyn std::fmt::Display| {
        w.m().inc(Counter::ProxyHeaderErrors);
        debug!("worker {}: {peer}: closed: {why}", w.id);
        None
    };
    if let Some(trusted) = &w.config.server.trusted_proxies {
        if !super::cidr::any_contains(trusted, peer.ip()) {
            return refuse(
                &"a PROXY protocol listener, and the peer is not in server.trustedProxies",
            );
        }
    }
    if buf.capacity() < MAX_HEADER {
        buf.reserve(MAX_HEADER - buf.len());
    }
    let limit = w.config.server.header_timeout;
    let deadline = Instant::now() + limit;
    loop {
        match parse(buf) {
            Ok(Parsed::Done { len, header }) => {
                buf.drain(..len);
                w.m().inc(Counter::ProxyHeaders);
                return Some(match header {
                    ProxyHeader::Proxied { src, .. } => src,
                    ProxyHeader::Local | ProxyHeader::Unknown => peer,
                });
            }
            Ok(Parsed::Incomplete) => {}
            Err(e) => return refuse(&e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return refuse(&format_args!(
                "no whole PROXY protocol header within headerTimeout ({} s)",
                limit.as_secs_f64()
            ));
        }
        if !crate::dataplane::http1::connection::read_idle(io, buf, Some(left), w).await {
            if Instant::now() >= deadline {
                return refuse(&format_args!(
                    "no whole PROXY protocol header within headerTimeout ({} s)",
                    limit.as_secs_f64()
                ));
            }
            return refuse(&"closed before a whole PROXY protocol header");
        }
    }
}
