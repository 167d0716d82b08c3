//! The server side of a TLS handshake on a worker, with the certificate chosen asynchronously: the
//! ClientHello is read with `rustls::server::Acceptor` (bounded in bytes and time), its SNI and ALPN
//! decide where the certificate comes from (Redis `tls:<name>`, an ACME TLS-ALPN-01 challenge, or the
//! listener's files, README "Certificates in Redis"), then `Accepted::into_connection` and the rest of
//! the handshake are driven over the socket here, and the finished connection is handed on as a
//! monoio-rustls stream, so HTTP/1.1 and h2 see exactly the stream they saw before.
//!
//! It must never block, never buffer more than [`MAX_CLIENT_HELLO`] before the hello is complete,
//! and never make one handshake wait for another's Redis lookup except the single-flight of the same
//! name.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::server::Acceptor;
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};

use super::gate::{HandshakeGate, Pass};
use super::redis_certs::CertStore;
use super::sni::CHOSEN;
use crate::common::metrics::WorkerSlot;

/// The ALPN protocol of ACME TLS-ALPN-01 validation (RFC 8737).
pub const ALPN_ACME: &[u8] = b"acme-tls/1";
/// Most bytes read before the ClientHello is complete.
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;
/// Read size during the handshake.
const READ_CHUNK: usize = 16 * 1024;

/// One HTTPS listener's TLS settings on a worker.
pub struct TlsListener {
    /// The listener's configuration (file certificates through its SNI resolver, ALPN h2/http1.1).
    pub config: Arc<ServerConfig>,
    /// The same with ALPN `acme-tls/1` only, for TLS-ALPN-01 validation handshakes.
    pub acme: Arc<ServerConfig>,
    /// The listener's file certificates, to know whether a name has one (no ACME order then).
    pub files: Option<Arc<super::sni::SniResolver>>,
    /// The whole handshake must finish within this time (`https.handshakeTimeout`).
    pub handshake_timeout: Duration,
    /// The ClientHello must arrive within this time (`headerTimeout`, or `tcpTimeout` when shorter).
    pub hello_timeout: Duration,
}

impl TlsListener {
    pub fn new(
        config: Arc<ServerConfig>,
        handshake_timeout: Duration,
        hello_timeout: Duration,
    ) -> TlsListener {
        let mut acme = (*config).clone();
        acme.alpn_protocols = vec![ALPN_ACME.to_vec()];
        TlsListener {
            files: super::file_resolver(&config),
            config,
            acme: Arc::new(acme),
            handshake_timeout,
            hello_timeout,
        }
    }
}

/// Where certificates may come from besides the files, for one worker.
pub struct CertSources<'a> {
    pub redis: Option<&'a CertStore>,
    /// `acme.onDemand` with its `handshakeWait`, and the per-core set of names already queued.
    pub on_demand: Option<(Duration, &'a RefCell<HashMap<String, Instant>>)>,
    pub metrics: &'a WorkerSlot,
    /// The worker's handshake gate: the expensive steps wait for it (`super::gate`).
    pub gate: Option<&'a Rc<HandshakeGate>>,
}

/// How a handshake ended.
pub enum Accepted<IO = TcpStream> {
    /// Serve HTTP on it.
    Stream(Box<monoio_rustls::ServerTlsStream<IO>>),
    /// An ACME TLS-ALPN-01 validation handshake was completed; the connection is done.
    AcmeChallenge,
}

