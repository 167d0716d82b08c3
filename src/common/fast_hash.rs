//! Non-keyed hashers, from crates already in the tree: the Fx hash (fxhash, monoio's) for maps whose
//! keys do not come from clients, such as backend addresses read from Redis, and FNV-1a (fnv,
//! monoio-http's) where the same value is needed in every process.
//!
//! Neither may be used for keys a client chooses (Host headers): without a random key, colliding
//! keys could be crafted. Those maps keep std's SipHash.

use std::hash::Hasher;

/// Fx hasher (rustc's multiply-rotate hash).
pub use fxhash::FxHasher;

/// `HashMap<K, V, FxBuild>` for trusted keys.
pub type FxBuild = fxhash::FxBuildHasher;

/// FNV-1a 64 offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 of `bytes`, continuing from `hash` (start with [`FNV_OFFSET`]). Fixed: the same value in
/// every process, which `iphash` and sticky cookies rely on.
pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    let mut h = fnv::FnvHasher::with_key(hash);
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_gives_the_published_values() {
        // FNV-1a 64 test vectors (draft-eastlake-fnv): sticky cookies and iphash depend on them.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(
            fnv1a(fnv1a(FNV_OFFSET, b"foo"), b"bar"),
            0x8594_4171_f739_67e8
        );
    }
}
