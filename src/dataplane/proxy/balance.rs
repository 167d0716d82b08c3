//! Phase 2 with per-frontend options (README "Per-frontend options"): which live backend serves a
//! request, by `balance` (random, roundrobin, leastconn, iphash), `weights` and `sticky`.
//!
//! A backend is *usable* when it is not marked dead and its weight is not 0 (drained). Every policy
//! chooses among usable backends only, so dead marks, retries and the active checker work with all of
//! them. Round-robin positions and in-flight counts live in the worker's copy of the route (per core,
//! no shared state); `iphash` and the sticky cookie use fixed hashes (FNV-1a over the client address and
//! the backend URL), so every worker and every instance agrees, and removing a backend moves only the
//! clients it had (rendezvous hashing).
//!
//! Pure functions of the route, the worker's generator and request facts; no I/O, no allocation.

use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;

use crate::common::rng::Rng;
use crate::dataplane::proxy::choose::choose_backend;
use crate::dataplane::routing::options::Balance;
use crate::dataplane::routing::Route;

pub use crate::common::fast_hash::{fnv1a, FNV_OFFSET};

/// MurmurHash3's 64-bit finaliser: FNV-1a alone mixes its last bytes poorly into the high bits, and
/// backend URLs often differ only there (`:8081`, `:8082`). Fixed, like FNV-1a.
pub fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// What the choice may depend on besides the route.
pub struct Facts<'a> {
    /// The client address (see `proxy::policy::client_addr`), for `iphash`.
    pub client: IpAddr,
    /// The value of the request's `hipache_tpc_backend` cookie, when `sticky` is on and it sent one.
    pub sticky: Option<&'a [u8]>,
}

fn usable(route: &Route, i: usize) -> bool {
    route.options.weight(i) > 0 && !route.is_dead(i)
}

/// The index of a usable backend, or `None` when there is none.
pub fn choose(route: &Route, rng: &Rng, facts: &Facts<'_>) -> Option<usize> {
    let o = &route.options;
    let n = route.backends.len();
    if o.sticky {
        if let Some(id) = facts.sticky {
            if let Some(i) = route
                .sticky_ids
                .iter()
                .position(|s| s.as_slice() == id)
                .filter(|&i| usable(route, i))
            {
                return Some(i);
            }
        }
    }
    match o.balance {
        Balance::Random if o.weights.is_none() => choose_backend(route, rng),
        Balance::Random => {
            let total: u64 = (0..n)
                .filter(|&i| usable(route, i))
                .map(|i| u64::from(o.weight(i)))
                .sum();
            if total == 0 {
                return None;
            }
            let pick = rng.next_u64() % total;
            nth_by_weight(route, pick)
        }
        Balance::RoundRobin => {
            let total: u64 = (0..n)
                .filter(|&i| usable(route, i))
                .map(|i| u64::from(o.weight(i)))
                .sum();
            if total == 0 {
                return None;
            }
            let t = route.rr_next.get();
            route.rr_next.set(t.wrapping_add(1));
            nth_by_weight(route, t % total)
        }
        Balance::LeastConn => {
            // Fewest in flight per unit of weight; ties go round in turn.
            let start = route.rr_next.get() as usize;
            route.rr_next.set(route.rr_next.get().wrapping_add(1));
            let mut best: Option<(usize, u64, u64)> = None;
            for k in 0..n {
                let i = (start + k) % n;
                if !usable(route, i) {
                    continue;
                }
                let load = u64::from(route.in_flight.get(i).map_or(0, Cell::get)) + 1;
                let w = u64::from(o.weight(i));
                // load/w < best_load/best_w
                if best.is_none_or(|(_, bl, bw)| load * bw < bl * w) {
                    best = Some((i, load, w));
                }
            }
            best.map(|(i, _, _)| i)
        }
        Balance::IpHash => {
            let mut octets = [0u8; 16];
            let ip: &[u8] = match facts.client {
                IpAddr::V4(v4) => {
                    octets[..4].copy_from_slice(&v4.octets());
                    &octets[..4]
                }
                IpAddr::V6(v6) => {
                    octets = v6.octets();
                    &octets
                }
            };
            let base = fnv1a(FNV_OFFSET, ip);
            let mut best: Option<(usize, f64)> = None;
            for i in 0..n {
                if !usable(route, i) {
                    continue;
                }
                let h = mix64(fnv1a(base, route.backends[i].url.as_bytes()));
                // Weighted rendezvous: w / -ln(u), u uniform in (0, 1) from the hash.
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                let score = f64::from(o.weight(i)) / -u.ln();
                if best.is_none_or(|(_, s)| score > s) {
                    best = Some((i, score));
                }
            }
            best.map(|(i, _)| i)
        }
    }
}

/// The usable backend holding position `pick` when usable backends take `weight` positions each.
fn nth_by_weight(route: &Route, mut pick: u64) -> Option<usize> {
    for i in 0..route.backends.len() {
        if !usable(route, i) {
            continue;
        }
        let w = u64::from(route.options.weight(i));
        if pick < w {
            return Some(i);
        }
        pick -= w;
    }
    None
}

