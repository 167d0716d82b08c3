//! Test-only fault injection. The code is in every build, but only the test build
//! `hipache-tpc-fault-injection` (`examples/fault_injection.rs`, built by `cargo test`, never by
//! `cargo build` or `cargo install`) calls [`arm_from_env`], and even there it is armed only when
//! `HIPACHE_TPC_FAULT_INJECTION=1` is set as well. The operator's binary, `target/release/hipache-tpc`,
//! can never be armed.
//!
//! A request for the host [`PANIC_HOST`] makes the worker that reads it panic, so that the tests can
//! prove a crashed worker is replaced while the others keep serving. An HTTP/2 stream for
//! [`PANIC_H2_HOST`] panics in its stream task, to prove that such a panic costs that stream only.
//! Nothing else here. The cost in the real binary is one relaxed load of a `false` per request.

use std::sync::atomic::{AtomicBool, Ordering};

/// The Host that makes a worker panic.
pub const PANIC_HOST: &[u8] = b"panic.fault-injection.invalid";

/// The `:authority` that makes an HTTP/2 stream task panic.
pub const PANIC_H2_HOST: &[u8] = b"panic-h2.fault-injection.invalid";

static ARMED: AtomicBool = AtomicBool::new(false);

/// Called by the test build only, before anything starts: arms fault injection when the environment
/// says `HIPACHE_TPC_FAULT_INJECTION=1`.
pub fn arm_from_env() {
    if std::env::var("HIPACHE_TPC_FAULT_INJECTION").is_ok_and(|v| v == "1") {
        ARMED.store(true, Ordering::Relaxed);
    }
}

/// Whether fault injection is armed (only ever in the test build).
#[inline]
pub fn armed() -> bool {
    ARMED.load(Ordering::Relaxed)
}

/// Panics (on purpose) when the request is for [`PANIC_HOST`] and fault injection is armed.
#[inline]
pub fn maybe_panic(host: &[u8], worker: usize) {
    if armed() && host.eq_ignore_ascii_case(PANIC_HOST) {
        panic!("fault injection: worker {worker} was asked to panic");
    }
}

/// Panics (on purpose) in an HTTP/2 stream task for [`PANIC_H2_HOST`] when fault injection is armed.
#[inline]
pub fn maybe_panic_h2(authority: &[u8], worker: usize) {
    if armed() && authority.eq_ignore_ascii_case(PANIC_H2_HOST) {
        panic!("fault injection: an HTTP/2 stream task of worker {worker} was asked to panic");
    }
}
