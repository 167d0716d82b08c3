//! hipache-tpc: a thread-per-core HTTP reverse proxy routed by Hipache's Redis schema (or a routes file
//! holding the same data).
//!
//! The crate is split into the **data plane**, which handles client traffic on each worker thread, and
//! the **control plane**, which decides what the data plane does (configuration, Redis, signals).
//! `ARCHITECTURE.md` walks one request through the modules below.
//!
//! Data plane (runs on every worker, never shares mutable state across threads):
//! - [`worker`]: one monoio runtime per core, its listeners, and the per-core state (`Worker`).
//! - [`http1`]: HTTP/1.1 framing on both sides (heads, bodies, the client connection loop).
//! - [`proxy`]: the request phases: route, choose a backend, forward, error pages.
//! - [`routing`]: host normalisation, candidate keys, the per-worker route cache.
//! - [`backend_pool`]: per-worker keep-alive connections to backends.
//! - [`access_log`]: per-worker buffered access log.
//!
//! Control plane:
//! - [`config`]: the Hipache-compatible configuration file.
//! - [`control`]: the control thread (its own runtime) running [`admin`] (hipache-api endpoints,
//!   `/metrics`, `/status`) and [`healthcheck`] (the built-in hipache-hchecker).
//! - [`redis`]: the per-worker Redis connection (RESP over monoio sockets) and route queries.
//! - [`file_routes`]: the file driver (routes from a JSON file, hot-reloaded by a watcher thread).
//! - [`server`], [`listeners`], [`signals`], [`shutdown`]: process start-up, sockets, signals, draining.
//! - [`privileges`]: the switch from root to `user`/`group` after binding.
//! - [`supervisor`]: worker threads, their replacement after a panic, and reloads.
//! - [`task`]: the one spawn function, which contains panics.
//! - [`handover`]: the reload protocol (listening sockets handed to a successor process).
//! - [`sd_notify`]: systemd readiness and status notifications.

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod backend_pool;
pub mod buffers;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod fast_hash;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod file_routes;
pub mod h2;
pub mod handover;
pub mod healthcheck;
pub mod http1;
pub mod listeners;
pub mod local_sync;
pub mod metrics;
pub mod pid_file;
pub mod preflight;
pub mod privileges;
pub mod proxy;
pub mod redis;
pub mod resolver;
pub mod rng;
pub mod route_store;
pub mod routing;
pub mod sd_notify;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod supervisor;
pub mod task;
pub mod tls;
pub mod worker;
