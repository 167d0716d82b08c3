//! Certificates from Redis (README "Certificates in Redis"): hashes `<prefix>tls:<name>` with fields
//! `certificate` (PEM chain, leaf first) and `key` (PEM private key), planb's schema.
//!
//! One [`CertStore`] per worker: it looks `tls:<n>` and `tls:*.<parent>` up in one pipelined round trip
//! on the worker's Redis read connection, parses and checks what it gets (parses, key matches, not
//! expired, covers the name), and keeps the result in a per-core cache bounded by count and bytes, with
//! missing names remembered briefly in a bounded negative cache. Concurrent handshakes for one uncached
//! name share one lookup. Route-change notifications (`tls:` is a tracked prefix) drop entries.
//!
//! TLS-ALPN-01 challenge certificates (`acme:alpn:<name>`, asked for by ClientHellos offering only
//! `acme-tls/1`) have their own small cache, [`AlpnCache`]: answers (with or without a challenge)
//! kept briefly, and a per-core budget of lookups for names not known to hold a challenge, so a flood
//! of such ClientHellos with random names costs a bounded number of Redis round trips. A name whose
//! `acme:alpn:` key a notification reports written is looked up whatever the budget, so a challenge
//! is served promptly during a flood.
//!
//! It must never block and never wait on a Redis that is down: while the read connection is down,
//! cached certificates (even stale) serve and everything else gets `None` at once (the listener's file
//! or default certificate).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::warn;
use redis::Value;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::common::local_sync::Notify;
use crate::common::metrics::{Counter, WorkerSlot};
use crate::drivers::redis::RedisClient;

/// Most certificates a core keeps parsed.
pub const MAX_CERTS: usize = 1_000;
/// Most PEM bytes (certificate + key fields) a core keeps parsed.
pub const MAX_CERT_BYTES: usize = 16 * 1024 * 1024;
/// Most names a core remembers as having no usable certificate.
pub const MAX_MISSING: usize = 10_000;
/// How long a name without a usable certificate is remembered.
pub const MISSING_TTL: Duration = Duration::from_secs(10);
/// How long a certificate is used without asking Redis again while notifications flow (they drop it
/// at once when its key changes).
pub const TRACKED_TTL: Duration = Duration::from_secs(300);
/// Same, while notifications do not flow.
pub const UNTRACKED_TTL: Duration = Duration::from_secs(10);
/// A `certificate` or `key` field larger than this is refused.
pub const MAX_FIELD_BYTES: usize = 256 * 1024;
/// Problems remembered for "logged once per change of the key".
const MAX_LOGGED: usize = 1_000;
/// How long an answer about `acme:alpn:<name>` (a challenge certificate or none) is reused while
/// notifications flow (a write of the key drops it at once).
pub const ALPN_TRACKED_TTL: Duration = Duration::from_secs(10);
/// Same, while they do not flow.
pub const ALPN_UNTRACKED_TTL: Duration = Duration::from_secs(1);
/// Most `acme:alpn:` answers a core keeps (a fleet has a handful of challenges at a time).
pub const MAX_ALPN_ANSWERS: usize = 1_000;
/// Lookups per second, per core, of challenge names not known to have been written (the budget a
/// flood of `acme-tls/1` ClientHellos with random names spends), and the burst allowed.
pub const ALPN_LOOKUPS_PER_SEC: f64 = 20.0;
pub const ALPN_LOOKUP_BURST: f64 = 20.0;
/// A name whose `acme:alpn:` key was written (a notification said so) is looked up whatever the
/// budget for this long (the ACME client's challenges live 10 minutes).
pub const ALPN_WRITTEN_TTL: Duration = Duration::from_secs(600);
/// Most such names remembered per core.
pub const MAX_ALPN_WRITTEN: usize = 1_000;
/// Handshakes that may wait on one in-flight lookup are bounded by the open connections; the
/// in-flight map holds at most one entry per name being looked up.
const MAX_INFLIGHT: usize = 4_096;

/// A checked certificate and the facts the admin API shows.
pub struct CheckedCert {
    pub key: Arc<CertifiedKey>,
    /// Unix seconds.
    pub not_after: i64,
    pub issuer: Option<String>,
    /// SAN DNS names, lowercased.
    pub names: Vec<String>,
}

