//! Parsing of driver URLs: Hipache's `redis://:password@host:port/db#prefix` (docs/compatibility.md §1), the forms
//! Hipache never had (`rediss://` for TLS, `redis://user:password@` for Redis 6 ACL users,
//! `redis+unix:///path/to/redis.sock`; README "Running Redis for a fleet"), and the routes file
//! `file:///abs/routes.json` / `file:relative/routes.json`.
//!
//! Every part of a Redis URL is optional (`redis:` means 127.0.0.1:6379, database 0, no prefix). The
//! password is what follows the last `:` of the user-info, or the whole user-info when it has no `:`;
//! a non-empty part before that `:` is the ACL user name.
//! This module only parses; it never connects, and never opens or resolves a file (the TLS settings'
//! CA file is read by the configuration loader, which resolves its path).
//!
//! Parsed by hand rather than with `url::Url`, which refuses or rewrites Hipache's forms
//! (`redis+unix://user:pw@/path`, several `redis+sentinel://` hosts, relative `file:` paths);
//! escapes are decoded by `common::percent`.

use std::fmt;
use std::sync::Arc;

/// Where one Redis server is and how to log in to it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    /// Host name or address; for [`Transport::Unix`], the socket's path.
    pub host: String,
    pub port: u16,
    /// Redis 6 ACL user (`AUTH user password`); `None` sends `AUTH password`.
    pub username: Option<String>,
    pub password: Option<String>,
    pub database: i64,
    pub transport: Transport,
}

impl Default for RedisEndpoint {
    /// `redis://127.0.0.1:6379/0`, no password.
    fn default() -> Self {
        RedisEndpoint {
            host: "127.0.0.1".into(),
            port: 6379,
            username: None,
            password: None,
            database: 0,
            transport: Transport::Tcp,
        }
    }
}

/// How the bytes reach the server.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Transport {
    /// Plain TCP (`redis://`).
    #[default]
    Tcp,
    /// TLS over TCP (`rediss://`).
    Tls(Box<RedisTls>),
    /// A unix socket (`redis+unix://`); the path is in `host`.
    Unix,
    /// The master (or a replica) of a Sentinel group (`redis+sentinel://`), found anew at every
    /// connection; `host` and `port` hold the first sentinel, for display.
    Sentinel(Box<SentinelSpec>),
}

/// The sentinels of a `redis+sentinel://` URL and what to ask them for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelSpec {
    /// `host:port` of each sentinel, in the URL's order.
    pub sentinels: Vec<(String, u16)>,
    /// The master's name in the sentinels' configuration.
    pub master: String,
    /// `?role=replica`: connect to a replica of that master (reads only; writes still go to the master).
    pub replica: bool,
    /// `?sentinelPassword=…`: `AUTH` for the sentinels themselves.
    pub sentinel_password: Option<String>,
}

/// The TLS settings of a `rediss://` URL.
#[derive(Clone)]
pub struct RedisTls {
    /// `?ca=<path>`: an extra root to trust (a private CA), as written in the URL.
    pub ca: Option<String>,
    /// `?insecure=1`: no certificate verification at all (a warning is logged at start-up).
    pub insecure: bool,
    /// The client configuration built from the above by the configuration loader (`None` until then).
    pub client: Option<Arc<rustls::ClientConfig>>,
}

impl PartialEq for RedisTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca && self.insecure == other.insecure
    }
}
impl Eq for RedisTls {}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl fmt::Debug for RedisEndpoint {
    // Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.display())
    }
}

