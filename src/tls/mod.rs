//! TLS termination: the certificates each HTTPS listener serves, chosen by SNI, and the rustls
//! configuration built from them.
//!
//! - [`certs`]: reads PEM certificate chains and private keys (PKCS#1, SEC1, PKCS#8, encrypted PKCS#8 with
//!   a passphrase). Every problem names the file. Independent of the configuration, so [`client`]
//!   reads its CA files with it too.
//! - [`sni`]: loads a listener's certificates (checking that each key belongs to its chain) and picks
//!   one for a ClientHello: exact name, then wildcard, then the default.
//! - [`accept`]: the handshake on a worker: reads the ClientHello, lets the certificate be chosen
//!   asynchronously (Redis, ACME challenge), then completes it.
//! - [`gate`]: at most about a millisecond of handshake computation per turn of a worker's runtime,
//!   so that handshakes do not hold up the other connections of the core.
//! - [`redis_certs`]: certificates from Redis (`tls:<name>`), the per-core cache (README
//!   "Certificates in Redis").
//! - [`x509_lite`]: `notAfter` and issuer from a certificate's DER.
//! - [`client`]: the client side, for `rediss://` connections to Redis (system roots, a private CA,
//!   or no verification at all when the operator says so).
//!
//! Loading runs at start-up (and in `--dry`); the handshake runs on the workers ([`accept`]) with the
//! `Arc<ServerConfig>` built here, shared read-only by all workers, and ends in a monoio-rustls stream.

pub mod accept;
pub mod certs;
pub mod client;
pub mod gate;
pub mod redis_certs;
pub mod sni;
pub mod x509_lite;

use std::sync::Arc;

use log::info;
use rustls::ServerConfig;

use crate::config::{Config, TlsListenerConfig};

/// ALPN protocols offered, in preference order.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Builds the rustls configuration of one listener; `http2` offers ALPN `h2` first.
pub fn listener_config(
    listener: &TlsListenerConfig,
    http2: bool,
) -> Result<Arc<ServerConfig>, String> {
    let resolver = Arc::new(sni::SniResolver::load(listener)?);
    info!(
        "https {}: {} certificate(s), names: {}",
        listener.addr,
        resolver.certificate_count(),
        resolver.describe()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("https {}: {e}", listener.addr))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = if http2 {
        vec![crate::dataplane::h2::ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()]
    } else {
        vec![ALPN_HTTP1.to_vec()]
    };
    // Stateless resumption (TLS 1.2 tickets, TLS 1.3 PSKs) for returning clients.
    if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
        config.ticketer = ticketer;
    }
    let config = Arc::new(config);
    if let Ok(mut r) = FILE_RESOLVERS.lock() {
        r.push((Arc::as_ptr(&config) as usize, resolver));
    }
    Ok(config)
}

/// The file-certificate resolver of each listener configuration built, by the configuration's address:
/// workers look theirs up once at start (never on a handshake) to know whether a name has a file
/// certificate of its own (no ACME order then).
static FILE_RESOLVERS: std::sync::Mutex<Vec<(usize, Arc<sni::SniResolver>)>> =
    std::sync::Mutex::new(Vec::new());

/// The names served from certificate files by the listeners of this process (control plane only: the
/// admin API's list).
pub fn file_certificates() -> Vec<(String, Arc<rustls::sign::CertifiedKey>)> {
    let Ok(r) = FILE_RESOLVERS.lock() else {
        return Vec::new();
    };
    let mut out: Vec<(String, Arc<rustls::sign::CertifiedKey>)> = Vec::new();
    for (_, res) in r.iter() {
        for (name, key) in res.entries() {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, key));
            }
        }
    }
    out
}

/// The file-certificate resolver behind a listener configuration built by [`listener_config`].
pub fn file_resolver(config: &Arc<ServerConfig>) -> Option<Arc<sni::SniResolver>> {
    let key = Arc::as_ptr(config) as usize;
    FILE_RESOLVERS
        .lock()
        .ok()?
        .iter()
        .rev()
        .find(|(k, _)| *k == key)
        .map(|(_, r)| r.clone())
}

/// Builds every HTTPS listener's configuration, in `config.https.listeners` order.
pub fn load_all(config: &Config) -> Result<Vec<Arc<ServerConfig>>, String> {
    match &config.https {
        None => Ok(Vec::new()),
        Some(h) => h
            .listeners
            .iter()
            .map(|l| listener_config(l, config.server.http2))
            .collect(),
    }
}