/// Parses and checks a certificate chain and key for the Redis key `tls:<name>` (`name` may be a
/// wildcard `*.<parent>`): parses, key matches, not expired at `now` (unix seconds), covers `name`.
/// The error says which check failed.
pub fn check_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    name: &str,
    now: i64,
) -> Result<CheckedCert, String> {
    if cert_pem.len() > MAX_FIELD_BYTES || key_pem.len() > MAX_FIELD_BYTES {
        return Err(format!(
            "certificate or key larger than {} KiB",
            MAX_FIELD_BYTES / 1024
        ));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate is not valid PEM: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(
            "the certificate field holds no certificate (expected -----BEGIN CERTIFICATE-----)"
                .into(),
        );
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "the key field holds no private key (expected -----BEGIN PRIVATE KEY-----)".to_string()
        }
        other => format!("the key is not valid PEM: {other}"),
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let names = super::certs::dns_names(leaf)?;
    let not_after = super::x509_lite::not_after(leaf)
        .ok_or_else(|| "cannot read the certificate's notAfter".to_string())?;
    let issuer = super::x509_lite::issuer_name(leaf);
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|_| "the key does not belong to the certificate".to_string())?;
    if not_after <= now {
        return Err(format!(
            "the certificate expired (notAfter {})",
            date_of(not_after)
        ));
    }
    if !covers(&names, name) {
        return Err(format!(
            "the certificate does not cover {name} (it is for {})",
            if names.is_empty() {
                "no DNS name".to_string()
            } else {
                names.join(", ")
            }
        ));
    }
    Ok(CheckedCert {
        key: Arc::new(certified),
        not_after,
        issuer,
        names,
    })
}

