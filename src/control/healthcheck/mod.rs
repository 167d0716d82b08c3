//! The built-in active health checker, compatible with hipache-hchecker (docs/compatibility.md §10).
//!
//! Discovery: proxies publish `<host>;<url>;<index>;<count>` on the `dead` channel at every passive
//! failure. For each backend URL heard of (in a group of more than one backend, and still at that
//! index of the list that routes that host under this driver's prefix and database), the checker
//! tries to lock the URL in the `hchecker` hash ([`scripts`] describes the lock scheme). The lock owner
//! checks the URL every `interval` ([`probe`]) and writes the verdict for every host it learned uses
//! the URL: `SADD`/`EXPIRE 60` on `dead:<host>` when dead (again every 30 s while dead), `SREM` when
//! alive, each write guarded by the `LINDEX` check (a frontend list edited meanwhile drops that host
//! from the URL's mapping). A URL locked by another checker is remembered for an hour and taken over
//! if that checker's lock goes stale. A check ends after 30 minutes in one state, when no host uses the
//! URL any more, or when the lock is lost. `SET hchecker_ping <now>` every 10 s tells the proxies that
//! a checker owns the dead sets.
//!
//! Everything runs on the control thread's runtime, one task per checked URL, and shares nothing with
//! the workers: a worker never waits for the checker.

pub mod probe;
pub mod scripts;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};

use crate::common::local_sync::Notify;
use crate::config::HealthCheckConfig;
use crate::dataplane::routing::host::{candidates, normalize_host_into};
use crate::dataplane::routing::route::{parse_backend_url, BackendTarget};
use crate::drivers::redis::subscriber::{SubEvent, Subscriber};
use crate::drivers::redis::RedisClient;
use scripts::{Acquired, LockOwner, MarkAction};

/// TTL of the dead sets the checker writes (hipache-hchecker's value).
pub const DEAD_TTL_SECS: u64 = 60;
/// A backend still dead is marked again this often, so its mark outlives the TTL.
pub const DEAD_REFRESH: Duration = Duration::from_secs(30);
/// `SET hchecker_ping <now>` this often.
pub const PING_EVERY: Duration = Duration::from_secs(10);
/// A check ends after this long without a change of state (hipache-hchecker's CHECK_DURATION).
pub const CHECK_DURATION: Duration = Duration::from_secs(30 * 60);
/// A URL locked by another checker is watched (for a takeover) this long after its last message.
pub const WATCH_FOR: Duration = Duration::from_secs(3600);
/// At most this many URLs are watched.
pub const MAX_WATCHED: usize = 10_000;

/// One `dead` channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadMessage {
    pub host: String,
    pub url: String,
    pub index: usize,
    pub count: usize,
}

/// Parses `<host>;<url>;<index>;<count>` (the URL may itself contain `;`).
pub fn parse_dead_message(payload: &[u8]) -> Option<DeadMessage> {
    let text = std::str::from_utf8(payload).ok()?.trim();
    let (host, rest) = text.split_once(';')?;
    let (rest, count) = rest.rsplit_once(';')?;
    let (url, index) = rest.rsplit_once(';')?;
    let mut normalized = String::new();
    normalize_host_into(host.as_bytes(), &mut normalized).ok()?;
    if url.is_empty() {
        return None;
    }
    Some(DeadMessage {
        host: normalized,
        url: url.to_string(),
        index: index.trim().parse().ok()?,
        count: count.trim().parse().ok()?,
    })
}

/// host → backend index, for one URL.
type Mappings = BTreeMap<String, usize>;

/// A URL this checker owns the lock of.
struct Check {
    url: String,
    target: BackendTarget,
    mappings: RefCell<Mappings>,
    /// Write the state for every host at the next check (a host was added).
    rewrite: Cell<bool>,
    /// The lock went to someone else: stop without writing.
    lost: Cell<bool>,
    /// Last verdict (for /status and logs).
    dead: Cell<Option<bool>>,
    /// Unix seconds of the last check made, and of the last change of verdict (the console shows
    /// them; 0 before the first check).
    last_check: Cell<u64>,
    since: Cell<u64>,
    wake: Notify,
}

