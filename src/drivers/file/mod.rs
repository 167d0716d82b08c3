//! The file driver: routes from a JSON file (`driver: "file:routes.json"`) instead of Redis, for small
//! sites, tests, a first run without Redis, and routes kept in version control. The file holds what
//! Redis would: each frontend name mapped to its list ([`table`] documents the format).
//!
//! The driver only supplies lists and dead sets. Host normalisation, the candidate order, the route
//! cache, random choice, retries, error pages, headers and the access log are the Redis driver's code
//! paths (`route_store::RouteStore` is the only place that tells the drivers apart).
//!
//! - [`table`]: the file format, parsed into an immutable [`RouteTable`], and the candidate look-up.
//! - [`watcher`]: the control-plane thread that notices edits and hands new tables to the workers.
//! - [`store`]: the worker side ([`FileRoutes`]): the worker's own table, its in-memory dead marks.
//! - [`dead`]: the dead sets, with Redis's TTL rules.
//!
//! **Why one watcher thread, not a poll in every worker.** Parsing a large file takes milliseconds to
//! seconds of CPU; on a worker thread it would stall every connection of that core, and with N workers
//! it would be done N times. A single thread `stat`s the file every 200 ms, parses a changed file once,
//! off the request path, and sends each worker an `Arc` of the immutable table through that worker's own
//! channel. Each worker drains its channel from a small background task every 100 ms (a non-blocking
//! `try_recv`), swaps its `Arc` and clears its route cache, so no request ever sees the old routes after
//! the swap, and an edit is live within about 300 ms. Requests read the table through the worker's own
//! `Arc`: no lock is shared between workers, and an atomic reference count is touched only when a table
//! is swapped. Polling rather than inotify keeps it dependency-free and correct for every way a file gets
//! replaced (in-place writes, rename over it, symlink swaps as in Kubernetes ConfigMaps, network file
//! systems).
//!
//! Nothing in this module blocks a worker or panics on a bad file: a file that cannot be read or parsed
//! at start-up is an error for `main` (exit 1); later, the previous routes stay in force.

pub mod dead;
pub mod store;
pub mod table;
pub mod watcher;

pub use store::{FileRoutes, RouteFeed};
pub use table::{RouteTable, RoutesFileError};
