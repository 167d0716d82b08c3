//! Reading certificates and private keys from PEM files, with errors that name the file and say what
//! is wrong (missing, unreadable, no certificate inside, encrypted without a passphrase, wrong
//! passphrase, unsupported key type, key not matching the certificate).
//!
//! Start-up only: these functions read files synchronously and must never run on a worker.
//!
//! A leaf: it knows files, not the configuration, so the configuration loader may use it (through
//! `tls::client`, for `rediss://` CAs) without an import cycle. A listener's certificates are put
//! together from a `CertSpec` by `tls::sni`.

use std::path::Path;

use pkcs8::der::Decode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

/// Every certificate in a PEM file, in order.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, "certificate")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "{} is not a valid PEM certificate file: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file; `passphrase` decrypts an ENCRYPTED PRIVATE KEY (PKCS#8).
pub fn read_private_key(
    path: &Path,
    passphrase: Option<&str>,
) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, "key")?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(passphrase) = passphrase else {
            return Err(format!(
                "the key {} is encrypted: set `passphrase`",
                path.display()
            ));
        };
        let start = text
            .find("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            .unwrap_or(0);
        let end_marker = "-----END ENCRYPTED PRIVATE KEY-----";
        let end = text[start..]
            .find(end_marker)
            .map(|i| start + i + end_marker.len())
            .ok_or_else(|| {
                format!(
                    "{}: unterminated ENCRYPTED PRIVATE KEY block",
                    path.display()
                )
            })?;
        let (_, doc) = pkcs8::Document::from_pem(&text[start..end])
            .map_err(|e| format!("{}: bad encrypted key PEM: {e}", path.display()))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes())
            .map_err(|e| format!("{}: bad encrypted key: {e}", path.display()))?;
        let plain = info.decrypt(passphrase.as_bytes()).map_err(|_| {
            format!(
                "cannot decrypt the key {}: wrong passphrase or unsupported encryption",
                path.display()
            )
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "the key {} uses legacy OpenSSL encryption, which is not supported: convert it with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in OLD -out NEW`",
            path.display()
        ));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "{} holds no private key (expected -----BEGIN PRIVATE KEY-----)",
            path.display()
        ),
        other => format!("{} is not a valid PEM key file: {other}", path.display()),
    })
}

/// The SAN DNS names of a leaf certificate, lowercased.
pub fn dns_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let cert = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| format!("cannot parse the certificate: {e:?}"))?;
    Ok(cert
        .valid_dns_names()
        .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
        .collect())
}