/// What this checker knows about one backend URL (for the admin console).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlState {
    /// Checked here: the last verdict (`None` before the first check), the unix seconds of the last
    /// check and of the last change of verdict, and whether `host` is among the hosts whose marks
    /// this check writes.
    Checked {
        dead: Option<bool>,
        last_check: u64,
        since: u64,
        marks_host: bool,
    },
    /// Another checker holds the lock of this URL (this one watches it for a takeover).
    Watched,
}

/// A URL locked by another checker.
struct Watched {
    mappings: Mappings,
    last_message: Instant,
}

/// Counters shown on the admin listener's /metrics.
#[derive(Default)]
pub struct CheckerStats {
    pub messages: Cell<u64>,
    pub probes: Cell<u64>,
    pub probe_failures: Cell<u64>,
    pub dead_marks: Cell<u64>,
    pub alive_marks: Cell<u64>,
    pub takeovers: Cell<u64>,
    pub redis_errors: Cell<u64>,
}

fn bump(c: &Cell<u64>) {
    c.set(c.get() + 1);
}

/// The checker of this process (one, on the control runtime).
pub struct Checker {
    cfg: HealthCheckConfig,
    redis: RedisClient,
    prefix: String,
    hash: String,
    owner: LockOwner,
    request: Vec<u8>,
    checks: RefCell<HashMap<String, Rc<Check>>>,
    watched: RefCell<HashMap<String, Watched>>,
    /// URLs whose lock is being acquired, with the hosts heard of meanwhile.
    pending: RefCell<HashMap<String, Mappings>>,
    stopping: Cell<bool>,
    subscriber: Subscriber,
    pub stats: CheckerStats,
}

fn now_parts() -> (u64, u32) {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_secs(), d.subsec_nanos()))
        .unwrap_or((0, 0))
}

