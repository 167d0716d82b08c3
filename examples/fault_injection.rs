//! `hipache-tpc-fault-injection`: the test build of hipache-tpc. The same program as `src/main.rs`,
//! with fault injection armed when `HIPACHE_TPC_FAULT_INJECTION=1` (see `src/common/fault.rs`), so
//! that the tests can make a worker panic and watch it be replaced.
//!
//! An example rather than a binary so that `cargo test` builds it (into
//! `target/release/examples/`) and `cargo build` / `cargo install` never do: the binary an operator
//! installs is never a test build.

#[path = "../src/main.rs"]
mod hipache_main;

/// What `scripts/install.sh` looks for to refuse this build.
static TEST_BUILD_MARKER: &str = "HIPACHE-TPC-TEST-BUILD-ARMS-FAULT-INJECTION";

fn main() {
    // Kept in the binary (the linker would drop an unused string).
    std::hint::black_box(TEST_BUILD_MARKER);
    hipache_tpc::common::fault::arm_from_env();
    hipache_main::main();
}
