//! The backend side of a worker: [`pool`] keeps its keep-alive connections to backends (at most
//! `server.maxSockets` per backend), [`resolver`] turns backend host names into addresses without
//! blocking the worker, [`stream`] is a backend's address and socket (TCP or unix). Speaking HTTP to a backend is `http1`'s business; choosing one is `proxy`'s.

pub mod pool;
pub mod resolver;
pub mod stream;
