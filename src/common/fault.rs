//! Test-only fault injection, compiled only with the `fault-injection` cargo feature (the test suite
//! enables it through a dev-dependency on this crate; `cargo build --release` leaves it out) and armed
//! only when `HIPACHE_TPC_FAULT_INJECTION=1` is set as well.
//!
//! A request for the host [`PANIC_HOST`] makes the worker that reads it panic, so that the tests can
//! prove a crashed worker is replaced while the others keep serving. An HTTP/2 stream for
//! [`PANIC_H2_HOST`] panics in its stream task, to prove that such a panic costs that stream only.
//! Nothing else here.

use std::sync::OnceLock;

/// The Host that makes a worker panic.
pub const PANIC_HOST: &[u8] = b"panic.fault-injection.invalid";

/// The `:authority` that makes an HTTP/2 stream task panic.
pub const PANIC_H2_HOST: &[u8] = b"panic-h2.fault-injection.invalid";

/// Whether the environment arms fault injection (read once).
pub fn armed() -> bool {
    static ARMED: OnceLock<bool> = OnceLock::new();
    *ARMED.get_or_init(|| std::env::var("HIPACHE_TPC_FAULT_INJECTION").is_ok_and(|v| v == "1"))
}

/// Panics (on purpose) when the request is for [`PANIC_HOST`] and fault injection is armed.
pub fn maybe_panic(host: &[u8], worker: usize) {
    if host.eq_ignore_ascii_case(PANIC_HOST) && armed() {
        panic!("fault injection: worker {worker} was asked to panic");
    }
}

/// Panics (on purpose) in an HTTP/2 stream task for [`PANIC_H2_HOST`] when fault injection is armed.
pub fn maybe_panic_h2(authority: &[u8], worker: usize) {
    if authority.eq_ignore_ascii_case(PANIC_H2_HOST) && armed() {
        panic!("fault injection: an HTTP/2 stream task of worker {worker} was asked to panic");
    }
}
