//! Per-worker keep-alive connections to backends, at most `server.maxSockets` per backend address.
//!
//! `acquire` returns the most recently used idle connection (LIFO keeps few connections warm), or
//! connects a new one within the connect timeout, or, when the limit is reached, waits briefly for one to
//! be released and then gives up (the client gets 503): there is never an unbounded queue. A connection
//! comes back with `release(reusable)`; dropping it without release closes it and frees its slot.
//! Idle connections older than `backendIdleTimeout` are closed by a sweeper; one that idled for a while
//! is probed with a non-blocking `MSG_PEEK` before reuse, so a connection the backend closed is not used.
//!
//! Owned by one worker; no locks. Backend host names are resolved off the worker thread and cached here.
//!
//! Pools are keyed by backend addresses from Redis data, so their number is bounded ([`MAX_POOLS`] per
//! worker): a new backend beyond it takes the place of a pool with no connection in use (its idle
//! connections closed), or, if every pool is busy, gets `Saturated` (503).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::fast_hash::FxBuild;
use crate::local_sync::{oneshot, Sender};
use crate::routing::BackendTarget;

/// How long a name resolution is trusted.
const DNS_TTL: Duration = Duration::from_secs(30);
/// Connections idle longer than this are probed before reuse.
const PROBE_AFTER: Duration = Duration::from_millis(500);

/// Most backend pools one worker keeps (README, "Limits").
pub const MAX_POOLS: usize = 4096;

/// Why no connection could be had.
#[derive(Debug)]
pub enum AcquireError {
    /// Connection refused, unreachable, or name not resolvable: a connection-level failure.
    Connect(io::Error),
    /// No connection within `server.connectTimeout`.
    ConnectTimeout,
    /// `maxSockets` connections busy and none freed in time.
    Saturated,
}

impl std::fmt::Display for AcquireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcquireError::Connect(e) => write!(f, "connect failed: {e}"),
            AcquireError::ConnectTimeout => write!(f, "connect timed out"),
            AcquireError::Saturated => {
                write!(f, "all connections to the backend are busy (maxSockets)")
            }
        }
    }
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Idle>,
    /// Open connections, idle or in use.
    open: usize,
    waiters: VecDeque<Sender<()>>,
}

impl Pool {
    fn wake_one(&mut self) {
        // A waiter whose request already gave up is skipped.
        while let Some(w) = self.waiters.pop_front() {
            if w.receiver_alive() {
                w.send(());
                break;
            }
        }
    }
}

struct Inner {
    /// Backend addresses come from the driver, not from clients: a fast unkeyed hash is safe here.
    pools: HashMap<SocketAddr, Pool, FxBuild>,
    dns: HashMap<(Box<str>, u16), (SocketAddr, Instant)>,
}

impl Inner {
    /// The pool of `addr`, created if needed within [`MAX_POOLS`]: when full, a pool with no
    /// connection in use is dropped to make room (idle ones closed); `None` if all are in use.
    fn pool_for(&mut self, addr: SocketAddr) -> Option<&mut Pool> {
        if !self.pools.contains_key(&addr) && self.pools.len() >= MAX_POOLS {
            let unused = self
                .pools
                .iter()
                .find(|(_, p)| p.open == p.idle.len() && p.waiters.is_empty())
                .map(|(a, _)| *a)?;
            self.pools.remove(&unused);
        }
        Some(self.pools.entry(addr).or_default())
    }
}

/// All backend pools of one worker.
#[derive(Clone)]
pub struct BackendPools {
    inner: Rc<RefCell<Inner>>,
    max_sockets: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    wait_timeout: Duration,
    keep_alive: bool,
}

/// A connection to a backend, checked out of its pool.
pub struct BackendConn {
    stream: Option<TcpStream>,
    addr: SocketAddr,
    /// Came from the idle list (it may turn out to be closed by the backend).
    pub reused: bool,
    inner: Rc<RefCell<Inner>>,
}

impl BackendPools {
    pub fn new(
        max_sockets: usize,
        idle_timeout: Duration,
        connect_timeout: Duration,
        wait_timeout: Duration,
        keep_alive: bool,
    ) -> Self {
        BackendPools {
            inner: Rc::new(RefCell::new(Inner {
                pools: HashMap::default(),
                dns: HashMap::new(),
            })),
            max_sockets,
            idle_timeout,
            connect_timeout,
            wait_timeout,
            keep_alive,
        }
    }

    /// The address to connect to for a backend (IP literals directly, names through a cached lookup).
    pub async fn address_of(&self, target: &BackendTarget) -> io::Result<SocketAddr> {
        if let Some(addr) = target.addr {
            return Ok(addr);
        }
        let key = (target.host.clone(), target.port);
        if let Some((addr, at)) = self.inner.borrow().dns.get(&key) {
            if at.elapsed() < DNS_TTL {
                return Ok(*addr);
            }
        }
        let addrs = crate::resolver::resolve(&target.host, target.port).await?;
        let addr = addrs[0];
        let mut inner = self.inner.borrow_mut();
        if inner.dns.len() > 10_000 {
            inner.dns.clear();
        }
        inner.dns.insert(key, (addr, Instant::now()));
        Ok(addr)
    }

