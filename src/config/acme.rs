//! The `acme` section of the configuration: automatic certificates from an ACME (RFC 8555) CA
//! (README "Automatic HTTPS (ACME)").
//!
//! Only reading and validating; nothing is contacted or started here (`acme` on the control thread
//! does that).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::json::{Section, ValueExt};
use super::{Builder, ConfigError};

/// The challenge type used to prove control of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `http-01`: the key authorization served at `/.well-known/acme-challenge/<token>` on port 80.
    Http01,
    /// `tls-alpn-01`: a challenge certificate served to ClientHellos offering only `acme-tls/1`.
    TlsAlpn01,
}

impl AcmeChallenge {
    /// The challenge's name in ACME documents (and in the configuration).
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// `acme`: present (with a `directory`) when ACME is on.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// `acme.directory`: the CA's directory URL (`https://…`).
    pub directory: String,
    /// `acme.email`: the account's contact, if any.
    pub email: Option<String>,
    /// `acme.challenge` (default `http-01`).
    pub challenge: AcmeChallenge,
    /// `acme.onDemand` (default true): order for names seen in handshakes.
    pub on_demand: bool,
    /// `acme.renewBeforeDays` (default 30).
    pub renew_before_days: u32,
    /// `acme.caCertificate`: an extra PEM root trusted for the directory's own HTTPS.
    pub ca_certificate: Option<PathBuf>,
    /// `acme.maxOrdersPerHour` (default 30), for the whole fleet.
    pub max_orders_per_hour: u32,
    /// `acme.handshakeWait` (default 10 s): how long a first handshake waits for issuance.
    pub handshake_wait: Duration,
}

pub(super) const ACME_KEYS: &[&str] = &[
    "directory",
    "email",
    "challenge",
    "onDemand",
    "renewBeforeDays",
    "caCertificate",
    "maxOrdersPerHour",
    "handshakeWait",
];

impl Builder {
    pub(super) fn acme(&mut self, top: &Section) -> Result<Option<AcmeConfig>, ConfigError> {
        let Some(v) = top.get("acme") else {
            return Ok(None);
        };
        let obj = match v {
            Value::Object(obj) => obj,
            Value::Bool(false) => return Ok(None),
            other => {
                return Err(self.err(
                    "acme",
                    format!(
                        "expected an object {{\"directory\", \"email\", ...}}, found {}",
                        other.kind()
                    ),
                ))
            }
        };
        let s = self.section("acme", obj, ACME_KEYS);
        let file = self.file.clone();
        let e = |(k, m): (String, String)| ConfigError {
            file: file.clone(),
            key: Some(k),
            message: m,
            warnings: Vec::new(),
        };
        let Some(directory) = s.opt_string("directory").map_err(e)? else {
            return Err(self.err(
                "acme.directory",
                "missing: the ACME directory URL turns ACME on, e.g. \"https://acme-staging-v02.api.letsencrypt.org/directory\"",
            ));
        };
        if !directory.starts_with("https://") || directory.len() > 2048 {
            return Err(self.err(
                "acme.directory",
                format!("expected an https:// URL, found {directory:?}"),
            ));
        }
        let email = s.opt_string("email").map_err(e)?.filter(|m| !m.is_empty());
        if let Some(m) = &email {
            if !m.contains('@') || m.len() > 254 || m.chars().any(|c| c.is_control() || c == ' ') {
                return Err(self.err(
                    "acme.email",
                    format!("expected an e-mail address, found {m:?}"),
                ));
            }
        }
        let challenge = match s.opt_string("challenge").map_err(e)?.as_deref() {
            None | Some("http-01") => AcmeChallenge::Http01,
            Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
            Some(other) => {
                return Err(self.err(
                    "acme.challenge",
                    format!("expected \"http-01\" or \"tls-alpn-01\", found {other:?}"),
                ))
            }
        };
        let on_demand = s.opt_bool("onDemand").map_err(e)?.unwrap_or(true);
        let count = |key: &str, default: u32, max: u32| -> Result<u32, ConfigError> {
            match s.opt_count(key).map_err(e)? {
                None => Ok(default),
                Some(n) if n as u64 > u64::from(max) => {
                    Err(self.err(&format!("acme.{key}"), format!("at most {max}")))
                }
                Some(n) => Ok(n as u32),
            }
        };
        let renew_before_days = count("renewBeforeDays", 30, 3650)?;
        let max_orders_per_hour = count("maxOrdersPerHour", 30, 100_000)?;
        if max_orders_per_hour == 0 {
            return Err(self.err(
                "acme.maxOrdersPerHour",
                "must be at least 1 (remove the `acme` section to turn ACME off)",
            ));
        }
        let handshake_wait = match s.opt_seconds("handshakeWait").map_err(e)? {
            None => Duration::from_secs(10),
            Some(None) => Duration::ZERO,
            Some(Some(d)) if d > Duration::from_secs(120) => {
                return Err(self.err("acme.handshakeWait", "at most 120 seconds"))
            }
            Some(Some(d)) => d,
        };
        let ca_certificate = match s.opt_string("caCertificate").map_err(e)? {
            None => None,
            Some(p) if p.is_empty() => None,
            Some(p) => {
                let path = self.resolve_path(&p);
                if !path.is_file() {
                    return Err(self.err(
                        "acme.caCertificate",
                        format!("no such file: {}", path.display()),
                    ));
                }
                Some(path)
            }
        };
        Ok(Some(AcmeConfig {
            directory,
            email,
            challenge,
            on_demand,
            renew_before_days,
            ca_certificate,
            max_orders_per_hour,
            handshake_wait,
        }))
    }
}

