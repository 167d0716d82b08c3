//! Leaf building blocks used by both planes. Nothing here imports another module of the crate, so
//! anything may import these without making a cycle.
//!
//! - [`task`]: the one way to spawn a task on a runtime, with its panic policy.
//! - [`metrics`]: per-worker counter and histogram slots (relaxed atomics), rendered for Prometheus.
//! - [`local_sync`]: a single-thread notify for the tasks of one worker (oneshots and semaphores come
//!   from the local-sync crate).
//! - [`clock`]: unix time and the access-log timestamp; [`rng`]: a per-worker xorshift generator;
//!   [`fast_hash`]: the Fx hasher for maps whose keys are not attacker-chosen.
//! - [`percent`]: strict percent-decoding of driver URLs and admin API parameters.
//! - [`fault`]: a request that makes its worker panic, armed only in the test build.

pub mod clock;
pub mod fast_hash;
pub mod fault;
pub mod local_sync;
pub mod metrics;
pub mod percent;
pub mod rng;
pub mod task;
