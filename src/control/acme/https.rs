//! A minimal HTTPS/1.1 client for talking to the ACME directory, on the control thread's runtime
//! (README "Automatic HTTPS (ACME)").
//!
//! One connection per request (`Connection: close`): an order makes a dozen requests, so keeping
//! connections alive buys nothing. Every request is bounded: a deadline for connect + handshake +
//! request + response, and a cap on the response's size. Trusts the system's roots plus the optional
//! `acme.caCertificate`.
//!
//! It must never run on a worker core, and never follows redirects (ACME does not use them).

use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

/// The largest response accepted (a certificate chain is a few KiB; a directory less).
pub const MAX_RESPONSE: usize = 1 << 20;
/// Deadline of one request, from connect to the last byte of the response.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Response headers kept at most.
const MAX_HEADERS: usize = 64;

/// Where distributions keep the bundle of trusted roots.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// An answer of the CA.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The TLS client configuration for the directory: system roots plus `extra_ca`.
pub fn client_config(extra_ca: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let system = std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
        .find(|p| p.is_file());
    if let Some(bundle) = &system {
        if let Ok(certs) = crate::tls::certs::read_certificates(bundle) {
            roots.add_parsable_certificates(certs);
        }
    }
    if let Some(ca) = extra_ca {
        let certs = crate::tls::certs::read_certificates(ca)
            .map_err(|e| format!("acme.caCertificate: {e}"))?;
        for cert in certs {
            roots.add(cert).map_err(|e| {
                format!(
                    "acme.caCertificate {} is not a usable root: {e}",
                    ca.display()
                )
            })?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "ACME: no trusted root certificates (no system bundle in {} and no acme.caCertificate)",
            SYSTEM_BUNDLES.join(", ")
        ));
    }
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `https://host[:port]/path` split.
struct Url<'a> {
    host: &'a str,
    port: u16,
    path: &'a str,
}

fn parse_url(url: &str) -> Result<Url<'_>, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} is not an https:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| format!("{url:?}: bad IPv6 literal"))?;
        let port = match &v6[end + 1..] {
            "" => 443,
            p => p
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("{url:?}: bad port"))?,
        };
        (&v6[..end], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("{url:?}: bad port"))?),
            None => (authority, 443),
        }
    };
    if host.is_empty() || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("{url:?} is not a usable URL"));
    }
    Ok(Url { host, port, path })
}

/// One request (`GET`, `HEAD` or `POST` with a JOSE body) within [`REQUEST_TIMEOUT`].
pub async fn request(
    tls: &Arc<ClientConfig>,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
) -> Result<HttpResponse, String> {
    match monoio::time::timeout(REQUEST_TIMEOUT, request_inner(tls, method, url, body)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{method} {url}: no complete answer within {REQUEST_TIMEOUT:?}"
        )),
    }
}

async fn request_inner(
    tls: &Arc<ClientConfig>,
    method: &str,
    url: &str,
    body: Option<&[u8]>,
) -> Result<HttpResponse, String> {
    let u = parse_url(url)?;
    let addrs = crate::dataplane::upstream::resolver::resolve(u.host, u.port)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", u.host))?;
    let mut last = String::from("no address");
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_addr(addr).await {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let tcp = tcp.ok_or_else(|| format!("{url}: {last}"))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(u.host.to_string())
        .map_err(|_| format!("{:?} is not a valid TLS server name", u.host))?;
    let connector = monoio_rustls::TlsConnector::from(tls.clone());
    let mut stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {} failed: {e}", u.host))?;
    let host_header = if u.port == 443 {
        u.host.to_string()
    } else {
        format!("{}:{}", u.host, u.port)
    };
    let mut req = format!(
        "{method} {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: hipache-tpc/{} (acme)\r\nAccept: */*\r\nConnection: close\r\n",
        u.path,
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes();
    if let Some(b) = body {
        req.extend_from_slice(
            format!(
                "Content-Type: application/jose+json\r\nContent-Length: {}\r\n",
                b.len()
            )
            .as_bytes(),
        );
    }
    req.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        req.extend_from_slice(b);
    }
    let (res, _) = stream.write_all(req).await;
    res.map_err(|e| format!("{method} {url}: cannot send: {e}"))?;
    let mut received: Vec<u8> = Vec::with_capacity(8192);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(resp) = complete(&received, method == "HEAD")? {
            return Ok(resp);
        }
        let (res, b) = stream.read(buf).await;
        buf = b;
        let n = match res {
            Ok(n) => n,
            // A server that closes without close_notify after a body delimited by the close.
            Err(_) if !received.is_empty() => 0,
            Err(e) => return Err(format!("{method} {url}: read failed: {e}")),
        };
        if n == 0 {
            return match complete_at_eof(&received, method == "HEAD")? {
                Some(r) => Ok(r),
                None => Err(format!("{method} {url}: the connection closed mid-answer")),
            };
        }
        if received.len() + n > MAX_RESPONSE {
            return Err(format!(
                "{method} {url}: answer larger than {MAX_RESPONSE} bytes"
            ));
        }
        received.extend_from_slice(&buf[..n]);
    }
}

