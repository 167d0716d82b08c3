//! The per-worker route cache (`server.lruCache`): host → lookup result, with absolute age limits, and
//! exact eviction when Redis says a key changed.
//!
//! *Freshness.* An entry is fresh while younger than the TTL in force: `trackedTtl` while route-change
//! notifications flow, `ttl` when they do not (docs/compatibility.md §7 FIX: hits do not refresh the age, so a busy host
//! still sees changes). Entries whose lookup started before notifications were (re)established are stale:
//! a change may have been missed. Stale entries are never used while the driver answers, but are served
//! while it is unreachable (docs/compatibility.md §3 FIX). Unknown hosts are cached too, for at most a second when
//! notifications are down.
//!
//! *Eviction by key.* A cached host depends on the candidate keys its lookup consulted: every key up to
//! and including the one that matched (all of them for an unknown host). A reverse index maps each key
//! to its dependent hosts, so a change to `frontend:*.example.com` evicts exactly the cached hosts whose
//! routing it can affect, without scanning the cache. `dead:<host>` evicts that host.
//!
//! *Races.* Every invalidation bumps a sequence number; a lookup that saw the number change while it was
//! in flight must not be cached (its answer may predate the change).
//!
//! *Bounds* (every key is client input: README, "Limits"). Found routes are bounded by count
//! (`lruCache.size`) and by an estimate of their bytes ([`MAX_CACHE_BYTES`], index included); unknown
//! hosts live in a separate small cache ([`NEGATIVE_CAPACITY`] entries, [`NEGATIVE_TTL`] at most), so a
//! scan of random names evicts only other unknown names, never the hosts that carry traffic. When full,
//! stale entries go first. [`RouteCache::sweep`] (once a second) drops expired unknown hosts and routes
//! no request used for [`IDLE_DROP`]; a stale route still in use stays, to be served if Redis fails.
//!
//! Owned by one worker; no locking, no I/O.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::host::for_each_candidate;
use super::Lookup;

/// What the cache knows about a host.
pub enum CacheHit {
    /// Usable, with the age of the lookup it comes from.
    Fresh(Lookup, Duration),
    Stale(Lookup),
    Miss,
}

struct Entry {
    lookup: Lookup,
    /// When the lookup that produced it started.
    started: Instant,
    /// How many candidate keys it depends on (the first `depth` candidates of the host).
    depth: usize,
    /// The last request that used it (hit or insert).
    used: Cell<Instant>,
    /// Its share of [`RouteCache::bytes`].
    bytes: usize,
}

/// Byte budget of the found routes of one worker (hosts, index keys and route data, estimated).
pub const MAX_CACHE_BYTES: usize = 16 << 20;
/// Most unknown hosts cached per worker.
pub const NEGATIVE_CAPACITY: usize = 1024;
/// A route no request used for this long is dropped (looked up again on its next request).
pub const IDLE_DROP: Duration = Duration::from_secs(600);
/// Estimated fixed cost of an entry (map slots, `Rc`, index sets), on top of its strings.
const ENTRY_OVERHEAD: usize = 160;

/// Host → route, bounded, with absolute TTLs and eviction by changed key.
pub struct RouteCache {
    /// Found routes.
    entries: HashMap<Rc<str>, Entry>,
    /// Unknown hosts (`Lookup::NoFrontend`), bounded separately.
    negative: HashMap<Rc<str>, Entry>,
    /// Estimated bytes of `entries` (with their index keys).
    bytes: usize,
    max_bytes: usize,
    /// Candidate key (without driver prefix, e.g. `*.example.com`) → hosts whose entry depends on it.
    dependents: HashMap<Box<str>, HashSet<Rc<str>>>,
    capacity: usize,
    /// TTL without notifications (`lruCache.ttl`); zero = no caching.
    ttl: Duration,
    /// TTL while notifications flow (`lruCache.trackedTtl`).
    tracked_ttl: Duration,
    tracking: bool,
    /// Entries whose lookup started before this are stale.
    cutoff: Option<Instant>,
    /// Bumped by every invalidation.
    seq: u64,
}

