//! A resolved route: the frontend list that matched a host (identifier + backends) and that host's dead
//! set, plus parsing of backend URLs.
//!
//! Routes are immutable once built, except for local dead marks: the worker that sees a backend fail
//! stops choosing it at once (docs/compatibility.md §3), without waiting for the next lookup. A local mark expires after
//! `deadBackendTTL`, like a mark in Redis, even if the route stays cached longer.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

thread_local! {
    /// Hashes of (frontend, list, entry) this worker has already warned about: a bad entry is reported
    /// once per version of its list, not on every lookup or attempt. Bounded: cleared past 4096.
    static WARNED: std::cell::RefCell<std::collections::HashSet<u64, crate::common::fast_hash::FxBuild>> =
        Default::default();
}

/// Logs, once per worker and per version of the list, the unusable entries of a frontend list and a
/// list that holds only its identifier (requests for it get 502). Only on lookups that found such a
/// list: the common path does not come here.
fn warn_once_per_change(frontend_key: &str, list: &[String], backends: &[Backend]) {
    use std::hash::{Hash, Hasher};
    let mut base = crate::common::fast_hash::FxHasher::default();
    frontend_key.hash(&mut base);
    list.hash(&mut base);
    let first_time = |extra: usize| {
        let mut h = base.clone();
        extra.hash(&mut h);
        let key = h.finish();
        WARNED.with(|w| {
            let mut w = w.borrow_mut();
            if w.len() >= 4096 {
                w.clear();
            }
            w.insert(key)
        })
    };
    if backends.is_empty() {
        if first_time(usize::MAX) {
            log::warn!(
                "frontend {frontend_key} has only its identifier {:?} and no backend: its requests get 502",
                list.first().map_or("", String::as_str)
            );
        }
        return;
    }
    for (i, b) in backends.iter().enumerate() {
        if let Err(why) = &b.target {
            if first_time(i) {
                log::warn!(
                    "frontend {frontend_key}: backend entry {} {:?} is not usable and is skipped: {why}",
                    i + 1,
                    b.url
                );
            }
        }
    }
}

/// Logs the problems of a `frontend-options:` hash once per worker and per version of the hash.
fn warn_options_once(frontend_key: &str, fields: &[(String, String)], problems: &[String]) {
    use std::hash::{Hash, Hasher};
    let mut h = crate::common::fast_hash::FxHasher::default();
    "options".hash(&mut h);
    frontend_key.hash(&mut h);
    fields.hash(&mut h);
    let key = h.finish();
    let first = WARNED.with(|w| {
        let mut w = w.borrow_mut();
        if w.len() >= 4096 {
            w.clear();
        }
        w.insert(key)
    });
    if first {
        for p in problems {
            log::warn!("frontend-options:{frontend_key}: {p}; ignored");
        }
    }
}

/// The outcome of looking a host up.
#[derive(Clone)]
pub enum Lookup {
    /// A frontend list matched.
    Found(std::rc::Rc<Route>),
    /// No candidate key has a list: 400 "No Application Configured".
    NoFrontend,
}

/// The list that matched a host, and the host's dead set.
pub struct Route {
    /// Element 0 of the list: a label for logs, never proxied to.
    pub identifier: Box<str>,
    /// The key that matched (`www.a.com`, `*.a.com` or `*`), without the driver prefix.
    pub frontend_key: Box<str>,
    /// Elements 1.. of the list.
    pub backends: Box<[Backend]>,
    /// `listed_dead[i]`: index i was in `dead:<host>` when the route was looked up.
    listed_dead: Box<[bool]>,
    /// Local marks made by this worker, each until its expiry.
    marked_until: Box<[Cell<Option<Instant>>]>,
    /// Some local mark exists (so the common path reads no clock).
    any_marked: Cell<bool>,
    /// `frontend-options:<frontend_key>`, parsed (README "Per-frontend options").
    pub options: super::options::FrontendOptions,
    /// This worker's round-robin position (`balance roundrobin`).
    pub rr_next: Cell<u64>,
    /// Requests in flight from this worker to each backend (`balance leastconn`; empty otherwise).
    pub in_flight: Box<[Cell<u32>]>,
    /// The sticky cookie value of each backend (`sticky cookie`; empty otherwise).
    pub sticky_ids: Box<[[u8; STICKY_ID_LEN]]>,
}

/// Length of a sticky cookie value: hex digits of a hash of the backend URL.
pub const STICKY_ID_LEN: usize = 12;

