//! The control plane: what runs beside the workers, on its own thread, never on a worker core.
//!
//! - [`thread`]: the control thread (its own monoio runtime, restarted after a panic) that runs the
//!   rest.
//! - [`admin`]: the admin HTTP server: hipache-api's endpoints, `/status`, `/metrics`, the web console.
//! - [`healthcheck`]: the built-in hipache-hchecker: active probes that write dead marks to Redis.
//! - [`acme`]: automatic certificates (RFC 8555): orders, renewals, challenges, all through Redis.
//!
//! It reaches the workers only through Redis (dead marks, route keys, publishes) and reads their
//! relaxed metric slots; it never holds a reference to a worker's state.

pub mod acme;
pub mod admin;
pub mod healthcheck;
pub mod thread;
