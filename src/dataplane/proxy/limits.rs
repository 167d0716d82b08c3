//! The per-core state behind the per-frontend options `rate` and `max_connections` (README
//! "Per-frontend options"): token buckets per client address and in-flight counts per frontend.
//!
//! Only the counting, bounded as the README's "Limits" says; what a request is told when a limit is
//! reached is `policy`'s business. A leaf, so that the per-core state (`core.rs`) can own it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Instant;

/// Client buckets kept per worker for `rate` (README "Limits").
pub const MAX_RATE_ENTRIES: usize = 16_384;

/// The per-worker state behind `rate` and `max_connections`.
#[derive(Default)]
pub struct PolicyState {
    /// Frontend key → requests in flight on this worker (only while > 0).
    pub(super) in_flight: RefCell<HashMap<Box<str>, u32>>,
    /// (hash of the frontend key, client address) → token bucket.
    buckets: RefCell<HashMap<(u64, IpAddr), Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl PolicyState {
    /// Client buckets held (tests, metrics).
    pub fn rate_entries(&self) -> usize {
        self.buckets.borrow().len()
    }

    /// Takes a token for `client` on frontend `key`; `Err(seconds)` to wait when there is none.
    /// The bucket holds one second of requests (at least one) and refills at `rate` per second.
    pub fn take_token(
        &self,
        key: &str,
        client: IpAddr,
        rate: u32,
        now: Instant,
    ) -> Result<(), u64> {
        let mut h = crate::common::fast_hash::FxHasher::default();
        key.hash(&mut h);
        let id = (h.finish(), client);
        let rate = f64::from(rate.max(1));
        let capacity = rate.max(1.0);
        let mut buckets = self.buckets.borrow_mut();
        if !buckets.contains_key(&id) && buckets.len() >= MAX_RATE_ENTRIES {
            // A bucket idle for a second is full again: forgetting it changes nothing.
            buckets.retain(|_, b| now.saturating_duration_since(b.last).as_secs_f64() < 1.0);
            if buckets.len() >= MAX_RATE_ENTRIES {
                // More active clients than the bound within one second: start afresh (approximate).
                buckets.clear();
            }
        }
        let b = buckets.entry(id).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(capacity);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - b.tokens) / rate).ceil() as u64).max(1))
        }
    }

    /// Counts a request in flight for frontend `key` unless `limit` are already.
    pub fn enter(&self, key: &str, limit: u32) -> Option<Slot<'_>> {
        let mut map = self.in_flight.borrow_mut();
        match map.get_mut(key) {
            Some(n) if *n >= limit => return None,
            Some(n) => *n += 1,
            None if limit == 0 => return None,
            None => {
                map.insert(key.into(), 1);
            }
        }
        Some(Slot {
            state: self,
            key: key.into(),
        })
    }
}

/// One request counted against `max_connections`; released when dropped.
pub struct Slot<'a> {
    state: &'a PolicyState,
    key: Box<str>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut map = self.state.in_flight.borrow_mut();
        if let Some(n) = map.get_mut(&*self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&*self.key);
            }
        }
    }
}