/// The response when `received` holds all of it (by Content-Length or chunked framing).
fn complete(received: &[u8], head_only: bool) -> Result<Option<HttpResponse>, String> {
    let Some((status, headers, head_len)) = parse_head(received)? else {
        return Ok(None);
    };
    let rest = &received[head_len..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.trim().parse::<usize>())
        .transpose()
        .map_err(|_| "the CA sent a bad Content-Length".to_string())?;
    let body = if head_only || status == 204 || status == 304 {
        Some(Vec::new())
    } else if chunked {
        dechunk(rest)?
    } else if let Some(len) = length {
        (rest.len() >= len).then(|| rest[..len].to_vec())
    } else {
        None
    };
    Ok(body.map(|body| HttpResponse {
        status,
        headers,
        body,
    }))
}

/// At EOF: a body without framing ends here.
fn complete_at_eof(received: &[u8], head_only: bool) -> Result<Option<HttpResponse>, String> {
    if let Some(r) = complete(received, head_only)? {
        return Ok(Some(r));
    }
    let Some((status, headers, head_len)) = parse_head(received)? else {
        return Ok(None);
    };
    let framed = headers
        .iter()
        .any(|(n, _)| n == "content-length" || n == "transfer-encoding");
    if framed {
        return Ok(None);
    }
    Ok(Some(HttpResponse {
        status,
        headers,
        body: received[head_len..].to_vec(),
    }))
}

type Head = (u16, Vec<(String, String)>, usize);

fn parse_head(received: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(received) {
        Ok(httparse::Status::Complete(len)) => {
            let status = resp.code.unwrap_or(0);
            let headers = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            // An interim 1xx answer is not expected from an ACME server; treat it as an error.
            if (100..200).contains(&status) {
                return Err(format!("the CA sent an interim {status} answer"));
            }
            Ok(Some((status, headers, len)))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("the CA sent a malformed answer: {e}")),
    }
}

/// A chunked body, when complete.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size".to_string())?;
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if size > MAX_RESPONSE {
            return Err(format!(
                "chunk of {size} bytes is larger than an answer may be"
            ));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("https://localhost:14000/dir").unwrap();
        assert_eq!((u.host, u.port, u.path), ("localhost", 14000, "/dir"));
        let u = parse_url("https://acme.example").unwrap();
        assert_eq!((u.host, u.port, u.path), ("acme.example", 443, "/"));
        let u = parse_url("https://[::1]:8443/x").unwrap();
        assert_eq!((u.host, u.port, u.path), ("::1", 8443, "/x"));
        assert!(parse_url("http://a/").is_err());
        assert!(parse_url("https://a:b/").is_err());
        assert!(parse_url("https://a/b c").is_err());
    }

    #[test]
    fn framing() {
        let r = complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
        assert!(
            complete(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nabc", false)
                .unwrap()
                .is_none()
        );
        let r = complete(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.body, b"abcde");
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            false
        )
        .unwrap()
        .is_none());
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            false
        )
        .is_err());
        assert!(complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
            false
        )
        .is_err());
        let r = complete_at_eof(b"HTTP/1.1 200 OK\r\n\r\nxyz", false)
            .unwrap()
            .unwrap();
        assert_eq!(r.body, b"xyz");
        assert!(complete(b"HTTP/1.1 100 Continue\r\n\r\n", false).is_err());
    }
}
