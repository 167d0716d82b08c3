//! Phase 2, choose a backend: uniformly at random among the backends not marked dead (docs/compatibility.md §2.5).
//!
//! Pure function of the route and the worker's generator; no I/O.

use crate::common::rng::Rng;
use crate::dataplane::routing::Route;

/// The index of a live backend, or `None` when every backend is dead (or there are none).
pub fn choose_backend(route: &Route, rng: &Rng) -> Option<usize> {
    let n = route.backends.len();
    if n == 0 {
        return None;
    }
    // Common case: nothing dead, one draw.
    let alive = route.alive_count();
    if alive == 0 {
        return None;
    }
    let mut k = rng.below(alive);
    for i in 0..n {
        if !route.is_dead(i) {
            if k == 0 {
                return Some(i);
            }
            k -= 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_picks_dead_and_covers_the_rest() {
        let list: Vec<String> = ["id", "http://a:1", "http://b:2", "http://c:3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let route = Route::new("x", &list, &[1]);
        let rng = Rng::new(3);
        let mut seen = [0; 3];
        for _ in 0..3000 {
            seen[choose_backend(&route, &rng).unwrap()] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(seen[0] > 1200 && seen[2] > 1200, "{seen:?}");
        let only_id = Route::new("x", &["id".to_string()], &[]);
        assert_eq!(choose_backend(&only_id, &rng), None);
    }
}
