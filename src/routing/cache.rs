//! The per-worker route cache (`server.lruCache`): host → lookup result, with an absolute age limit.
//!
//! An entry is *fresh* while younger than the TTL (spec §7 FIX: hits do not refresh the age, so a busy
//! host still sees changes). Older entries are *stale*: never used while the driver answers, but served
//! while it is unreachable (spec §3 FIX). Unknown hosts are cached too, for at most one second, so a flood
//! of requests for an unknown name costs one lookup per second per worker. The size is bounded: when
//! full, stale entries go first, then arbitrary ones.
//!
//! Owned by one worker; no locking, no I/O.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Lookup;

/// What the cache knows about a host.
pub enum CacheHit {
    Fresh(Lookup),
    Stale(Lookup),
    Miss,
}

struct Entry {
    lookup: Lookup,
    fetched: Instant,
}

/// Host → route, bounded, with absolute TTL.
pub struct RouteCache {
    entries: HashMap<Box<str>, Entry>,
    capacity: usize,
    ttl: Duration,
    negative_ttl: Duration,
}

impl RouteCache {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        RouteCache {
            entries: HashMap::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            ttl,
            negative_ttl: ttl.min(Duration::from_secs(1)),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, host: &str, now: Instant) -> CacheHit {
        match self.entries.get(host) {
            None => CacheHit::Miss,
            Some(e) => {
                let limit = match e.lookup {
                    Lookup::Found(_) => self.ttl,
                    Lookup::NoFrontend => self.negative_ttl,
                };
                if now.saturating_duration_since(e.fetched) < limit {
                    CacheHit::Fresh(e.lookup.clone())
                } else {
                    CacheHit::Stale(e.lookup.clone())
                }
            }
        }
    }

    pub fn insert(&mut self, host: &str, lookup: Lookup, now: Instant) {
        if let Some(e) = self.entries.get_mut(host) {
            e.lookup = lookup;
            e.fetched = now;
            return;
        }
        if self.entries.len() >= self.capacity {
            self.make_room(now);
        }
        self.entries.insert(
            host.into(),
            Entry {
                lookup,
                fetched: now,
            },
        );
    }

    /// Forgets one host (the next request looks it up again).
    pub fn remove(&mut self, host: &str) {
        self.entries.remove(host);
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Frees at least an eighth of the capacity: stale entries first, then arbitrary ones. Runs only when
    /// full, so its O(n) cost is amortised over n/8 inserts.
    fn make_room(&mut self, now: Instant) {
        let ttl = self.ttl;
        let negative_ttl = self.negative_ttl;
        self.entries.retain(|_, e| {
            let limit = match e.lookup {
                Lookup::Found(_) => ttl,
                Lookup::NoFrontend => negative_ttl,
            };
            now.saturating_duration_since(e.fetched) < limit
        });
        let target = self.capacity - self.capacity / 8 - 1;
        if self.entries.len() > target {
            let excess = self.entries.len() - target;
            let victims: Vec<Box<str>> = self.entries.keys().take(excess).cloned().collect();
            for k in victims {
                self.entries.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Route;
    use std::rc::Rc;

    fn found() -> Lookup {
        Lookup::Found(Rc::new(Route::new(
            "a",
            &["id".into(), "http://x:1".into()],
            &[],
        )))
    }

    #[test]
    fn fresh_then_stale_by_absolute_age() {
        let mut c = RouteCache::new(10, Duration::from_millis(100));
        let t0 = Instant::now();
        c.insert("a", found(), t0);
        assert!(matches!(
            c.get("a", t0 + Duration::from_millis(50)),
            CacheHit::Fresh(_)
        ));
        assert!(matches!(
            c.get("a", t0 + Duration::from_millis(150)),
            CacheHit::Stale(_)
        ));
        assert!(matches!(c.get("b", t0), CacheHit::Miss));
    }

    #[test]
    fn ttl_zero_is_never_fresh_but_kept_for_outages() {
        let mut c = RouteCache::new(10, Duration::ZERO);
        let t0 = Instant::now();
        c.insert("a", found(), t0);
        assert!(matches!(c.get("a", t0), CacheHit::Stale(_)));
    }

    #[test]
    fn size_is_bounded() {
        let mut c = RouteCache::new(64, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..1000 {
            c.insert(&format!("h{i}"), found(), t0);
            assert!(c.len() <= 64);
        }
        assert!(matches!(c.get("h999", t0), CacheHit::Fresh(_)));
    }
}
