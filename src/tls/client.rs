//! TLS client configurations for `rediss://` connections (README "Running Redis for a fleet").
//!
//! The roots are the system's CA bundle (`SSL_CERT_FILE`, else the usual Debian, Red Hat and Alpine
//! paths) plus an optional private CA from the URL's `?ca=`. `?insecure=1` replaces verification by a
//! verifier that accepts any certificate (the configuration loader logs a warning). Built once at start-up
//! (files are read here) and shared read-only by every Redis connection through an `Arc`; nothing here
//! runs on a worker.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::certs::read_certificates;

/// Where distributions keep the bundle of trusted roots.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The client configuration of a `rediss://` endpoint.
pub fn redis_client_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        let system = std::env::var_os("SSL_CERT_FILE")
            .map(std::path::PathBuf::from)
            .into_iter()
            .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from))
            .find(|p| p.is_file());
        if let Some(bundle) = &system {
            // A system bundle may hold a certificate rustls cannot use; skip those.
            if let Ok(certs) = read_certificates(bundle) {
                roots.add_parsable_certificates(certs);
            }
        }
        if let Some(ca) = ca {
            let certs = read_certificates(ca).map_err(|e| format!("the Redis CA (?ca=): {e}"))?;
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    format!("the Redis CA {} is not a usable root: {e}", ca.display())
                })?;
            }
        }
        if roots.is_empty() {
            return Err(format!(
                "rediss://: no trusted root certificates (no system bundle in {} and no ?ca=<path>); install ca-certificates or name the CA with ?ca=",
                SYSTEM_BUNDLES.join(", ")
            ));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `?insecure=1`: every certificate is accepted; signatures are still checked, so the session is at
/// least encrypted to whoever holds the key it presented.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
