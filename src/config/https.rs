//! The `https` section (docs/compatibility.md §7): Hipache's keys (`port`, `bind` in all its forms with per-item `key`,
//! `cert`, `ca`, `passphrase`; global `key`, `cert`, `ca`, `passphrase`; OpenSSL-only keys accepted and
//! reported as ignored) and hipache-tpc's SNI additions (`certificates`, `certificatesDir`,
//! `handshakeTimeout`).
//!
//! This only says which files each listener uses; reading and checking the certificates is
//! `crate::tls`'s job, at start-up and in `--dry`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::json::{Section, ValueExt};
use super::{Builder, ConfigError};

/// All HTTPS listeners.
#[derive(Debug, Clone)]
pub struct HttpsConfig {
    pub listeners: Vec<TlsListenerConfig>,
    /// A client must finish its TLS handshake within this time.
    pub handshake_timeout: Duration,
    /// `https.redisCertificates` (default true): with the Redis driver, certificates are also looked up
    /// in `tls:<name>` hashes (README "Certificates in Redis").
    pub redis_certificates: bool,
}

/// One HTTPS listening address and the certificates it serves.
#[derive(Debug, Clone)]
pub struct TlsListenerConfig {
    pub addr: SocketAddr,
    /// The configuration key it comes from (`https.bind[1]`), for messages.
    pub origin: String,
    /// Served to clients without SNI or with an unknown name (and under its own names).
    pub default_cert: Option<CertSpec>,
    /// More certificates, chosen by SNI from the names they carry.
    pub sni: Vec<CertSpec>,
    /// A folder of `<name>.crt` + `<name>.key` pairs or `<name>.pem` files holding both.
    pub sni_dir: Option<PathBuf>,
}

/// A certificate chain and its key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// The configuration key it comes from, for messages.
    pub origin: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Extra certificates sent after the leaf (node's `ca`).
    pub ca: Vec<PathBuf>,
    pub passphrase: Option<String>,
}

pub(super) const HTTPS_KEYS: &[&str] = &[
    "port",
    "bind",
    "key",
    "cert",
    "ca",
    "passphrase",
    "ciphers",
    "secureProtocol",
    "secureOptions",
    "honorCipherOrder",
    "certificates",
    "certificatesDir",
    "handshakeTimeout",
    "proxyProtocol",
    "redisCertificates",
];

const BIND_KEYS: &[&str] = &[
    "address",
    "port",
    "key",
    "cert",
    "ca",
    "passphrase",
    "certificates",
    "certificatesDir",
    "proxyProtocol",
];

const OPENSSL_ONLY: &[&str] = &[
    "ciphers",
    "secureProtocol",
    "secureOptions",
    "honorCipherOrder",
];

/// Certificate settings found at one level (the section, or a bind item).
#[derive(Default)]
struct CertSettings {
    key: Option<String>,
    cert: Option<String>,
    ca: Vec<String>,
    passphrase: Option<String>,
    certificates: Option<Vec<CertSpec>>,
    certificates_dir: Option<PathBuf>,
}

