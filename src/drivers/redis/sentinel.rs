//! Redis Sentinel (README "Running Redis for a fleet"): which server a `redis+sentinel://` endpoint
//! means right now, and moving every connection of this thread when the sentinels switch masters.
//!
//! - [`resolve`] asks the sentinels, in turn, for the master's address (`SENTINEL
//!   get-master-addr-by-name`) or a healthy replica's (`SENTINEL replicas`), starting with the one that
//!   answered last. Every (re)connection of every Redis connection resolves anew, so a failed connection
//!   finds the new master by itself.
//! - A connection that is still open to the old master does not fail by itself (a demoted master stays
//!   up). So each thread that dials a Sentinel endpoint also runs one watcher per master name: it
//!   subscribes to `+switch-master` on a sentinel and, when the master moves (or when it finds, after a
//!   gap, that it moved), shuts down this thread's sockets to the old server; their owners reconnect
//!   through [`resolve`] and re-enable tracking as after any reconnect (everything cached before is
//!   treated as possibly stale: see README "How fresh routes are").
//!
//! Sockets are registered while their stream lives ([`Registration`] is dropped with it), so a shutdown
//! never reaches a descriptor number that was closed and reused. Everything here is per thread (no
//! locks); nothing blocks: every wait is bounded by the caller's timeout.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use log::{info, warn};
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use redis::Value;

use super::handshake::{exchange, Step};
use super::resp::RespReader;
use crate::config::driver_url::SentinelSpec;

/// A server found through the sentinels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub host: String,
    pub port: u16,
}

thread_local! {
    /// Sockets of this thread opened through the sentinels: (id, master name, server, fd).
    static SOCKETS: RefCell<Vec<(u64, String, Found, RawFd)>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
    /// Master names this thread runs a watcher for.
    static WATCHED: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// Failovers this thread has seen (`+switch-master` for a watched master).
    static FAILOVERS: Cell<u64> = const { Cell::new(0) };
    /// The sentinel that answered last (index into the spec's list), per thread.
    static PREFERRED: Cell<usize> = const { Cell::new(0) };
}

/// Failovers seen on this thread (for `/status`).
pub fn failovers_seen() -> u64 {
    FAILOVERS.with(Cell::get)
}

/// Keeps a socket in this thread's registry while its stream lives.
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        let id = self.0;
        SOCKETS.with(|s| s.borrow_mut().retain(|(i, ..)| *i != id));
    }
}

/// Registers an open socket to `server` (found for `master`); starts the thread's watcher for that
/// master if it has none.
pub fn register(spec: &SentinelSpec, server: Found, fd: RawFd, timeout: Duration) -> Registration {
    let id = NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    });
    SOCKETS.with(|s| s.borrow_mut().push((id, spec.master.clone(), server, fd)));
    let new = WATCHED.with(|w| w.borrow_mut().insert(spec.master.clone()));
    if new {
        // The watcher serves every Redis connection of the thread: a panic in it is the thread's.
        crate::common::task::spawn(
            crate::common::task::OnPanic::StopThread,
            watch(Rc::new(spec.clone()), timeout),
        );
    }
    Registration(id)
}

/// Shuts down this thread's sockets to `master` that are not connected to `now` (all of them with
/// `None`); returns how many.
fn move_off(master: &str, now: Option<&Found>) -> usize {
    SOCKETS.with(|s| {
        let s = s.borrow();
        let mut n = 0;
        for (_, m, server, fd) in s.iter() {
            if m == master && now != Some(server) {
                // SAFETY: the fd belongs to a stream that is still alive (its Registration is in the
                // list); shutting it down makes its owner see EOF and reconnect.
                unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
                n += 1;
            }
        }
        n
    })
}

