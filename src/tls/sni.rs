//! Choosing a certificate for a ClientHello (rustls's stock resolver knows exact names only and refuses
//! clients without SNI): the exact name, then a wildcard certificate for the parent domain, then the
//! listener's default certificate.
//!
//! Built once per listener at start-up; `resolve` runs on workers during handshakes and only reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::warn;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::{dns_names, read_certificates, read_private_key};
use crate::config::{CertSpec, TlsListenerConfig};

/// Exact → wildcard → default.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the parent domain: `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
    count: usize,
}

impl SniResolver {
    /// Loads every certificate of a listener: its default, its `certificates`, its `certificatesDir`.
    pub fn load(listener: &TlsListenerConfig) -> Result<SniResolver, String> {
        let mut loaded: Vec<LoadedCert> = Vec::new();
        if let Some(spec) = &listener.default_cert {
            loaded.push(load(spec)?);
        }
        for spec in &listener.sni {
            loaded.push(load(spec)?);
        }
        if let Some(dir) = &listener.sni_dir {
            for spec in specs_in_dir(dir, &listener.origin)? {
                loaded.push(load(&spec)?);
            }
        }
        let Some(first) = loaded.first() else {
            return Err(format!(
                "{}: no certificate for {}",
                listener.origin, listener.addr
            ));
        };
        let mut resolver = SniResolver {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default: first.key.clone(),
            count: loaded.len(),
        };
        for cert in &loaded {
            for name in &cert.names {
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut resolver.wildcard, parent.to_string()),
                    None => (&mut resolver.exact, name.clone()),
                };
                if map.contains_key(&key) {
                    warn!(
                        "https {}: several certificates for {name}; the first one is used",
                        listener.addr
                    );
                    continue;
                }
                map.insert(key, cert.key.clone());
            }
        }
        Ok(resolver)
    }

    pub fn certificate_count(&self) -> usize {
        self.count
    }

    /// A short list of the names served, for the start-up log.
    pub fn describe(&self) -> String {
        let mut names: Vec<String> = self
            .exact
            .keys()
            .cloned()
            .chain(self.wildcard.keys().map(|p| format!("*.{p}")))
            .collect();
        names.sort();
        if names.len() > 8 {
            let more = names.len() - 8;
            names.truncate(8);
            names.push(format!("and {more} more"));
        }
        if names.is_empty() {
            "(default certificate only)".into()
        } else {
            names.join(", ")
        }
    }

    /// Every name with its certificate (wildcards as `*.<parent>`), for the admin API.
    pub fn entries(&self) -> Vec<(String, Arc<CertifiedKey>)> {
        self.exact
            .iter()
            .map(|(n, k)| (n.clone(), k.clone()))
            .chain(
                self.wildcard
                    .iter()
                    .map(|(p, k)| (format!("*.{p}"), k.clone())),
            )
            .collect()
    }

    /// Whether a (normalized) name has a certificate of its own here: exact or wildcard, not only the
    /// default.
    pub fn has_name(&self, name: &str) -> bool {
        self.exact.contains_key(name)
            || name
                .split_once('.')
                .is_some_and(|(_, parent)| self.wildcard.contains_key(parent))
    }

    /// The certificate for a server name (`None`: no SNI).
    pub fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        // The name is client input: nothing is stored by it, and one longer than a DNS name can be
        // gets the default certificate without being copied.
        if let Some(name) =
            server_name.filter(|n| n.len() <= crate::dataplane::routing::host::MAX_HOST_LEN + 1)
        {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = self.exact.get(&name) {
                return k.clone();
            }
            if let Some((_, parent)) = name.split_once('.') {
                if let Some(k) = self.wildcard.get(parent) {
                    return k.clone();
                }
            }
        }
        self.default.clone()
    }
}

thread_local! {
    /// The certificate chosen asynchronously for the handshake being started on this thread (from
    /// Redis, or an ACME challenge certificate): set by `crate::tls::accept` right before
    /// `Accepted::into_connection`, which calls `resolve` synchronously, and taken there.
    pub(crate) static CHOSEN: std::cell::RefCell<Option<Arc<CertifiedKey>>> =
        const { std::cell::RefCell::new(None) };
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(chosen) = CHOSEN.with(|c| c.borrow_mut().take()) {
            return Some(chosen);
        }
        Some(self.pick(hello.server_name()))
    }
}

/// A loaded certificate with the DNS names it is valid for.
struct LoadedCert {
    key: Arc<CertifiedKey>,
    /// SAN DNS names, lowercased (`*.example.com` for wildcards).
    names: Vec<String>,
}

/// Loads a certificate chain (`cert`, then every `ca` file) and its key, checks they match, and reads
/// the names the leaf is valid for.
fn load(spec: &CertSpec) -> Result<LoadedCert, String> {
    let mut chain = read_certificates(&spec.cert).map_err(|e| format!("{}: {e}", spec.origin))?;
    for ca in &spec.ca {
        chain.extend(read_certificates(ca).map_err(|e| format!("{}: {e}", spec.origin))?);
    }
    let key = read_private_key(&spec.key, spec.passphrase.as_deref())
        .map_err(|e| format!("{}: {e}", spec.origin))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        format!(
            "{}: unsupported private key in {}: {e}",
            spec.origin,
            spec.key.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        format!(
            "{}: the key {} does not belong to the certificate {}",
            spec.origin,
            spec.key.display(),
            spec.cert.display()
        )
    })?;
    let names = dns_names(&certified.cert[0])
        .map_err(|e| format!("{}: {}: {e}", spec.origin, spec.cert.display()))?;
    Ok(LoadedCert {
        key: Arc::new(certified),
        names,
    })
}

/// `<name>.pem` holding chain and key, or `<name>.crt` with `<name>.key`, sorted by file name.
fn specs_in_dir(dir: &Path, origin: &str) -> Result<Vec<CertSpec>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "{origin}.certificatesDir: cannot read {}: {e}",
            dir.display()
        )
    })?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    let mut specs = Vec::new();
    for path in &files {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let spec = match ext {
            "pem" => CertSpec {
                origin: format!("{origin}.certificatesDir"),
                cert: path.clone(),
                key: path.clone(),
                ca: Vec::new(),
                passphrase: None,
            },
            "crt" => {
                let key = path.with_extension("key");
                if !key.exists() {
                    return Err(format!(
                        "{origin}.certificatesDir: {} has no matching {}",
                        path.display(),
                        key.display()
                    ));
                }
                CertSpec {
                    origin: format!("{origin}.certificatesDir"),
                    cert: path.clone(),
                    key,
                    ca: Vec::new(),
                    passphrase: None,
                }
            }
            _ => continue,
        };
        specs.push(spec);
    }
    if specs.is_empty() {
        return Err(format!(
            "{origin}.certificatesDir: no .pem or .crt/.key files in {}",
            dir.display()
        ));
    }
    Ok(specs)
}
