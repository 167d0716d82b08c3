//! Parsing of driver URLs: Hipache's `redis://:password@host:port/db#prefix` (docs/compatibility.md §1), and the routes
//! file `file:///abs/routes.json` / `file:relative/routes.json`.
//!
//! Every part of a Redis URL is optional (`redis:` means 127.0.0.1:6379, database 0, no prefix). The
//! password is what follows the last `:` of the user-info, or the whole user-info when it has no `:`.
//! This module only parses; it never connects, and never opens or resolves a file.

use std::fmt;

/// Where one Redis server is and how to log in to it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    pub host: String,
    pub port: u16,
    pub password: Option<String>,
    pub database: i64,
}

impl fmt::Debug for RedisEndpoint {
    // Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.display())
    }
}

impl RedisEndpoint {
    /// `redis://[:***@]host:port/db`, the password censored: safe to log.
    pub fn display(&self) -> String {
        let auth = if self.password.is_some() { ":***@" } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("redis://{auth}{host}:{}/{}", self.port, self.database)
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
    let rest = url
        .strip_prefix("redis:")
        .ok_or_else(|| format!("unsupported driver URL {url:?}: expected redis://[:password@]host[:port][/db][#prefix] or file:path/to/routes.json"))?;
    let (rest, prefix) = match rest.split_once('#') {
        Some((before, after)) => (before, percent_decode(after)?),
        None => (rest, String::new()),
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    // Ignore a query string after the database number.
    let path = path.split('?').next().unwrap_or("");
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let password = match userinfo {
        None => None,
        Some(info) => {
            let raw = match info.rfind(':') {
                Some(i) => &info[i + 1..],
                None => info,
            };
            if raw.is_empty() {
                None
            } else {
                Some(percent_decode(raw)?)
            }
        }
    };
    let (host, port) = split_host_port(hostport).map_err(|e| format!("driver URL {url:?}: {e}"))?;
    let database = if path.is_empty() {
        0
    } else {
        path.parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| {
                format!("driver URL {url:?}: database {path:?} is not a non-negative number")
            })?
    };
    Ok(RedisUrl {
        endpoint: RedisEndpoint {
            host: if host.is_empty() {
                "127.0.0.1".to_string()
            } else {
                host
            },
            port: port.unwrap_or(6379),
            password,
            database,
        },
        prefix,
    })
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
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
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
