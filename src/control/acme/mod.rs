//! Automatic certificates (README "Automatic HTTPS (ACME)"): the control plane's ACME loop.
//!
//! One task on the control thread's runtime (never on a worker core), with its own Redis connection.
//! It takes names from three sources: the fleet's on-demand queue `<prefix>acme:queue` (pushed by
//! workers for names that passed the gate; polled with `LPOP` every 250 ms), explicit orders of the
//! admin API (`POST /certificates/:name/acme`, handed over in memory on this same thread), and a
//! periodic renewal scan of `tls:*`. For each name it re-checks the gate, takes the fleet-wide lock
//! `acme:lock:<name>`, counts the order against `maxOrdersPerHour`, orders (`client`), and writes
//! `tls:<name>` (`certificate`, `key`, `acme` = `1`, `notAfter`). A failed order sets the backoff key
//! `acme:fail:<name>` (60 s doubling up to 24 h) and logs the CA's problem document.
//!
//! Everything shared with other instances goes through Redis; nothing here is seen by the workers
//! except the keys it writes. Bounds: the hand-off queue ([`MAX_HANDOFF`]), names per queue poll
//! ([`QUEUE_BATCH`]), the queue itself ([`MAX_QUEUE`]), keys per renewal pass ([`RENEW_SCAN_STEPS`] × [`RENEW_SCAN_COUNT`]), renewals per
//! pass ([`RENEW_PER_PASS`]), and deadlines on every wait.

pub mod client;
pub mod der;
pub mod https;
pub mod jws;

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use redis::Value;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::common::local_sync::Notify;
use crate::common::rng::Rng;
use crate::config::{AcmeChallenge, AcmeConfig, RedisEndpoint};
use crate::drivers::redis::RedisClient;
use client::{AcmeClient, AcmeError, AuthzState};
use jws::AccountKey;

/// `hipache_acme_orders_total{result="ok"}` of this process.
pub static ORDERS_OK: AtomicU64 = AtomicU64::new(0);
/// `hipache_acme_orders_total{result="failed"}` of this process.
pub static ORDERS_FAILED: AtomicU64 = AtomicU64::new(0);

/// Explicit orders waiting on this thread (beyond: 503).
pub const MAX_HANDOFF: usize = 1000;
/// Names taken from the queue per poll.
pub const QUEUE_BATCH: usize = 16;
/// The queue is trimmed to this many names when it is found busy (the newest beyond it are dropped;
/// a later handshake pushes its name again).
pub const MAX_QUEUE: usize = 10_000;
/// Pause between two polls of an empty queue.
const QUEUE_POLL: Duration = Duration::from_millis(250);
/// The per-name lock's lifetime; refreshed between the steps of an order.
const LOCK_TTL: Duration = Duration::from_secs(180);
/// Deadline of each of an order's waits (authorization, ready, valid).
const STEP_DEADLINE: Duration = Duration::from_secs(90);
/// HTTP-01 key authorizations and TLS-ALPN-01 certificates live this long at most.
const CHALLENGE_TTL: Duration = Duration::from_secs(600);
/// First backoff after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: u64 = 60;
const MAX_BACKOFF: u64 = 24 * 3600;
/// Renewal scans: every [`RENEW_PERIOD`] (± a tenth), the first a few seconds after start.
const RENEW_PERIOD: Duration = Duration::from_secs(600);
const RENEW_SCAN_COUNT: usize = 200;
const RENEW_SCAN_STEPS: usize = 10;
const RENEW_PER_PASS: usize = 3;
/// `acme:renew-lock` lifetime (a pass renews at most RENEW_PER_PASS names, each bounded by the waits).
const RENEW_LOCK_TTL: Duration = Duration::from_secs(900);
/// How long an instance waits for another one creating the shared account.
const ACCOUNT_WAIT: Duration = Duration::from_secs(30);

/// Releases (or refreshes, with ARGV[2] a TTL in ms) a lock only if it is still ours.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;
const REFRESH: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#;

/// Explicit orders handed over by the admin API, which runs on this same thread.
struct Handoff {
    queue: RefCell<VecDeque<String>>,
    notify: Notify,
}

