//! Routing data: which backends serve a host. Host normalisation and candidate keys ([`host`]), the
//! route type and backend URL parsing ([`route`]), and the per-worker route cache ([`cache`]).
//!
//! Nothing here does I/O; lookups in Redis live in `crate::redis::routes`, and the request-time decision
//! (400/502, random choice) in `crate::proxy`.

pub mod cache;
pub mod host;
pub mod options;
pub mod route;

pub use route::{Backend, BackendTarget, Lookup, Route};