async fn dial_sentinel(
    host: &str,
    port: u16,
    spec: &SentinelSpec,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let addrs = crate::dataplane::upstream::resolver::resolve(host, port)
        .await
        .map_err(|e| format!("cannot resolve the sentinel {host}: {e}"))?;
    let mut last = String::from("no address");
    for addr in addrs {
        match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(mut s)) => {
                let _ = s.set_nodelay(true);
                if let Some(pw) = &spec.sentinel_password {
                    let steps = [Step::required("AUTH", redis::cmd("AUTH").arg(pw).clone())];
                    exchange(&mut s, &steps, timeout)
                        .await
                        .map_err(|e| format!("sentinel {addr}: {e}"))?;
                }
                return Ok(s);
            }
            Ok(Err(e)) => last = format!("sentinel {addr}: {e}"),
            Err(_) => last = format!("sentinel {addr}: connect timed out"),
        }
    }
    Err(last)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `[ip, port]` → Found.
fn parse_addr(v: &Value) -> Option<Found> {
    let Value::Array(items) = v else {
        return None;
    };
    let host = text(items.first()?)?;
    let port = text(items.get(1)?)?.parse().ok()?;
    Some(Found { host, port })
}

/// The first replica whose flags say it is healthy, from `SENTINEL replicas` (flat field lists).
fn healthy_replica(v: &Value) -> Option<Found> {
    let Value::Array(replicas) = v else {
        return None;
    };
    replicas.iter().find_map(|r| {
        let Value::Array(fields) = r else {
            return None;
        };
        let mut ip = None;
        let mut port = None;
        let mut flags = String::new();
        for pair in fields.chunks(2) {
            match (pair.first().and_then(text).as_deref(), pair.get(1)) {
                (Some("ip"), Some(v)) => ip = text(v),
                (Some("port"), Some(v)) => port = text(v).and_then(|p| p.parse().ok()),
                (Some("flags"), Some(v)) => flags = text(v).unwrap_or_default(),
                _ => {}
            }
        }
        let bad = ["s_down", "o_down", "disconnected"];
        if flags.split(',').any(|f| bad.contains(&f)) {
            return None;
        }
        Some(Found {
            host: ip?,
            port: port?,
        })
    })
}

/// Asks one sentinel for the master's (or a replica's) address.
async fn ask(
    host: &str,
    port: u16,
    spec: &SentinelSpec,
    timeout: Duration,
) -> Result<Found, String> {
    let mut s = dial_sentinel(host, port, spec, timeout).await?;
    let cmd = if spec.replica {
        redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg(&spec.master)
            .clone()
    } else {
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&spec.master)
            .clone()
    };
    let (replies, _) = exchange(&mut s, &[Step::required("SENTINEL", cmd)], timeout)
        .await
        .map_err(|e| format!("sentinel {host}:{port}: {e}"))?;
    let reply = replies.first().unwrap_or(&Value::Nil);
    let found = if spec.replica {
        healthy_replica(reply)
    } else {
        parse_addr(reply)
    };
    found.ok_or_else(|| {
        format!(
            "sentinel {host}:{port} knows no {} for {:?}",
            if spec.replica {
                "healthy replica"
            } else {
                "master"
            },
            spec.master
        )
    })
}

/// The server the endpoint means now: asks each sentinel in turn (the last one that answered first).
pub async fn resolve(spec: &SentinelSpec, timeout: Duration) -> Result<Found, String> {
    let n = spec.sentinels.len();
    let start = PREFERRED.with(Cell::get) % n.max(1);
    let mut errors = Vec::new();
    for k in 0..n {
        let i = (start + k) % n;
        let (host, port) = &spec.sentinels[i];
        match ask(host, *port, spec, timeout).await {
            Ok(found) => {
                PREFERRED.with(|p| p.set(i));
                return Ok(found);
            }
            Err(e) => errors.push(e),
        }
    }
    Err(format!("no sentinel answered: {}", errors.join("; ")))
}