impl RedisEndpoint {
    /// `redis://[user:***@]host:port/db` (or `rediss://…`, `redis+unix://…`), the password censored:
    /// safe to log.
    pub fn display(&self) -> String {
        let auth = match (&self.username, self.password.is_some()) {
            (Some(user), true) => format!("{user}:***@"),
            (Some(user), false) => format!("{user}@"),
            (None, true) => ":***@".to_string(),
            (None, false) => String::new(),
        };
        if self.transport == Transport::Unix {
            return format!("redis+unix://{auth}{}?db={}", self.host, self.database);
        }
        if let Transport::Sentinel(spec) = &self.transport {
            let hosts: Vec<String> = spec
                .sentinels
                .iter()
                .map(|(h, p)| {
                    if h.contains(':') {
                        format!("[{h}]:{p}")
                    } else {
                        format!("{h}:{p}")
                    }
                })
                .collect();
            let role = if spec.replica { "?role=replica" } else { "" };
            return format!(
                "redis+sentinel://{auth}{}/{}/{}{role}",
                hosts.join(","),
                spec.master,
                self.database
            );
        }
        let scheme = match self.transport {
            Transport::Tls(_) => "rediss",
            _ => "redis",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{auth}{host}:{}/{}", self.port, self.database)
    }

    /// The TLS settings, for `rediss://` endpoints.
    pub fn tls(&self) -> Option<&RedisTls> {
        match &self.transport {
            Transport::Tls(t) => Some(t),
            _ => None,
        }
    }

    /// The TLS settings to complete with a client configuration (the configuration loader does).
    pub fn tls_mut(&mut self) -> Option<&mut RedisTls> {
        match &mut self.transport {
            Transport::Tls(t) => Some(t),
            _ => None,
        }
    }
}

/// A parsed `redis:` driver URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    pub endpoint: RedisEndpoint,
    pub prefix: String,
}