/// Counts one request in flight to a backend for `leastconn`, for as long as it lives.
pub struct InFlight {
    route: Rc<Route>,
    index: usize,
}

impl InFlight {
    /// `None` unless the route balances by least connections.
    pub fn enter(route: &Rc<Route>, index: usize) -> Option<InFlight> {
        let c = route.in_flight.get(index)?;
        c.set(c.get().saturating_add(1));
        Some(InFlight {
            route: route.clone(),
            index,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(c) = self.route.in_flight.get(self.index) {
            c.set(c.get().saturating_sub(1));
        }
    }
}

/// Whether the cookie value the client sent already names backend `index` (no Set-Cookie needed).
pub fn sticky_matches(route: &Route, index: usize, sent: Option<&[u8]>) -> bool {
    match (route.sticky_ids.get(index), sent) {
        (Some(id), Some(sent)) => id.as_slice() == sent,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn route(fields: &[(&str, &str)], n: usize) -> Route {
        let mut list = vec!["id".to_string()];
        for i in 0..n {
            // Backends that differ only in the last digits of the port, as on one test host.
            list.push(format!("http://127.0.0.1:{}", 20_001 + i));
        }
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Route::with_options("x", &list, &[], &fields)
    }

    fn facts(ip: u8) -> Facts<'static> {
        Facts {
            client: IpAddr::V4(Ipv4Addr::new(192, 168, 0, ip)),
            sticky: None,
        }
    }

    #[test]
    fn roundrobin_alternates_and_skips_dead_and_drained() {
        let r = route(&[("balance", "roundrobin"), ("weights", "1,0,1")], 3);
        let rng = Rng::new(1);
        let picks: Vec<usize> = (0..6)
            .map(|_| choose(&r, &rng, &facts(1)).unwrap())
            .collect();
        assert_eq!(picks, [0, 2, 0, 2, 0, 2]);
        r.mark_dead(2, std::time::Duration::from_secs(10));
        assert_eq!(choose(&r, &rng, &facts(1)), Some(0));
        r.mark_dead(0, std::time::Duration::from_secs(10));
        assert_eq!(
            choose(&r, &rng, &facts(1)),
            None,
            "the drained one is never chosen"
        );
    }

    #[test]
    fn weights_share_out() {
        let r = route(&[("weights", "3,1")], 2);
        let rng = Rng::new(9);
        let mut seen = [0; 2];
        for _ in 0..4000 {
            seen[choose(&r, &rng, &facts(1)).unwrap()] += 1;
        }
        assert!(seen[0] > 2700 && seen[0] < 3300, "{seen:?}");
    }

    #[test]
    fn iphash_is_stable_and_moves_only_the_removed_backends_clients() {
        let r4 = route(&[("balance", "iphash")], 4);
        let rng = Rng::new(1);
        let before: Vec<usize> = (0..200)
            .map(|ip| choose(&r4, &rng, &facts(ip)).unwrap())
            .collect();
        let again: Vec<usize> = (0..200)
            .map(|ip| choose(&r4, &rng, &facts(ip)).unwrap())
            .collect();
        assert_eq!(before, again);
        let mut counts = [0; 4];
        before.iter().for_each(|&i| counts[i] += 1);
        assert!(counts.iter().all(|&c| c > 30), "{counts:?}");
        r4.mark_dead(1, std::time::Duration::from_secs(10));
        for ip in 0..200u8 {
            let now = choose(&r4, &rng, &facts(ip)).unwrap();
            if before[ip as usize] != 1 {
                assert_eq!(now, before[ip as usize], "client {ip} moved");
            } else {
                assert_ne!(now, 1);
            }
        }
    }

    #[test]
    fn leastconn_prefers_the_idle_backend() {
        let r = Rc::new(route(&[("balance", "leastconn")], 2));
        let rng = Rng::new(1);
        let _busy = InFlight::enter(&r, 0);
        for _ in 0..5 {
            assert_eq!(choose(&r, &rng, &facts(1)), Some(1));
        }
        drop(_busy);
        let a = choose(&r, &rng, &facts(1));
        let b = choose(&r, &rng, &facts(1));
        assert_ne!(a, b, "ties go round");
    }

    #[test]
    fn sticky_follows_the_cookie_unless_dead() {
        let r = route(&[("sticky", "cookie")], 3);
        let rng = Rng::new(1);
        let id = r.sticky_ids[2];
        let f = Facts {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            sticky: Some(&id),
        };
        for _ in 0..20 {
            assert_eq!(choose(&r, &rng, &f), Some(2));
        }
        assert!(sticky_matches(&r, 2, Some(&id)));
        r.mark_dead(2, std::time::Duration::from_secs(10));
        for _ in 0..20 {
            assert_ne!(choose(&r, &rng, &f), Some(2));
        }
    }
}