/// The unknown-host TTL cap (notifications on or off).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(1);

impl RouteCache {
    pub fn new(capacity: usize, ttl: Duration, tracked_ttl: Duration) -> Self {
        RouteCache {
            entries: HashMap::with_capacity(capacity.min(4096)),
            negative: HashMap::new(),
            bytes: 0,
            max_bytes: MAX_CACHE_BYTES,
            dependents: HashMap::new(),
            capacity: capacity.max(1),
            ttl,
            tracked_ttl: if ttl.is_zero() {
                Duration::ZERO
            } else {
                tracked_ttl.max(ttl)
            },
            tracking: false,
            cutoff: None,
            seq: 0,
        }
    }

    /// Hosts cached (found and unknown).
    pub fn len(&self) -> usize {
        self.entries.len() + self.negative.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes held by found routes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Changes the byte budget (tests).
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes.max(1);
    }

    /// The invalidation sequence number (compare before and after a lookup).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The TTL in force for found routes and for unknown hosts.
    fn limits(&self) -> (Duration, Duration) {
        if self.tracking {
            (self.tracked_ttl, self.tracked_ttl.min(NEGATIVE_TTL))
        } else {
            (self.ttl, self.ttl.min(NEGATIVE_TTL))
        }
    }

    pub fn get(&self, host: &str, now: Instant) -> CacheHit {
        let Some(e) = self.entries.get(host).or_else(|| self.negative.get(host)) else {
            return CacheHit::Miss;
        };
        e.used.set(now);
        let (found_ttl, negative_ttl) = self.limits();
        let limit = match e.lookup {
            Lookup::Found(_) => found_ttl,
            Lookup::NoFrontend => negative_ttl,
        };
        let before_cutoff = self.cutoff.is_some_and(|c| e.started < c);
        let age = now.saturating_duration_since(e.started);
        if !before_cutoff && age < limit {
            CacheHit::Fresh(e.lookup.clone(), age)
        } else {
            CacheHit::Stale(e.lookup.clone())
        }
    }

    /// Stores a lookup that started at `started` (when it started, not when it ended: a change made during
    /// the lookup must count as after it).
    pub fn insert(&mut self, host: &str, lookup: Lookup, started: Instant) {
        let depth = depth_of(host, &lookup);
        self.remove(host);
        let now = Instant::now();
        let negative = matches!(lookup, Lookup::NoFrontend);
        let bytes = if negative {
            0
        } else {
            entry_bytes(host, depth, &lookup)
        };
        if negative {
            if self.negative.len() >= NEGATIVE_CAPACITY.min(self.capacity) {
                self.make_room_negative(now);
            }
        } else if self.entries.len() >= self.capacity || self.bytes + bytes > self.max_bytes {
            self.make_room(now, bytes);
        }
        let host: Rc<str> = host.into();
        let mut i = 0;
        for_each_candidate(&host, |key| {
            if i < depth {
                self.dependents
                    .entry(key.into())
                    .or_default()
                    .insert(host.clone());
            }
            i += 1;
        });
        let entry = Entry {
            lookup,
            started,
            depth,
            used: Cell::new(now),
            bytes,
        };
        if negative {
            self.negative.insert(host, entry);
        } else {
            self.bytes += bytes;
            self.entries.insert(host, entry);
        }
    }

    /// Forgets one host (the next request looks it up again). Returns whether it was cached.
    pub fn remove(&mut self, host: &str) -> bool {
        let Some((host, entry)) = self
            .entries
            .remove_entry(host)
            .or_else(|| self.negative.remove_entry(host))
        else {
            return false;
        };
        self.bytes -= entry.bytes;
        let mut i = 0;
        for_each_candidate(&host, |key| {
            if i < entry.depth {
                if let Some(set) = self.dependents.get_mut(key) {
                    set.remove(&host);
                    if set.is_empty() {
                        self.dependents.remove(key);
                    }
                }
            }
            i += 1;
        });
        true
    }