thread_local! {
    static HANDOFF: RefCell<Option<Rc<Handoff>>> = const { RefCell::new(None) };
}

/// Why an explicit order could not be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandoffError {
    /// ACME is not running on this thread (not configured, or the file driver).
    NotRunning,
    /// [`MAX_HANDOFF`] orders are already waiting.
    Full,
}

/// Queues an explicit order (from the admin API; same thread). `name` must be validated already.
pub fn order_explicitly(name: &str) -> Result<(), HandoffError> {
    HANDOFF.with(|h| {
        let h = h.borrow();
        let Some(h) = h.as_ref() else {
            return Err(HandoffError::NotRunning);
        };
        let mut q = h.queue.borrow_mut();
        if q.iter().any(|n| n == name) {
            return Ok(());
        }
        if q.len() >= MAX_HANDOFF {
            return Err(HandoffError::Full);
        }
        q.push_back(name.to_string());
        drop(q);
        h.notify.notify_all();
        Ok(())
    })
}

/// The names an ACME order may be made for: a lowercase DNS name with at least two labels, no
/// wildcard, no IP literal (HTTP-01 and TLS-ALPN-01 validate one exact host name).
pub fn orderable_name(raw: &str) -> Result<String, String> {
    let name = crate::control::admin::api::frontend_name(raw)?;
    if name.starts_with('*') {
        return Err(format!(
            "{name:?} is a wildcard: HTTP-01 and TLS-ALPN-01 cannot validate wildcard names (order the exact names instead)"
        ));
    }
    if name.starts_with('[') || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!(
            "{name:?} is an IP address: ACME certificates here are for host names"
        ));
    }
    if !name.contains('.') {
        return Err(format!(
            "{name:?} has a single label: a CA issues only for names under a public suffix"
        ));
    }
    Ok(name)
}

/// Where a name came from (what the gate checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The on-demand queue: needs an exact frontend, no usable certificate, no backoff key.
    OnDemand,
    /// The admin API: any orderable name (also one only a wildcard serves); backoff ignored.
    Explicit,
    /// The renewal scan: still an ACME certificate, still due; backoff respected.
    Renewal,
}

/// Starts the ACME task on the current (control) runtime, with its own Redis connection.
pub fn start(config: AcmeConfig, endpoint: RedisEndpoint, prefix: String, timeout: Duration) {
    let tls = match https::client_config(config.ca_certificate.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            error!("ACME is off: {e}");
            return;
        }
    };
    let redis = RedisClient::start(
        endpoint,
        "acme: redis".into(),
        "hipache-tpc-acme".into(),
        timeout,
    );
    let handoff = Rc::new(Handoff {
        queue: RefCell::new(VecDeque::new()),
        notify: Notify::new(),
    });
    HANDOFF.with(|h| *h.borrow_mut() = Some(handoff.clone()));
    let rng = Rng::new(std::process::id() as u64 ^ crate::common::clock::unix_now());
    let id = format!(
        "{}-{}-{:x}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into()),
        std::process::id(),
        rng.next_u64() & 0xffff_ffff
    );
    info!(
        "ACME: directory {} ({}, on-demand {}, renewing {} days before expiry, at most {} orders per hour), instance {id}",
        config.directory,
        config.challenge.as_str(),
        if config.on_demand { "on" } else { "off" },
        config.renew_before_days,
        config.max_orders_per_hour
    );
    let acme = Acme {
        cfg: config,
        redis,
        prefix,
        id,
        tls,
        client: None,
        rng,
        handoff,
        renew_cursor: "0".into(),
    };
    crate::common::task::spawn(crate::common::task::OnPanic::StopThread, acme.run());
}

struct Acme {
    cfg: AcmeConfig,
    redis: RedisClient,
    prefix: String,
    /// This instance's name in lock values.
    id: String,
    tls: Arc<rustls::ClientConfig>,
    /// The client, once the shared account is known.
    client: Option<AcmeClient>,
    rng: Rng,
    handoff: Rc<Handoff>,
    /// Where the renewal scan goes on next time.
    renew_cursor: String,
}

/// An issued certificate.
struct Issued {
    chain: String,
    key_pem: String,
    not_after: u64,
    serial: Vec<u8>,
}