/// The role check after connecting to a server found through the sentinels: `ROLE` must say
/// `master` (or `slave` for a replica), else the sentinels' answer is already stale.
pub fn check_role(spec: &SentinelSpec, reply: &Value) -> Result<(), String> {
    let role = match reply {
        Value::Array(items) => items.first().and_then(text),
        _ => None,
    };
    let want = if spec.replica { "slave" } else { "master" };
    match role.as_deref() {
        Some(r) if r == want => Ok(()),
        Some(r) => Err(format!(
            "the server the sentinels named for {:?} is a {r}, not a {want} (a failover in progress)",
            spec.master
        )),
        None => Err("unexpected ROLE reply".into()),
    }
}

/// Follows `+switch-master` for `spec.master` on one sentinel at a time, forever.
async fn watch(spec: Rc<SentinelSpec>, timeout: Duration) {
    let mut backoff = Duration::from_millis(100);
    let mut next = 0usize;
    loop {
        let (host, port) = spec.sentinels[next % spec.sentinels.len()].clone();
        next += 1;
        match subscribe(&host, port, &spec, timeout).await {
            Ok(reason) => {
                warn!(
                    "sentinel {host}:{port}: +switch-master subscription lost ({reason}); trying the next sentinel"
                );
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                warn!(
                    "sentinel {host}:{port}: cannot follow failovers of {:?}: {e}",
                    spec.master
                );
            }
        }
        monoio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One subscription: after subscribing, checks that the registered sockets still point at the
/// master the sentinel names (a switch may have happened while unsubscribed), then moves them at
/// every `+switch-master` for our master. Returns why the subscription ended.
async fn subscribe(
    host: &str,
    port: u16,
    spec: &SentinelSpec,
    timeout: Duration,
) -> Result<String, String> {
    let mut s = dial_sentinel(host, port, spec, timeout).await?;
    let mut packed = Vec::new();
    redis::cmd("SUBSCRIBE")
        .arg("+switch-master")
        .write_packed_command(&mut packed);
    let (res, _) = s.write_all(packed).await;
    res.map_err(|e| e.to_string())?;
    if !spec.replica {
        if let Ok(now) = ask(host, port, spec, timeout).await {
            let moved = move_off(&spec.master, Some(&now));
            if moved > 0 {
                // A switch that happened while no subscription was up: a failover all the same.
                FAILOVERS.with(|f| f.set(f.get() + 1));
                info!(
                    "sentinel {host}:{port}: master {:?} is now {}:{}; moved {moved} connection(s)",
                    spec.master, now.host, now.port
                );
            }
        }
    }
    let mut reader = RespReader::new(Vec::new());
    loop {
        match reader.fill(&mut s).await {
            Ok(0) => return Ok("closed by the sentinel".into()),
            Ok(_) => {}
            Err(e) => return Ok(e.to_string()),
        }
        while let Some(v) = reader.next_value()? {
            // ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"]
            let Value::Array(items) = v else { continue };
            let Some(payload) = items.get(2).and_then(text) else {
                continue;
            };
            let parts: Vec<&str> = payload.split_whitespace().collect();
            if parts.len() != 5 || parts[0] != spec.master {
                continue;
            }
            let now = Found {
                host: parts[3].to_string(),
                port: parts[4].parse().unwrap_or(0),
            };
            FAILOVERS.with(|f| f.set(f.get() + 1));
            // Reads from a replica may go on where they are (a demoted master is a replica; a dead
            // one fails its connections, which then re-resolve); master connections move.
            let moved = if spec.replica {
                0
            } else {
                move_off(&spec.master, Some(&now))
            };
            info!(
                "sentinel {host}:{port}: failover of {:?}: {}:{} → {}:{}; moved {moved} connection(s) of this thread",
                spec.master, parts[1], parts[2], now.host, now.port
            );
        }
    }
}

/// The address to connect to for a found server.
pub async fn addresses(found: &Found) -> Result<Vec<SocketAddr>, String> {
    crate::dataplane::upstream::resolver::resolve(&found.host, found.port)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", found.host))
}