/// `YYYY-MM-DD` of unix seconds, for messages.
pub fn date_of(unix: i64) -> String {
    let (y, m, d) = crate::common::clock::civil_from_days(unix.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Whether SAN names cover `name` (`www.a.com`, or a key name `*.a.com`).
fn covers(names: &[String], name: &str) -> bool {
    names.iter().any(|n| {
        n == name
            || (!name.starts_with("*.")
                && n.strip_prefix("*.")
                    .is_some_and(|parent| name.split_once('.').is_some_and(|(_, p)| p == parent)))
    })
}

/// A server name from a ClientHello made usable as a key: lowercase, no trailing dot, DNS characters
/// only, at most 253 bytes. `None` for anything else (it is then never looked up).
pub fn normalize(sni: &str) -> Option<String> {
    let n = sni.strip_suffix('.').unwrap_or(sni);
    if n.is_empty()
        || n.len() > 253
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        || n.starts_with('.')
        || n.contains("..")
    {
        return None;
    }
    Some(n.to_ascii_lowercase())
}

/// The Redis key names (after `tls:`) tried for a name, in order: exact, then wildcard.
fn candidates(name: &str) -> (String, Option<String>) {
    let wildcard = name
        .split_once('.')
        .filter(|(_, parent)| parent.contains('.') || !parent.is_empty())
        .map(|(_, parent)| format!("*.{parent}"));
    (name.to_string(), wildcard)
}

struct Entry {
    key: Arc<CertifiedKey>,
    /// PEM bytes it came from (what the byte bound counts).
    bytes: usize,
    last_used: Cell<Instant>,
    fetched: Instant,
}

/// The per-core cache: certificates by key name (`www.a.com`, `*.a.com`), bounded by [`MAX_CERTS`]
/// and [`MAX_CERT_BYTES`]; names without one, bounded by [`MAX_MISSING`] and [`MISSING_TTL`].
#[derive(Default)]
struct CertCache {
    certs: HashMap<String, Entry>,
    missing: HashMap<String, Instant>,
    bytes: usize,
    /// Entries fetched before this instant are stale (notifications were off meanwhile).
    reset_at: Option<Instant>,
    tracking_up: bool,
    /// Bumped by every invalidation: a lookup that raced one does not cache its answer.
    epoch: u64,
}

/// What the cache knows about one key name.
enum Known {
    Cert(Arc<CertifiedKey>),
    Missing,
    /// Not cached, or too old: ask Redis (a stale certificate is kept as the fallback).
    Unknown(Option<Arc<CertifiedKey>>),
}

impl CertCache {
    fn get(&self, name: &str, now: Instant) -> Known {
        let fresh = |fetched: Instant, ttl: Duration| {
            self.reset_at.is_none_or(|r| fetched >= r) && now.duration_since(fetched) < ttl
        };
        if let Some(e) = self.certs.get(name) {
            e.last_used.set(now);
            let ttl = if self.tracking_up {
                TRACKED_TTL
            } else {
                UNTRACKED_TTL
            };
            return if fresh(e.fetched, ttl) {
                Known::Cert(e.key.clone())
            } else {
                Known::Unknown(Some(e.key.clone()))
            };
        }
        match self.missing.get(name) {
            Some(&at) if fresh(at, MISSING_TTL) => Known::Missing,
            _ => Known::Unknown(None),
        }
    }

    fn put_cert(&mut self, name: &str, key: Arc<CertifiedKey>, bytes: usize, now: Instant) {
        self.missing.remove(name);
        if let Some(old) = self.certs.remove(name) {
            self.bytes -= old.bytes;
        }
        while !self.certs.is_empty()
            && (self.certs.len() >= MAX_CERTS || self.bytes + bytes > MAX_CERT_BYTES)
        {
            // Least recently used goes (a scan of at most MAX_CERTS entries, on a miss only).
            let victim = self
                .certs
                .iter()
                .min_by_key(|(_, e)| e.last_used.get())
                .map(|(k, _)| k.clone());
            let Some(victim) = victim else { break };
            if let Some(old) = self.certs.remove(&victim) {
                self.bytes -= old.bytes;
            }
        }
        self.bytes += bytes;
        self.certs.insert(
            name.to_string(),
            Entry {
                key,
                bytes,
                last_used: Cell::new(now),
                fetched: now,
            },
        );
    }

    fn put_missing(&mut self, name: &str, now: Instant) {
        if let Some(old) = self.certs.remove(name) {
            self.bytes -= old.bytes;
        }
        if self.missing.len() >= MAX_MISSING {
            self.missing
                .retain(|_, at| now.duration_since(*at) < MISSING_TTL);
            if self.missing.len() >= MAX_MISSING {
                // A flood of distinct names: forget them all rather than grow.
                self.missing.clear();
            }
        }
        self.missing.insert(name.to_string(), now);
    }

    /// Drops `name`; `racing` says a lookup is in flight, which must then not cache its answer.
    fn invalidate(&mut self, name: &str, racing: bool) {
        if racing {
            self.epoch += 1;
        }
        self.missing.remove(name);
        if let Some(old) = self.certs.remove(name) {
            self.bytes -= old.bytes;
        }
    }

    fn len(&self) -> usize {
        self.certs.len() + self.missing.len()
    }
}

/// What a core knows about TLS-ALPN-01 challenge certificates (`acme:alpn:<name>`): recent answers,
/// the names notifications reported written, and the lookup budget for all other names.
struct AlpnCache {
    /// Name → (challenge certificate or none, when fetched); at most [`MAX_ALPN_ANSWERS`].
    answers: HashMap<String, (Option<Arc<CertifiedKey>>, Instant)>,
    /// Names whose key a notification reported written, and when; at most [`MAX_ALPN_WRITTEN`].
    written: HashMap<String, Instant>,
    /// Lookups left in the budget, and when it was last refilled.
    tokens: f64,
    refilled: Instant,
    tracking_up: bool,
    /// Bumped by every invalidation: a lookup that raced one does not cache its answer.
    epoch: u64,
}

/// What the ALPN cache says about a name.
enum AlpnKnown {
    Answer(Option<Arc<CertifiedKey>>),
    /// Not cached: ask Redis (the budget allows it).
    Ask,
    /// Not cached and the budget is spent: refuse without asking.
    OverBudget,
}

impl AlpnCache {
    fn new(now: Instant) -> AlpnCache {
        AlpnCache {
            answers: HashMap::new(),
            written: HashMap::new(),
            tokens: ALPN_LOOKUP_BURST,
            refilled: now,
            tracking_up: false,
            epoch: 0,
        }
    }

    fn ttl(&self) -> Duration {
        if self.tracking_up {
            ALPN_TRACKED_TTL
        } else {
            ALPN_UNTRACKED_TTL
        }
    }

    /// The cached answer for `name`, or whether a lookup may be made (one budget token is taken
    /// for a name not reported written).
    fn get(&mut self, name: &str, now: Instant) -> AlpnKnown {
        if let Some((answer, at)) = self.answers.get(name) {
            if now.duration_since(*at) < self.ttl() {
                return AlpnKnown::Answer(answer.clone());
            }
        }
        if self
            .written
            .get(name)
            .is_some_and(|at| now.duration_since(*at) < ALPN_WRITTEN_TTL)
        {
            return AlpnKnown::Ask;
        }
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * ALPN_LOOKUPS_PER_SEC).min(ALPN_LOOKUP_BURST);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            AlpnKnown::Ask
        } else {
            AlpnKnown::OverBudget
        }
    }

    fn put(&mut self, name: &str, answer: Option<Arc<CertifiedKey>>, now: Instant) {
        if self.answers.len() >= MAX_ALPN_ANSWERS && !self.answers.contains_key(name) {
            let ttl = self.ttl();
            self.answers
                .retain(|_, (_, at)| now.duration_since(*at) < ttl);
            if self.answers.len() >= MAX_ALPN_ANSWERS {
                // A flood of distinct names: forget them all rather than grow.
                self.answers.clear();
            }
        }
        self.answers.insert(name.to_string(), (answer, now));
    }

    /// A notification said `acme:alpn:<name>` changed.
    fn written(&mut self, name: &str, now: Instant) {
        self.epoch += 1;
        self.answers.remove(name);
        if name.len() > 253 {
            return;
        }
        if self.written.len() >= MAX_ALPN_WRITTEN && !self.written.contains_key(name) {
            self.written
                .retain(|_, at| now.duration_since(*at) < ALPN_WRITTEN_TTL);
            if self.written.len() >= MAX_ALPN_WRITTEN {
                self.written.clear();
            }
        }
        self.written.insert(name.to_string(), now);
    }
}