impl Acme {
    fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    async fn cmd(&self, c: &redis::Cmd) -> Result<Value, String> {
        let waited = Instant::now();
        while !self.redis.is_up() && waited.elapsed() < Duration::from_secs(2) {
            monoio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut v = self
            .redis
            .query(&c.get_packed_command(), 1)
            .await
            .map_err(|e| format!("Redis: {e}"))?;
        match v.pop() {
            Some(Value::ServerError(e)) => {
                Err(format!("Redis: {} {}", e.code(), e.details().unwrap_or("")))
            }
            Some(v) => Ok(v),
            None => Err("Redis: no reply".into()),
        }
    }

    async fn run(mut self) {
        let mut next_renewal =
            Instant::now() + Duration::from_millis(2000 + self.rng.below(3000) as u64);
        loop {
            let explicit = self.handoff.queue.borrow_mut().pop_front();
            if let Some(name) = explicit {
                self.process(&name, Source::Explicit).await;
                continue;
            }
            let names = self.poll_queue().await;
            let busy = !names.is_empty();
            let mut seen = HashSet::new();
            for raw in names {
                if !self.cfg.on_demand {
                    debug!("ACME: onDemand is off; dropping the queued name {raw:?}");
                    continue;
                }
                match orderable_name(&raw) {
                    Ok(name) if seen.insert(name.clone()) => {
                        self.process(&name, Source::OnDemand).await
                    }
                    Ok(_) => {}
                    Err(e) => debug!("ACME: queued name refused: {e}"),
                }
            }
            if Instant::now() >= next_renewal {
                let full = self.renewal_pass().await;
                let period = if full {
                    Duration::from_secs(30)
                } else {
                    RENEW_PERIOD
                };
                let jitter = self.rng.below(period.as_millis() as usize / 5 + 1) as u64;
                next_renewal = Instant::now() + period * 9 / 10 + Duration::from_millis(jitter);
            }
            if !busy {
                let woken = self.handoff.notify.notified();
                monoio::select! {
                    _ = monoio::time::sleep(QUEUE_POLL) => {}
                    _ = woken => {}
                }
            }
        }
    }

    /// Up to [`QUEUE_BATCH`] names from the on-demand queue.
    async fn poll_queue(&self) -> Vec<String> {
        let mut c = redis::cmd("LPOP");
        c.arg(self.key("acme:queue")).arg(QUEUE_BATCH);
        match self.cmd(&c).await {
            Ok(Value::Array(items)) => {
                if items.len() == QUEUE_BATCH {
                    let mut t = redis::cmd("LTRIM");
                    t.arg(self.key("acme:queue")).arg(0).arg(MAX_QUEUE - 1);
                    if let Err(e) = self.cmd(&t).await {
                        debug!("ACME: cannot trim the queue: {e}");
                    }
                }
                items
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::BulkString(b) if b.len() <= 253 => String::from_utf8(b).ok(),
                        _ => None,
                    })
                    .collect()
            }
            Ok(_) => Vec::new(),
            Err(e) => {
                debug!("ACME: cannot read the queue: {e}");
                Vec::new()
            }
        }
    }

    /// True when `tls:<name>` holds a certificate that has not expired.
    async fn has_usable_certificate(&self, name: &str) -> Result<bool, String> {
        let mut c = redis::cmd("HGET");
        c.arg(self.key(&format!("tls:{name}"))).arg("certificate");
        match self.cmd(&c).await? {
            Value::BulkString(pem) => Ok(leaf_facts(&pem)
                .map(|(_, not_after)| not_after > crate::common::clock::unix_now())
                .unwrap_or(false)),
            _ => Ok(false),
        }
    }

    async fn exists(&self, key: &str) -> Result<bool, String> {
        let mut c = redis::cmd("EXISTS");
        c.arg(self.key(key));
        Ok(matches!(self.cmd(&c).await?, Value::Int(1)))
    }

    /// The gate before the lock (cheap; re-checked under the lock).
    async fn gate(&self, name: &str, source: Source) -> Result<bool, String> {
        match source {
            Source::Explicit => Ok(true),
            Source::OnDemand => Ok(self.exists(&format!("frontend:{name}")).await?
                && !self.exists(&format!("acme:fail:{name}")).await?
                && !self.has_usable_certificate(name).await?),
            Source::Renewal => {
                Ok(!self.exists(&format!("acme:fail:{name}")).await?
                    && self.renewal_due(name).await?)
            }
        }
    }

    /// `tls:<name>` is an ACME certificate within `renewBeforeDays` of its `notAfter`.
    async fn renewal_due(&self, name: &str) -> Result<bool, String> {
        let mut c = redis::cmd("HMGET");
        c.arg(self.key(&format!("tls:{name}")))
            .arg("acme")
            .arg("notAfter");
        let Value::Array(v) = self.cmd(&c).await? else {
            return Ok(false);
        };
        let text = |v: Option<&Value>| match v {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        };
        if text(v.first()) != "1" {
            return Ok(false);
        }
        let not_after: u64 = text(v.get(1)).parse().unwrap_or(0);
        let horizon =
            crate::common::clock::unix_now() + u64::from(self.cfg.renew_before_days) * 86_400;
        Ok(not_after <= horizon)
    }

    async fn take_lock(&self, key: &str, ttl: Duration) -> Result<bool, String> {
        let mut c = redis::cmd("SET");
        c.arg(self.key(key))
            .arg(&self.id)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        Ok(matches!(self.cmd(&c).await?, Value::Okay))
    }

    async fn release_lock(&self, key: &str) {
        let mut c = redis::cmd("EVAL");
        c.arg(RELEASE).arg(1).arg(self.key(key)).arg(&self.id);
        if let Err(e) = self.cmd(&c).await {
            warn!("ACME: cannot release {key} (it expires by itself): {e}");
        }
    }

    async fn refresh_lock(&self, key: &str) {
        let mut c = redis::cmd("EVAL");
        c.arg(REFRESH)
            .arg(1)
            .arg(self.key(key))
            .arg(&self.id)
            .arg(LOCK_TTL.as_millis() as u64);
        match self.cmd(&c).await {
            Ok(Value::Int(1)) => {}
            Ok(_) => warn!("ACME: the lock {key} is no longer ours (expired); going on"),
            Err(e) => warn!("ACME: cannot refresh {key}: {e}"),
        }
    }

    /// Counts one order against `maxOrdersPerHour` (fleet-wide); false when over the limit.
    async fn within_rate_limit(&self) -> Result<bool, String> {
        let key = self.key(&format!(
            "acme:orders:{}",
            crate::common::clock::unix_now() / 3600
        ));
        let mut c = redis::cmd("INCR");
        c.arg(&key);
        let n = match self.cmd(&c).await? {
            Value::Int(n) => n,
            other => return Err(format!("INCR answered {other:?}")),
        };
        if n == 1 {
            let mut e = redis::cmd("EXPIRE");
            e.arg(&key).arg(7200);
            self.cmd(&e).await?;
        }
        Ok(n <= i64::from(self.cfg.max_orders_per_hour))
    }

    /// One name from one source: gate, lock, rate limit, order, store or back off.
    async fn process(&mut self, name: &str, source: Source) {
        match self.gate(name, source).await {
            Ok(true) => {}
            Ok(false) => {
                debug!("ACME: {name}: nothing to order ({source:?})");
                return;
            }
            Err(e) => {
                warn!("ACME: {name}: cannot check whether to order: {e}");
                return;
            }
        }
        let lock = format!("acme:lock:{name}");
        match self.take_lock(&lock, LOCK_TTL).await {
            Ok(true) => {}
            Ok(false) => {
                debug!("ACME: {name}: another instance is ordering it");
                return;
            }
            Err(e) => {
                warn!("ACME: {name}: cannot take the order lock: {e}");
                return;
            }
        }
        // Under the lock: another instance may have just finished the same order.
        let still = match source {
            Source::OnDemand => self.has_usable_certificate(name).await.map(|u| !u),
            Source::Renewal => self.renewal_due(name).await,
            Source::Explicit => Ok(true),
        };
        match still {
            Ok(true) => {}
            Ok(false) => {
                debug!("ACME: {name}: done by another instance meanwhile");
                self.release_lock(&lock).await;
                return;
            }
            Err(e) => {
                warn!("ACME: {name}: {e}");
                self.release_lock(&lock).await;
                return;
            }
        }
        match self.within_rate_limit().await {
            Ok(true) => {}
            Ok(false) => {
                warn!(
                    "ACME: {name}: not ordered: the fleet made acme.maxOrdersPerHour ({}) orders this hour",
                    self.cfg.max_orders_per_hour
                );
                self.release_lock(&lock).await;
                return;
            }
            Err(e) => {
                warn!("ACME: {name}: cannot count the order: {e}");
                self.release_lock(&lock).await;
                return;
            }
        }
        info!("ACME: ordering a certificate for {name} ({source:?})");
        let started = Instant::now();
        let result = self.order(name, &lock).await;
        match result {
            Ok(issued) => match self.store(name, &issued).await {
                Ok(()) => {
                    ORDERS_OK.fetch_add(1, Ordering::Relaxed);
                    info!(
                        "ACME: certificate for {name} issued in {:.1} s (serial {}, notAfter {})",
                        started.elapsed().as_secs_f64(),
                        hex(&issued.serial),
                        issued.not_after
                    );
                    let horizon = crate::common::clock::unix_now()
                        + u64::from(self.cfg.renew_before_days) * 86_400;
                    if issued.not_after <= horizon {
                        warn!(
                            "ACME: the certificate for {name} is valid for less than acme.renewBeforeDays ({} days): it will be renewed at every renewal pass; lower renewBeforeDays",
                            self.cfg.renew_before_days
                        );
                    }
                }
                Err(e) => self.failed(name, &format!("cannot store it: {e}")).await,
            },
            Err(e) => {
                if let AcmeError::Problem { document, .. } = &e {
                    if document.contains("accountDoesNotExist") || document.contains("unauthorized")
                    {
                        // The CA forgot the account (or the key changed): register again next time.
                        self.client = None;
                    }
                }
                self.failed(name, &e.to_string()).await
            }
        }
        self.release_lock(&lock).await;
    }

    async fn failed(&self, name: &str, why: &str) {
        ORDERS_FAILED.fetch_add(1, Ordering::Relaxed);
        let backoff_key = self.key(&format!("acme:backoff:{name}"));
        let mut g = redis::cmd("GET");
        g.arg(&backoff_key);
        let previous = match self.cmd(&g).await {
            Ok(Value::BulkString(b)) => String::from_utf8_lossy(&b).parse::<u64>().ok(),
            _ => None,
        };
        let backoff = previous
            .map(|p| (p * 2).min(MAX_BACKOFF))
            .unwrap_or(FIRST_BACKOFF);
        let mut set = redis::cmd("SET");
        set.arg(self.key(&format!("acme:fail:{name}")))
            .arg(backoff)
            .arg("EX")
            .arg(backoff);
        let mut remember = redis::cmd("SET");
        remember
            .arg(&backoff_key)
            .arg(backoff)
            .arg("EX")
            .arg(MAX_BACKOFF * 2);
        let stored = match self.cmd(&set).await {
            Ok(_) => self.cmd(&remember).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            warn!("ACME: {name}: cannot store the backoff: {e}");
        }
        error!(
            "ACME: order for {name} failed: {why}; not retried for {backoff} s (delete {}acme:fail:{name} to retry sooner)",
            self.prefix
        );
    }

    async fn store(&self, name: &str, issued: &Issued) -> Result<(), String> {
        let mut c = redis::cmd("HSET");
        c.arg(self.key(&format!("tls:{name}")))
            .arg("certificate")
            .arg(&issued.chain)
            .arg("key")
            .arg(&issued.key_pem)
            .arg("acme")
            .arg("1")
            .arg("notAfter")
            .arg(issued.not_after);
        self.cmd(&c).await?;
        let mut d = redis::cmd("DEL");
        d.arg(self.key(&format!("acme:fail:{name}")))
            .arg(self.key(&format!("acme:backoff:{name}")));
        self.cmd(&d).await?;
        Ok(())
    }

    /// The client for the fleet's account (created once, under `acme:account-lock`).
    async fn ensure_client(&mut self) -> Result<(), AcmeError> {
        if self.client.is_some() {
            return Ok(());
        }
        let key = match self.shared_account_key().await? {
            Some(k) => k,
            None => {
                let lock = "acme:account-lock";
                let got = self
                    .take_lock(lock, ACCOUNT_WAIT)
                    .await
                    .map_err(AcmeError::Transport)?;
                if got {
                    let result = self.create_account_key().await;
                    self.release_lock(lock).await;
                    result?
                } else {
                    let deadline = Instant::now() + ACCOUNT_WAIT;
                    loop {
                        if let Some(k) = self.shared_account_key().await? {
                            break k;
                        }
                        if Instant::now() >= deadline {
                            return Err(AcmeError::Transport(
                                "another instance holds acme:account-lock but wrote no account"
                                    .into(),
                            ));
                        }
                        monoio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        };
        let mut client = AcmeClient::new(self.tls.clone(), self.cfg.directory.clone(), key);
        // newAccount with an existing key answers that account: every instance learns its URL.
        let url = client.register(self.cfg.email.as_deref()).await?;
        let mut c = redis::cmd("HSET");
        c.arg(self.key("acme:account")).arg("url").arg(&url);
        self.cmd(&c).await.map_err(AcmeError::Transport)?;
        client.set_account_url(url);
        self.client = Some(client);
        Ok(())
    }

    /// The account key in `acme:account`, if it is for this directory.
    async fn shared_account_key(&self) -> Result<Option<AccountKey>, AcmeError> {
        let mut c = redis::cmd("HMGET");
        c.arg(self.key("acme:account")).arg("key").arg("directory");
        let v = self.cmd(&c).await.map_err(AcmeError::Transport)?;
        let Value::Array(v) = v else {
            return Ok(None);
        };
        let (Some(Value::BulkString(key)), Some(Value::BulkString(dir))) = (v.first(), v.get(1))
        else {
            return Ok(None);
        };
        if dir != self.cfg.directory.as_bytes() {
            warn!(
                "ACME: {}acme:account is for another directory ({}); making a new account for {}",
                self.prefix,
                String::from_utf8_lossy(dir),
                self.cfg.directory
            );
            return Ok(None);
        }
        let der = jws::b64_decode(&String::from_utf8_lossy(key))
            .ok_or_else(|| AcmeError::Protocol("acme:account key is not base64url".into()))?;
        AccountKey::from_pkcs8(&der)
            .map(Some)
            .map_err(AcmeError::Protocol)
    }

    async fn create_account_key(&self) -> Result<AccountKey, AcmeError> {
        // Re-read under the lock: another instance may have made it just before.
        if let Some(k) = self.shared_account_key().await? {
            return Ok(k);
        }
        let key = AccountKey::generate().map_err(AcmeError::Protocol)?;
        let mut c = redis::cmd("HSET");
        c.arg(self.key("acme:account"))
            .arg("key")
            .arg(jws::b64(key.pkcs8()))
            .arg("directory")
            .arg(&self.cfg.directory);
        if let Some(m) = &self.cfg.email {
            c.arg("email").arg(m);
        }
        self.cmd(&c).await.map_err(AcmeError::Transport)?;
        info!(
            "ACME: created the fleet's account key in {}acme:account",
            self.prefix
        );
        Ok(key)
    }

    /// The whole order for one name.
    async fn order(&mut self, name: &str, lock: &str) -> Result<Issued, AcmeError> {
        self.ensure_client().await?;
        let kind = self.cfg.challenge;
        let mut order = self.client_mut()?.new_order(name).await?;
        for authz in order.authorizations.clone() {
            let state = self
                .client_mut()?
                .authorization(&authz, kind.as_str())
                .await?;
            let AuthzState::Pending(ch) = state else {
                continue;
            };
            let key_auth = self.client_mut()?.key().key_authorization(&ch.token);
            let published = self.publish(name, kind, &ch.token, &key_auth).await;
            if let Err(e) = published {
                return Err(AcmeError::Transport(format!(
                    "cannot publish the challenge: {e}"
                )));
            }
            if ch.status == "pending" {
                self.client_mut()?.respond(&ch.url).await?;
            }
            self.refresh_lock(lock).await;
            let waited = self
                .client_mut()?
                .wait_authorization(&authz, Instant::now() + STEP_DEADLINE)
                .await;
            self.unpublish(name, kind, &ch.token).await;
            waited?;
        }
        self.refresh_lock(lock).await;
        order = self
            .client_mut()?
            .wait_order(&order, &["ready", "valid"], Instant::now() + STEP_DEADLINE)
            .await?;
        let (csr, key_pem) = make_csr(name).map_err(AcmeError::Protocol)?;
        if order.status == "ready" {
            order = self.client_mut()?.finalize(&order, &csr).await?;
            if order.status != "valid" {
                self.refresh_lock(lock).await;
                order = self
                    .client_mut()?
                    .wait_order(&order, &["valid"], Instant::now() + STEP_DEADLINE)
                    .await?;
            }
        }
        let url = order
            .certificate
            .clone()
            .ok_or_else(|| AcmeError::Protocol("a valid order without a certificate URL".into()))?;
        let chain = self.client_mut()?.download(&url).await?;
        let (serial, not_after) = leaf_facts(chain.as_bytes()).map_err(AcmeError::Protocol)?;
        let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| AcmeError::Protocol("the chain has no certificate".into()))?;
        let names = crate::tls::certs::dns_names(&leaf).map_err(AcmeError::Protocol)?;
        if !names.iter().any(|n| n == name) {
            return Err(AcmeError::Protocol(format!(
                "the CA issued a certificate for {names:?}, not {name}"
            )));
        }
        Ok(Issued {
            chain,
            key_pem,
            not_after,
            serial,
        })
    }

    fn client_mut(&mut self) -> Result<&mut AcmeClient, AcmeError> {
        self.client
            .as_mut()
            .ok_or_else(|| AcmeError::Protocol("no ACME account".into()))
    }

    async fn publish(
        &self,
        name: &str,
        kind: AcmeChallenge,
        token: &str,
        key_auth: &str,
    ) -> Result<(), String> {
        let ttl = CHALLENGE_TTL.as_millis() as u64;
        match kind {
            AcmeChallenge::Http01 => {
                let mut c = redis::cmd("SET");
                c.arg(self.key(&format!("acme:http01:{token}")))
                    .arg(key_auth)
                    .arg("PX")
                    .arg(ttl);
                self.cmd(&c).await.map(|_| ())
            }
            AcmeChallenge::TlsAlpn01 => {
                let (cert, key) = alpn_certificate(name, key_auth)?;
                let k = self.key(&format!("acme:alpn:{name}"));
                let mut c = redis::cmd("HSET");
                c.arg(&k).arg("certificate").arg(cert).arg("key").arg(key);
                self.cmd(&c).await?;
                let mut e = redis::cmd("PEXPIRE");
                e.arg(&k).arg(ttl);
                self.cmd(&e).await.map(|_| ())
            }
        }
    }

    async fn unpublish(&self, name: &str, kind: AcmeChallenge, token: &str) {
        let key = match kind {
            AcmeChallenge::Http01 => self.key(&format!("acme:http01:{token}")),
            AcmeChallenge::TlsAlpn01 => self.key(&format!("acme:alpn:{name}")),
        };
        let mut c = redis::cmd("DEL");
        c.arg(&key);
        if let Err(e) = self.cmd(&c).await {
            debug!("ACME: cannot delete {key} (it expires by itself): {e}");
        }
    }

    /// One renewal pass (by one instance at a time); true when it found as many due names as it
    /// renews per pass (the next pass comes sooner).
    async fn renewal_pass(&mut self) -> bool {
        match self.take_lock("acme:renew-lock", RENEW_LOCK_TTL).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                debug!("ACME: renewal pass skipped: {e}");
                return false;
            }
        }
        let pattern = format!(
            "{}tls:*",
            crate::control::admin::api::glob_escape(&self.prefix)
        );
        let tls_prefix = self.key("tls:");
        let mut due = Vec::new();
        for _ in 0..RENEW_SCAN_STEPS {
            let mut c = redis::cmd("SCAN");
            c.arg(&self.renew_cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(RENEW_SCAN_COUNT);
            let (cursor, keys) = match self.cmd(&c).await {
                Ok(Value::Array(mut parts)) if parts.len() == 2 => {
                    let keys = parts.pop();
                    let cursor = parts.pop();
                    match (cursor, keys) {
                        (Some(Value::BulkString(c)), Some(Value::Array(k))) => {
                            (String::from_utf8_lossy(&c).into_owned(), k)
                        }
                        _ => break,
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    debug!("ACME: renewal scan: {e}");
                    break;
                }
            };
            self.renew_cursor = cursor;
            for k in keys {
                let Value::BulkString(k) = k else { continue };
                let k = String::from_utf8_lossy(&k);
                let Some(name) = k.strip_prefix(&tls_prefix) else {
                    continue;
                };
                if orderable_name(name).is_err() {
                    continue;
                }
                if let Ok(true) = self.renewal_due(name).await {
                    due.push(name.to_string());
                }
            }
            if due.len() >= RENEW_PER_PASS || self.renew_cursor == "0" {
                break;
            }
        }
        due.truncate(RENEW_PER_PASS);
        let full = due.len() >= RENEW_PER_PASS;
        for (i, name) in due.iter().enumerate() {
            if i > 0 {
                // Spread out: not all at once.
                let pause = 500 + self.rng.below(1500) as u64;
                monoio::time::sleep(Duration::from_millis(pause)).await;
            }
            self.process(name, Source::Renewal).await;
        }
        self.release_lock("acme:renew-lock").await;
        full
    }
}

/// (serial, notAfter) of the first certificate of a PEM chain.
fn leaf_facts(pem: &[u8]) -> Result<(Vec<u8>, u64), String> {
    let leaf = CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or("no certificate in the PEM")?
        .map_err(|e| format!("bad PEM: {e}"))?;
    der::serial_and_not_after(leaf.as_ref())
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new P-256 key (PKCS#8 PEM) and a CSR (DER) for `name`.
fn make_csr(name: &str) -> Result<(Vec<u8>, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("bad name {name:?}: {e}"))?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("cannot make the CSR: {e}"))?;
    Ok((csr.der().to_vec(), key.serialize_pem()))
}

/// The TLS-ALPN-01 challenge certificate (RFC 8737): self-signed for `name`, with the critical
/// acmeIdentifier extension holding SHA-256 of the key authorization. (certificate PEM, key PEM)
fn alpn_certificate(name: &str, key_auth: &str) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("bad name {name:?}: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(&jws::sha256(
        key_auth.as_bytes(),
    ))];
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot make the challenge certificate: {e}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orderable_names() {
        assert_eq!(orderable_name("A.Example.COM.").unwrap(), "a.example.com");
        assert!(orderable_name("*.a.com").unwrap_err().contains("wildcard"));
        assert!(orderable_name("*").is_err());
        assert!(orderable_name("127.0.0.1").is_err());
        assert!(orderable_name("[::1]").is_err());
        assert!(orderable_name("localhost").is_err());
        assert!(orderable_name("a b.com").is_err());
        assert!(orderable_name(&"a".repeat(300)).is_err());
    }

    #[test]
    fn csr_and_alpn_certificate() {
        let (csr, key) = make_csr("a.example.com").unwrap();
        assert!(!csr.is_empty());
        assert!(key.contains("BEGIN PRIVATE KEY"));
        let (cert, _) = alpn_certificate("a.example.com", "tok.thumb").unwrap();
        let (_, not_after) = leaf_facts(cert.as_bytes()).unwrap();
        assert!(not_after > crate::common::clock::unix_now());
    }

    #[test]
    fn handoff_is_bounded() {
        assert_eq!(order_explicitly("a.com"), Err(HandoffError::NotRunning));
        let h = Rc::new(Handoff {
            queue: RefCell::new(VecDeque::new()),
            notify: Notify::new(),
        });
        HANDOFF.with(|x| *x.borrow_mut() = Some(h.clone()));
        for i in 0..MAX_HANDOFF {
            order_explicitly(&format!("n{i}.com")).unwrap();
        }
        // A name already waiting is not queued twice, even when full.
        assert_eq!(order_explicitly("n0.com"), Ok(()));
        assert_eq!(order_explicitly("more.com"), Err(HandoffError::Full));
        assert_eq!(h.queue.borrow().len(), MAX_HANDOFF);
        HANDOFF.with(|x| *x.borrow_mut() = None);
    }
}