/// The `acme` section for `--dry`.
pub(super) fn acme_json(acme: &Option<AcmeConfig>) -> Value {
    match acme {
        None => Value::Null,
        Some(a) => serde_json::json!({
            "directory": a.directory,
            "email": a.email,
            "challenge": a.challenge.as_str(),
            "onDemand": a.on_demand,
            "renewBeforeDays": a.renew_before_days,
            "caCertificate": a.ca_certificate.as_ref().map(|p| p.display().to_string()),
            "maxOrdersPerHour": a.max_orders_per_hour,
            "handshakeWait": a.handshake_wait.as_secs_f64(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_json_text(Path::new("/tmp/test-config.json"), text)
    }

    #[test]
    fn defaults_and_errors() {
        let c = load(r#"{"server":{"accessLog":false}}"#).unwrap();
        assert!(c.acme.is_none());
        let c =
            load(r#"{"server":{"accessLog":false},"acme":{"directory":"https://ca.test/dir"}}"#)
                .unwrap();
        let a = c.acme.expect("acme section");
        assert_eq!(a.challenge, AcmeChallenge::Http01);
        assert!(a.on_demand);
        assert_eq!(a.renew_before_days, 30);
        assert_eq!(a.max_orders_per_hour, 30);
        assert_eq!(a.handshake_wait, Duration::from_secs(10));
        assert!(a.email.is_none() && a.ca_certificate.is_none());
        let c = load(
            r#"{"server":{"accessLog":false},"acme":{"directory":"https://ca.test/dir","email":"a@b.c","challenge":"tls-alpn-01","onDemand":false,"renewBeforeDays":7,"maxOrdersPerHour":5,"handshakeWait":2.5}}"#,
        )
        .unwrap();
        let a = c.acme.unwrap();
        assert_eq!(a.challenge, AcmeChallenge::TlsAlpn01);
        assert!(!a.on_demand);
        assert_eq!((a.renew_before_days, a.max_orders_per_hour), (7, 5));
        assert_eq!(a.handshake_wait, Duration::from_millis(2500));
        for (text, key) in [
            (r#"{"acme":{}}"#, "acme.directory"),
            (
                r#"{"acme":{"directory":"http://ca/dir"}}"#,
                "acme.directory",
            ),
            (
                r#"{"acme":{"directory":"https://ca/d","challenge":"dns-01"}}"#,
                "acme.challenge",
            ),
            (
                r#"{"acme":{"directory":"https://ca/d","email":"nope"}}"#,
                "acme.email",
            ),
            (
                r#"{"acme":{"directory":"https://ca/d","maxOrdersPerHour":0}}"#,
                "acme.maxOrdersPerHour",
            ),
            (
                r#"{"acme":{"directory":"https://ca/d","caCertificate":"/nonexistent.pem"}}"#,
                "acme.caCertificate",
            ),
            (
                r#"{"acme":{"directory":"https://ca/d","handshakeWait":600}}"#,
                "acme.handshakeWait",
            ),
            (r#"{"acme":true}"#, "acme"),
            (
                r#"{"driver":"file:///tmp/routes.json","acme":{"directory":"https://ca/d"}}"#,
                "acme",
            ),
        ] {
            let text = text.replacen('{', r#"{"server":{"accessLog":false},"#, 1);
            let err = load(&text).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
        }
        let c = load(
            r#"{"server":{"accessLog":false},"acme":{"directory":"https://ca/d","onDemnad":1}}"#,
        )
        .unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("acme.onDemnad")));
    }
}
