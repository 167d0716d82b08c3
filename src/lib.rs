//! hipache-tpc: a thread-per-core HTTP and WebSocket reverse proxy routed by Hipache's Redis schema
//! (or a routes file holding the same data).
//!
//! # A map of the crate
//!
//! The folders are the planes. `ARCHITECTURE.md` walks one request from accept to access-log line
//! through the files named here; `src/dataplane/http1/LIFECYCLE.md` follows one client connection.
//!
//! **Data plane** ([`dataplane`]): one pinned monoio runtime per core; nothing in it is shared
//! mutably with another core.
//! - [`dataplane::worker`]: the per-core thread, its accept loops and state.
//! - [`dataplane::http1`], [`dataplane::h2`]: client connections (HTTP/1.1, HTTP/2) and the backend
//!   side's HTTP/1.1 framing.
//! - [`dataplane::proxy`]: the request phases (route → choose → forward → relay or tunnel → log).
//! - [`dataplane::routing`]: host normalisation, candidate keys, the per-core route cache.
//! - [`dataplane::upstream`]: keep-alive backend connections, name resolution.
//! - [`dataplane::access_log`], [`dataplane::buffers`].
//!
//! **Drivers** ([`drivers`]): where routes come from: [`drivers::redis`] (RESP on monoio sockets,
//! client-side caching, Sentinel, TLS) and [`drivers::file`] (a JSON routes file and its watcher).
//!
//! **Control plane** ([`control`]): its own thread, never a worker core; reaches the workers only
//! through Redis: [`control::admin`] (hipache-api endpoints, `/status`, `/metrics`, the console) and
//! [`control::healthcheck`] (the built-in hipache-hchecker).
//!
//! **Process** ([`process`]): start-up, the supervisor of worker threads, listeners, reloads,
//! signals, privileges, systemd notifications.
//!
//! **Shared by all**: [`config`] (the Hipache-compatible configuration file), [`tls`] (certificates
//! and rustls configurations), [`common`] (leaf pieces: the spawn function, metric slots, clocks).

pub mod common;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod drivers;
pub mod process;
pub mod tls;