/// This machine's host name (for the lock owner id).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Checker {
    /// Starts the checker on the current runtime: the `dead` subscription, the ping and lock tasks.
    /// `redis` is a client of the write Redis (the one proxies publish on and mark in).
    pub fn start(
        cfg: HealthCheckConfig,
        redis: RedisClient,
        subscriber: Subscriber,
        prefix: String,
    ) -> Rc<Checker> {
        let (secs, nanos) = now_parts();
        let nonce = nanos ^ (secs as u32).rotate_left(16) ^ std::process::id().rotate_left(8);
        let owner = LockOwner::new(&hostname(), std::process::id(), nonce);
        info!(
            "health checker {}: {} {} with Host: {} every {:?}",
            owner.id, cfg.method, cfg.uri, cfg.host, cfg.interval
        );
        let checker = Rc::new(Checker {
            request: probe::request_bytes(&cfg, &owner.id),
            hash: format!("{prefix}hchecker"),
            cfg,
            redis,
            prefix,
            owner,
            checks: RefCell::new(HashMap::new()),
            watched: RefCell::new(HashMap::new()),
            pending: RefCell::new(HashMap::new()),
            stopping: Cell::new(false),
            subscriber,
            stats: CheckerStats::default(),
        });
        crate::common::task::spawn(
            crate::common::task::OnPanic::StopThread,
            checker.clone().follow_channel(),
        );
        crate::common::task::spawn(
            crate::common::task::OnPanic::StopThread,
            checker.clone().ping_loop(),
        );
        crate::common::task::spawn(
            crate::common::task::OnPanic::StopThread,
            checker.clone().lock_loop(),
        );
        checker
    }

    /// The lock owner id written in the `hchecker` hash.
    pub fn owner_id(&self) -> &str {
        &self.owner.id
    }

    /// (URLs checked here, of which dead, URLs watched because another checker holds them)
    pub fn counts(&self) -> (usize, usize, usize) {
        let checks = self.checks.borrow();
        let dead = checks
            .values()
            .filter(|c| c.dead.get() == Some(true))
            .count();
        (checks.len(), dead, self.watched.borrow().len())
    }

    /// What this checker knows about `url`, as a backend of frontend `host`; `None` when it neither
    /// checks nor watches it (dead marks of such a URL are the proxies' passive marks).
    pub fn url_state(&self, url: &str, host: &str) -> Option<UrlState> {
        if let Some(c) = self.checks.borrow().get(url) {
            return Some(UrlState::Checked {
                dead: c.dead.get(),
                last_check: c.last_check.get(),
                since: c.since.get(),
                marks_host: c.mappings.borrow().contains_key(host),
            });
        }
        self.watched
            .borrow()
            .contains_key(url)
            .then_some(UrlState::Watched)
    }

    /// True while the `dead` subscription is established.
    pub fn subscribed(&self) -> bool {
        self.subscriber.is_connected()
    }

    fn lock_refresh_every(&self) -> Duration {
        (self.cfg.lock_timeout / 3).clamp(Duration::from_millis(200), PING_EVERY)
    }

    async fn follow_channel(self: Rc<Self>) {
        loop {
            match self.subscriber.next().await {
                SubEvent::Message { payload, .. } => {
                    bump(&self.stats.messages);
                    match parse_dead_message(&payload) {
                        Some(msg) => self.on_dead(msg),
                        None => debug!(
                            "health checker: ignoring a malformed dead message {:?}",
                            String::from_utf8_lossy(&payload)
                        ),
                    }
                }
                SubEvent::Subscribed => debug!("health checker: following the dead channel"),
            }
            if self.stopping.get() {
                return;
            }
        }
    }

    fn on_dead(self: &Rc<Self>, msg: DeadMessage) {
        if msg.count <= 1 || self.stopping.get() {
            return;
        }
        if let Some(check) = self.checks.borrow().get(&msg.url) {
            let mut m = check.mappings.borrow_mut();
            if m.get(&msg.host) != Some(&msg.index) {
                m.insert(msg.host, msg.index);
                check.rewrite.set(true);
                check.wake.notify_all();
            }
            return;
        }
        if let Some(p) = self.pending.borrow_mut().get_mut(&msg.url) {
            p.insert(msg.host, msg.index);
            return;
        }
        let Ok(target) = parse_backend_url(&msg.url) else {
            debug!("health checker: {:?} is not a usable backend URL", msg.url);
            return;
        };
        let mut mappings = self
            .watched
            .borrow_mut()
            .remove(&msg.url)
            .map(|w| w.mappings)
            .unwrap_or_default();
        mappings.insert(msg.host, msg.index);
        self.pending
            .borrow_mut()
            .insert(msg.url.clone(), Mappings::new());
        crate::common::task::spawn(
            crate::common::task::OnPanic::StopThread,
            self.clone().discover(msg.url, target, mappings),
        );
    }

    /// Verifies the mappings of a URL just heard of, then locks it (and checks it) or watches it.
    /// While this runs, the URL is `pending`: messages about it only add hosts.
    async fn discover(self: Rc<Self>, url: String, target: BackendTarget, mappings: Mappings) {
        let valid = match self.verify(&url, &mappings).await {
            Some(v) => v,
            None => {
                // Redis unavailable: the next message retries.
                self.pending.borrow_mut().remove(&url);
                return;
            }
        };
        let heard_meanwhile = self
            .pending
            .borrow()
            .get(&url)
            .is_some_and(|m| !m.is_empty());
        if valid.is_empty() && !heard_meanwhile {
            self.pending.borrow_mut().remove(&url);
            debug!("health checker: {url} is not (or no longer) a backend under this driver");
            return;
        }
        let outcome = self.acquire(&url).await;
        // No await from here on: the URL goes from `pending` to `checks` (or `watched`) at once.
        let mut all = self.pending.borrow_mut().remove(&url).unwrap_or_default();
        all.extend(valid);
        match outcome {
            Some(Acquired::Free | Acquired::AlreadyOurs) => self.start_check(url, target, all),
            Some(Acquired::TakenOver) => {
                bump(&self.stats.takeovers);
                info!("health checker: took over {url} from a checker that stopped refreshing its lock");
                self.start_check(url, target, all)
            }
            Some(Acquired::HeldByOther) => {
                debug!("health checker: {url} is checked by another checker; watching its lock");
                self.watch(url, all);
            }
            None => {}
        }
    }

    /// Keeps the mappings whose list still holds the URL at that index. `None` if Redis failed.
    async fn verify(&self, url: &str, mappings: &Mappings) -> Option<Mappings> {
        let results = self.mark(url, mappings, MarkAction::Check).await?;
        Some(
            mappings
                .iter()
                .zip(results)
                .filter(|(_, ok)| *ok == Some(true))
                .map(|((h, i), _)| (h.clone(), *i))
                .collect(),
        )
    }

    /// One lock attempt; `None` if Redis failed.
    async fn acquire(&self, url: &str) -> Option<Acquired> {
        let mut pipe = redis::pipe();
        scripts::pack_acquire(
            &mut pipe,
            &self.hash,
            url,
            &self.owner,
            now_parts(),
            self.cfg.lock_timeout.as_secs().max(1),
        );
        let reply = match self.redis.query(&pipe.get_packed_pipeline(), 1).await {
            Ok(mut r) => r.pop()?,
            Err(e) => {
                bump(&self.stats.redis_errors);
                debug!("health checker: cannot lock {url}: {e}");
                return None;
            }
        };
        match scripts::acquired(&reply) {
            Ok(a) => Some(a),
            Err(e) => {
                bump(&self.stats.redis_errors);
                warn!("health checker: locking {url} failed: {e}");
                None
            }
        }
    }

    fn watch(&self, url: String, mappings: Mappings) {
        let mut watched = self.watched.borrow_mut();
        if watched.len() >= MAX_WATCHED && !watched.contains_key(&url) {
            debug!("health checker: already watching {MAX_WATCHED} URLs; not watching {url}");
            return;
        }
        let entry = watched.entry(url).or_insert_with(|| Watched {
            mappings: Mappings::new(),
            last_message: Instant::now(),
        });
        entry.mappings.extend(mappings);
        entry.last_message = Instant::now();
    }

    fn start_check(self: &Rc<Self>, url: String, target: BackendTarget, mappings: Mappings) {
        if self.stopping.get() {
            return;
        }
        if let Some(existing) = self.checks.borrow().get(&url) {
            existing.mappings.borrow_mut().extend(mappings);
            existing.rewrite.set(true);
            existing.wake.notify_all();
            return;
        }
        let check = Rc::new(Check {
            url: url.clone(),
            target,
            mappings: RefCell::new(mappings),
            rewrite: Cell::new(false),
            lost: Cell::new(false),
            dead: Cell::new(None),
            last_check: Cell::new(0),
            since: Cell::new(0),
            wake: Notify::new(),
        });
        info!("health checker: checking {url}");
        self.checks.borrow_mut().insert(url, check.clone());
        crate::common::task::spawn(
            crate::common::task::OnPanic::StopThread,
            self.clone().run_check(check),
        );
    }

    /// Checks one URL until it has been in one state for [`CHECK_DURATION`], no host uses it, the lock
    /// is lost, or the process stops.
    async fn run_check(self: Rc<Self>, check: Rc<Check>) {
        let mut state: Option<bool> = None; // Some(true) = dead
        let mut last_change = Instant::now();
        let mut last_dead_write: Option<Instant> = None;
        loop {
            let rewrite = check.rewrite.replace(false);
            let result = probe::probe(
                &check.target,
                &self.request,
                self.cfg.connect_timeout,
                self.cfg.timeout,
            )
            .await;
            bump(&self.stats.probes);
            if check.lost.get() || self.stopping.get() {
                break;
            }
            let dead = probe::is_dead(&result);
            if dead {
                bump(&self.stats.probe_failures);
            }
            let changed = state != Some(dead);
            let now = now_parts().0;
            check.last_check.set(now);
            if changed {
                last_change = Instant::now();
                check.since.set(now);
                match (&result, state.is_some()) {
                    (Err(e), _) => info!("health checker: {} is dead: {e}", check.url),
                    (Ok(code), _) if dead => {
                        info!("health checker: {} is dead: status {code}", check.url)
                    }
                    (Ok(code), true) => {
                        info!("health checker: {} is alive again ({code})", check.url)
                    }
                    (Ok(code), false) => debug!("health checker: {} is alive ({code})", check.url),
                }
            }
            let refresh_due = dead && last_dead_write.is_some_and(|t| t.elapsed() >= DEAD_REFRESH);
            if changed || rewrite || refresh_due {
                self.write_state(&check, dead).await;
                last_dead_write = dead.then(Instant::now);
            }
            state = Some(dead);
            check.dead.set(state);
            if check.mappings.borrow().is_empty() {
                info!("health checker: no frontend uses {} any more", check.url);
                break;
            }
            if last_change.elapsed() >= CHECK_DURATION {
                info!(
                    "health checker: {} stayed {} for {:?}; check ended",
                    check.url,
                    if dead { "dead" } else { "alive" },
                    CHECK_DURATION
                );
                break;
            }
            let woken = check.wake.notified();
            monoio::select! {
                _ = monoio::time::sleep(self.cfg.interval) => {}
                _ = woken => {}
            }
            if check.lost.get() || self.stopping.get() {
                break;
            }
        }
        let mine = self
            .checks
            .borrow()
            .get(&check.url)
            .is_some_and(|c| Rc::ptr_eq(c, &check));
        if mine {
            self.checks.borrow_mut().remove(&check.url);
        }
        if check.lost.get() {
            info!(
                "health checker: {} is now checked by another checker",
                check.url
            );
            return;
        }
        if self.stopping.get() {
            return; // released all at once by `shutdown`
        }
        let mut pipe = redis::pipe();
        scripts::pack_release(&mut pipe, &self.hash, &check.url, &self.owner);
        if let Err(e) = self.redis.query(&pipe.get_packed_pipeline(), 1).await {
            debug!("health checker: releasing {} failed: {e}", check.url);
        }
    }

    /// Writes the verdict for every host using the URL; hosts whose list changed are dropped.
    async fn write_state(&self, check: &Check, dead: bool) {
        let mappings = check.mappings.borrow().clone();
        let action = if dead {
            MarkAction::Dead
        } else {
            MarkAction::Alive
        };
        let Some(results) = self.mark(&check.url, &mappings, action).await else {
            return;
        };
        let mut m = check.mappings.borrow_mut();
        for ((host, index), ok) in mappings.iter().zip(results) {
            match ok {
                Some(true) => bump(if dead {
                    &self.stats.dead_marks
                } else {
                    &self.stats.alive_marks
                }),
                Some(false) => {
                    info!(
                        "health checker: the list routing {host} no longer has {} at index {index}",
                        check.url
                    );
                    if m.get(host) == Some(index) {
                        m.remove(host);
                    }
                }
                None => {}
            }
        }
    }

    /// Runs the guarded mark script for each mapping in one round trip. Per mapping: `Some(true)`
    /// valid (and written), `Some(false)` gone, `None` error. `None` overall if Redis failed.
    async fn mark(
        &self,
        url: &str,
        mappings: &Mappings,
        action: MarkAction,
    ) -> Option<Vec<Option<bool>>> {
        if mappings.is_empty() {
            return Some(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (host, index) in mappings {
            let keys: Vec<String> = candidates(host)
                .iter()
                .map(|c| format!("{}frontend:{c}", self.prefix))
                .collect();
            scripts::pack_mark(
                &mut pipe,
                &keys,
                &format!("{}dead:{host}", self.prefix),
                *index,
                url,
                action,
                DEAD_TTL_SECS,
            );
        }
        match self
            .redis
            .query(&pipe.get_packed_pipeline(), mappings.len())
            .await
        {
            Ok(replies) => Some(
                replies
                    .iter()
                    .map(|v| match scripts::int_reply(v) {
                        Ok(n) => Some(n == 1),
                        Err(e) => {
                            bump(&self.stats.redis_errors);
                            warn!("health checker: mark for {url} refused by Redis: {e}");
                            None
                        }
                    })
                    .collect(),
            ),
            Err(e) => {
                bump(&self.stats.redis_errors);
                debug!("health checker: cannot write marks for {url}: {e}");
                None
            }
        }
    }

    /// `SET hchecker_ping <now>` every 10 s (not prefixed: docs/compatibility.md §1).
    async fn ping_loop(self: Rc<Self>) {
        loop {
            if self.stopping.get() {
                return;
            }
            let mut packed = Vec::new();
            redis::cmd("SET")
                .arg("hchecker_ping")
                .arg(now_parts().0)
                .write_packed_command(&mut packed);
            if !self.redis.is_up() {
                // Connecting (start-up) or reconnecting: write as soon as the connection is back.
                monoio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if let Err(e) = self.redis.query(&packed, 1).await {
                bump(&self.stats.redis_errors);
                debug!("health checker: hchecker_ping not written: {e}");
                monoio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            monoio::time::sleep(PING_EVERY).await;
        }
    }

    /// Refreshes our locks (stopping checks whose lock went elsewhere) and tries to take over the URLs
    /// watched, whose owner may have gone.
    async fn lock_loop(self: Rc<Self>) {
        loop {
            monoio::time::sleep(self.lock_refresh_every()).await;
            if self.stopping.get() {
                return;
            }
            self.refresh_locks().await;
            self.try_watched().await;
        }
    }

    async fn refresh_locks(&self) {
        let urls: Vec<String> = self.checks.borrow().keys().cloned().collect();
        if urls.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let now = now_parts();
        for url in &urls {
            scripts::pack_refresh(&mut pipe, &self.hash, url, &self.owner, now);
        }
        let replies = match self
            .redis
            .query(&pipe.get_packed_pipeline(), urls.len())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                bump(&self.stats.redis_errors);
                debug!("health checker: cannot refresh locks: {e}");
                return;
            }
        };
        for (url, reply) in urls.iter().zip(replies) {
            if scripts::int_reply(&reply) == Ok(0) {
                if let Some(check) = self.checks.borrow().get(url) {
                    check.lost.set(true);
                    check.wake.notify_all();
                }
            }
        }
    }

    async fn try_watched(self: &Rc<Self>) {
        let urls: Vec<String> = {
            let mut watched = self.watched.borrow_mut();
            watched.retain(|_, w| w.last_message.elapsed() < WATCH_FOR);
            watched.keys().cloned().collect()
        };
        if urls.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let now = now_parts();
        for url in &urls {
            scripts::pack_acquire(
                &mut pipe,
                &self.hash,
                url,
                &self.owner,
                now,
                self.cfg.lock_timeout.as_secs().max(1),
            );
        }
        let replies = match self
            .redis
            .query(&pipe.get_packed_pipeline(), urls.len())
            .await
        {
            Ok(r) => r,
            Err(e) => {
                bump(&self.stats.redis_errors);
                debug!("health checker: cannot look at watched locks: {e}");
                return;
            }
        };
        for (url, reply) in urls.into_iter().zip(replies) {
            let outcome = scripts::acquired(&reply);
            if !matches!(
                outcome,
                Ok(Acquired::Free | Acquired::TakenOver | Acquired::AlreadyOurs)
            ) {
                continue;
            }
            let Some(w) = self.watched.borrow_mut().remove(&url) else {
                continue;
            };
            let Ok(target) = parse_backend_url(&url) else {
                continue;
            };
            if outcome == Ok(Acquired::TakenOver) {
                bump(&self.stats.takeovers);
                info!("health checker: took over {url} from a checker that stopped refreshing its lock");
            }
            self.start_check(url, target, w.mappings);
        }
    }

    /// Stops every check and releases our locks (within `wait`), so other checkers can take them.
    pub async fn shutdown(&self, wait: Duration) {
        self.stopping.set(true);
        let checks: Vec<Rc<Check>> = self.checks.borrow().values().cloned().collect();
        for c in &checks {
            c.wake.notify_all();
        }
        if checks.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for c in &checks {
            scripts::pack_release(&mut pipe, &self.hash, &c.url, &self.owner);
        }
        let packed = pipe.get_packed_pipeline();
        let query = self.redis.query(&packed, checks.len());
        match monoio::time::timeout(wait, query).await {
            Ok(Ok(_)) => debug!("health checker: released {} locks", checks.len()),
            Ok(Err(e)) => debug!("health checker: locks not released: {e}"),
            Err(_) => debug!("health checker: locks not released in time"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_messages() {
        assert_eq!(
            parse_dead_message(b"A.com;http://10.0.0.1:80;1;3"),
            Some(DeadMessage {
                host: "a.com".into(),
                url: "http://10.0.0.1:80".into(),
                index: 1,
                count: 3
            })
        );
        // A URL holding a ';' survives.
        assert_eq!(
            parse_dead_message(b"a.com;http://h:1/x;y;0;2").map(|m| m.url),
            Some("http://h:1/x;y".into())
        );
        assert_eq!(parse_dead_message(b"a.com;http://h:1;x;2"), None);
        assert_eq!(parse_dead_message(b"a.com;http://h:1;2"), None);
        assert_eq!(parse_dead_message(b"a com;http://h:1;0;2"), None);
        assert_eq!(parse_dead_message(b";http://h:1;0;2"), None);
        assert_eq!(parse_dead_message(b"a.com;;0;2"), None);
        assert_eq!(parse_dead_message(&[0xff, b';']), None);
    }
}
