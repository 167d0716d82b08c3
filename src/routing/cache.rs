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
//! Owned by one worker; no locking, no I/O. The size is bounded: when full, stale entries go first.

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
}

/// Host → route, bounded, with absolute TTLs and eviction by changed key.
pub struct RouteCache {
    entries: HashMap<Rc<str>, Entry>,
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

/// The unknown-host TTL cap when notifications are down.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

impl RouteCache {
    pub fn new(capacity: usize, ttl: Duration, tracked_ttl: Duration) -> Self {
        RouteCache {
            entries: HashMap::with_capacity(capacity.min(4096)),
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

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The invalidation sequence number (compare before and after a lookup).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The TTL in force for found routes and for unknown hosts.
    fn limits(&self) -> (Duration, Duration) {
        if self.tracking {
            (self.tracked_ttl, self.tracked_ttl)
        } else {
            (self.ttl, self.ttl.min(NEGATIVE_TTL))
        }
    }

    pub fn get(&self, host: &str, now: Instant) -> CacheHit {
        let Some(e) = self.entries.get(host) else {
            return CacheHit::Miss;
        };
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
        if self.entries.contains_key(host) {
            self.remove(host);
        } else if self.entries.len() >= self.capacity {
            self.make_room(Instant::now());
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
        self.entries.insert(
            host,
            Entry {
                lookup,
                started,
                depth,
            },
        );
    }

    /// Forgets one host (the next request looks it up again). Returns whether it was cached.
    pub fn remove(&mut self, host: &str) -> bool {
        let Some((host, entry)) = self.entries.remove_entry(host) else {
            return false;
        };
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
        self.dependents.clear();
    }

    /// Frees at least an eighth of the capacity: stale entries first, then arbitrary ones. Runs only when
    /// full, so its O(n) cost is amortised over n/8 inserts.
    fn make_room(&mut self, now: Instant) {
        let (found_ttl, negative_ttl) = self.limits();
        let cutoff = self.cutoff;
        let stale: Vec<Rc<str>> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                let limit = match e.lookup {
                    Lookup::Found(_) => found_ttl,
                    Lookup::NoFrontend => negative_ttl,
                };
                cutoff.is_some_and(|c| e.started < c)
                    || now.saturating_duration_since(e.started) >= limit
            })
            .map(|(h, _)| h.clone())
            .collect();
        for h in stale {
            self.remove(&h);
        }
        let target = self.capacity - self.capacity / 8 - 1;
        if self.entries.len() > target {
            let excess = self.entries.len() - target;
            let victims: Vec<Rc<str>> = self.entries.keys().take(excess).cloned().collect();
            for h in victims {
                self.remove(&h);
            }
        }
    }
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
    use crate::routing::Route;

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
