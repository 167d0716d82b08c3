//! The configuration file: Hipache's keys (master 0.4 and legacy 0.3/0.2) plus hipache-tpc's own, read
//! with serde_json and checked key by key.
//!
//! Loading never panics and never starts anything: it turns a JSON file into an immutable [`Config`]
//! (shared by all workers through an `Arc`) or a [`ConfigError`] naming the file and the key. Unknown keys
//! become warnings naming them. Sockets are not bound here; `server` does that.

mod acme;
mod control;
pub mod driver_url;
mod https;
mod json;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::cell::RefCell;

use serde_json::{Map, Value};

pub use acme::{AcmeChallenge, AcmeConfig};
pub use control::{AdminConfig, HealthCheckConfig, ADMIN_DEFAULT_PORT};
pub use driver_url::{RedisEndpoint, RedisUrl};
pub use https::{CertSpec, HttpsConfig, TlsListenerConfig};
use json::{Section, ValueExt};

/// A configuration problem: which file, which key, what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: Option<String>,
    pub message: String,
    /// Warnings found before the error (unknown keys, legacy keys): printed with it, so that a typo
    /// that caused the error is named too.
    pub warnings: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(
                f,
                "{}: key `{}`: {}",
                self.file.display(),
                key,
                self.message
            ),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole, validated configuration. Immutable once loaded.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (relative paths in it are resolved against its folder).
    pub file: PathBuf,
    pub server: ServerConfig,
    /// Plain HTTP listeners (`http.port` + `http.bind`).
    pub http: Vec<SocketAddr>,
    /// HTTPS listeners (`https` section), if any.
    pub https: Option<HttpsConfig>,
    /// Listener addresses (`http` and `https`) with `proxyProtocol: true`: a PROXY protocol header comes
    /// first on their connections (README, "Behind a load balancer: PROXY protocol").
    pub proxy_protocol: Vec<SocketAddr>,
    pub driver: DriverConfig,
    pub user: Option<String>,
    pub group: Option<String>,
    /// `admin`: the admin API / metrics / status listener, when configured.
    pub admin: Option<AdminConfig>,
    /// `healthcheck`: the built-in active health checker (off by default).
    pub healthcheck: HealthCheckConfig,
    /// `acme`: automatic certificates (README "Automatic HTTPS (ACME)"), when configured.
    pub acme: Option<AcmeConfig>,
    /// Non-fatal remarks (unknown keys, legacy keys, ignored keys), logged at start-up.
    pub warnings: Vec<String>,
}

/// `server.*`: proxy behaviour.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `server.accessLog`; `None` when disabled (`false`, `null` or `""`).
    pub access_log: Option<PathBuf>,
    /// `server.pidFile` (or `--pid-file`): written with the PID once ready, rewritten by a reload's
    /// successor.
    pub pid_file: Option<PathBuf>,
    /// `server.workers`: worker threads, one runtime each.
    pub workers: usize,
    /// `server.maxSockets`: connections per backend per worker.
    pub max_sockets: usize,
    /// `server.deadBackendTTL`, seconds.
    pub dead_backend_ttl: u64,
    /// `server.tcpTimeout`: idle timeout on client connections; `None` = no timeout.
    pub tcp_timeout: Option<Duration>,
    /// `server.retryOnError`: extra attempts after a connection-level failure.
    pub retry_on_error: u32,
    /// `server.deadBackendOn500`: mark backends dead on 501/502/504-599 answers.
    pub dead_backend_on_500: bool,
    /// `server.httpKeepAlive`: reuse connections to backends.
    pub http_keep_alive: bool,
    /// `server.debug`: honour `X-Debug` request headers.
    pub debug: bool,
    /// `server.staticDir`: folder with `error_<code>.html` pages.
    pub static_dir: Option<PathBuf>,
    /// `server.lruCache`: per-worker route cache.
    pub cache: CacheConfig,
    /// `server.connectTimeout`: TCP connect to a backend.
    pub connect_timeout: Duration,
    /// `server.backendTimeout`: wait for a backend's response head; `None` = no timeout.
    pub backend_timeout: Option<Duration>,
    /// `server.headerTimeout`: a client must send a whole request head within this time.
    pub header_timeout: Duration,
    /// `server.backendIdleTimeout`: pooled backend connections idle longer than this are closed.
    pub backend_idle_timeout: Duration,
    /// `server.maxHeaderSize`: request and response heads larger than this are refused (431 / 502).
    pub max_header_size: usize,
    /// `server.requestBufferSize` (formerly `retryBodyBuffer`): request bodies up to this size are read
    /// before a backend connection is taken, so a slow upload holds no backend and the request can be
    /// retried on another backend.
    pub retry_body_buffer: usize,
    /// `server.trustForwardedHeaders`: keep client-supplied X-Forwarded-Proto/-Port and X-Real-IP.
    pub trust_forwarded_headers: bool,
    /// `server.trustedProxies`: the peers allowed to send PROXY headers, and whose `X-Forwarded-*`
    /// headers are kept; `None` when unset (README, "Behind a load balancer: PROXY protocol").
    pub trusted_proxies: Option<Vec<crate::dataplane::net::cidr::Cidr>>,
    /// `server.allowUnderscoresInHeaders`: forward request headers whose names contain `_` (dropped by
    /// default, as nginx does: `X_Forwarded_For` could otherwise pass for `X-Forwarded-For` behind a
    /// backend that maps `-` to `_`, as CGI-style frameworks do).
    pub allow_underscores_in_headers: bool,
    /// `server.drainTimeout`: how long in-flight requests may run after SIGTERM.
    pub drain_timeout: Duration,
    /// `server.redisTimeout`: a route lookup that takes longer gets 503 (or the stale cache entry).
    pub redis_timeout: Duration,
    /// `server.websocketIdleTimeout`: close a tunnel after this long without traffic; `None` = never.
    pub websocket_idle_timeout: Option<Duration>,
    /// `server.http2`: accept HTTP/2 (ALPN `h2` on HTTPS listeners, prior-knowledge h2c on plain ones).
    pub http2: bool,
    /// `server.http2MaxStreams`: concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
    /// `server.routeNotifications`: subscribe to route changes (Redis 6+ client tracking).
    pub route_notifications: bool,
    /// `server.responseBufferSize`: response body bytes read ahead of a slow client, so the backend
    /// connection is released once the backend is done.
    pub response_buffer_size: usize,
    /// `server.splice`: move large bodies and WebSocket traffic between plain sockets with `splice(2)`
    /// (README "Large responses"); false copies every byte through user space.
    pub splice: bool,
    /// `server.minBodyRate`: bytes/s a client must keep up, on average, while the proxy waits on it for
    /// a body (after a grace of `tcpTimeout`); 0 = no minimum.
    pub min_body_rate: u64,
    /// `server.maxSocketsPerClient`: backend connections one client address may hold at once, per
    /// worker; 0 = no cap.
    pub max_sockets_per_client: usize,
}