/// A worker's certificate lookups.
pub struct CertStore {
    read: RedisClient,
    prefix: String,
    cache: RefCell<CertCache>,
    /// One entry per name being looked up; later handshakes for it wait on the notify.
    inflight: RefCell<HashMap<String, Rc<Notify>>>,
    /// Key name → hash of the value last logged as unusable (logged once per change).
    logged: RefCell<HashMap<String, u64>>,
    /// TLS-ALPN-01 challenge certificates.
    alpn: RefCell<AlpnCache>,
}

/// The outcome of one key's fetch.
enum Fetched {
    Cert(Arc<CertifiedKey>, usize),
    Missing,
}

impl CertStore {
    pub fn new(read: RedisClient, prefix: String) -> CertStore {
        CertStore {
            read,
            prefix,
            cache: RefCell::new(CertCache::default()),
            inflight: RefCell::new(HashMap::new()),
            logged: RefCell::new(HashMap::new()),
            alpn: RefCell::new(AlpnCache::new(Instant::now())),
        }
    }

    /// Names in the cache (certificates and remembered misses), for the gauge.
    pub fn cache_len(&self) -> usize {
        self.cache.borrow().len() + self.alpn.borrow().answers.len()
    }

    /// PEM bytes of the cached certificates.
    pub fn cache_bytes(&self) -> usize {
        self.cache.borrow().bytes
    }

    /// A notification said `tls:<name>` changed.
    pub fn invalidate(&self, name: &str) {
        let racing = !self.inflight.borrow().is_empty();
        self.cache.borrow_mut().invalidate(name, racing);
    }

    /// A notification said `acme:alpn:<name>` changed: drop what this core knows of it, and look
    /// it up whatever the budget for a while (a challenge is being published).
    pub fn alpn_written(&self, name: &str) {
        self.alpn.borrow_mut().written(name, Instant::now());
    }

