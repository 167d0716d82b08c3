//! A small, fast, per-worker pseudo-random generator (xorshift64*), used to pick backends uniformly.
//!
//! It is not cryptographic and must not be used for anything secret. Each worker owns its own state, so
//! there is no shared atomic on the request path.

use std::cell::Cell;

/// xorshift64* generator. `Cell` so that a shared `&Core` can draw numbers.
pub struct Rng {
    state: Cell<u64>,
}

impl Rng {
    /// Seeds from the clock and a per-worker salt; the state is never zero.
    pub fn new(salt: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        let seed = (nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1;
        Rng {
            state: Cell::new(seed),
        }
    }

    pub fn next_u64(&self) -> u64 {
        let mut x = self.state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by Lemire's multiply-shift; the bias is negligible for small n.
    pub fn below(&self, n: usize) -> usize {
        debug_assert!(n > 0);
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_covers_the_whole_range_and_stays_inside_it() {
        let rng = Rng::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..10_000 {
            seen[rng.below(5)] += 1;
        }
        for count in seen {
            assert!(
                (1_600..2_400).contains(&count),
                "skewed distribution: {seen:?}"
            );
        }
    }
}
