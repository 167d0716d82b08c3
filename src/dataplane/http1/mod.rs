//! HTTP/1.x on both sides of the proxy, written on httparse (see `LIFECYCLE.md` beside this file).
//!
//! - [`head`]: parsing and validating request and response heads (framing, keep-alive, hop-by-hop).
//! - [`chunked`]: the chunked-coding scanner (forward or decode).
//! - [`body`]: body framing state shared by both directions.
//! - [`io`]: reads and writes with timeouts on monoio's owned buffers, and the lingering close after an
//!   error answer (also used by the admin server).
//! - [`connection`]: the client connection loop: read a head, run the request phases, log, repeat.
//!
//! This layer knows HTTP framing, not routing: which backend to use is `proxy`'s decision.

pub mod body;
pub mod chunked;
pub mod connection;
pub mod head;
pub mod io;