/// The sticky cookie value of a backend URL: the first 12 hex digits of its FNV-1a 64 hash, the same
/// in every worker and instance (README "Per-frontend options").
pub fn sticky_id(url: &str) -> [u8; STICKY_ID_LEN] {
    let h = crate::common::fast_hash::fnv1a(crate::common::fast_hash::FNV_OFFSET, url.as_bytes());
    let mut out = [0u8; STICKY_ID_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((h >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

impl Route {
    /// Builds a route from the raw list (identifier first) and the dead indexes of the requested host.
    pub fn new(frontend_key: &str, list: &[String], dead_indexes: &[usize]) -> Route {
        Self::with_options(frontend_key, list, dead_indexes, &[])
    }

    /// As [`Route::new`], with the fields of `frontend-options:<frontend_key>` (bad ones ignored, with
    /// one warning per worker and per version of the hash).
    pub fn with_options(
        frontend_key: &str,
        list: &[String],
        dead_indexes: &[usize],
        option_fields: &[(String, String)],
    ) -> Route {
        let identifier = list.first().map(|s| s.as_str()).unwrap_or("");
        let backends: Box<[Backend]> = list.iter().skip(1).map(|url| Backend::parse(url)).collect();
        // An entry that is not a usable URL is never chosen (as if dead), so a list with one stays
        // served by its other backends instead of costing a retry.
        let listed_dead: Box<[bool]> = (0..backends.len())
            .map(|i| dead_indexes.contains(&i) || backends[i].target.is_err())
            .collect();
        for b in backends.iter() {
            if let Err(why) = &b.target {
                // Once per lookup (not per request), so at most once a TTL per host and worker.
                log::warn!(
                    "frontend {frontend_key}: unusable backend entry {:?}, never chosen: {why}",
                    b.url
                );
            }
        }
        let marked_until = (0..backends.len()).map(|_| Cell::new(None)).collect();
        if backends.is_empty() || backends.iter().any(|b| b.target.is_err()) {
            warn_once_per_change(frontend_key, list, &backends);
        }
        let options = if option_fields.is_empty() {
            super::options::FrontendOptions::default()
        } else {
            let (options, problems) =
                super::options::FrontendOptions::parse(option_fields, backends.len());
            if !problems.is_empty() {
                warn_options_once(frontend_key, option_fields, &problems);
            }
            options
        };
        let in_flight = if options.balance == super::options::Balance::LeastConn {
            (0..backends.len()).map(|_| Cell::new(0)).collect()
        } else {
            Box::default()
        };
        let sticky_ids = if options.sticky {
            backends.iter().map(|b| sticky_id(&b.url)).collect()
        } else {
            Box::default()
        };
        Route {
            identifier: identifier.into(),
            frontend_key: frontend_key.into(),
            backends,
            listed_dead,
            marked_until,
            any_marked: Cell::new(false),
            options,
            rr_next: Cell::new(0),
            in_flight,
            sticky_ids,
        }
    }

    pub fn is_dead(&self, index: usize) -> bool {
        if self.listed_dead.get(index).copied().unwrap_or(false) {
            return true;
        }
        self.any_marked.get()
            && self
                .marked_until
                .get(index)
                .and_then(Cell::get)
                .is_some_and(|until| Instant::now() < until)
    }

    /// Marks `index` dead in this worker's copy for `ttl`.
    pub fn mark_dead(&self, index: usize, ttl: Duration) {
        if let Some(m) = self.marked_until.get(index) {
            m.set(Some(Instant::now() + ttl));
            self.any_marked.set(true);
        }
    }

    /// Number of backends not marked dead.
    pub fn alive_count(&self) -> usize {
        (0..self.backends.len())
            .filter(|i| !self.is_dead(*i))
            .count()
    }
}

/// One backend entry of a frontend list.
pub struct Backend {
    /// The entry exactly as stored (logged, published in dead messages, shown in debug headers).
    pub url: Box<str>,
    /// Where to connect, or why the entry is unusable.
    pub target: Result<BackendTarget, Box<str>>,
}

/// A parsed backend address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendTarget {
    /// Host name or IP literal (without brackets).
    pub host: Box<str>,
    pub port: u16,
    /// Set when the host is an IP literal (no DNS needed).
    pub addr: Option<SocketAddr>,
    /// The entry said `https://`; we still speak plain HTTP to it (docs/compatibility.md §1).
    pub https_scheme: bool,
    /// `unix:/path`: an HTTP/1.1 backend on this unix socket (README, "Unix-socket backends");
    /// `host` is then the path and `port` 0.
    pub unix: Option<std::sync::Arc<str>>,
}

impl Backend {
    pub fn parse(url: &str) -> Backend {
        Backend {
            url: url.into(),
            target: parse_backend_url(url).map_err(|e| e.into_boxed_str()),
        }
    }
}

/// Parses `http://host:port[/path]`, `https://...`, or a scheme-less `host:port` (docs/compatibility.md §1 FIX).
pub fn parse_backend_url(url: &str) -> Result<BackendTarget, String> {
    let trimmed = url.trim();
    if let Some(path) = strip_prefix_ci(trimmed, "unix:") {
        return parse_unix_path(url, path);
    }
    let (rest, https_scheme, default_port) = if let Some(r) = strip_prefix_ci(trimmed, "http://") {
        (r, false, 80)
    } else if let Some(r) = strip_prefix_ci(trimmed, "https://") {
        (r, true, 443)
    } else if trimmed.contains("://") {
        return Err(format!("unsupported scheme in backend {url:?}"));
    } else {
        (trimmed, false, 80)
    };
    // Authority ends at the first '/', '?' or '#'; the path is ignored.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = match authority.rfind('@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    if authority.is_empty() {
        return Err(format!("backend {url:?} has no host"));
    }
    let (host, port) = crate::config::driver_url::split_host_port(authority)
        .map_err(|e| format!("backend {url:?}: {e}"))?;
    if host.is_empty() {
        return Err(format!("backend {url:?} has no host"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'%'))
    {
        return Err(format!("backend {url:?} has an invalid host name"));
    }
    let port = port.unwrap_or(default_port);
    let addr = host
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port));
    Ok(BackendTarget {
        host: host.into(),
        port,
        addr,
        https_scheme,
        unix: None,
    })
}

/// `unix:/abs/path`: absolute, at most `sun_path`'s 107 bytes, no NUL or control bytes.
fn parse_unix_path(url: &str, path: &str) -> Result<BackendTarget, String> {
    if !path.starts_with('/') {
        return Err(format!(
            "backend {url:?}: a unix socket path must be absolute"
        ));
    }
    if path.len() > crate::dataplane::upstream::stream::MAX_UNIX_PATH {
        return Err(format!(
            "backend {url:?}: unix socket path longer than {} bytes",
            crate::dataplane::upstream::stream::MAX_UNIX_PATH
        ));
    }
    if path.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!(
            "backend {url:?}: control byte in the unix socket path"
        ));
    }
    Ok(BackendTarget {
        host: path.into(),
        port: 0,
        addr: None,
        https_scheme: false,
        unix: Some(path.into()),
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_url_forms() {
        let t = parse_backend_url("http://10.0.0.7:8080").unwrap();
        assert_eq!(t.addr, Some("10.0.0.7:8080".parse().unwrap()));
        let t = parse_backend_url("http://10.0.0.7").unwrap();
        assert_eq!(t.port, 80);
        let t = parse_backend_url("10.0.0.7:81").unwrap();
        assert_eq!(t.port, 81);
        assert!(!t.https_scheme);
        let t = parse_backend_url("http://[::1]:9000/some/path").unwrap();
        assert_eq!(t.addr, Some("[::1]:9000".parse().unwrap()));
        let t = parse_backend_url("HTTPS://app.internal").unwrap();
        assert!(t.https_scheme);
        assert_eq!(t.port, 443);
        assert_eq!(t.addr, None);
        assert!(parse_backend_url("ftp://x").is_err());
        assert!(parse_backend_url("http://").is_err());
        assert!(parse_backend_url("http://h:0").is_err());
        assert!(parse_backend_url("not a url").is_err());
        let t = parse_backend_url("unix:/run/app/http.sock").unwrap();
        assert_eq!(t.unix.as_deref(), Some("/run/app/http.sock"));
        assert!(parse_backend_url("UNIX:/a").unwrap().unix.is_some());
        assert!(parse_backend_url("unix:relative.sock").is_err());
        assert!(parse_backend_url("unix:").is_err());
        assert!(parse_backend_url(&format!("unix:/{}", "a".repeat(106))).is_ok());
        assert!(parse_backend_url(&format!("unix:/{}", "a".repeat(107))).is_err());
        assert!(parse_backend_url("unix:/a\u{1}b").is_err());
    }

    #[test]
    fn dead_flags() {
        let list: Vec<String> = ["id", "http://a:1", "http://b:2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = Route::new("a.com", &list, &[1]);
        assert!(!r.is_dead(0));
        assert!(r.is_dead(1));
        assert_eq!(r.alive_count(), 1);
        r.mark_dead(0, Duration::from_secs(30));
        assert_eq!(r.alive_count(), 0);
        // A local mark expires.
        r.mark_dead(0, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!r.is_dead(0));
    }
}