impl ServerConfig {
    /// How long a new connection may stay silent before its first byte: `headerTimeout`, or
    /// `tcpTimeout` when shorter (Hipache closed a silent connection after `tcpTimeout`).
    pub fn first_byte_timeout(&self) -> Duration {
        match self.tcp_timeout {
            Some(t) => t.min(self.header_timeout),
            None => self.header_timeout,
        }
    }
}

/// `server.lruCache`.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Maximum hosts per worker.
    pub size: usize,
    /// Absolute age limit of an entry when route-change notifications are not flowing; zero = ask the
    /// driver on every request.
    pub ttl: Duration,
    /// Absolute age limit while notifications flow (`lruCache.trackedTtl`): the safety net.
    pub tracked_ttl: Duration,
}

/// Where routes come from.
#[derive(Debug, Clone)]
// Built once at start-up and shared through an `Arc`: the size of the Redis variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum DriverConfig {
    Redis {
        /// Reads (route lookups) go here: the first driver URL.
        read: RedisEndpoint,
        /// Writes (dead marks, publishes) go here: the last driver URL.
        write: RedisEndpoint,
        /// Glued to every key (`<prefix>frontend:<host>`), from the first URL.
        prefix: String,
    },
    /// `file:`: a JSON routes file (see `crate::drivers::file`), re-read when it changes.
    File {
        /// Resolved against the configuration file's folder when relative.
        path: PathBuf,
    },
}

const TOP_KEYS: &[&str] = &[
    "server",
    "http",
    "https",
    "driver",
    "user",
    "group",
    "redisHost",
    "redisPort",
    "redisPassword",
    "redisDatabase",
    "redis",
    "admin",
    "healthcheck",
    "acme",
];

const SERVER_KEYS: &[&str] = &[
    "accessLog",
    "workers",
    "maxSockets",
    "deadBackendTTL",
    "tcpTimeout",
    "retryOnError",
    "deadBackendOn500",
    "httpKeepAlive",
    "debug",
    "staticDir",
    "lruCache",
    "connectTimeout",
    "backendTimeout",
    "headerTimeout",
    "backendIdleTimeout",
    "maxHeaderSize",
    "retryBodyBuffer",
    "requestBufferSize",
    "responseBufferSize",
    "splice",
    "minBodyRate",
    "maxSocketsPerClient",
    "trustForwardedHeaders",
    "trustedProxies",
    "allowUnderscoresInHeaders",
    "drainTimeout",
    "redisTimeout",
    "websocketIdleTimeout",
    "http2",
    "http2MaxStreams",
    "routeNotifications",
    "pidFile",
    // legacy 0.3
    "port",
    "address",
    "address6",
    "https",
];

const LRU_KEYS: &[&str] = &["size", "ttl", "trackedTtl"];
const HTTP_KEYS: &[&str] = &["port", "bind", "proxyProtocol"];
/// The legacy `redis` object; `db` is read as `database` (with a warning).
const REDIS_KEYS: &[&str] = &["host", "port", "password", "database", "db"];