    /// `frontend:<key>` changed: evicts every host whose route depends on it. Returns the evictions.
    pub fn invalidate_frontend(&mut self, key: &str) -> usize {
        self.seq += 1;
        let Some(hosts) = self.dependents.remove(key) else {
            return 0;
        };
        let mut evicted = 0;
        for host in hosts {
            evicted += usize::from(self.remove(&host));
        }
        evicted
    }

    /// `dead:<host>` changed: evicts that host.
    pub fn invalidate_host(&mut self, host: &str) -> usize {
        self.seq += 1;
        usize::from(self.remove(host))
    }

    /// Everything may have changed: every entry becomes stale (kept for outages).
    pub fn invalidate_all(&mut self, now: Instant) {
        self.seq += 1;
        self.cutoff = Some(now);
    }

    /// Notifications are on from `now`: entries looked up before may have missed a change.
    pub fn tracking_up(&mut self, now: Instant) {
        self.seq += 1;
        self.tracking = true;
        self.cutoff = Some(now);
    }

    /// Notifications stopped: the short TTL applies again.
    pub fn tracking_down(&mut self) {
        self.seq += 1;
        self.tracking = false;
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.seq += 1;
        self.entries.clear();
        self.negative.clear();
        self.dependents.clear();
        self.bytes = 0;
    }

    /// Drops unknown hosts past their TTL and routes unused for [`IDLE_DROP`] (run about once a
    /// second: O(entries), a few microseconds per thousand). Returns how many went.
    pub fn sweep(&mut self, now: Instant) -> usize {
        let (_, negative_ttl) = self.limits();
        let mut gone: Vec<Rc<str>> = self
            .negative
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.started) >= negative_ttl)
            .map(|(h, _)| h.clone())
            .collect();
        gone.extend(
            self.entries
                .iter()
                .filter(|(_, e)| now.saturating_duration_since(e.used.get()) >= IDLE_DROP)
                .map(|(h, _)| h.clone()),
        );
        for h in &gone {
            self.remove(h);
        }
        gone.len()
    }

    /// Frees an eighth of the unknown-host cache: expired entries first, then arbitrary ones.
    fn make_room_negative(&mut self, now: Instant) {
        let (_, negative_ttl) = self.limits();
        let cap = NEGATIVE_CAPACITY.min(self.capacity);
        let target = cap - cap / 8 - 1;
        let mut victims: Vec<Rc<str>> = self
            .negative
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.started) >= negative_ttl)
            .map(|(h, _)| h.clone())
            .collect();
        let left = self.negative.len() - victims.len();
        if left > target {
            victims.extend(
                self.negative
                    .iter()
                    .filter(|(_, e)| now.saturating_duration_since(e.started) < negative_ttl)
                    .take(left - target)
                    .map(|(h, _)| h.clone()),
            );
        }
        for h in victims {
            self.remove(&h);
        }
    }

    /// Frees at least an eighth of the capacity (by count and by bytes, with room for `incoming`
    /// bytes): stale entries first, then arbitrary ones. Runs only when full, so its O(n) cost is
    /// amortised over n/8 inserts.
    fn make_room(&mut self, now: Instant, incoming: usize) {
        let (found_ttl, _) = self.limits();
        let cutoff = self.cutoff;
        let stale: Vec<Rc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                cutoff.is_some_and(|c| e.started < c)
                    || now.saturating_duration_since(e.started) >= found_ttl
            })
            .map(|(h, _)| h.clone())
            .collect();
        for h in stale {
            self.remove(&h);
        }
        let target = self.capacity - self.capacity / 8 - 1;
        let byte_target = (self.max_bytes - self.max_bytes / 8).saturating_sub(incoming);
        if self.entries.len() > target || self.bytes > byte_target {
            let mut victims = Vec::new();
            let (mut count, mut bytes) = (self.entries.len(), self.bytes);
            for (h, e) in &self.entries {
                if count <= target && bytes <= byte_target {
                    break;
                }
                count -= 1;
                bytes -= e.bytes;
                victims.push(h.clone());
            }
            for h in victims {
                self.remove(&h);
            }
        }
    }
}