    /// Notifications flow again (`up`), or stopped: everything fetched before may have missed a change.
    pub fn tracking(&self, up: bool) {
        let mut c = self.cache.borrow_mut();
        c.tracking_up = up;
        c.epoch += 1;
        if up {
            c.reset_at = Some(Instant::now());
        }
        let mut a = self.alpn.borrow_mut();
        a.tracking_up = up;
        a.epoch += 1;
        if up {
            a.answers.clear();
        }
    }

    /// Everything may have changed (FLUSHDB).
    pub fn invalidate_all(&self) {
        let mut c = self.cache.borrow_mut();
        c.epoch += 1;
        c.reset_at = Some(Instant::now());
        c.missing.clear();
        let mut a = self.alpn.borrow_mut();
        a.epoch += 1;
        a.answers.clear();
    }

    /// The certificate from Redis for a (normalized) server name: `tls:<name>`, then `tls:*.<parent>`;
    /// `None` when neither holds a usable one (or Redis is down and nothing is cached).
    pub async fn choose(&self, name: &str, m: &WorkerSlot) -> Option<Arc<CertifiedKey>> {
        let (exact, wildcard) = candidates(name);
        let now = Instant::now();
        let (a, b) = {
            let c = self.cache.borrow();
            (
                c.get(&exact, now),
                wildcard.as_deref().map(|w| c.get(w, now)),
            )
        };
        // The exact name wins whenever it is known to have a certificate.
        match (&a, &b) {
            (Known::Cert(k), _) => {
                m.inc(Counter::TlsCertificateCacheHits);
                return Some(k.clone());
            }
            (Known::Missing, None | Some(Known::Missing)) => {
                m.inc(Counter::TlsCertificateCacheHits);
                return None;
            }
            (Known::Missing, Some(Known::Cert(k))) => {
                m.inc(Counter::TlsCertificateCacheHits);
                return Some(k.clone());
            }
            _ => {}
        }
        let stale = match (&a, &b) {
            (Known::Unknown(Some(k)), _) => Some(k.clone()),
            (_, Some(Known::Unknown(Some(k)) | Known::Cert(k))) => Some(k.clone()),
            _ => None,
        };
        if !self.read.is_up() {
            return stale;
        }
        m.inc(Counter::TlsCertificateCacheMisses);
        // Single flight: one lookup per name, whoever comes later waits for it.
        let existing = self.inflight.borrow().get(&exact).cloned();
        if let Some(flight) = existing {
            flight.notified().await;
            let c = self.cache.borrow();
            return match (
                c.get(&exact, Instant::now()),
                wildcard.as_deref().map(|w| c.get(w, Instant::now())),
            ) {
                (Known::Cert(k), _) => Some(k),
                (_, Some(Known::Cert(k))) => Some(k),
                _ => stale,
            };
        }
        let flight = Rc::new(Notify::new());
        let registered = {
            let mut inflight = self.inflight.borrow_mut();
            if inflight.len() < MAX_INFLIGHT {
                inflight.insert(exact.clone(), flight.clone());
                true
            } else {
                false
            }
        };
        let result = self.fetch(&exact, wildcard.as_deref(), m).await;
        if registered {
            self.inflight.borrow_mut().remove(&exact);
        }
        flight.notify_all();
        match result {
            Some((e, w)) => match (e, w) {
                (Fetched::Cert(k, _), _) => Some(k),
                (_, Some(Fetched::Cert(k, _))) => Some(k),
                _ => None,
            },
            None => stale,
        }
    }

