//! The data plane: everything that runs on a worker core and touches client traffic.
//!
//! One request, in the order it meets these modules (ARCHITECTURE.md walks it with file anchors):
//!
//! - [`worker`]: one pinned thread per core, its monoio runtime, its accept loops; [`core`]: the
//!   per-core state every connection borrows.
//! - [`session`]: the types of one client connection (stream, listener, buffers, exchange) that the
//!   connection loops and the phases share.
//! - [`http1`] / [`h2`]: the client connection, HTTP/1.1 or HTTP/2, and the backend side's HTTP/1.1.
//! - [`proxy`]: the request phases: route, choose a backend, forward (retries), relay or tunnel, and
//!   the proxy's own error answers.
//! - [`routing`]: host normalisation, candidate keys, the per-core route cache and its driver look-up.
//! - [`upstream`]: keep-alive connections to backends and name resolution.
//! - [`net`]: what comes before HTTP on a connection: the PROXY protocol header, `trustedProxies`.
//! - [`access_log`]: the per-core buffered access log; [`buffers`]: per-core I/O buffer pools.
//!
//! Nothing here shares mutable state with another core, blocks its thread, or talks to the control
//! plane except through Redis (or the routes file's immutable tables handed over by its watcher).

pub mod access_log;
pub mod buffers;
pub mod core;
pub mod h2;
pub mod http1;
pub mod net;
pub mod proxy;
pub mod routing;
pub mod session;
pub mod upstream;
pub mod worker;