/// The known key closest to an unknown one, when it is close enough to be a typo: a different case,
/// or at most two edits (one for short keys), a swap of neighbours counting as one.
fn suggestion(unknown: &str, known: &[&'static str]) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    let mut best: Option<(usize, &'static str)> = None;
    for k in known {
        let d = edit_distance(&lower, &k.to_ascii_lowercase());
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    let (d, k) = best?;
    let limit = if unknown.chars().count() <= 4 { 1 } else { 2 };
    (d <= limit).then_some(k)
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions), on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().take(64).collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Default path when `-c` is not given: `config/config.json`, or `config/config_<flavor>.json` when
/// `SETTINGS_FLAVOR` is set.
pub fn default_path() -> PathBuf {
    match std::env::var("SETTINGS_FLAVOR") {
        Ok(flavor) if !flavor.is_empty() => PathBuf::from(format!("config/config_{flavor}.json")),
        _ => PathBuf::from("config/config.json"),
    }
}

/// Number of cores this process may run on (honours `taskset`).
pub fn available_cores() -> usize {
    core_affinity::get_core_ids()
        .map(|ids| ids.len())
        .filter(|n| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: None,
            message: format!("cannot read the configuration file: {e}"),
            warnings: Vec::new(),
        })?;
        Self::from_json_text(path, &text)
    }

    /// Validates configuration text as if read from `path`.
    pub fn from_json_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file = path.to_path_buf();
        let root: Value = serde_json::from_str(text).map_err(|e| ConfigError {
            file: file.clone(),
            key: None,
            message: format!(
                "invalid JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                e
            ),
            warnings: Vec::new(),
        })?;
        let root = root.as_object().ok_or_else(|| ConfigError {
            file: file.clone(),
            key: None,
            message: "the top level must be a JSON object".into(),
            warnings: Vec::new(),
        })?;
        let mut builder = Builder {
            file,
            warnings: RefCell::new(Vec::new()),
            proxy_protocol: RefCell::new(Vec::new()),
        };
        // Unknown keys are named first, so that they are reported even when an error stops the build.
        builder.scan_unknown_keys(root);
        builder.build(root).map_err(|mut e| {
            e.warnings = builder.warnings.take();
            e
        })
    }

    /// The effective configuration as JSON, with secrets censored (for `--dry`).
    pub fn to_effective_json(&self) -> Value {
        let secs = |d: Duration| serde_json::json!(d.as_secs_f64());
        let opt_secs = |d: Option<Duration>| d.map_or(serde_json::json!(0), secs);
        let s = &self.server;
        let driver = match &self.driver {
            DriverConfig::Redis {
                read,
                write,
                prefix,
            } => serde_json::json!({
                "type": "redis",
                "read": read.display(),
                "write": write.display(),
                "prefix": prefix,
            }),
            DriverConfig::File { path } => serde_json::json!({
                "type": "file",
                "path": path.display().to_string(),
            }),
        };
        serde_json::json!({
            "server": {
                "accessLog": s.access_log.as_ref().map(|p| p.display().to_string()),
                "pidFile": s.pid_file.as_ref().map(|p| p.display().to_string()),
                "workers": s.workers,
                "maxSockets": s.max_sockets,
                "deadBackendTTL": s.dead_backend_ttl,
                "tcpTimeout": opt_secs(s.tcp_timeout),
                "retryOnError": s.retry_on_error,
                "deadBackendOn500": s.dead_backend_on_500,
                "httpKeepAlive": s.http_keep_alive,
                "debug": s.debug,
                "staticDir": s.static_dir.as_ref().map(|p| p.display().to_string()),
                "lruCache": { "size": s.cache.size, "ttl": secs(s.cache.ttl), "trackedTtl": secs(s.cache.tracked_ttl) },
                "routeNotifications": s.route_notifications,
                "connectTimeout": secs(s.connect_timeout),
                "backendTimeout": opt_secs(s.backend_timeout),
                "headerTimeout": secs(s.header_timeout),
                "backendIdleTimeout": secs(s.backend_idle_timeout),
                "maxHeaderSize": s.max_header_size,
                "requestBufferSize": s.retry_body_buffer,
                "responseBufferSize": s.response_buffer_size,
                "splice": s.splice,
                "minBodyRate": s.min_body_rate,
                "maxSocketsPerClient": s.max_sockets_per_client,
                "trustForwardedHeaders": s.trust_forwarded_headers,
                "trustedProxies": s.trusted_proxies.as_ref().map(|l| l.iter().map(|c| c.to_string()).collect::<Vec<_>>()),
                "allowUnderscoresInHeaders": s.allow_underscores_in_headers,
                "drainTimeout": secs(s.drain_timeout),
                "redisTimeout": secs(s.redis_timeout),
                "websocketIdleTimeout": opt_secs(s.websocket_idle_timeout),
                "http2": s.http2,
                "http2MaxStreams": s.http2_max_streams,
            },
            "http": { "bind": self.http.iter().map(|a| a.to_string()).collect::<Vec<_>>() },
            "proxyProtocol": self.proxy_protocol.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "https": self.https.as_ref().map(|h| serde_json::json!({
                "handshakeTimeout": secs(h.handshake_timeout),
                "redisCertificates": h.redis_certificates,
                "listeners": h.listeners.iter().map(|l| serde_json::json!({
                    "address": l.addr.to_string(),
                    "from": l.origin,
                    "cert": l.default_cert.as_ref().map(|c| c.cert.display().to_string()),
                    "key": l.default_cert.as_ref().map(|c| c.key.display().to_string()),
                    "ca": l.default_cert.as_ref().map(|c| c.ca.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()),
                    "passphrase": l.default_cert.as_ref().and_then(|c| c.passphrase.as_ref()).map(|_| "***"),
                    "certificates": l.sni.iter().map(|c| c.cert.display().to_string()).collect::<Vec<_>>(),
                    "certificatesDir": l.sni_dir.as_ref().map(|d| d.display().to_string()),
                })).collect::<Vec<_>>(),
            })),
            "driver": driver,
            "user": self.user,
            "group": self.group,
            "admin": control::admin_json(&self.admin),
            "healthcheck": control::healthcheck_json(&self.healthcheck),
            "acme": acme::acme_json(&self.acme),
        })
    }
}

struct Builder {
    file: PathBuf,
    /// In a cell so that path resolution (`&self`) can warn too.
    warnings: RefCell<Vec<String>>,
    /// Addresses of listeners with `proxyProtocol: true`, gathered while the sections are read.
    proxy_protocol: RefCell<Vec<SocketAddr>>,
}