/// Runs the whole handshake (the caller bounds it with `handshake_timeout`).
/// Generic over the byte stream: a TCP socket, or one whose first bytes were read with a PROXY
/// protocol header and are replayed (README "Behind a load balancer").
pub async fn accept<IO: AsyncReadRent + AsyncWriteRent>(
    mut tcp: IO,
    listener: &TlsListener,
    sources: &CertSources<'_>,
) -> io::Result<Accepted<IO>> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut acceptor = Acceptor::default();
    let mut total = 0usize;
    let hello_deadline = Instant::now() + listener.hello_timeout;
    // Bytes read past the ClientHello (a client may pipeline more records): fed to the connection.
    let mut leftover: Vec<u8> = Vec::new();
    let accepted = loop {
        let left = hello_deadline.saturating_duration_since(Instant::now());
        let (res, b) = match monoio::time::timeout(left, tcp.read(buf)).await {
            Ok(r) => r,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no ClientHello in time",
                ))
            }
        };
        buf = b;
        let n = res?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        total += n;
        if total > MAX_CLIENT_HELLO {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "ClientHello larger than 64 KiB",
            ));
        }
        let mut input: &[u8] = &buf[..n];
        let mut done = None;
        while !input.is_empty() {
            if acceptor.read_tls(&mut input)? == 0 {
                break;
            }
            match acceptor.accept() {
                Ok(Some(a)) => {
                    done = Some(a);
                    break;
                }
                Ok(None) => {}
                Err((e, mut alert)) => {
                    let mut out = Vec::new();
                    let _ = alert.write_all(&mut out);
                    if !out.is_empty() {
                        let _ = tcp.write_all(out).await;
                    }
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        }
        if let Some(a) = done {
            leftover.extend_from_slice(input);
            break a;
        }
        buf.clear();
    };
    let hello = accepted.client_hello();
    let sni = hello.server_name().and_then(super::redis_certs::normalize);
    let acme_only = hello
        .alpn()
        .is_some_and(|mut list| list.next() == Some(ALPN_ACME) && list.next().is_none());
    let (config, chosen): (Arc<ServerConfig>, Option<Arc<CertifiedKey>>) = if acme_only {
        // TLS-ALPN-01: the challenge certificate or nothing (never a real one with acme-tls/1).
        let cert = match (&sni, sources.redis) {
            (Some(name), Some(store)) => store.acme_challenge(name, sources.metrics).await,
            _ => None,
        };
        let Some(cert) = cert else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "acme-tls/1 handshake without a challenge certificate",
            ));
        };
        (listener.acme.clone(), Some(cert))
    } else {
        let mut chosen = None;
        if let (Some(name), Some(store)) = (&sni, sources.redis) {
            chosen = store.choose(name, sources.metrics).await;
            let in_files = listener.files.as_ref().is_none_or(|f| f.has_name(name));
            if chosen.is_none() && !in_files {
                if let Some((wait, queued)) = sources.on_demand {
                    chosen = store.on_demand(name, wait, queued, sources.metrics).await;
                }
            }
        }
        (listener.config.clone(), chosen)
    };
    // Processing the ClientHello is the expensive step (key exchange, signature or ticket): it waits
    // for its turn, and the pass is held over synchronous work only.
    let pass = enter(sources).await;
    CHOSEN.with(|c| *c.borrow_mut() = chosen);
    let conn = accepted.into_connection(config);
    CHOSEN.with(|c| c.borrow_mut().take());
    drop(pass);
    let mut conn = match conn {
        Ok(c) => c,
        Err((e, mut alert)) => {
            let mut out = Vec::new();
            let _ = alert.write_all(&mut out);
            if !out.is_empty() {
                let _ = tcp.write_all(out).await;
            }
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    };
    if !leftover.is_empty() {
        feed(&mut conn, &leftover, &mut tcp, None).await?;
    }
    loop {
        flush(&mut conn, &mut tcp).await?;
        if !conn.is_handshaking() {
            break;
        }
        let (res, b) = tcp.read(buf).await;
        buf = b;
        let n = res?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tls handshake eof",
            ));
        }
        // TLS 1.2's second flight carries the client's key exchange: as expensive as a ClientHello.
        // (TLS 1.3's is a Finished message: cheap, not held back.)
        let pass = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_2) => enter(sources).await,
            _ => None,
        };
        feed(&mut conn, &buf[..n], &mut tcp, pass).await?;
        buf.clear();
    }
    if acme_only {
        conn.send_close_notify();
        let _ = flush(&mut conn, &mut tcp).await;
        return Ok(Accepted::AcmeChallenge);
    }
    Ok(Accepted::Stream(Box::new(
        monoio_rustls::ServerTlsStream::new(tcp, conn),
    )))
}

/// Waits for the worker's handshake gate, if any.
async fn enter(sources: &CertSources<'_>) -> Option<Pass> {
    match sources.gate {
        Some(gate) => Some(gate.enter().await),
        None => None,
    }
}

/// Hands received bytes to rustls and processes them; on a protocol error, sends its alert. `pass`
/// (the gate's permission) is given up before any write.
async fn feed<IO: AsyncWriteRent>(
    conn: &mut ServerConnection,
    mut input: &[u8],
    tcp: &mut IO,
    mut pass: Option<Pass>,
) -> io::Result<()> {
    while !input.is_empty() {
        if conn.read_tls(&mut input)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS input refused",
            ));
        }
        if let Err(e) = conn.process_new_packets() {
            drop(pass.take());
            let _ = flush(conn, tcp).await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    Ok(())
}

/// Writes whatever rustls wants to send.
async fn flush<IO: AsyncWriteRent>(conn: &mut ServerConnection, tcp: &mut IO) -> io::Result<()> {
    while conn.wants_write() {
        let mut out = Vec::with_capacity(4096);
        while conn.wants_write() {
            conn.write_tls(&mut out)?;
        }
        let (res, _) = tcp.write_all(out).await;
        res?;
    }
    Ok(())
}