/// The estimated memory of a found route's entry: the host (in the map and in each index key it
/// adds), the route's strings and parsed backends, and fixed overhead.
fn entry_bytes(host: &str, depth: usize, lookup: &Lookup) -> usize {
    let route = match lookup {
        Lookup::Found(r) => {
            r.identifier.len()
                + r.frontend_key.len()
                + r.backends
                    .iter()
                    .map(|b| 2 * b.url.len() + 64)
                    .sum::<usize>()
                // Per-frontend options: the parsed value and its per-backend tables.
                + std::mem::size_of::<crate::dataplane::routing::options::FrontendOptions>()
                + r.options.weights.as_ref().map_or(0, |w| 4 * w.len())
                + r.in_flight.len() * 4
                + r.sticky_ids.len() * crate::dataplane::routing::route::STICKY_ID_LEN
        }
        Lookup::NoFrontend => 0,
    };
    ENTRY_OVERHEAD + host.len() * (1 + depth) + route
}

/// How many of the host's candidate keys its lookup consulted.
fn depth_of(host: &str, lookup: &Lookup) -> usize {
    let mut count = 0;
    let mut depth = None;
    for_each_candidate(host, |key| {
        count += 1;
        if let Lookup::Found(route) = lookup {
            if depth.is_none() && *route.frontend_key == *key {
                depth = Some(count);
            }
        }
    });
    depth.unwrap_or(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::routing::Route;

    fn found(key: &str) -> Lookup {
        Lookup::Found(Rc::new(Route::new(
            key,
            &["id".into(), "http://x:1".into()],
            &[],
        )))
    }

    #[test]
    fn fresh_then_stale_by_absolute_age() {
        let mut c = RouteCache::new(10, Duration::from_millis(100), Duration::from_secs(60));
        let t0 = Instant::now();
        c.insert("a", found("a"), t0);
        assert!(matches!(
            c.get("a", t0 + Duration::from_millis(50)),
            CacheHit::Fresh(..)
        ));
        assert!(matches!(
            c.get("a", t0 + Duration::from_millis(150)),
            CacheHit::Stale(_)
        ));
        assert!(matches!(c.get("b", t0), CacheHit::Miss));
        // With notifications on, the long TTL applies, but only to lookups started after they came on.
        c.tracking_up(t0 + Duration::from_millis(10));
        assert!(matches!(
            c.get("a", t0 + Duration::from_millis(20)),
            CacheHit::Stale(_)
        ));
        c.insert("a", found("a"), t0 + Duration::from_millis(20));
        assert!(matches!(
            c.get("a", t0 + Duration::from_secs(30)),
            CacheHit::Fresh(..)
        ));
        c.tracking_down();
        assert!(matches!(
            c.get("a", t0 + Duration::from_secs(30)),
            CacheHit::Stale(_)
        ));
    }

    #[test]
    fn ttl_zero_is_never_fresh_but_kept_for_outages() {
        let mut c = RouteCache::new(10, Duration::ZERO, Duration::from_secs(60));
        let t0 = Instant::now();
        c.tracking_up(t0);
        c.insert("a", found("a"), t0);
        assert!(matches!(c.get("a", t0), CacheHit::Stale(_)));
    }

    #[test]
    fn a_changed_key_evicts_exactly_its_dependents() {
        let mut c = RouteCache::new(100, Duration::from_secs(60), Duration::from_secs(60));
        let t0 = Instant::now();
        // x.a.com matched *.a.com (it depends on x.a.com and *.a.com, not on *.com or *).
        c.insert("x.a.com", found("*.a.com"), t0);
        c.insert("y.a.com", found("y.a.com"), t0);
        c.insert("z.b.com", found("*"), t0);
        c.insert("unknown.org", Lookup::NoFrontend, t0);
        assert_eq!(
            c.invalidate_frontend("*.com"),
            1,
            "only z.b.com fell through *.com"
        );
        assert!(matches!(c.get("z.b.com", t0), CacheHit::Miss));
        assert_eq!(c.invalidate_frontend("*.a.com"), 1);
        assert!(matches!(c.get("x.a.com", t0), CacheHit::Miss));
        assert!(
            matches!(c.get("y.a.com", t0), CacheHit::Fresh(..)),
            "y.a.com matched before *.a.com"
        );
        assert_eq!(
            c.invalidate_frontend("*"),
            1,
            "the unknown host depends on the catch-all"
        );
        assert_eq!(c.invalidate_host("y.a.com"), 1);
        assert!(c.is_empty());
        assert!(
            c.dependents.is_empty(),
            "the index is cleaned up with its entries"
        );
    }

    #[test]
    fn unknown_hosts_cannot_evict_found_routes() {
        let mut c = RouteCache::new(100, Duration::from_secs(60), Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..50 {
            c.insert(&format!("h{i}.a.com"), found("*.a.com"), t0);
        }
        for i in 0..20_000 {
            c.insert(&format!("scan{i}.x.{i}.org"), Lookup::NoFrontend, t0);
            assert!(c.negative.len() <= 100);
        }
        assert_eq!(c.entries.len(), 50, "every found route survived the scan");
        assert!(matches!(c.get("h7.a.com", t0), CacheHit::Fresh(..)));
        // The index holds the surviving unknown hosts' keys only.
        let indexed: usize = c.dependents.values().map(HashSet::len).sum();
        assert!(indexed <= 50 * 2 + c.negative.len() * 5, "{indexed}");
    }

    #[test]
    fn sweep_drops_expired_unknown_hosts_and_idle_routes() {
        let mut c = RouteCache::new(100, Duration::from_secs(1), Duration::from_secs(60));
        let t0 = Instant::now();
        c.insert("u.test", Lookup::NoFrontend, t0);
        c.insert("busy.test", found("busy.test"), t0);
        c.insert("idle.test", found("idle.test"), t0);
        assert_eq!(c.sweep(Instant::now()), 0);
        let later = Instant::now() + IDLE_DROP - Duration::from_secs(1);
        assert!(matches!(c.get("busy.test", later), CacheHit::Stale(_)));
        assert_eq!(
            c.sweep(Instant::now() + NEGATIVE_TTL),
            1,
            "the unknown host"
        );
        assert_eq!(
            c.sweep(Instant::now() + IDLE_DROP + Duration::from_secs(1)),
            1
        );
        assert!(matches!(c.get("idle.test", t0), CacheHit::Miss));
        assert!(
            !matches!(c.get("busy.test", later), CacheHit::Miss),
            "a stale route in use stays for outages"
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn bytes_are_bounded() {
        let mut c = RouteCache::new(100_000, Duration::from_secs(60), Duration::from_secs(60));
        c.set_max_bytes(1 << 20);
        let t0 = Instant::now();
        let long = "l".repeat(60);
        for i in 0..20_000 {
            c.insert(&format!("{long}.{long}.{long}.x{i}.com"), found("*"), t0);
            assert!(c.bytes() <= 1 << 20);
        }
        assert!(c.entries.len() > 100, "{}", c.entries.len());
        c.clear();
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn size_is_bounded_and_the_index_follows() {
        let mut c = RouteCache::new(64, Duration::from_secs(60), Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..1000 {
            c.insert(&format!("h{i}.example.com"), found("*"), t0);
            assert!(c.len() <= 64);
        }
        assert!(matches!(c.get("h999.example.com", t0), CacheHit::Fresh(..)));
        let indexed: usize = c.dependents.values().map(HashSet::len).sum();
        assert_eq!(
            indexed,
            c.len() * 4,
            "each host depends on its exact key, *.example.com, *.com and *"
        );
    }
}
