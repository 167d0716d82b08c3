//! Test harness shared by the integration tests: real processes and real sockets only.
//!
//! - [`RedisServer`]: a private `redis-server` on a free port (killed on drop).
//! - [`Backend`]: a small HTTP/1.1 server in a thread, with scripted behaviours chosen by path.
//! - [`Proxy`]: the real `hipache-tpc` binary with a generated configuration (SIGTERM on drop).
//! - [`client`]: raw-socket HTTP clients (so malformed input can be sent byte for byte).
//! - [`unix_backend`]: an HTTP/1.1 backend on a unix socket (for `unix:` entries).
//! - [`admin`]: a client of the admin listener; [`pybackend`]: a backend in its own (freezable) process.
#![allow(dead_code)]

pub mod admin;
pub mod backend;
pub mod client;
pub mod h2client;
pub mod pebble;
pub mod proxy;
pub mod pybackend;
pub mod redis_server;
pub mod sentinel;
pub mod tls;
pub mod unix_backend;
pub mod ws;

#[allow(unused_imports)]
pub use backend::Backend;
#[allow(unused_imports)]
pub use client::{get, Response};
pub use proxy::Proxy;
pub use redis_server::RedisServer;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that nothing listens on, below the ephemeral range so outgoing connections
/// do not take it meanwhile; distinct within this test process.
pub fn free_port() -> u16 {
    // Ports 20000..32000, from a per-process start, wrapping around at the top: a file that takes
    // more than 30 ports must not run out because its process id put its start near 32000.
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 400) as u16 * 30;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = 20_000 + (start + n) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("ran out of test ports");
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A fresh temporary directory (removed on drop).
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU16 = AtomicU16::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hipache-tpc-test-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