impl Builder {
    pub(super) fn https_section(
        &mut self,
        top: &Section,
        server: &Section,
    ) -> Result<Option<HttpsConfig>, ConfigError> {
        let (value, path) = match (top.get("https"), server.get("https")) {
            (Some(v), legacy) => {
                if legacy.is_some() {
                    self.warn("legacy key `server.https` is ignored because an `https` section is present");
                }
                (v, "https")
            }
            (None, Some(v)) => {
                self.warn(
                    "legacy key `server.https` is read as the `https` section; please move it",
                );
                (v, "server.https")
            }
            (None, None) => return Ok(None),
        };
        let obj = value
            .as_object()
            .ok_or_else(|| self.err(path, format!("expected an object, found {}", value.kind())))?;
        let section = self.section(path, obj, HTTPS_KEYS);
        for key in OPENSSL_ONLY {
            if section.get(key).is_some() {
                self.warn(format!(
                    "`{path}.{key}` is an OpenSSL setting and is ignored: rustls offers TLS 1.2 and 1.3 with its own safe cipher suites"
                ));
            }
        }
        let port = self.port(&section, &format!("{path}.port"), 443)?;
        let global = self.cert_settings(path, obj)?;
        let handshake_timeout = match section
            .opt_seconds("handshakeTimeout")
            .map_err(|(k, m)| self.err(&k, m))?
        {
            None => Duration::from_secs(10),
            Some(None) => {
                return Err(self.err(
                    &format!("{path}.handshakeTimeout"),
                    "must be greater than 0",
                ))
            }
            Some(Some(d)) => d,
        };
        let redis_certificates = section
            .opt_bool("redisCertificates")
            .map_err(|(k, m)| self.err(&k, m))?
            .unwrap_or(true);
        let items: Vec<(String, Value)> = match section.get("bind") {
            None => vec![(format!("{path}.bind"), Value::String("0.0.0.0".into()))],
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}.bind[{i}]"), v.clone()))
                .collect(),
            Some(other) => vec![(format!("{path}.bind"), other.clone())],
        };
        let section_pp = section
            .opt_bool("proxyProtocol")
            .map_err(|(k, m)| self.err(&k, m))?
            .unwrap_or(false);
        let mut listeners = Vec::new();
        for (origin, item) in items {
            let mut proxy_protocol = section_pp;
            let (address, item_port, own) = match &item {
                Value::String(a) => (a.clone(), None, CertSettings::default()),
                Value::Object(o) => {
                    self.section(&origin, o, BIND_KEYS);
                    let s = Section::new(&origin, o);
                    let address = s
                        .opt_string("address")
                        .map_err(|(k, m)| self.err(&k, m))?
                        .unwrap_or_else(|| "0.0.0.0".into());
                    let item_port = match o.get("port").filter(|v| !v.is_null()) {
                        None => None,
                        Some(_) => Some(self.port(&s, &format!("{origin}.port"), port)?),
                    };
                    if let Some(pp) = s
                        .opt_bool("proxyProtocol")
                        .map_err(|(k, m)| self.err(&k, m))?
                    {
                        proxy_protocol = pp;
                    }
                    (address, item_port, self.cert_settings(&origin, o)?)
                }
                other => {
                    return Err(self.err(
                        &origin,
                        format!("expected an address or an object, found {}", other.kind()),
                    ));
                }
            };
            let default_cert = self.default_cert(&origin, &own, path, &global)?;
            let sni = own
                .certificates
                .clone()
                .or_else(|| global.certificates.clone())
                .unwrap_or_default();
            let sni_dir = own
                .certificates_dir
                .clone()
                .or_else(|| global.certificates_dir.clone());
            if default_cert.is_none() && sni.is_empty() && sni_dir.is_none() {
                return Err(self.err(
                    &origin,
                    format!("no certificate for this listener: set `{path}.key` and `{path}.cert` (or the item's own), or `certificates` / `certificatesDir`"),
                ));
            }
            let bind = super::BindItem {
                address,
                port: item_port,
                proxy_protocol: Some(proxy_protocol),
            };
            for addr in self.resolve_binds(&origin, std::slice::from_ref(&bind), port)? {
                if proxy_protocol {
                    self.proxy_protocol.borrow_mut().push(addr);
                }
                listeners.push(TlsListenerConfig {
                    addr,
                    origin: origin.clone(),
                    default_cert: default_cert.clone(),
                    sni: sni.clone(),
                    sni_dir: sni_dir.clone(),
                });
            }
        }
        Ok(Some(HttpsConfig {
            listeners,
            handshake_timeout,
            redis_certificates,
        }))
    }

    /// The listener's default certificate: the bind item's `key`/`cert` if it has them, else the
    /// section's. A `passphrase` applies to the key of its own level.
    fn default_cert(
        &self,
        origin: &str,
        own: &CertSettings,
        path: &str,
        global: &CertSettings,
    ) -> Result<Option<CertSpec>, ConfigError> {
        let (level, settings) = if own.key.is_some() || own.cert.is_some() {
            (origin, own)
        } else {
            (path, global)
        };
        match (&settings.key, &settings.cert) {
            (None, None) => Ok(None),
            (Some(_), None) => {
                Err(self.err(&format!("{level}.cert"), "a `key` is set without a `cert`"))
            }
            (None, Some(_)) => {
                Err(self.err(&format!("{level}.key"), "a `cert` is set without a `key`"))
            }
            (Some(key), Some(cert)) => {
                let ca = if own.ca.is_empty() {
                    &global.ca
                } else {
                    &own.ca
                };
                Ok(Some(CertSpec {
                    origin: level.to_string(),
                    cert: self.resolve_path(cert),
                    key: self.resolve_path(key),
                    ca: ca.iter().map(|p| self.resolve_path(p)).collect(),
                    passphrase: settings.passphrase.clone(),
                }))
            }
        }
    }

    fn cert_settings(
        &mut self,
        path: &str,
        obj: &Map<String, Value>,
    ) -> Result<CertSettings, ConfigError> {
        let s = Section::new(path, obj);
        let file = self.file.clone();
        let e = |(k, m): (String, String)| ConfigError {
            file: file.clone(),
            key: Some(k),
            message: m,
            warnings: Vec::new(),
        };
        let ca = match s.get("ca") {
            None => Vec::new(),
            Some(Value::String(p)) => vec![p.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(p) => Ok(p.clone()),
                    other => Err(self.err(
                        &format!("{path}.ca[{i}]"),
                        format!("expected a file path, found {}", other.kind()),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(self.err(
                    &format!("{path}.ca"),
                    format!("expected a file path or a list, found {}", other.kind()),
                ))
            }
        };
        let certificates = match s.get("certificates") {
            None => None,
            Some(Value::Array(list)) => {
                let mut specs = Vec::new();
                for (i, item) in list.iter().enumerate() {
                    let origin = format!("{path}.certificates[{i}]");
                    let o = item.as_object().ok_or_else(|| {
                        self.err(
                            &origin,
                            format!(
                                "expected {{\"cert\": file, \"key\": file}}, found {}",
                                item.kind()
                            ),
                        )
                    })?;
                    self.section(&origin, o, &["cert", "key", "ca", "passphrase"]);
                    let inner = self.cert_settings(&origin, o)?;
                    let (Some(cert), Some(key)) = (inner.cert, inner.key) else {
                        return Err(
                            self.err(&origin, "each certificate needs both `cert` and `key`")
                        );
                    };
                    specs.push(CertSpec {
                        origin,
                        cert: self.resolve_path(&cert),
                        key: self.resolve_path(&key),
                        ca: inner.ca.iter().map(|p| self.resolve_path(p)).collect(),
                        passphrase: inner.passphrase,
                    });
                }
                Some(specs)
            }
            Some(other) => {
                return Err(self.err(
                    &format!("{path}.certificates"),
                    format!("expected a list, found {}", other.kind()),
                ))
            }
        };
        Ok(CertSettings {
            key: s.opt_string("key").map_err(e)?,
            cert: s.opt_string("cert").map_err(e)?,
            ca,
            passphrase: s.opt_string("passphrase").map_err(e)?,
            certificates,
            certificates_dir: s
                .opt_string("certificatesDir")
                .map_err(e)?
                .map(|d| self.resolve_path(&d)),
        })
    }
}