impl Builder {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            key: Some(key.to_string()),
            message: message.into(),
            warnings: Vec::new(),
        }
    }

    /// Records a warning once (a section may be looked at twice: by the first scan and by the build).
    fn warn(&self, warning: impl Into<String>) {
        let warning = warning.into();
        let mut warnings = self.warnings.borrow_mut();
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }

    /// Names the unknown keys of every section that has a fixed key list, before anything is validated.
    fn scan_unknown_keys(&mut self, root: &Map<String, Value>) {
        self.section("", root, TOP_KEYS);
        let object = |v: Option<&Value>| v.and_then(Value::as_object).cloned();
        if let Some(server) = object(root.get("server")) {
            self.section("server", &server, SERVER_KEYS);
            if let Some(cache) = object(server.get("lruCache")) {
                self.section("server.lruCache", &cache, LRU_KEYS);
            }
        }
        for (name, keys) in [
            ("http", HTTP_KEYS),
            ("redis", REDIS_KEYS),
            ("admin", control::ADMIN_KEYS),
            ("healthcheck", control::HEALTHCHECK_KEYS),
            ("acme", acme::ACME_KEYS),
            ("https", https::HTTPS_KEYS),
        ] {
            if let Some(obj) = object(root.get(name)) {
                self.section(name, &obj, keys);
            }
        }
    }

    fn section<'a>(
        &mut self,
        path: &str,
        obj: &'a Map<String, Value>,
        known: &[&'static str],
    ) -> Section<'a> {
        for key in obj.keys() {
            // Keys starting with "//" are comments (see config/config.example.json).
            if !known.contains(&key.as_str()) && !key.starts_with("//") {
                let full = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let hint = match suggestion(key, known) {
                    Some(close) if path.is_empty() => format!("; did you mean `{close}`?"),
                    Some(close) => format!("; did you mean `{path}.{close}`?"),
                    None if path.is_empty() && SERVER_KEYS.contains(&key.as_str()) => {
                        format!("; did you mean `server.{key}`?")
                    }
                    None => String::new(),
                };
                self.warn(format!(
                    "unknown configuration key `{full}` is ignored{hint}"
                ));
            }
        }
        Section::new(path, obj)
    }

    fn build(&mut self, root: &Map<String, Value>) -> Result<Config, ConfigError> {
        let top = self.section("", root, TOP_KEYS);
        let empty = Map::new();
        let server_obj = match top.get("server") {
            Some(v) => v.as_object().ok_or_else(|| {
                self.err("server", format!("expected an object, found {}", v.kind()))
            })?,
            None => &empty,
        };
        let server_section = self.section("server", server_obj, SERVER_KEYS);
        let server = self.server(&server_section)?;
        let http = self.http(&top, &server_section)?;
        let https = self.https_section(&top, &server_section)?;
        if let Some(h) = &https {
            for l in &h.listeners {
                if http.contains(&l.addr) {
                    return Err(self.err(
                        &l.origin,
                        format!("{} is also an `http.bind` address", l.addr),
                    ));
                }
            }
        }
        let driver = self.driver(&top)?;
        let user = top.opt_string("user").map_err(|(k, m)| self.err(&k, m))?;
        let group = top.opt_string("group").map_err(|(k, m)| self.err(&k, m))?;
        let admin = self.admin(&top)?;
        if let Some(a) = &admin {
            let https_addrs = https
                .iter()
                .flat_map(|h| h.listeners.iter().map(|l| l.addr));
            if http.iter().copied().chain(https_addrs).any(|addr| {
                addr.port() == a.addr.port()
                    && (addr.ip() == a.addr.ip()
                        || addr.ip().is_unspecified()
                        || a.addr.ip().is_unspecified())
            }) {
                return Err(self.err(
                    "admin.port",
                    format!("{} overlaps an `http` or `https` listener", a.addr),
                ));
            }
        }
        if !self.proxy_protocol.borrow().is_empty() && server.trusted_proxies.is_none() {
            self.warn("`proxyProtocol` is on and `server.trustedProxies` is not set: any peer that can reach those listeners can claim any client address; list your load balancers in `server.trustedProxies`");
        }
        let healthcheck = self.healthcheck(&top)?;
        if healthcheck.enabled {
            if let DriverConfig::File { .. } = driver {
                return Err(self.err(
                    "healthcheck.enabled",
                    "the active health checker needs the Redis driver (it follows the `dead` channel and writes `dead:*` sets); with a file: driver, dead marks stay in each worker's memory",
                ));
            }
        }
        let acme = self.acme(&top)?;
        if acme.is_some() {
            if let DriverConfig::File { .. } = driver {
                return Err(self.err(
                    "acme",
                    "ACME needs the Redis driver (certificates, locks and challenges are shared through Redis)",
                ));
            }
        }
        Ok(Config {
            file: self.file.clone(),
            server,
            http,
            https,
            proxy_protocol: self.proxy_protocol.take(),
            driver,
            user,
            group,
            admin,
            healthcheck,
            acme,
            warnings: self.warnings.take(),
        })
    }

    /// A path of an existing file or folder (certificate, `staticDir`, routes file): see
    /// [`Builder::resolve`].
    fn resolve_path(&self, p: &str) -> PathBuf {
        self.resolve(p, Path::exists)
    }

    /// A relative path is looked for in the configuration file's folder; when nothing usable is there
    /// but the working directory has it, the working directory is used as Hipache did, with a warning
    /// naming both. With neither, the configuration file's folder (so errors name that path).
    fn resolve(&self, p: &str, usable: impl Fn(&Path) -> bool) -> PathBuf {
        let path = PathBuf::from(p);
        if path.is_absolute() {
            return path;
        }
        let beside_config = match self.file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(&path),
            _ => return path,
        };
        if usable(&beside_config) {
            return beside_config;
        }
        let Ok(cwd) = std::env::current_dir() else {
            return beside_config;
        };
        let in_cwd = cwd.join(&path);
        if in_cwd != beside_config && usable(&in_cwd) {
            self.warn(format!(
                "relative path {p:?}: nothing at {} (beside the configuration file), so {} (in the working directory, as Hipache resolved it) is used",
                beside_config.display(),
                in_cwd.display()
            ));
            return in_cwd;
        }
        beside_config
    }

    fn server(&mut self, s: &Section) -> Result<ServerConfig, ConfigError> {
        let file = self.file.clone();
        let e = |(k, m): (String, String)| ConfigError {
            file: file.clone(),
            key: Some(k),
            message: m,
            warnings: Vec::new(),
        };
        let access_log = match s.get("accessLog") {
            None => Some(PathBuf::from("/var/log/hipache/access.log")),
            Some(Value::Bool(false)) => None,
            Some(Value::String(p)) if p.is_empty() => None,
            Some(Value::String(p)) => {
                Some(self.resolve(p, |c| c.exists() || c.parent().is_some_and(Path::is_dir)))
            }
            Some(other) => {
                return Err(self.err(
                    "server.accessLog",
                    format!("expected a file path or false, found {}", other.kind()),
                ))
            }
        };
        if let Some(path) = &access_log {
            check_log_path(path).map_err(|m| self.err("server.accessLog", m))?;
        }
        let pid_file = s
            .opt_string("pidFile")
            .map_err(e)?
            .filter(|p| !p.is_empty())
            .map(|p| self.resolve(&p, |c| c.parent().is_some_and(Path::is_dir)));
        let workers = s
            .opt_count("workers")
            .map_err(e)?
            .unwrap_or_else(available_cores);
        if workers == 0 || workers > 1024 {
            return Err(self.err(
                "server.workers",
                format!("{workers} workers: expected 1 to 1024"),
            ));
        }
        let max_sockets = s.opt_count("maxSockets").map_err(e)?.unwrap_or(100);
        if max_sockets == 0 {
            return Err(self.err("server.maxSockets", "must be at least 1"));
        }
        let dead_backend_ttl = s.opt_count("deadBackendTTL").map_err(e)?.unwrap_or(30) as u64;
        if dead_backend_ttl == 0 {
            return Err(self.err("server.deadBackendTTL", "must be at least 1 second"));
        }
        let tcp_timeout = s
            .opt_seconds("tcpTimeout")
            .map_err(e)?
            .unwrap_or(Some(Duration::from_secs(30)));
        let retry_on_error = s.opt_count("retryOnError").map_err(e)?.unwrap_or(3);
        if retry_on_error > 100 {
            return Err(self.err("server.retryOnError", "at most 100 retries"));
        }
        let static_dir = s
            .opt_string("staticDir")
            .map_err(e)?
            .filter(|d| !d.is_empty())
            .map(|d| self.resolve_path(&d));
        let cache = match s.get("lruCache") {
            None => CacheConfig {
                size: 10_000,
                ttl: Duration::from_secs(1),
                tracked_ttl: Duration::from_secs(60),
            },
            Some(Value::Object(obj)) => {
                let c = self.section("server.lruCache", obj, LRU_KEYS);
                let size = c.opt_count("size").map_err(e)?.unwrap_or(10_000);
                if size == 0 {
                    return Err(self.err("server.lruCache.size", "must be at least 1"));
                }
                let ttl = c
                    .opt_seconds("ttl")
                    .map_err(e)?
                    .unwrap_or(Some(Duration::from_secs(1)));
                let tracked_ttl = c
                    .opt_seconds("trackedTtl")
                    .map_err(e)?
                    .unwrap_or(Some(Duration::from_secs(60)));
                CacheConfig {
                    size,
                    ttl: ttl.unwrap_or(Duration::ZERO),
                    tracked_ttl: tracked_ttl.unwrap_or(Duration::ZERO),
                }
            }
            Some(other) => {
                return Err(self.err(
                    "server.lruCache",
                    format!(
                        "expected an object {{\"size\": N, \"ttl\": seconds}}, found {}",
                        other.kind()
                    ),
                ))
            }
        };
        let secs_or = |key: &str, default: f64| -> Result<Duration, ConfigError> {
            match s.opt_seconds(key).map_err(e)? {
                None => Ok(Duration::from_secs_f64(default)),
                Some(None) => Err(self.err(&format!("server.{key}"), "must be greater than 0")),
                Some(Some(d)) => Ok(d),
            }
        };
        let connect_timeout = secs_or("connectTimeout", 3.0)?;
        let header_timeout = secs_or("headerTimeout", 10.0)?;
        let backend_idle_timeout = secs_or("backendIdleTimeout", 4.0)?;
        let drain_timeout = secs_or("drainTimeout", 30.0)?;
        let redis_timeout = secs_or("redisTimeout", 1.0)?;
        let backend_timeout = match s.opt_seconds("backendTimeout").map_err(e)? {
            Some(explicit) => explicit,
            None => Some(tcp_timeout.unwrap_or(Duration::from_secs(30))),
        };
        let max_header_size = s
            .opt_count("maxHeaderSize")
            .map_err(e)?
            .unwrap_or(32 * 1024);
        if !(1024..=1024 * 1024).contains(&max_header_size) {
            return Err(self.err("server.maxHeaderSize", "expected 1024 to 1048576 bytes"));
        }
        // `retryBodyBuffer` is the older name of `requestBufferSize`.
        let (body_key, body_size) = match s.opt_count("requestBufferSize").map_err(e)? {
            Some(n) => ("server.requestBufferSize", Some(n)),
            None => (
                "server.retryBodyBuffer",
                s.opt_count("retryBodyBuffer").map_err(e)?,
            ),
        };
        let retry_body_buffer = body_size.unwrap_or(128 * 1024);
        if retry_body_buffer > 16 * 1024 * 1024 {
            return Err(self.err(body_key, "at most 16777216 bytes"));
        }
        let response_buffer_size = s
            .opt_count("responseBufferSize")
            .map_err(e)?
            .unwrap_or(1024 * 1024);
        if response_buffer_size > 64 * 1024 * 1024 {
            return Err(self.err("server.responseBufferSize", "at most 67108864 bytes"));
        }
        let min_body_rate = s.opt_count("minBodyRate").map_err(e)?.unwrap_or(1024) as u64;
        let max_sockets_per_client = s.opt_count("maxSocketsPerClient").map_err(e)?.unwrap_or(0);
        Ok(ServerConfig {
            access_log,
            pid_file,
            workers,
            max_sockets,
            dead_backend_ttl,
            tcp_timeout,
            retry_on_error: retry_on_error as u32,
            dead_backend_on_500: s.opt_bool("deadBackendOn500").map_err(e)?.unwrap_or(true),
            http_keep_alive: s.opt_bool("httpKeepAlive").map_err(e)?.unwrap_or(true),
            debug: s.opt_bool("debug").map_err(e)?.unwrap_or(false),
            static_dir,
            cache,
            connect_timeout,
            backend_timeout,
            header_timeout,
            backend_idle_timeout,
            max_header_size,
            retry_body_buffer,
            trust_forwarded_headers: s
                .opt_bool("trustForwardedHeaders")
                .map_err(e)?
                .unwrap_or(false),
            trusted_proxies: self.trusted_proxies(s)?,
            allow_underscores_in_headers: s
                .opt_bool("allowUnderscoresInHeaders")
                .map_err(e)?
                .unwrap_or(false),
            drain_timeout,
            redis_timeout,
            websocket_idle_timeout: s.opt_seconds("websocketIdleTimeout").map_err(e)?.flatten(),
            http2: s.opt_bool("http2").map_err(e)?.unwrap_or(true),
            route_notifications: s.opt_bool("routeNotifications").map_err(e)?.unwrap_or(true),
            response_buffer_size,
            splice: s.opt_bool("splice").map_err(e)?.unwrap_or(true),
            min_body_rate,
            max_sockets_per_client,
            http2_max_streams: match s.opt_count("http2MaxStreams").map_err(e)?.unwrap_or(128) {
                n @ 1..=65_535 => n as u32,
                n => {
                    return Err(self.err(
                        "server.http2MaxStreams",
                        format!("{n}: expected 1 to 65535"),
                    ))
                }
            },
        })
    }

    fn http(&mut self, top: &Section, server: &Section) -> Result<Vec<SocketAddr>, ConfigError> {
        if let Some(v) = top.get("http") {
            let obj = v.as_object().ok_or_else(|| {
                self.err("http", format!("expected an object, found {}", v.kind()))
            })?;
            for legacy in ["port", "address", "address6"] {
                if server.get(legacy).is_some() {
                    self.warn(format!(
                        "legacy key `server.{legacy}` is ignored because an `http` section is present"
                    ));
                }
            }
            let section = self.section("http", obj, HTTP_KEYS);
            let port = self.port(&section, "http.port", 80)?;
            let section_pp = section
                .opt_bool("proxyProtocol")
                .map_err(|(k, m)| self.err(&k, m))?
                .unwrap_or(false);
            let binds = match section.get("bind") {
                None => vec![BindItem::address("0.0.0.0")],
                Some(v) => self.bind_items("http.bind", v)?,
            };
            let with_pp: Vec<BindItem> = binds
                .iter()
                .filter(|b| b.proxy_protocol.unwrap_or(section_pp))
                .map(|b| BindItem {
                    address: b.address.clone(),
                    port: b.port,
                    proxy_protocol: Some(true),
                })
                .collect();
            if !with_pp.is_empty() {
                let addrs = self.resolve_binds("http.bind", &with_pp, port)?;
                self.proxy_protocol.borrow_mut().extend(addrs);
            }
            return self.resolve_binds("http.bind", &binds, port);
        }
        // Legacy 0.3: server.port / server.address / server.address6.
        let port = self.port(server, "server.port", 80)?;
        let mut binds = Vec::new();
        for key in ["address", "address6"] {
            if let Some(v) = server.get(key) {
                self.warn(format!(
                    "legacy key `server.{key}` is read as `http.bind`; please move it to the `http` section"
                ));
                binds.extend(self.bind_items(&format!("server.{key}"), v)?);
            }
        }
        if server.get("port").is_some() {
            self.warn("legacy key `server.port` is read as `http.port`; please move it to the `http` section");
        }
        let key = match (server.get("address"), server.get("address6")) {
            (Some(_), None) => "server.address",
            (None, Some(_)) => "server.address6",
            (Some(_), Some(_)) => "server.address / server.address6",
            (None, None) => "server.port",
        };
        if binds.is_empty() {
            binds.push(BindItem::address("0.0.0.0"));
        }
        self.resolve_binds(key, &binds, port)
    }

    /// `server.trustedProxies`: a list of CIDR blocks (or bare addresses), each checked strictly.
    fn trusted_proxies(
        &self,
        s: &Section,
    ) -> Result<Option<Vec<crate::dataplane::net::cidr::Cidr>>, ConfigError> {
        let Some(v) = s.get("trustedProxies") else {
            return Ok(None);
        };
        let items: Vec<(String, &Value)> = match v {
            Value::Array(list) => list
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("server.trustedProxies[{i}]"), v))
                .collect(),
            one => vec![("server.trustedProxies".to_string(), one)],
        };
        if items.len() > crate::dataplane::net::cidr::MAX_TRUSTED_PROXIES {
            return Err(self.err(
                "server.trustedProxies",
                format!(
                    "{} entries: at most {} accepted",
                    items.len(),
                    crate::dataplane::net::cidr::MAX_TRUSTED_PROXIES
                ),
            ));
        }
        let mut out = Vec::with_capacity(items.len());
        for (key, v) in items {
            let Value::String(text) = v else {
                return Err(self.err(
                    &key,
                    format!(
                        "expected a CIDR string like \"10.0.0.0/8\", found {}",
                        v.kind()
                    ),
                ));
            };
            out.push(
                crate::dataplane::net::cidr::Cidr::parse(text).map_err(|m| self.err(&key, m))?,
            );
        }
        Ok(Some(out))
    }

    fn port(&self, section: &Section, key: &str, default: u16) -> Result<u16, ConfigError> {
        let short = key.rsplit('.').next().unwrap_or(key);
        match section.get(short) {
            None => Ok(default),
            Some(v) => port_value(v).ok_or_else(|| {
                self.err(
                    key,
                    format!("expected a port number 1-65535, found {}", v.render()),
                )
            }),
        }
    }

    fn bind_items(&self, key: &str, v: &Value) -> Result<Vec<BindItem>, ConfigError> {
        let one = |item: &Value, k: &str| -> Result<BindItem, ConfigError> {
            match item {
                Value::String(s) => Ok(BindItem::address(s)),
                Value::Object(obj) => {
                    let address = match obj.get("address") {
                        None | Some(Value::Null) => "0.0.0.0".to_string(),
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => {
                            return Err(self.err(
                                &format!("{k}.address"),
                                format!("expected a string, found {}", other.kind()),
                            ))
                        }
                    };
                    let port = match obj.get("port") {
                        None | Some(Value::Null) => None,
                        Some(p) => Some(port_value(p).ok_or_else(|| {
                            self.err(
                                &format!("{k}.port"),
                                format!("expected a port number 1-65535, found {}", p.render()),
                            )
                        })?),
                    };
                    let proxy_protocol = match obj.get("proxyProtocol") {
                        None | Some(Value::Null) => None,
                        Some(Value::Bool(b)) => Some(*b),
                        Some(other) => {
                            return Err(self.err(
                                &format!("{k}.proxyProtocol"),
                                format!("expected true or false, found {}", other.render()),
                            ))
                        }
                    };
                    Ok(BindItem {
                        address,
                        port,
                        proxy_protocol,
                    })
                }
                other => Err(self.err(
                    k,
                    format!(
                        "expected an address string or {{address, port}}, found {}",
                        other.kind()
                    ),
                )),
            }
        };
        match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| one(item, &format!("{key}[{i}]")))
                .collect(),
            other => Ok(vec![one(other, key)?]),
        }
    }

    fn resolve_binds(
        &self,
        key: &str,
        items: &[BindItem],
        default_port: u16,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for item in items {
            let port = item.port.unwrap_or(default_port);
            let host = item.address.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => (host, port)
                    .to_socket_addrs()
                    .map_err(|e| {
                        self.err(
                            key,
                            format!("cannot resolve bind address {:?}: {e}", item.address),
                        )
                    })?
                    .collect(),
            };
            if addrs.is_empty() {
                return Err(self.err(
                    key,
                    format!("bind address {:?} resolves to nothing", item.address),
                ));
            }
            for a in addrs {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        if out.is_empty() {
            return Err(self.err(key, "no address to listen on"));
        }
        Ok(out)
    }

    fn driver(&mut self, top: &Section) -> Result<DriverConfig, ConfigError> {
        let urls: Vec<(String, String)> = match top.get("driver") {
            Some(Value::String(s)) => vec![("driver".into(), s.clone())],
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok((format!("driver[{i}]"), s.clone())),
                    other => Err(self.err(
                        &format!("driver[{i}]"),
                        format!("expected a URL string, found {}", other.kind()),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(Value::Array(_)) => {
                return Err(self.err("driver", "the list of driver URLs is empty"))
            }
            Some(other) => {
                return Err(self.err(
                    "driver",
                    format!("expected a URL or a list of URLs, found {}", other.kind()),
                ))
            }
            None => return self.legacy_driver(top),
        };
        for legacy in [
            "redisHost",
            "redisPort",
            "redisPassword",
            "redisDatabase",
            "redis",
        ] {
            if top.get(legacy).is_some() {
                self.warn(format!(
                    "legacy key `{legacy}` is ignored because `driver` is set"
                ));
            }
        }
        if let Some((key, _)) = urls.iter().find(|(_, url)| url.starts_with("file:")) {
            if urls.len() > 1 {
                return Err(self.err(
                    key,
                    "a file: driver must be the only driver URL (it has no separate write target)",
                ));
            }
            let path = driver_url::parse_file_url(&urls[0].1).map_err(|m| self.err(key, m))?;
            return Ok(DriverConfig::File {
                path: self.resolve_path(&path),
            });
        }
        let mut parsed = Vec::with_capacity(urls.len());
        for (key, url) in &urls {
            let mut u = driver_url::parse_redis_url(url).map_err(|m| self.err(key, m))?;
            if let Some((ca, insecure)) = u.endpoint.tls().map(|t| (t.ca.clone(), t.insecure)) {
                if insecure {
                    self.warn(format!(
                        "{key}: {} skips TLS certificate verification (insecure=1): anyone on the path to Redis can read and change the routes",
                        u.endpoint.display()
                    ));
                }
                let ca = ca.map(|p| self.resolve_path(&p));
                let client = crate::tls::client::redis_client_config(ca.as_deref(), insecure)
                    .map_err(|m| self.err(key, m))?;
                if let Some(tls) = u.endpoint.tls_mut() {
                    tls.client = Some(client);
                }
            }
            parsed.push(u);
        }
        let (first, last) = match (parsed.first(), parsed.last()) {
            (Some(f), Some(l)) => (f.clone(), l.clone()),
            _ => return Err(self.err("driver", "no driver URL")),
        };
        if parsed.len() > 2 {
            self.warn(format!(
                "`driver` lists {} URLs: reads use the first, writes the last, the others are ignored",
                parsed.len()
            ));
        }
        // Writes always go to the master, even when the write URL asks the sentinels for a replica.
        let mut write = last.endpoint;
        if let driver_url::Transport::Sentinel(spec) = &mut write.transport {
            spec.replica = false;
        }
        Ok(DriverConfig::Redis {
            read: first.endpoint,
            write,
            prefix: first.prefix,
        })
    }

    fn legacy_driver(&mut self, top: &Section) -> Result<DriverConfig, ConfigError> {
        let file = self.file.clone();
        let e = |(k, m): (String, String)| ConfigError {
            file: file.clone(),
            key: Some(k),
            message: m,
            warnings: Vec::new(),
        };
        let mut endpoint = RedisEndpoint::default();
        let mut used_legacy = false;
        if let Some(host) = top.opt_string("redisHost").map_err(e)? {
            endpoint.host = host;
            used_legacy = true;
        }
        if let Some(v) = top.get("redisPort") {
            endpoint.port = port_value(v).ok_or_else(|| {
                self.err(
                    "redisPort",
                    format!("expected a port number, found {}", v.render()),
                )
            })?;
            used_legacy = true;
        }
        if let Some(pw) = top.opt_string("redisPassword").map_err(e)? {
            endpoint.password = Some(pw).filter(|p| !p.is_empty());
            used_legacy = true;
        }
        if let Some(db) = top.opt_count("redisDatabase").map_err(e)? {
            endpoint.database = db as i64;
            used_legacy = true;
        }
        if let Some(v) = top.get("redis") {
            let obj = v.as_object().ok_or_else(|| {
                self.err("redis", format!("expected an object, found {}", v.kind()))
            })?;
            let r = self.section("redis", obj, REDIS_KEYS);
            if let Some(host) = r.opt_string("host").map_err(e)? {
                endpoint.host = host;
            }
            if let Some(v) = r.get("port") {
                endpoint.port = port_value(v).ok_or_else(|| {
                    self.err(
                        "redis.port",
                        format!("expected a port number, found {}", v.render()),
                    )
                })?;
            }
            if let Some(pw) = r.opt_string("password").map_err(e)? {
                endpoint.password = Some(pw).filter(|p| !p.is_empty());
            }
            if let Some(db) = r.opt_count("database").map_err(e)? {
                endpoint.database = db as i64;
            } else if let Some(db) = r.opt_count("db").map_err(e)? {
                self.warn("`redis.db` is read as `redis.database`; please rename it");
                endpoint.database = db as i64;
            }
            if r.get("database").is_some() && r.get("db").is_some() {
                self.warn("`redis.db` is ignored because `redis.database` is set");
            }
            used_legacy = true;
        }
        if used_legacy {
            self.warn("legacy Redis keys (redisHost, redisPort, ...) are used; prefer `driver: \"redis://host:port/db\"`");
        }
        Ok(DriverConfig::Redis {
            read: endpoint.clone(),
            write: endpoint,
            prefix: String::new(),
        })
    }
}

struct BindItem {
    address: String,
    port: Option<u16>,
    /// The item's own `proxyProtocol`; `None` = the section's.
    proxy_protocol: Option<bool>,
}

impl BindItem {
    fn address(a: &str) -> Self {
        BindItem {
            address: a.to_string(),
            port: None,
            proxy_protocol: None,
        }
    }
}

fn port_value(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse::<u64>().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|p| *p != 0)
}

/// The access log's folder must exist and the path must not be a folder (the file itself is created
/// when missing). Whether the folder is writable by the account that serves is a start-up check (see
/// `preflight`): it depends on who runs, and a folder the user cannot write is a warning there.
pub fn check_log_path(path: &Path) -> Result<(), String> {
    let dir = log_dir(path);
    let meta = std::fs::metadata(&dir).map_err(|e| {
        format!(
            "the access-log folder {} is not usable: {e} (create it, or set \"accessLog\": false to disable the log)",
            dir.display()
        )
    })?;
    if !meta.is_dir() {
        return Err(format!("{} is not a folder", dir.display()));
    }
    if path.is_dir() {
        return Err(format!("{} is a folder, not a file", path.display()));
    }
    Ok(())
}

/// The folder of the access log (`.` for a bare file name).
pub fn log_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_json_text(Path::new("/tmp/test-config.json"), text)
    }

    #[test]
    fn defaults_from_an_empty_object() {
        let c = load(r#"{"server": {"accessLog": false}}"#).unwrap();
        assert_eq!(c.server.max_sockets, 100);
        assert_eq!(c.server.dead_backend_ttl, 30);
        assert_eq!(c.server.retry_on_error, 3);
        assert_eq!(c.server.tcp_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.server.retry_body_buffer, 128 * 1024);
        assert_eq!(c.server.response_buffer_size, 1024 * 1024);
        assert!(c.server.splice);
        let c = load(r#"{"server": {"accessLog": false, "splice": false}}"#).unwrap();
        assert!(!c.server.splice);
        assert!(load(r#"{"server": {"accessLog": false, "splice": "no"}}"#).is_err());
        let c = load(r#"{"server": {"accessLog": false}}"#).unwrap();
        assert_eq!(c.server.min_body_rate, 1024);
        assert_eq!(c.server.max_sockets_per_client, 0);
        assert_eq!(c.http, vec!["0.0.0.0:80".parse().unwrap()]);
        assert!(c.server.cache.ttl <= Duration::from_secs(1));
    }

    #[test]
    fn bind_forms() {
        let c = load(r#"{"server":{"accessLog":false},"http":{"port":8080,"bind":["127.0.0.1",{"address":"::1","port":9090}]}}"#).unwrap();
        assert_eq!(
            c.http,
            vec![
                "127.0.0.1:8080".parse().unwrap(),
                "[::1]:9090".parse().unwrap()
            ]
        );
        let c = load(r#"{"server":{"accessLog":false},"http":{"bind":"127.0.0.2"}}"#).unwrap();
        assert_eq!(c.http, vec!["127.0.0.2:80".parse().unwrap()]);
    }

    #[test]
    fn legacy_keys_are_mapped_with_warnings() {
        let c = load(r#"{"server":{"accessLog":false,"port":1080,"address":["127.0.0.1"]},"redisHost":"10.1.1.1","redisPort":7000,"redisDatabase":2}"#).unwrap();
        assert_eq!(c.http, vec!["127.0.0.1:1080".parse().unwrap()]);
        match &c.driver {
            DriverConfig::Redis { read, .. } => {
                assert_eq!(read.host, "10.1.1.1");
                assert_eq!(read.port, 7000);
                assert_eq!(read.database, 2);
            }
            other => panic!("expected the Redis driver, got {other:?}"),
        }
        assert!(c.warnings.iter().any(|w| w.contains("server.port")));
    }

    #[test]
    fn driver_list_reads_first_writes_last() {
        let c = load(r#"{"server":{"accessLog":false},"driver":["redis://replica:6379#p","redis://:pw@primary:6380/1"]}"#).unwrap();
        match &c.driver {
            DriverConfig::Redis {
                read,
                write,
                prefix,
            } => {
                assert_eq!(read.host, "replica");
                assert_eq!(write.host, "primary");
                assert_eq!(write.password.as_deref(), Some("pw"));
                assert_eq!(prefix, "p");
            }
            other => panic!("expected the Redis driver, got {other:?}"),
        }
    }

    #[test]
    fn file_driver_paths_resolve_against_the_config_folder() {
        let path_of = |driver: &str| match load(&format!(
            r#"{{"server":{{"accessLog":false}},"driver":{driver}}}"#
        ))
        .map(|c| c.driver)
        {
            Ok(DriverConfig::File { path }) => path,
            other => panic!("{driver}: {other:?}"),
        };
        assert_eq!(
            path_of(r#""file:routes.json""#),
            Path::new("/tmp/routes.json")
        );
        assert_eq!(
            path_of(r#"["file:sub/routes.json"]"#),
            Path::new("/tmp/sub/routes.json")
        );
        assert_eq!(
            path_of(r#""file:///etc/hipache/routes.json""#),
            Path::new("/etc/hipache/routes.json")
        );
        let err = load(r#"{"server":{"accessLog":false},"driver":["file:r.json","redis:"]}"#)
            .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("driver[0]"));
        assert!(err.message.contains("only driver URL"), "{err}");
        let err =
            load(r#"{"server":{"accessLog":false},"driver":"file://host/r.json"}"#).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("driver"));
    }

    #[test]
    fn errors_name_the_key() {
        let err = load(r#"{"server":{"accessLog":false,"tcpTimeout":"soon"}}"#).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("server.tcpTimeout"));
        let err = load(r#"{"server":{"accessLog":false},"http":{"port":70000}}"#).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("http.port"));
        let err = load(r#"{"server":{"accessLog":"/nonexistent-dir/x.log"}}"#).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("server.accessLog"));
        let err = load("{ not json").unwrap_err();
        assert!(err.message.contains("line 1"), "{err}");
    }

    #[test]
    fn admin_and_healthcheck_sections() {
        let c = load(r#"{"server":{"accessLog":false}}"#).unwrap();
        assert!(c.admin.is_none());
        assert!(!c.healthcheck.enabled);
        let c = load(r#"{"server":{"accessLog":false},"admin":{"key":"k3y"}}"#).unwrap();
        let a = c.admin.expect("admin section");
        assert_eq!(a.addr, "127.0.0.1:8091".parse().unwrap());
        assert_eq!(a.key.as_deref(), Some("k3y"));
        assert!(a.protect_metrics);
        assert!(
            !format!("{a:?}").contains("k3y"),
            "the key never reaches a log"
        );
        let c = load(r#"{"server":{"accessLog":false},"admin":{"address":"0.0.0.0","port":9000}}"#)
            .unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("without `admin.key`")));
        let c = load(r#"{"server":{"accessLog":false},"admin":{"enabled":false}}"#).unwrap();
        assert!(c.admin.is_none());
        let err = load(
            r#"{"server":{"accessLog":false},"http":{"port":9000,"bind":["0.0.0.0"]},"admin":{"port":9000}}"#,
        )
        .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("admin.port"));
        let c = load(r#"{"server":{"accessLog":false},"healthcheck":{"enabled":true,"interval":0.5,"method":"GET","uri":"/health?x=1","host":"h:8"}}"#).unwrap();
        let h = &c.healthcheck;
        assert!(h.enabled);
        assert_eq!(h.interval, Duration::from_millis(500));
        assert_eq!(h.timeout, Duration::from_secs(3));
        assert_eq!(
            (h.method.as_str(), h.uri.as_str(), h.host.as_str()),
            ("GET", "/health?x=1", "h:8")
        );
        for (text, key) in [
            (r#"{"healthcheck":{"timeout":0}}"#, "healthcheck.timeout"),
            (
                r#"{"healthcheck":{"lockTimeout":0.5}}"#,
                "healthcheck.lockTimeout",
            ),
            (r#"{"healthcheck":{"host":"a b"}}"#, "healthcheck.host"),
            (r#"{"healthcheck":true}"#, "healthcheck"),
            (r#"{"admin":{"key":"a b"}}"#, "admin.key"),
        ] {
            let mut v: Value = serde_json::from_str(text).unwrap();
            v["server"] = serde_json::json!({"accessLog": false});
            let err = load(&v.to_string()).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{text}");
        }
        let c = load(r#"{"server":{"accessLog":false},"healthcheck":{"intervall":3}}"#).unwrap();
        assert!(c
            .warnings
            .iter()
            .any(|w| w.contains("`healthcheck.intervall`")));
    }

    #[test]
    fn unknown_keys_warn_by_name() {
        let c = load(r#"{"server":{"accessLog":false,"wrkers":3},"colour":"blue"}"#).unwrap();
        assert!(c.warnings.iter().any(|w| w.contains("`server.wrkers`")));
        assert!(c.warnings.iter().any(|w| w.contains("`colour`")));
    }
}
