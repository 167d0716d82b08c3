//! Where routes come from: the drivers. [`redis`] speaks RESP on monoio sockets (one read and one
//! write connection per worker, client-side-caching invalidations, Sentinel, TLS, unix sockets);
//! [`file`] serves the same data from a JSON routes file, hot-reloaded by a watcher thread.
//!
//! Drivers only fetch and write data (lists, dead marks, publishes); the decisions made with it
//! (which backend, which status) belong to the data plane's `proxy` and `routing`.

pub mod file;
pub mod redis;
