//! The control-plane sections of the configuration: `admin` (the admin API, metrics and status
//! listener) and `healthcheck` (the built-in active health checker).
//!
//! Only reading and validating; nothing is bound or started here (`server` and `control` do that).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use super::json::{Section, ValueExt};
use super::{port_value, Builder, ConfigError};

/// `admin`: the admin listener. Absent (or `"enabled": false`) means no listener.
#[derive(Clone)]
pub struct AdminConfig {
    /// `admin.address` + `admin.port` (default 127.0.0.1:8091).
    pub addr: SocketAddr,
    /// `admin.key`: required on every call when set (`api_key` parameter or `Authorization: Bearer`).
    pub key: Option<String>,
    /// `admin.protectMetrics`: whether `/metrics` and `/status` also need the key (when one is set).
    pub protect_metrics: bool,
}

impl fmt::Debug for AdminConfig {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("addr", &self.addr)
            .field("key", &self.key.as_ref().map(|_| "***"))
            .field("protect_metrics", &self.protect_metrics)
            .finish()
    }
}

/// `healthcheck`: the built-in active health checker (hipache-hchecker's behaviour, docs/compatibility.md §10).
#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    /// `healthcheck.enabled` (default false).
    pub enabled: bool,
    /// `healthcheck.interval`: pause between two checks of one backend (default 3 s).
    pub interval: Duration,
    /// `healthcheck.connectTimeout` (default 3 s).
    pub connect_timeout: Duration,
    /// `healthcheck.timeout`: sending the request and receiving the status line (default 3 s).
    pub timeout: Duration,
    /// `healthcheck.method` (default `HEAD`).
    pub method: String,
    /// `healthcheck.uri` (default `/CloudHealthCheck`).
    pub uri: String,
    /// `healthcheck.host`: the `Host` header of checks (default `ping`).
    pub host: String,
    /// `healthcheck.lockTimeout`: a lock in the `hchecker` hash not refreshed for this long belongs to
    /// a checker that is gone, and is taken over (default 30 s; locks are refreshed every third of it,
    /// at most every 10 s).
    pub lock_timeout: Duration,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            enabled: false,
            interval: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(3),
            method: "HEAD".into(),
            uri: "/CloudHealthCheck".into(),
            host: "ping".into(),
            lock_timeout: Duration::from_secs(30),
        }
    }
}

pub(super) const ADMIN_KEYS: &[&str] = &["enabled", "address", "port", "key", "protectMetrics"];
pub(super) const HEALTHCHECK_KEYS: &[&str] = &[
    "enabled",
    "interval",
    "connectTimeout",
    "timeout",
    "method",
    "uri",
    "host",
    "lockTimeout",
];

/// Default port of the admin listener.
/// Not 8081: the quickstarts and many examples put a demo backend there.
pub const ADMIN_DEFAULT_PORT: u16 = 8091;

