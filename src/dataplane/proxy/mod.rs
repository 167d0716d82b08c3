//! The request phases, each in its own module, driven from one place, [`pipeline`], in the order a
//! request meets them:
//!
//! 1. [`route`]: Host → route, through the worker's cache and the driver.
//! 2. [`policy`]: the frontend's options admit, redirect or refuse (README "Per-frontend options").
//! 3. [`choose`]: a live backend, uniformly at random; [`balance`] when the frontend has options.
//! 4. [`forward`]: the attempts at backends, with retries ([`upload`] for the request body, [`headers`]
//!    for the rewritten heads).
//! 5. [`relay`]: the answer to the client; or [`tunnel`] after a WebSocket upgrade. Both move large
//!    reads between plain sockets with [`splice`] (no copy through user space).
//! 6. logging, at the end of [`pipeline::serve_request`].
//!
//! A failing phase returns a [`error::ProxyError`]; [`pipeline::fail_to_proxy`] alone turns it into an
//! answer ([`respond`], with pages from [`error_pages`]). The HTTP/1 wire format is `http1`'s business.

pub mod acme_challenge;
pub mod balance;
pub mod choose;
pub mod error;
pub mod error_pages;
pub mod forward;
pub mod headers;
pub mod limits;
pub mod pipeline;
pub mod policy;
pub mod relay;
pub mod respond;
pub mod route;
pub mod splice;
pub mod tunnel;
pub mod upload;