/// Parses one driver URL; the error says what is wrong with it.
pub fn parse_redis_url(url: &str) -> Result<RedisUrl, String> {
    const FORMS: &str = "expected redis://[[user]:password@]host[:port][/db][#prefix], rediss://… (TLS), redis+unix:///path/to/redis.sock[?db=N][#prefix] or file:path/to/routes.json";
    let (scheme, rest) = if let Some(r) = url.strip_prefix("redis+unix:") {
        ("redis+unix", r)
    } else if let Some(r) = url.strip_prefix("redis+sentinel:") {
        ("redis+sentinel", r)
    } else if let Some(r) = url.strip_prefix("rediss:") {
        ("rediss", r)
    } else if let Some(r) = url.strip_prefix("redis:") {
        ("redis", r)
    } else {
        return Err(format!("unsupported driver URL {url:?}: {FORMS}"));
    };
    let (rest, prefix) = match rest.split_once('#') {
        Some((before, after)) => (before, percent_decode(after)?),
        None => (rest, String::new()),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((before, q)) => (before, q),
        None => (rest, ""),
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let mut endpoint = RedisEndpoint::default();
    let path = if scheme == "redis+unix" {
        // redis+unix://[user:password@]/path/to/redis.sock
        let (userinfo, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let userinfo = userinfo.strip_suffix('@').unwrap_or(userinfo);
        if !userinfo.is_empty() {
            (endpoint.username, endpoint.password) = split_userinfo(userinfo)?;
        }
        if path.len() <= 1 {
            return Err(format!(
                "driver URL {url:?} names no socket: write redis+unix:///path/to/redis.sock"
            ));
        }
        endpoint.host = percent_decode(path)?;
        endpoint.transport = Transport::Unix;
        ""
    } else if scheme == "redis+sentinel" {
        // redis+sentinel://[user:password@]h1:26379,h2:26379/<master>[/<db>]
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        if let Some(info) = userinfo {
            (endpoint.username, endpoint.password) = split_userinfo(info)?;
        }
        let mut sentinels = Vec::new();
        for h in hosts.split(',').filter(|h| !h.is_empty()) {
            let (host, port) =
                split_host_port(h).map_err(|e| format!("driver URL {url:?}: {e}"))?;
            if host.is_empty() {
                return Err(format!("driver URL {url:?}: a sentinel without a host"));
            }
            sentinels.push((host, port.unwrap_or(26379)));
        }
        let (master, db) = match path.split_once('/') {
            Some((m, db)) => (m, db),
            None => (path, ""),
        };
        if sentinels.is_empty() || master.is_empty() {
            return Err(format!(
                "driver URL {url:?}: write redis+sentinel://host1:26379,host2:26379/<master-name>[/<db>]"
            ));
        }
        endpoint.host = sentinels[0].0.clone();
        endpoint.port = sentinels[0].1;
        endpoint.transport = Transport::Sentinel(Box::new(SentinelSpec {
            sentinels,
            master: percent_decode(master)?,
            replica: false,
            sentinel_password: None,
        }));
        db
    } else {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        if let Some(info) = userinfo {
            (endpoint.username, endpoint.password) = split_userinfo(info)?;
        }
        let (host, port) =
            split_host_port(hostport).map_err(|e| format!("driver URL {url:?}: {e}"))?;
        if !host.is_empty() {
            endpoint.host = host;
        }
        endpoint.port = port.unwrap_or(6379);
        if scheme == "rediss" {
            endpoint.transport = Transport::Tls(Box::new(RedisTls {
                ca: None,
                insecure: false,
                client: None,
            }));
        }
        path
    };
    let database = |raw: &str| {
        raw.parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| {
                format!("driver URL {url:?}: database {raw:?} is not a non-negative number")
            })
    };
    if !path.is_empty() {
        endpoint.database = database(path)?;
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        match (k, &mut endpoint.transport) {
            ("db", _) => endpoint.database = database(&v)?,
            ("ca", Transport::Tls(t)) if !v.is_empty() => t.ca = Some(v),
            ("insecure", Transport::Tls(t)) => {
                t.insecure = match v.as_str() {
                    "" | "1" | "true" | "yes" => true,
                    "0" | "false" | "no" => false,
                    _ => {
                        return Err(format!(
                            "driver URL {url:?}: insecure={v:?}: expected 1 or 0"
                        ))
                    }
                }
            }
            ("role", Transport::Sentinel(spec)) => {
                spec.replica = match v.as_str() {
                    "replica" | "slave" => true,
                    "master" => false,
                    _ => {
                        return Err(format!(
                            "driver URL {url:?}: role={v:?}: expected master or replica"
                        ))
                    }
                }
            }
            ("sentinelPassword", Transport::Sentinel(spec)) if !v.is_empty() => {
                spec.sentinel_password = Some(v)
            }
            ("role" | "sentinelPassword", _) => {
                return Err(format!(
                    "driver URL {url:?}: `{k}` applies to Sentinel only: write redis+sentinel://"
                ))
            }
            ("ca" | "insecure", _) => {
                return Err(format!(
                    "driver URL {url:?}: `{k}` applies to TLS only: write rediss://"
                ))
            }
            // Hipache ignored a query string after the database; plain redis: URLs still do.
            _ if scheme == "redis" => {}
            _ => {
                return Err(format!(
                    "driver URL {url:?}: unknown parameter `{k}` (known: db, ca, insecure, role, sentinelPassword)"
                ))
            }
        }
    }
    Ok(RedisUrl { endpoint, prefix })
}

/// `user:password`, `:password` or `password` (Hipache's form, without a colon).
fn split_userinfo(info: &str) -> Result<(Option<String>, Option<String>), String> {
    let (user, raw) = match info.rfind(':') {
        Some(i) => (&info[..i], &info[i + 1..]),
        None => ("", info),
    };
    let user = if user.is_empty() {
        None
    } else {
        Some(percent_decode(user)?)
    };
    let password = if raw.is_empty() {
        None
    } else {
        Some(percent_decode(raw)?)
    };
    Ok((user, password))
}

/// Parses a `file:` driver URL into the path it names, percent-escapes decoded: `file:///abs/routes.json`
/// (or `file://localhost/abs/...`), `file:/abs/routes.json`, or `file:relative/routes.json`. A relative
/// path is returned as is; the caller resolves it against the configuration file's folder.
pub fn parse_file_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("file:")
        .ok_or_else(|| format!("driver URL {url:?} is not a file: URL"))?;
    let path = match rest.strip_prefix("//") {
        Some(after) => {
            let (host, path) = match after.find('/') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            };
            if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                return Err(format!(
                    "driver URL {url:?}: {host:?} would be a host name; write file:///absolute/path/routes.json or file:relative/path/routes.json"
                ));
            }
            path
        }
        None => rest,
    };
    if path.is_empty() {
        return Err(format!("driver URL {url:?} names no file"));
    }
    percent_decode(path).map_err(|e| format!("driver URL {url:?}: {e}"))
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`. An empty host is returned as "".
pub fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| format!("unterminated IPv6 address in {s:?}"))?;
        let host = rest[..end].to_string();
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after IPv6 address")),
        };
        return Ok((host, port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Ok((host.to_string(), Some(parse_port(port)?)))
        }
        Some(_) => Err(format!("IPv6 address {s:?} must be written in brackets")),
        None => Ok((s.to_string(), None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("empty port".into());
    }
    p.parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("port {p:?} is not a number between 1 and 65535"))
}

fn percent_decode(s: &str) -> Result<String, String> {
    use crate::common::percent::{decode, DecodeError};
    decode(s, false).map_err(|e| match e {
        DecodeError::BadEscape => format!("bad percent-escape in {s:?}"),
        DecodeError::NotUtf8 => format!("{s:?} does not decode to UTF-8"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(url: &str) -> RedisUrl {
        parse_redis_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn bare_scheme_means_local_default() {
        let u = ep("redis:");
        assert_eq!(u.endpoint.host, "127.0.0.1");
        assert_eq!(u.endpoint.port, 6379);
        assert_eq!(u.endpoint.database, 0);
        assert_eq!(u.endpoint.password, None);
        assert_eq!(u.prefix, "");
    }

    #[test]
    fn all_parts() {
        let u = ep("redis://:s3cret@10.0.0.1:7000/3#pfx");
        assert_eq!(u.endpoint.host, "10.0.0.1");
        assert_eq!(u.endpoint.port, 7000);
        assert_eq!(u.endpoint.database, 3);
        assert_eq!(u.endpoint.password.as_deref(), Some("s3cret"));
        assert_eq!(u.prefix, "pfx");
    }

    #[test]
    fn password_without_colon_and_with_user() {
        assert_eq!(ep("redis://pw@h").endpoint.password.as_deref(), Some("pw"));
        assert_eq!(
            ep("redis://user:a%40b@h").endpoint.password.as_deref(),
            Some("a@b")
        );
        assert_eq!(ep("redis://h:1").endpoint.password, None);
    }

    #[test]
    fn ipv6_and_errors() {
        let u = ep("redis://[::1]:6380");
        assert_eq!(u.endpoint.host, "::1");
        assert_eq!(u.endpoint.port, 6380);
        assert!(parse_redis_url("http://x").is_err());
        assert!(parse_redis_url("redis://h:99999").is_err());
        assert!(parse_redis_url("redis://h/notanumber").is_err());
        assert!(!format!("{:?}", ep("redis://:pw@h").endpoint).contains("pw"));
    }

    #[test]
    fn acl_user_tls_and_unix_forms() {
        let u = ep("redis://proxy:s%3Acret@h:1/2");
        assert_eq!(u.endpoint.username.as_deref(), Some("proxy"));
        assert_eq!(u.endpoint.password.as_deref(), Some("s:cret"));
        assert_eq!(u.endpoint.transport, Transport::Tcp);
        assert_eq!(ep("redis://:pw@h").endpoint.username, None);
        assert!(!ep("redis://proxy:pw@h").endpoint.display().contains("pw"));

        let t = ep("rediss://h:6380/1?ca=ca.pem#p");
        let tls = t.endpoint.tls().expect("TLS");
        assert_eq!(tls.ca.as_deref(), Some("ca.pem"));
        assert!(!tls.insecure);
        assert_eq!(t.endpoint.database, 1);
        assert_eq!(t.prefix, "p");
        assert!(t.endpoint.display().starts_with("rediss://h:6380"));
        assert!(ep("rediss://h?insecure=1")
            .endpoint
            .tls()
            .is_some_and(|t| t.insecure));
        assert!(parse_redis_url("rediss://h?insecure=maybe").is_err());
        assert!(parse_redis_url("redis://h?ca=x.pem").is_err());
        assert!(parse_redis_url("rediss://h?cert=x").is_err());
        // Hipache ignored a query string after the database; so do plain redis: URLs.
        assert_eq!(ep("redis://h/3?foo=bar").endpoint.database, 3);

        let x = ep("redis+unix:///run/redis/redis.sock?db=4#pfx");
        assert_eq!(x.endpoint.transport, Transport::Unix);
        assert_eq!(x.endpoint.host, "/run/redis/redis.sock");
        assert_eq!(x.endpoint.database, 4);
        assert_eq!(x.prefix, "pfx");
        let y = ep("redis+unix://u:pw@/tmp/r.sock");
        assert_eq!(y.endpoint.username.as_deref(), Some("u"));
        assert_eq!(y.endpoint.password.as_deref(), Some("pw"));
        assert!(parse_redis_url("redis+unix://").is_err());
        assert!(parse_redis_url("redis+unix:///x.sock?bogus=1").is_err());
    }

    #[test]
    fn sentinel_forms() {
        let u = ep("redis+sentinel://u:pw@s1:26379,s2,[::1]:26380/mymaster/3?role=replica&sentinelPassword=sp#px");
        let Transport::Sentinel(spec) = &u.endpoint.transport else {
            panic!("not a sentinel URL");
        };
        assert_eq!(
            spec.sentinels,
            [
                ("s1".to_string(), 26379),
                ("s2".to_string(), 26379),
                ("::1".to_string(), 26380)
            ]
        );
        assert_eq!(spec.master, "mymaster");
        assert!(spec.replica);
        assert_eq!(spec.sentinel_password.as_deref(), Some("sp"));
        assert_eq!(u.endpoint.database, 3);
        assert_eq!(u.endpoint.username.as_deref(), Some("u"));
        assert_eq!(u.prefix, "px");
        assert!(!u.endpoint.display().contains("pw"));
        assert!(!u.endpoint.display().contains("sp"));
        assert_eq!(ep("redis+sentinel://s1/m").endpoint.database, 0);
        assert!(parse_redis_url("redis+sentinel://s1").is_err());
        assert!(parse_redis_url("redis+sentinel:///m").is_err());
        assert!(parse_redis_url("redis+sentinel://s1/m?role=boss").is_err());
        assert!(parse_redis_url("redis://h?role=replica").is_err());
    }

    #[test]
    fn file_url_forms() {
        assert_eq!(parse_file_url("file:///etc/r.json").unwrap(), "/etc/r.json");
        assert_eq!(
            parse_file_url("file://localhost/etc/r.json").unwrap(),
            "/etc/r.json"
        );
        assert_eq!(parse_file_url("file:/etc/r.json").unwrap(), "/etc/r.json");
        assert_eq!(parse_file_url("file:routes.json").unwrap(), "routes.json");
        assert_eq!(
            parse_file_url("file:my%20routes.json").unwrap(),
            "my routes.json"
        );
        assert!(parse_file_url("file:").is_err());
        assert!(parse_file_url("file:///").is_ok());
        assert!(parse_file_url("file://routes.json").is_err());
        assert!(parse_file_url("file://otherhost/r.json").is_err());
        assert!(parse_file_url("file:%zz").is_err());
    }
}
