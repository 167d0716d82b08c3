//! Dead marks of the file driver: the `dead:<host>` sets of Redis, kept in one worker's memory.
//!
//! Same rules as Redis (docs/compatibility.md §3): a mark is made for the *requested* host (not the wildcard key that
//! matched), by index into the backend part of the list; every mark pushes the expiry of the whole set
//! to `deadBackendTTL` from now (`SADD` + `EXPIRE`), so all marks of a host expire together. Marks only
//! apply to the list they were made against: when an edit of the routes file changes that list, its
//! indexes would point at other backends, so the marks are forgotten.
//!
//! Owned by one worker (no lock, no I/O); other workers keep their own marks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::table::FrontendList;

/// Longest TTL honoured (about 100 years): `deadBackendTTL` has no upper bound in the configuration,
/// and an `Instant` plus an absurd duration would overflow.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One host's dead set.
struct DeadSet {
    /// The list the indexes refer to.
    list: FrontendList,
    indexes: Vec<usize>,
    expires: Instant,
}

/// Host → dead set, for one worker.
pub struct DeadMarks {
    ttl: Duration,
    hosts: HashMap<Box<str>, DeadSet>,
}

impl DeadMarks {
    pub fn new(ttl: Duration) -> Self {
        DeadMarks {
            ttl: ttl.min(MAX_TTL),
            hosts: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Marks backend `index` of `list` dead for `host`; the whole set now expires `ttl` from `now`.
    pub fn mark(&mut self, host: &str, list: &FrontendList, index: usize, now: Instant) {
        let expires = now + self.ttl;
        match self.hosts.get_mut(host) {
            Some(set) if set.expires > now && same_list(&set.list, list) => {
                if !set.indexes.contains(&index) {
                    set.indexes.push(index);
                }
                set.expires = expires;
            }
            _ => {
                self.hosts.insert(
                    host.into(),
                    DeadSet {
                        list: list.clone(),
                        indexes: vec![index],
                        expires,
                    },
                );
            }
        }
    }

    /// The dead indexes of `host` when `list` serves it; marks that expired or were made against another
    /// list are forgotten.
    pub fn indexes(&mut self, host: &str, list: &FrontendList, now: Instant) -> &[usize] {
        let current = match self.hosts.get(host) {
            None => return &[],
            Some(set) => set.expires > now && same_list(&set.list, list),
        };
        if !current {
            self.hosts.remove(host);
            return &[];
        }
        self.hosts.get(host).map_or(&[], |set| &set.indexes[..])
    }

    /// Forgets expired sets (keeps memory bounded by the hosts marked within the last TTL).
    pub fn sweep(&mut self, now: Instant) {
        self.hosts.retain(|_, set| set.expires > now);
    }
}

/// The same list: the same allocation, or (after a reload) the same content.
fn same_list(a: &FrontendList, b: &FrontendList) -> bool {
    Arc::ptr_eq(a, b) || a[..] == b[..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> FrontendList {
        items
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn all_marks_of_a_host_expire_together_after_the_last() {
        let mut d = DeadMarks::new(Duration::from_secs(30));
        let l = list(&["id", "http://a:1", "http://b:2", "http://c:3"]);
        let t0 = Instant::now();
        d.mark("h.com", &l, 0, t0);
        d.mark("h.com", &l, 2, t0 + Duration::from_secs(20));
        d.mark("h.com", &l, 2, t0 + Duration::from_secs(20));
        assert_eq!(d.indexes("h.com", &l, t0 + Duration::from_secs(45)), [0, 2]);
        assert!(d
            .indexes("h.com", &l, t0 + Duration::from_secs(50))
            .is_empty());
        assert!(d.is_empty());
    }

    #[test]
    fn keyed_by_requested_host() {
        let mut d = DeadMarks::new(Duration::from_secs(30));
        let l = list(&["wild", "http://a:1", "http://b:2"]);
        let t0 = Instant::now();
        d.mark("a.w.com", &l, 1, t0);
        assert_eq!(d.indexes("a.w.com", &l, t0), [1]);
        assert!(d.indexes("b.w.com", &l, t0).is_empty());
    }

    #[test]
    fn a_changed_list_forgets_the_marks_an_equal_one_keeps_them() {
        let mut d = DeadMarks::new(Duration::from_secs(30));
        let l = list(&["id", "http://a:1", "http://b:2"]);
        let t0 = Instant::now();
        d.mark("h.com", &l, 1, t0);
        let reloaded_same = list(&["id", "http://a:1", "http://b:2"]);
        assert_eq!(d.indexes("h.com", &reloaded_same, t0), [1]);
        let reordered = list(&["id", "http://b:2", "http://a:1"]);
        assert!(d.indexes("h.com", &reordered, t0).is_empty());
        assert!(d.indexes("h.com", &l, t0).is_empty(), "forgotten for good");
    }

    #[test]
    fn an_absurd_ttl_does_not_overflow() {
        let mut d = DeadMarks::new(Duration::from_secs(u64::MAX));
        let l = list(&["id", "http://a:1", "http://b:2"]);
        let t0 = Instant::now();
        d.mark("h.com", &l, 0, t0);
        assert_eq!(d.indexes("h.com", &l, t0), [0]);
    }

    #[test]
    fn sweep_drops_expired_sets() {
        let mut d = DeadMarks::new(Duration::from_secs(1));
        let l = list(&["id", "http://a:1", "http://b:2"]);
        let t0 = Instant::now();
        d.mark("x.com", &l, 0, t0);
        d.mark("y.com", &l, 0, t0 + Duration::from_millis(800));
        d.sweep(t0 + Duration::from_millis(1500));
        assert!(d.indexes("x.com", &l, t0).is_empty());
        assert_eq!(
            d.indexes("y.com", &l, t0 + Duration::from_millis(1500)),
            [0]
        );
    }
}
