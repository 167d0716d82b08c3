//! Where frontend lists and dead sets come from: the driver, Redis or a routes file. The request path
//! only sees `lookup` and `mark_dead`; everything after them (the route cache, random choice, retries,
//! error pages, the access log) is shared by both drivers.
//!
//! Runs on a worker; every method is non-blocking (awaits on the worker's Redis connections, or reads
//! the worker's in-memory copy of the routes file).

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use log::{debug, warn};
use redis::Value;

use crate::common::clock::unix_now;
use crate::dataplane::routing::host::candidates;
use crate::dataplane::routing::Lookup;
use crate::drivers::file::FileRoutes;
use crate::drivers::redis::{routes, RedisClient, RedisError};

/// A checker's `hchecker_ping` younger than this means it owns the dead sets (docs/compatibility.md §3).
pub const CHECKER_FRESH_SECS: u64 = 30;
/// How often the proxy looks at `hchecker_ping`.
pub const CHECKER_POLL: Duration = Duration::from_secs(30);

/// The Redis driver of one worker.
pub struct RedisRoutes {
    pub read: RedisClient,
    pub write: RedisClient,
    pub prefix: String,
    /// An active health checker is alive: passive marks only publish.
    pub checker_alive: Cell<bool>,
    /// This process runs the built-in checker (`healthcheck.enabled`): it owns the dead sets from the
    /// start, without waiting for `hchecker_ping` to be seen.
    pub local_checker: bool,
    pub dead_ttl: u64,
}

/// The driver of one worker.
pub enum RouteStore {
    Redis(Rc<RedisRoutes>),
    /// A routes file: lists from the worker's copy of the table, dead marks in the worker's memory.
    File(FileRoutes),
}

impl RouteStore {
    /// Fetches every candidate list for `host` and its dead set: in one round trip to Redis, or from the
    /// worker's routes table without I/O (the file driver never fails).
    pub async fn lookup(&self, host: &str) -> Result<Lookup, RedisError> {
        match self {
            RouteStore::Redis(r) => {
                let cands = candidates(host);
                let (packed, expect) = routes::pack_lookup(&r.prefix, host, &cands);
                let replies = r.read.query(&packed, expect).await?;
                routes::parse_lookup(&cands, replies)
            }
            RouteStore::File(f) => Ok(f.lookup(host)),
        }
    }

    /// True when the driver can currently answer lookups.
    pub fn is_up(&self) -> bool {
        match self {
            RouteStore::Redis(r) => r.read.is_up(),
            RouteStore::File(_) => true,
        }
    }

    /// Records a passive failure (docs/compatibility.md §3). Redis: `SADD` + `EXPIRE` on `dead:<host>` unless an active
    /// checker owns the sets, and always `PUBLISH dead host;url;index;count`; fire and forget, the request
    /// does not wait for Redis. File: a mark in this worker's memory, with the same TTL rules.
    pub fn mark_dead(&self, host: &str, url: &str, index: usize, count: usize) {
        match self {
            RouteStore::File(f) => f.mark_dead(host, url, index),
            RouteStore::Redis(r) => {
                let mut pipe = redis::pipe();
                let mut expect = 1;
                let mut commands: &[&str] = &["PUBLISH"];
                if !r.checker_alive.get() {
                    let key = format!("{}dead:{host}", r.prefix);
                    pipe.cmd("SADD").arg(&key).arg(index);
                    pipe.cmd("EXPIRE").arg(&key).arg(r.dead_ttl);
                    expect += 2;
                    commands = &["SADD", "EXPIRE", "PUBLISH"];
                }
                pipe.cmd("PUBLISH")
                    .arg("dead")
                    .arg(format!("{host};{url};{index};{count}"));
                let packed = pipe.get_packed_pipeline();
                let write = r.write.clone();
                let host = host.to_string();
                crate::common::task::spawn(crate::common::task::OnPanic::EndTask, async move {
                    match write.query(&packed, expect).await {
                        Ok(replies) => {
                            for (v, command) in replies.iter().zip(commands) {
                                if let Value::ServerError(e) = v {
                                    // NOPERM: the ACL user lacks the command (README "Running
                                    // Redis for a fleet" gives the rule a proxy needs).
                                    warn!(
                                        "dead mark for {host}: {command} refused by Redis: {} {}",
                                        e.code(),
                                        e.details().unwrap_or("")
                                    );
                                }
                            }
                        }
                        Err(e) => debug!("dead mark for {host} not written: {e}"),
                    }
                });
            }
        }
    }

    /// Polls `hchecker_ping` forever (spawned once per worker; returns at once for the file driver,
    /// which has no active checker).
    pub async fn watch_checker(self: Rc<Self>) {
        let RouteStore::Redis(r) = &*self else {
            return;
        };
        let mut packed = Vec::new();
        redis::cmd("GET")
            .arg("hchecker_ping")
            .write_packed_command(&mut packed);
        loop {
            let pause = match r.read.query(&packed, 1).await {
                Ok(mut replies) => {
                    let alive = r.local_checker
                        || match replies.pop() {
                            Some(Value::BulkString(b)) => std::str::from_utf8(&b)
                                .ok()
                                .and_then(|s| s.trim().parse::<u64>().ok())
                                .is_some_and(|ping| {
                                    unix_now().saturating_sub(ping) <= CHECKER_FRESH_SECS
                                }),
                            _ => false,
                        };
                    if alive != r.checker_alive.get() {
                        debug!(
                            "active health checker {}",
                            if alive {
                                "detected: passive marks only publish"
                            } else {
                                "gone: passive marks write dead sets"
                            }
                        );
                        r.checker_alive.set(alive);
                    }
                    CHECKER_POLL
                }
                // Redis not reachable (yet): look again soon rather than in 30 s.
                Err(_) => Duration::from_secs(1),
            };
            monoio::time::sleep(pause).await;
        }
    }
}