    /// One round trip for both keys; caches what it learns unless an invalidation raced it. `None`
    /// when Redis failed.
    async fn fetch(
        &self,
        exact: &str,
        wildcard: Option<&str>,
        m: &WorkerSlot,
    ) -> Option<(Fetched, Option<Fetched>)> {
        let epoch = self.cache.borrow().epoch;
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(format!("{}tls:{exact}", self.prefix))
            .arg("certificate")
            .arg("key");
        if let Some(w) = wildcard {
            pipe.cmd("HMGET")
                .arg(format!("{}tls:{w}", self.prefix))
                .arg("certificate")
                .arg("key");
        }
        let expect = 1 + usize::from(wildcard.is_some());
        m.inc(Counter::RedisRoundTrips);
        let replies = match self.read.query(&pipe.get_packed_pipeline(), expect).await {
            Ok(r) => r,
            Err(e) => {
                m.inc(Counter::RedisErrors);
                log::debug!("certificate lookup for {exact}: {e}");
                return None;
            }
        };
        let mut replies = replies.into_iter();
        let now_unix = crate::common::clock::unix_now() as i64;
        let e = self.parse_reply(exact, replies.next(), now_unix, m);
        let w = wildcard.map(|w| (w, self.parse_reply(w, replies.next(), now_unix, m)));
        let mut c = self.cache.borrow_mut();
        if c.epoch == epoch {
            let now = Instant::now();
            for (name, f) in std::iter::once((exact, &e)).chain(w.as_ref().map(|(n, f)| (*n, f))) {
                match f {
                    Fetched::Cert(k, bytes) => c.put_cert(name, k.clone(), *bytes, now),
                    Fetched::Missing => c.put_missing(name, now),
                }
            }
        }
        Some((e, w.map(|(_, f)| f)))
    }

    /// An HMGET reply: `[certificate, key]`, each nil when absent.
    fn parse_reply(&self, name: &str, v: Option<Value>, now: i64, m: &WorkerSlot) -> Fetched {
        let Some(Value::Array(fields)) = v else {
            if let Some(Value::ServerError(e)) = v {
                self.log_once(
                    name,
                    0,
                    &format!(
                        "Redis refused the lookup: {} {}",
                        e.code(),
                        e.details().unwrap_or("")
                    ),
                );
            }
            return Fetched::Missing;
        };
        let bytes = |v: Option<&Value>| match v {
            Some(Value::BulkString(b)) => Some(b.clone()),
            Some(Value::SimpleString(s)) => Some(s.clone().into_bytes()),
            _ => None,
        };
        let (cert, key) = (bytes(fields.first()), bytes(fields.get(1)));
        let (cert, key) = match (cert, key) {
            (None, None) => return Fetched::Missing,
            (Some(c), Some(k)) => (c, k),
            (c, _) => {
                m.inc(Counter::TlsCertificateErrors);
                let what = if c.is_none() { "certificate" } else { "key" };
                self.log_once(name, 1, &format!("the field `{what}` is missing"));
                return Fetched::Missing;
            }
        };
        match check_pem(&cert, &key, name, now) {
            Ok(checked) => {
                self.logged.borrow_mut().remove(name);
                Fetched::Cert(checked.key, cert.len() + key.len())
            }
            Err(why) => {
                m.inc(Counter::TlsCertificateErrors);
                let mut h = std::collections::hash_map::DefaultHasher::new();
                cert.hash(&mut h);
                key.hash(&mut h);
                self.log_once(name, h.finish(), &why);
                Fetched::Missing
            }
        }
    }

    fn log_once(&self, name: &str, value_hash: u64, why: &str) {
        let mut logged = self.logged.borrow_mut();
        if logged.get(name) == Some(&value_hash) {
            return;
        }
        if logged.len() >= MAX_LOGGED {
            logged.clear();
        }
        logged.insert(name.to_string(), value_hash);
        warn!("certificate {}tls:{name} skipped: {why}", self.prefix);
    }

    /// The TLS-ALPN-01 challenge certificate in `<prefix>acme:alpn:<name>`, if any. Answers are
    /// cached briefly ([`AlpnCache`]); a name not cached and not reported written by a notification
    /// is looked up only while the core's budget allows, otherwise refused at once.
    pub async fn acme_challenge(&self, name: &str, m: &WorkerSlot) -> Option<Arc<CertifiedKey>> {
        let epoch = {
            let mut a = self.alpn.borrow_mut();
            match a.get(name, Instant::now()) {
                AlpnKnown::Answer(answer) => return answer,
                AlpnKnown::OverBudget => {
                    m.inc(Counter::TlsAcmeChallengeSkipped);
                    return None;
                }
                AlpnKnown::Ask => a.epoch,
            }
        };
        if !self.read.is_up() {
            return None;
        }
        // `None` only when Redis failed (not cached then).
        let answer = self.fetch_challenge(name, m).await?;
        let mut a = self.alpn.borrow_mut();
        if a.epoch == epoch {
            a.put(name, answer.clone(), Instant::now());
        }
        answer
    }