    /// A connection to `addr`: idle, new, or (after waiting for a free slot) none.
    pub async fn acquire(
        &self,
        addr: SocketAddr,
        fresh_only: bool,
    ) -> Result<BackendConn, AcquireError> {
        let wait_deadline = Instant::now() + self.wait_timeout;
        loop {
            let rx = {
                let mut inner = self.inner.borrow_mut();
                let Some(pool) = inner.pool_for(addr) else {
                    return Err(AcquireError::Saturated);
                };
                if !fresh_only {
                    while let Some(idle) = pool.idle.pop() {
                        let age = idle.since.elapsed();
                        if age > self.idle_timeout
                            || (age > PROBE_AFTER && !looks_open(&idle.stream))
                        {
                            pool.open -= 1;
                            continue;
                        }
                        return Ok(BackendConn {
                            stream: Some(idle.stream),
                            addr,
                            reused: true,
                            inner: self.inner.clone(),
                        });
                    }
                } else if pool.open >= self.max_sockets {
                    // Make room by closing an idle connection, if any.
                    if pool.idle.pop().is_some() {
                        pool.open -= 1;
                    }
                }
                if pool.open < self.max_sockets {
                    pool.open += 1;
                    None
                } else {
                    let (tx, rx) = oneshot();
                    pool.waiters.push_back(tx);
                    Some(rx)
                }
            };
            match rx {
                None => break,
                Some(rx) => {
                    let left = wait_deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || monoio::time::timeout(left, rx).await.is_err() {
                        return Err(AcquireError::Saturated);
                    }
                }
            }
        }
        // We hold a slot: connect.
        let result = match monoio::time::timeout(
            self.connect_timeout,
            TcpStream::connect_addr(addr),
        )
        .await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(AcquireError::Connect(e)),
            Err(_) => Err(AcquireError::ConnectTimeout),
        };
        match result {
            Ok(stream) => Ok(BackendConn {
                stream: Some(stream),
                addr,
                reused: false,
                inner: self.inner.clone(),
            }),
            Err(e) => {
                let mut inner = self.inner.borrow_mut();
                if let Some(pool) = inner.pools.get_mut(&addr) {
                    pool.open -= 1;
                    pool.wake_one();
                }
                Err(e)
            }
        }
    }

    /// Returns a connection; `reusable` says the exchange left it clean (whole response read, keep-alive).
    pub fn release(&self, mut conn: BackendConn, reusable: bool) {
        let Some(stream) = conn.stream.take() else {
            return;
        };
        let mut inner = self.inner.borrow_mut();
        let Some(pool) = inner.pools.get_mut(&conn.addr) else {
            return;
        };
        if reusable && self.keep_alive {
            pool.idle.push(Idle {
                stream,
                since: Instant::now(),
            });
        } else {
            pool.open -= 1;
        }
        pool.wake_one();
    }

    /// Closes idle connections past the idle timeout and forgets empty pools. Run periodically.
    pub fn sweep(&self) {
        let mut inner = self.inner.borrow_mut();
        let timeout = self.idle_timeout;
        inner.pools.retain(|_, pool| {
            let before = pool.idle.len();
            pool.idle.retain(|i| i.since.elapsed() <= timeout);
            pool.open -= before - pool.idle.len();
            pool.open > 0 || !pool.waiters.is_empty()
        });
        let now = Instant::now();
        inner
            .dns
            .retain(|_, (_, at)| now.duration_since(*at) < DNS_TTL);
    }

    /// Closes every idle connection (shutdown).
    pub fn close_idle(&self) {
        let mut inner = self.inner.borrow_mut();
        for pool in inner.pools.values_mut() {
            pool.open -= pool.idle.len();
            pool.idle.clear();
        }
    }

    /// (idle, open) connections across all backends, for metrics and tests.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.borrow();
        inner
            .pools
            .values()
            .fold((0, 0), |(i, o), p| (i + p.idle.len(), o + p.open))
    }
}

impl BackendConn {
    pub fn stream(&mut self) -> &mut TcpStream {
        // Present until release/drop; both consume self.
        self.stream
            .as_mut()
            .expect("backend stream present until release")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Takes the connection out of its pool for good (an upgraded tunnel): it no longer counts
    /// toward `maxSockets`.
    pub fn into_stream(mut self) -> Option<TcpStream> {
        let stream = self.stream.take();
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            if let Some(pool) = inner.pools.get_mut(&self.addr) {
                pool.open -= 1;
                pool.wake_one();
            }
        }
        stream
    }
}

impl Drop for BackendConn {
    fn drop(&mut self) {
        if self.stream.take().is_some() {
            if let Ok(mut inner) = self.inner.try_borrow_mut() {
                if let Some(pool) = inner.pools.get_mut(&self.addr) {
                    pool.open -= 1;
                    pool.wake_one();
                }
            }
        }
    }
}

/// Non-blocking check that an idle connection was not closed by the backend (and holds no stray bytes).
fn looks_open(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv into a 1-byte stack buffer on a socket we own; MSG_PEEK leaves data in place.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0
        && matches!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::EAGAIN)
        )
}
