//! One active check of one backend: connect (within `connectTimeout`), send `<method> <uri>` with the
//! configured `Host` header, and read the status line (within `timeout`), then close.
//!
//! Only the status code matters: [`is_dead`] applies hipache-hchecker's rule (a connection or I/O
//! failure, or 500-599 except 503). Runs on the control runtime; it never touches a worker.

use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use crate::config::HealthCheckConfig;
use crate::dataplane::http1::head::{Parsed, ResponseHead};
use crate::dataplane::routing::route::BackendTarget;

/// Longest status line read before giving up on a response.
const MAX_STATUS_LINE: usize = 1024;

/// The request bytes of every check (built once). The User-Agent names the checker (its lock owner
/// id), so a backend's operator can tell which proxy instance checks it.
pub fn request_bytes(cfg: &HealthCheckConfig, owner: &str) -> Vec<u8> {
    format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: hipache-tpc-hchecker/{} ({owner})\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        cfg.method,
        cfg.uri,
        cfg.host,
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// hipache-hchecker's rule: dead on any failure, or on 500-599 except 503.
pub fn is_dead(result: &Result<u16, String>) -> bool {
    match result {
        Ok(code) => (500..=599).contains(code) && *code != 503,
        Err(_) => true,
    }
}

/// Checks `target` once: the status code, or why there is none.
pub async fn probe(
    target: &BackendTarget,
    request: &[u8],
    connect_timeout: Duration,
    io_timeout: Duration,
) -> Result<u16, String> {
    if let Some(path) = &target.unix {
        // A unix-socket backend (README, "Unix-socket backends"): the same check over its socket.
        let stream =
            match monoio::time::timeout(connect_timeout, monoio::net::UnixStream::connect(&**path))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(format!("connect to unix:{path}: {e}")),
                Err(_) => {
                    return Err(format!(
                        "connect to unix:{path} timed out after {connect_timeout:?}"
                    ))
                }
            };
        return match monoio::time::timeout(io_timeout, exchange(stream, request.to_vec())).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {io_timeout:?}")),
        };
    }
    let addrs = match target.addr {
        Some(a) => vec![a],
        None => match monoio::time::timeout(
            connect_timeout,
            crate::dataplane::upstream::resolver::resolve(&target.host, target.port),
        )
        .await
        {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => return Err(format!("cannot resolve {}: {e}", target.host)),
            Err(_) => return Err(format!("resolving {} timed out", target.host)),
        },
    };
    let deadline = std::time::Instant::now() + connect_timeout;
    let mut stream = None;
    let mut last_err = String::from("no address");
    for addr in addrs {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match monoio::time::timeout(left, TcpStream::connect_addr(addr)).await {
            Ok(Ok(s)) => {
                stream = Some(s);
                break;
            }
            Ok(Err(e)) => last_err = format!("connect to {addr}: {e}"),
            Err(_) => last_err = format!("connect to {addr} timed out after {connect_timeout:?}"),
        }
    }
    let Some(stream) = stream else {
        return Err(last_err);
    };
    // The stream is dropped (closed) after a timeout, so a read lost to cancellation does not matter.
    match monoio::time::timeout(io_timeout, exchange(stream, request.to_vec())).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {io_timeout:?}")),
    }
}

async fn exchange<S: AsyncReadRent + monoio::io::AsyncWriteRent>(
    mut stream: S,
    request: Vec<u8>,
) -> Result<u16, String> {
    let (res, _) = stream.write_all(request).await;
    res.map_err(|e| format!("sending the check failed: {e}"))?;
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_STATUS_LINE);
    loop {
        let len = buf.len();
        let (res, slice) = stream.read(buf.slice_mut(len..MAX_STATUS_LINE)).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => return Err("connection closed before a status line".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading the answer failed: {e}")),
        }
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&buf[..end]);
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err("status line too long".into());
        }
    }
}

/// `HTTP/1.x NNN reason` → NNN, read by the data plane's response-head parser (the line alone, as a
/// head without fields), so a backend passes the check with exactly the status lines the proxy
/// forwards.
pub fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let mut head = Vec::with_capacity(line.len() + 4);
    head.extend_from_slice(line);
    head.extend_from_slice(b"\r\n\r\n");
    let mut parsed = ResponseHead::empty();
    match parsed.parse(&head, head.len(), false) {
        Ok(Parsed::Complete) => Ok(parsed.status),
        _ => Err(format!(
            "malformed status line {:?}",
            String::from_utf8_lossy(&line[..line.len().min(80)])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_and_verdicts() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 503"), Ok(503));
        assert!(parse_status_line(b"HTTP/1.1 20 OK").is_err());
        assert!(parse_status_line(b"HTTP/2 200").is_err());
        assert!(parse_status_line(b"HTTP/1.1 2000").is_err());
        assert!(parse_status_line(b"").is_err());
        assert!(is_dead(&Ok(500)));
        assert!(is_dead(&Ok(502)));
        assert!(is_dead(&Ok(599)));
        assert!(!is_dead(&Ok(503)));
        assert!(!is_dead(&Ok(404)));
        assert!(!is_dead(&Ok(200)));
        assert!(is_dead(&Err("refused".into())));
    }

    #[test]
    fn request_uses_the_configuration() {
        let cfg = HealthCheckConfig::default();
        let text = String::from_utf8(request_bytes(&cfg, "me")).unwrap();
        assert!(text.starts_with("HEAD /CloudHealthCheck HTTP/1.1\r\nHost: ping\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }
}
