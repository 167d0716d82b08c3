//! Phase 1, route: from a Host header to a route, through the worker's cache.
//!
//! A fresh cache entry answers without I/O. On a miss, one lookup per host is in flight at a time
//! (single flight): concurrent requests for the same host wait for it. When the driver fails, a stale
//! entry is served (docs/compatibility.md §3 FIX) and otherwise the request gets 503 quickly.

use std::rc::Rc;
use std::time::Instant;

use crate::common::metrics::{Counter, Hist};
use crate::dataplane::core::Core;
use crate::dataplane::routing::cache::CacheHit;
use crate::dataplane::routing::flight::Joined;
use crate::dataplane::routing::{Lookup, Route};
use crate::drivers::redis::RedisError;

/// What the route phase decided.
pub enum RouteOutcome {
    Found(Rc<Route>),
    /// No frontend list for any candidate: 400.
    NoFrontend,
    /// The driver could not answer and nothing is cached: 503.
    Unavailable(RedisError),
}

impl From<Lookup> for RouteOutcome {
    fn from(l: Lookup) -> Self {
        match l {
            Lookup::Found(r) => RouteOutcome::Found(r),
            Lookup::NoFrontend => RouteOutcome::NoFrontend,
        }
    }
}

/// Resolves a normalised host to a route.
pub async fn find_route(w: &Core, host: &str) -> RouteOutcome {
    let stale = match w.cache.borrow().get(host, Instant::now()) {
        CacheHit::Fresh(lookup, age) => {
            let m = w.m();
            m.inc(Counter::CacheHits);
            m.observe(Hist::RouteAge, age.as_secs_f64());
            return lookup.into();
        }
        CacheHit::Stale(lookup) => Some(lookup),
        CacheHit::Miss => None,
    };
    w.m().inc(Counter::CacheMisses);
    let result = match w.inflight.join(host) {
        Joined::Wait(flight) => flight
            .wait()
            .await
            .unwrap_or(Err(RedisError::ConnectionLost)),
        Joined::Lead(leader) => {
            let redis = matches!(
                *w.store,
                crate::dataplane::routing::store::RouteStore::Redis(_)
            );
            if redis {
                w.m().inc(Counter::RedisRoundTrips);
            }
            // The entry's age counts from the start of the lookup, and a lookup during which a route
            // changed is not cached: its answer may predate the change.
            let started = Instant::now();
            let seq = w.cache.borrow().seq();
            let result = w.store.lookup(host).await;
            match &result {
                Ok(lookup) => {
                    let mut cache = w.cache.borrow_mut();
                    if cache.seq() == seq {
                        cache.insert(host, lookup.clone(), started);
                    } else {
                        w.m().inc(Counter::UncachedRacingLookups);
                    }
                }
                Err(_) if redis => w.m().inc(Counter::RedisErrors),
                Err(_) => {}
            }
            leader.finish(result.clone());
            result
        }
    };
    match (result, stale) {
        (Ok(lookup), _) => lookup.into(),
        (Err(_), Some(stale)) => {
            w.m().inc(Counter::CacheStaleServed);
            stale.into()
        }
        (Err(e), None) => RouteOutcome::Unavailable(e),
    }
}