impl Builder {
    pub(super) fn admin(&mut self, top: &Section) -> Result<Option<AdminConfig>, ConfigError> {
        let Some(v) = top.get("admin") else {
            return Ok(None);
        };
        let obj = match v {
            Value::Object(obj) => obj,
            Value::Bool(false) => return Ok(None),
            other => {
                return Err(self.err(
                    "admin",
                    format!(
                        "expected an object {{\"address\", \"port\", \"key\"}}, found {}",
                        other.kind()
                    ),
                ))
            }
        };
        let s = self.section("admin", obj, ADMIN_KEYS);
        let file = self.file.clone();
        let e = |(k, m): (String, String)| ConfigError {
            file: file.clone(),
            key: Some(k),
            message: m,
            warnings: Vec::new(),
        };
        if !s.opt_bool("enabled").map_err(e)?.unwrap_or(true) {
            return Ok(None);
        }
        let address = s
            .opt_string("address")
            .map_err(e)?
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = match s.get("port") {
            None => ADMIN_DEFAULT_PORT,
            Some(p) => port_value(p).ok_or_else(|| {
                self.err(
                    "admin.port",
                    format!("expected a port number 1-65535, found {}", p.render()),
                )
            })?,
        };
        let host = address.trim_start_matches('[').trim_end_matches(']');
        let addr = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => (host, port)
                .to_socket_addrs()
                .map_err(|err| {
                    self.err(
                        "admin.address",
                        format!("cannot resolve {address:?}: {err}"),
                    )
                })?
                .next()
                .ok_or_else(|| {
                    self.err("admin.address", format!("{address:?} resolves to nothing"))
                })?,
        };
        let key = s.opt_string("key").map_err(e)?.filter(|k| !k.is_empty());
        if let Some(k) = &key {
            if k.chars().any(|c| c.is_control() || c == ' ') {
                return Err(self.err(
                    "admin.key",
                    "must not contain spaces or control characters (it travels in a header)",
                ));
            }
        }
        let protect_metrics = s.opt_bool("protectMetrics").map_err(e)?.unwrap_or(true);
        if key.is_none() && !addr.ip().is_loopback() {
            self.warn(format!(
                "the admin API listens on {addr} without `admin.key`: anyone who can reach it can change the routes"
            ));
        }
        Ok(Some(AdminConfig {
            addr,
            key,
            protect_metrics,
        }))
    }

    pub(super) fn healthcheck(&mut self, top: &Section) -> Result<HealthCheckConfig, ConfigError> {
        let mut hc = HealthCheckConfig::default();
        let Some(v) = top.get("healthcheck") else {
            return Ok(hc);
        };
        let obj = v.as_object().ok_or_else(|| {
            self.err(
                "healthcheck",
                format!("expected an object, found {}", v.kind()),
            )
        })?;
        let s = self.section("healthcheck", obj, HEALTHCHECK_KEYS);
        let file = self.file.clone();
        let e = |(k, m): (String, String)| ConfigError {
            file: file.clone(),
            key: Some(k),
            message: m,
            warnings: Vec::new(),
        };
        hc.enabled = s.opt_bool("enabled").map_err(e)?.unwrap_or(false);
        let positive = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            match s.opt_seconds(key).map_err(e)? {
                None => Ok(default),
                Some(None) => {
                    Err(self.err(&format!("healthcheck.{key}"), "must be greater than 0"))
                }
                Some(Some(d)) if d > Duration::from_secs(3600) => {
                    Err(self.err(&format!("healthcheck.{key}"), "at most 3600 seconds"))
                }
                Some(Some(d)) => Ok(d),
            }
        };
        hc.interval = positive("interval", hc.interval)?;
        hc.connect_timeout = positive("connectTimeout", hc.connect_timeout)?;
        hc.timeout = positive("timeout", hc.timeout)?;
        hc.lock_timeout = positive("lockTimeout", hc.lock_timeout)?;
        if hc.lock_timeout < Duration::from_secs(1) {
            return Err(self.err("healthcheck.lockTimeout", "at least 1 second"));
        }
        if let Some(method) = s.opt_string("method").map_err(e)? {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(self.err(
                    "healthcheck.method",
                    format!("expected an HTTP method such as HEAD or GET, found {method:?}"),
                ));
            }
            hc.method = method;
        }
        if let Some(uri) = s.opt_string("uri").map_err(e)? {
            if !uri.starts_with('/') || !uri.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(self.err(
                    "healthcheck.uri",
                    format!(
                        "expected a path starting with / without spaces or control characters, found {uri:?}"
                    ),
                ));
            }
            hc.uri = uri;
        }
        if let Some(host) = s.opt_string("host").map_err(e)? {
            if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(self.err(
                    "healthcheck.host",
                    format!("expected a host name for the Host header, found {host:?}"),
                ));
            }
            hc.host = host;
        }
        Ok(hc)
    }
}

/// The `admin` section for `--dry`, the key censored.
pub(super) fn admin_json(admin: &Option<AdminConfig>) -> Value {
    match admin {
        None => Value::Null,
        Some(a) => serde_json::json!({
            "address": a.addr.ip().to_string(),
            "port": a.addr.port(),
            "key": a.key.as_ref().map(|_| "***"),
            "protectMetrics": a.protect_metrics,
        }),
    }
}

/// The `healthcheck` section for `--dry`.
pub(super) fn healthcheck_json(hc: &HealthCheckConfig) -> Value {
    serde_json::json!({
        "enabled": hc.enabled,
        "interval": hc.interval.as_secs_f64(),
        "connectTimeout": hc.connect_timeout.as_secs_f64(),
        "timeout": hc.timeout.as_secs_f64(),
        "method": hc.method,
        "uri": hc.uri,
        "host": hc.host,
        "lockTimeout": hc.lock_timeout.as_secs_f64(),
    })
}
