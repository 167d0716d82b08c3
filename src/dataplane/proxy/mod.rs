//! The request phases, each in its own module, in the order a request meets them:
//!
//! 1. [`route`]: Host → route, through the worker's cache and the driver.
//! 2. [`choose`]: a live backend, uniformly at random; [`balance`] when the frontend has options, after
//!    [`policy`] admitted the request (README "Per-frontend options").
//! 3. [`forward`]: send, retry, relay (with [`headers`] for the rewritten heads).
//! 4. logging, in `http1::connection` once the exchange is over.
//!
//! [`error_pages`] builds the proxy's own answers. The HTTP/1 wire format is `http1`'s business.

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
pub mod tunnel;
pub mod upload;
