//! The `acme` section (README "Automatic certificates (ACME)"): the ACME directory, account e-mail,
//! challenge type, on-demand issuance and its limits.
//!
//! Only reading, validating and defaults. Nothing here talks to an ACME server or to Redis: the ACME
//! client (control plane) and the workers' on-demand hook read this struct.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use super::json::{Section, ValueExt};
use super::{Builder, ConfigError};

/// Which challenge the ACME client answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `http-01` (the default): `GET /.well-known/acme-challenge/<token>` on the HTTP listeners.
    Http01,
    /// `tls-alpn-01`: a challenge certificate served to ClientHellos offering only `acme-tls/1`.
    TlsAlpn01,
}

impl AcmeChallenge {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AcmeChallenge::Http01 => "http-01",
            AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// `acme`: present (with a `directory`) means ACME is on.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// `acme.directory`: the ACME directory URL (`https://…/directory`).
    pub directory: String,
    /// `acme.email`: the account contact, if any.
    pub email: Option<String>,
    /// `acme.challenge` (default `http-01`).
    pub challenge: AcmeChallenge,
    /// `acme.onDemand` (default true): the first handshake for a name with an exact `frontend:<name>`
    /// and no certificate queues an order and waits up to `handshake_wait`.
    pub on_demand: bool,
    /// `acme.renewBeforeDays` (default 30).
    pub renew_before_days: u32,
    /// `acme.caCertificate`: an extra PEM root trusted for the directory's own HTTPS (a test CA).
    pub ca_certificate: Option<PathBuf>,
    /// `acme.maxOrdersPerHour` (default 30, for the whole fleet).
    pub max_orders_per_hour: u32,
    /// `acme.handshakeWait` (seconds, default 10): how long an on-demand handshake waits for issuance.
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
                "missing: the ACME directory URL (e.g. https://acme-v02.api.letsencrypt.org/directory) turns ACME on",
            ));
        };
        let rest = directory
            .strip_prefix("https://")
            .or_else(|| directory.strip_prefix("http://"));
        match rest {
            Some(r)
                if !r.is_empty()
                    && !r.starts_with('/')
                    && !directory.contains(char::is_whitespace) => {}
            _ => {
                return Err(self.err(
                    "acme.directory",
                    format!("expected an https:// URL, found {directory:?}"),
                ))
            }
        }
        let email = s.opt_string("email").map_err(e)?.filter(|m| !m.is_empty());
        if let Some(m) = &email {
            if !m.contains('@') || m.len() > 254 || m.contains(char::is_whitespace) {
                return Err(self.err("acme.email", format!("not an e-mail address: {m:?}")));
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
        let renew_before_days = match s.opt_count("renewBeforeDays").map_err(e)? {
            None => 30,
            Some(n) if (1..=365).contains(&n) => n as u32,
            Some(n) => {
                return Err(self.err(
                    "acme.renewBeforeDays",
                    format!("expected 1 to 365 days, found {n}"),
                ))
            }
        };
        let ca_certificate = s
            .opt_string("caCertificate")
            .map_err(e)?
            .filter(|p| !p.is_empty())
            .map(|p| self.resolve_path(&p));
        if let Some(p) = &ca_certificate {
            if !p.is_file() {
                return Err(self.err(
                    "acme.caCertificate",
                    format!("{} is not a readable file", p.display()),
                ));
            }
        }
        let max_orders_per_hour = match s.opt_count("maxOrdersPerHour").map_err(e)? {
            None => 30,
            Some(n) if (1..=100_000).contains(&n) => n as u32,
            Some(n) => {
                return Err(self.err(
                    "acme.maxOrdersPerHour",
                    format!("expected 1 to 100000, found {n}"),
                ))
            }
        };
        let handshake_wait = match s.opt_seconds("handshakeWait").map_err(e)? {
            None => Duration::from_secs(10),
            // 0: never wait, the first handshake gets the default certificate.
            Some(None) => Duration::ZERO,
            Some(Some(d)) if d <= Duration::from_secs(60) => d,
            Some(Some(d)) => {
                return Err(self.err(
                    "acme.handshakeWait",
                    format!(
                        "at most 60 seconds (a client waits that long on its handshake), found {}",
                        d.as_secs_f64()
                    ),
                ))
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

/// `acme` as shown by `--dry`.
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
        let mut v: Value = serde_json::from_str(text).unwrap();
        v["server"] = serde_json::json!({"accessLog": false});
        Config::from_json_text(Path::new("/nonexistent/config.json"), &v.to_string())
    }

    #[test]
    fn absent_means_off() {
        assert!(load("{}").unwrap().acme.is_none());
        assert!(load(r#"{"acme": false}"#).unwrap().acme.is_none());
    }

    #[test]
    fn defaults() {
        let c = load(r#"{"acme": {"directory": "https://acme.test/dir"}}"#).unwrap();
        let a = c.acme.unwrap();
        assert_eq!(a.directory, "https://acme.test/dir");
        assert_eq!(a.email, None);
        assert_eq!(a.challenge, AcmeChallenge::Http01);
        assert!(a.on_demand);
        assert_eq!(a.renew_before_days, 30);
        assert_eq!(a.ca_certificate, None);
        assert_eq!(a.max_orders_per_hour, 30);
        assert_eq!(a.handshake_wait, Duration::from_secs(10));
    }

    #[test]
    fn all_fields() {
        let c = load(
            r#"{"acme": {"directory": "https://acme.test/dir", "email": "ops@a.com",
                "challenge": "tls-alpn-01", "onDemand": false, "renewBeforeDays": 20,
                "maxOrdersPerHour": 5, "handshakeWait": 2.5}}"#,
        )
        .unwrap();
        let a = c.acme.unwrap();
        assert_eq!(a.email.as_deref(), Some("ops@a.com"));
        assert_eq!(a.challenge, AcmeChallenge::TlsAlpn01);
        assert!(!a.on_demand);
        assert_eq!(a.renew_before_days, 20);
        assert_eq!(a.max_orders_per_hour, 5);
        assert_eq!(a.handshake_wait, Duration::from_millis(2500));
    }

    #[test]
    fn invalid_values_name_the_key() {
        for (text, key) in [
            (r#"{"acme": {}}"#, "acme.directory"),
            (r#"{"acme": {"directory": "not a url"}}"#, "acme.directory"),
            (
                r#"{"acme": {"directory": "https://a/d", "challenge": "dns-01"}}"#,
                "acme.challenge",
            ),
            (
                r#"{"acme": {"directory": "https://a/d", "email": "nope"}}"#,
                "acme.email",
            ),
            (
                r#"{"acme": {"directory": "https://a/d", "renewBeforeDays": 0}}"#,
                "acme.renewBeforeDays",
            ),
            (
                r#"{"acme": {"directory": "https://a/d", "maxOrdersPerHour": 0}}"#,
                "acme.maxOrdersPerHour",
            ),
            (
                r#"{"acme": {"directory": "https://a/d", "handshakeWait": 600}}"#,
                "acme.handshakeWait",
            ),
            (
                r#"{"acme": {"directory": "https://a/d", "caCertificate": "/nonexistent/ca.pem"}}"#,
                "acme.caCertificate",
            ),
            (r#"{"acme": "yes"}"#, "acme"),
        ] {
            let err = load(text).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{text}: {err}");
        }
    }
}