    /// One lookup of `acme:alpn:<name>`: `Some(None)` when it holds no usable challenge certificate,
    /// `None` when Redis failed.
    async fn fetch_challenge(
        &self,
        name: &str,
        m: &WorkerSlot,
    ) -> Option<Option<Arc<CertifiedKey>>> {
        let mut packed = Vec::new();
        redis::cmd("HMGET")
            .arg(format!("{}acme:alpn:{name}", self.prefix))
            .arg("certificate")
            .arg("key")
            .write_packed_command(&mut packed);
        m.inc(Counter::RedisRoundTrips);
        let replies = match self.read.query(&packed, 1).await {
            Ok(r) => r,
            Err(e) => {
                m.inc(Counter::RedisErrors);
                log::debug!("challenge certificate lookup for {name}: {e}");
                return None;
            }
        };
        Some(Self::parse_challenge(replies.into_iter().next()))
    }

    /// An HMGET reply `[certificate, key]` of `acme:alpn:<name>` made a certificate, if it is one.
    fn parse_challenge(reply: Option<Value>) -> Option<Arc<CertifiedKey>> {
        let Some(Value::Array(fields)) = reply else {
            return None;
        };
        let field = |i: usize| match fields.get(i) {
            Some(Value::BulkString(b)) => Some(b.as_slice()),
            _ => None,
        };
        let (cert, key) = (field(0)?, field(1)?);
        if cert.len() > MAX_FIELD_BYTES || key.len() > MAX_FIELD_BYTES {
            return None;
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .ok()?;
        if chain.is_empty() {
            return None;
        }
        let key = PrivateKeyDer::from_pem_slice(key).ok()?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
        let certified = CertifiedKey::new(chain, signing);
        // A real challenge certificate carries the critical acmeIdentifier extension (README
        // "Automatic HTTPS (ACME)", TLS-ALPN-01), which the certificate parser behind `keys_match`
        // refuses: only a key that is not the certificate's is refused here.
        if let Err(rustls::Error::InconsistentKeys(_)) = certified.keys_match() {
            return None;
        }
        Some(Arc::new(certified))
    }

    /// On-demand ACME (README "Automatic certificates (ACME)"): when `<prefix>frontend:<name>` exists
    /// exactly and `<prefix>acme:fail:<name>` does not, queues the name (`RPUSH <prefix>acme:queue`) at
    /// most once per name per core per [`QUEUE_AGAIN`], then waits up to `wait` for `tls:<name>`.
    pub async fn on_demand(
        &self,
        name: &str,
        wait: Duration,
        queued: &RefCell<HashMap<String, Instant>>,
        m: &WorkerSlot,
    ) -> Option<Arc<CertifiedKey>> {
        if !self.read.is_up() || name.starts_with("*.") {
            return None;
        }
        let now = Instant::now();
        {
            let mut q = queued.borrow_mut();
            if let Some(at) = q.get(name) {
                if now.duration_since(*at) < QUEUE_AGAIN {
                    return None;
                }
            }
            if q.len() >= MAX_QUEUED {
                q.retain(|_, at| now.duration_since(*at) < QUEUE_AGAIN);
                if q.len() >= MAX_QUEUED {
                    return None;
                }
            }
            q.insert(name.to_string(), now);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS")
            .arg(format!("{}frontend:{name}", self.prefix));
        pipe.cmd("EXISTS")
            .arg(format!("{}acme:fail:{name}", self.prefix));
        m.inc(Counter::RedisRoundTrips);
        let replies = self.read.query(&pipe.get_packed_pipeline(), 2).await.ok()?;
        let is = |v: Option<&Value>| matches!(v, Some(Value::Int(n)) if *n > 0);
        if !is(replies.first()) || is(replies.get(1)) {
            return None;
        }
        let mut packed = Vec::new();
        redis::cmd("RPUSH")
            .arg(format!("{}acme:queue", self.prefix))
            .arg(name)
            .write_packed_command(&mut packed);
        m.inc(Counter::RedisRoundTrips);
        self.read.query(&packed, 1).await.ok()?;
        log::info!(
            "no certificate for {name}: queued for ACME, waiting up to {:?}",
            wait
        );
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            monoio::time::sleep(
                ON_DEMAND_POLL.min(deadline.saturating_duration_since(Instant::now())),
            )
            .await;
            self.cache.borrow_mut().invalidate(name, false);
            if let Some(k) = self.choose(name, m).await {
                return Some(k);
            }
        }
        None
    }
}

/// A name is queued for ACME at most once per core in this time.
pub const QUEUE_AGAIN: Duration = Duration::from_secs(60);
/// Most names remembered as queued, per core.
pub const MAX_QUEUED: usize = 10_000;
/// How often an on-demand handshake looks for its new certificate.
const ON_DEMAND_POLL: Duration = Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalize("WWW.A.com.").as_deref(), Some("www.a.com"));
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("a..b"), None);
        assert_eq!(normalize("a b"), None);
        assert_eq!(normalize(&"a".repeat(300)), None);
        assert_eq!(
            candidates("www.a.com"),
            ("www.a.com".into(), Some("*.a.com".into()))
        );
        assert_eq!(candidates("localhost"), ("localhost".into(), None));
    }

    #[test]
    fn coverage() {
        let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(covers(&n(&["www.a.com"]), "www.a.com"));
        assert!(covers(&n(&["*.a.com"]), "www.a.com"));
        assert!(covers(&n(&["*.a.com"]), "*.a.com"));
        assert!(!covers(&n(&["www.a.com"]), "*.a.com"));
        assert!(!covers(&n(&["*.a.com"]), "x.www.a.com"));
        assert!(!covers(&n(&["b.com"]), "a.com"));
    }

    #[test]
    fn challenge_lookups_are_budgeted_except_written_names() {
        let t0 = Instant::now();
        let mut c = AlpnCache::new(t0);
        let asks = |c: &mut AlpnCache, tag: &str, at: Instant| {
            (0..1000)
                .filter(|i| matches!(c.get(&format!("{tag}{i}.test"), at), AlpnKnown::Ask))
                .count()
        };
        assert_eq!(asks(&mut c, "a", t0), ALPN_LOOKUP_BURST as usize);
        // A name a notification reported written is asked for whatever the budget.
        c.written("real.test", t0);
        assert!(matches!(c.get("real.test", t0), AlpnKnown::Ask));
        // The budget refills at its rate, never above the burst.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(asks(&mut c, "b", t1), (ALPN_LOOKUPS_PER_SEC / 2.0) as usize);
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!(asks(&mut c, "c", t2), ALPN_LOOKUP_BURST as usize);
        // Answers are reused for their time, then asked for again; a write drops them at once.
        c.put("none.test", None, t2);
        assert!(matches!(c.get("none.test", t2), AlpnKnown::Answer(None)));
        assert!(!matches!(
            c.get("none.test", t2 + ALPN_UNTRACKED_TTL),
            AlpnKnown::Answer(_)
        ));
        c.tracking_up = true;
        let t3 = t2 + Duration::from_secs(3600);
        c.put("none.test", None, t3);
        assert!(matches!(
            c.get("none.test", t3 + ALPN_UNTRACKED_TTL),
            AlpnKnown::Answer(None)
        ));
        c.written("none.test", t3);
        assert!(matches!(c.get("none.test", t3), AlpnKnown::Ask));
        // Bounded.
        for i in 0..(3 * MAX_ALPN_ANSWERS) {
            c.put(&format!("n{i}.test"), None, t3);
            assert!(c.answers.len() <= MAX_ALPN_ANSWERS);
        }
        for i in 0..(3 * MAX_ALPN_WRITTEN) {
            c.written(&format!("w{i}.test"), t3);
            assert!(c.written.len() <= MAX_ALPN_WRITTEN);
        }
    }

    #[test]
    fn negative_cache_is_bounded() {
        let mut c = CertCache::default();
        let now = Instant::now();
        for i in 0..(3 * MAX_MISSING) {
            c.put_missing(&format!("n{i}.example"), now);
            assert!(c.missing.len() <= MAX_MISSING);
        }
    }
}
