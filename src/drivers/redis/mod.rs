//! Redis, spoken from monoio sockets: the redis crate packs commands and parses values, this module does
//! the I/O.
//!
//! - [`resp`]: finds where one RESP frame ends, so only complete frames reach the parser.
//! - [`connection`]: one pipelined connection per worker (and per role: reads, writes), with reconnect,
//!   AUTH and SELECT.
//! - [`routes`]: the route lookup (all candidate lists and the dead set in one round trip).
//! - [`sentinel`]: `redis+sentinel://`: finding the master (or a replica), following failovers.
//! - [`stream`]: the socket under every connection (TCP, TLS or a unix socket) and the dial function.
//! - [`subscriber`]: a pub/sub subscription on its own connection (the `dead` channel), with reconnect.
//!
//! Nothing here may block a worker thread: every wait is an `.await` on the worker's runtime.

pub mod connection;
pub mod handshake;
pub mod resp;
pub mod routes;
pub mod sentinel;
pub mod stream;
pub mod subscriber;
pub mod tracking;

pub use connection::{RedisClient, RedisError};
