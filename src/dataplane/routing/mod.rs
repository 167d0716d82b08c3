//! Routing data: which backends serve a host. Host normalisation and candidate keys ([`host`]), the
//! route type and backend URL parsing ([`route`]), the per-worker route cache ([`cache`]), single flight ([`flight`]), and
//! [`store`], the one place that asks the driver (Redis or the routes file) on a cache miss.
//!
//! Nothing here but [`store`] does I/O; lookups in Redis live in `crate::drivers::redis::routes`, and the request-time decision
//! (400/502, random choice) in `crate::dataplane::proxy`.

pub mod cache;
pub mod flight;
pub mod host;
pub mod options;
pub mod route;
pub mod store;

pub use route::{Backend, BackendTarget, Lookup, Route};

/// Most elements read from a frontend list: the identifier and 256 backends.
/// (Drivers read no more; per-frontend `weights` are bounded by it too.)
pub const MAX_FRONTEND_ENTRIES: usize = 257;
