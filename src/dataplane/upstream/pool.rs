//! Per-worker keep-alive connections to backends, at most `server.maxSockets` per backend address
//! (a TCP address, or a unix socket path: see `backend_stream`).
//!
//! `acquire` returns the most recently used idle connection (LIFO keeps few connections warm), or
//! connects a new one within the connect timeout, or, when the limit is reached, waits briefly for one to
//! be released and then gives up (the client gets 503). At most `maxSockets` requests wait per backend:
//! one more is refused at once, so the queue of waiters never grows with the request rate.
//!
//! Slot accounting cannot leak: a slot is a [`Permit`] (a permit of the backend's local-sync
//! `Semaphore` of `maxSockets` permits), taken before connecting and owned by the connection (idle or
//! in use) from then on. Dropping the permit, wherever that happens (a failed
//! connect, a connection closed on any error path, an idle one swept or found dead, a tunnel taking its
//! socket), is the only way a slot comes back, and it always does. The same holds for the per-client cap
//! (`server.maxSocketsPerClient`: backend connections one client address may hold at once, per worker),
//! counted by a [`ClientPermit`].
//!
//! A connection comes back with `release(reusable)`; dropping it without release closes it and frees its
//! slot. Idle connections older than `backendIdleTimeout` are closed by a sweeper; one that idled for a
//! while is probed with a non-blocking `MSG_PEEK` before reuse, so a connection the backend closed is
//! not used.
//!
//! Owned by one worker; no locks. Backend host names are resolved off the worker thread and cached here.
//!
//! Pools are keyed by backend addresses from Redis data, so their number is bounded ([`MAX_POOLS`] per
//! worker): a new backend beyond it takes the place of a pool with no connection in use (its idle
//! connections closed), or, if every pool is busy, gets `Saturated` (503).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use local_sync::oneshot;
use local_sync::semaphore::{OwnedSemaphorePermit, Semaphore};

use crate::common::fast_hash::FxBuild;
use crate::dataplane::routing::BackendTarget;
use crate::dataplane::upstream::stream::{BackendAddr, BackendStream};

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
    /// `maxSockets` connections busy and none freed in time (or too many requests already waiting).
    Saturated,
    /// This client address already holds `server.maxSocketsPerClient` backend connections.
    ClientLimit,
}

impl std::fmt::Display for AcquireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcquireError::Connect(e) => write!(f, "connect failed: {e}"),
            AcquireError::ConnectTimeout => write!(f, "connect timed out"),
            AcquireError::Saturated => {
                write!(f, "all connections to the backend are busy (maxSockets)")
            }
            AcquireError::ClientLimit => {
                write!(
                    f,
                    "client holds too many backend connections (maxSocketsPerClient)"
                )
            }
        }
    }
}

/// The most permits a local-sync `Semaphore` holds (it masks a larger count): `maxSockets` beyond it
/// is unbounded in practice.
const MAX_PERMITS: usize = usize::MAX >> 3;

/// The slots of one backend: `maxSockets` permits, and who waits for one. Shared by the pool entry and
/// every permit of that backend.
struct Slots {
    permits: Rc<Semaphore>,
    max: usize,
    /// Requests waiting for a slot or an idle connection (bounded by `maxSockets`). Hand-written
    /// rather than the semaphore's own queue: a connection coming back idle (its permit kept) must
    /// wake a waiter too, which a semaphore cannot express.
    waiters: RefCell<VecDeque<oneshot::Sender<()>>>,
}

impl Slots {
    fn new(max: usize) -> Slots {
        let max = max.min(MAX_PERMITS);
        Slots {
            permits: Rc::new(Semaphore::new(max)),
            max,
            waiters: RefCell::default(),
        }
    }

    /// Slots held (connections open, idle or in use).
    fn taken(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    fn wake_one(&self) {
        let mut waiters = self.waiters.borrow_mut();
        // A waiter whose request already gave up is skipped (its send fails).
        while let Some(w) = waiters.pop_front() {
            if w.send(()).is_ok() {
                break;
            }
        }
    }
}

/// One of a backend's `maxSockets` slots. Freed (and a waiter woken) when dropped, and only then.
struct Permit {
    /// Always `Some` until dropped.
    permit: Option<OwnedSemaphorePermit>,
    slots: Rc<Slots>,
}

impl Permit {
    fn try_take(slots: &Rc<Slots>) -> Option<Permit> {
        let permit = slots.permits.clone().try_acquire_owned().ok()?;
        Some(Permit {
            permit: Some(permit),
            slots: slots.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // The slot comes back first, so the waiter woken finds it free.
        drop(self.permit.take());
        self.slots.wake_one();
    }
}

/// Backend connections held per client address (this worker's only). Keys come from clients: the
/// default SipHash, and an entry exists only while its count is above zero.
type ClientCounts = Rc<RefCell<HashMap<IpAddr, usize>>>;

/// One backend connection counted against its client address. Released when dropped.
struct ClientPermit {
    counts: ClientCounts,
    ip: IpAddr,
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut counts = self.counts.borrow_mut();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

struct Idle {
    stream: BackendStream,
    since: Instant,
    /// The slot this idle connection occupies; freed with it.
    _permit: Permit,
}

struct Pool {
    idle: Vec<Idle>,
    slots: Rc<Slots>,
}

impl Pool {
    fn new(max_sockets: usize) -> Pool {
        Pool {
            idle: Vec::new(),
            slots: Rc::new(Slots::new(max_sockets)),
        }
    }
}

struct Inner {
    /// Backend addresses come from the driver, not from clients: a fast unkeyed hash is safe here.
    /// Unix backends are keyed by their path, so each socket path has its own pool.
    pools: HashMap<BackendAddr, Pool, FxBuild>,
    dns: HashMap<(Box<str>, u16), (SocketAddr, Instant)>,
}

impl Inner {
    /// The pool of `addr`, created if needed within [`MAX_POOLS`]: when full, a pool with no
    /// connection in use is dropped to make room (idle ones closed); `None` if all are in use.
    fn pool_for(&mut self, addr: &BackendAddr, max_sockets: usize) -> Option<&mut Pool> {
        if !self.pools.contains_key(addr) && self.pools.len() >= MAX_POOLS {
            let unused = self
                .pools
                .iter()
                .find(|(_, p)| {
                    p.slots.taken() == p.idle.len() && p.slots.waiters.borrow().is_empty()
                })
                .map(|(a, _)| a.clone())?;
            self.pools.remove(&unused);
        }
        Some(
            self.pools
                .entry(addr.clone())
                .or_insert_with(|| Pool::new(max_sockets)),
        )
    }
}

/// All backend pools of one worker.
#[derive(Clone)]
pub struct BackendPools {
    inner: Rc<RefCell<Inner>>,
    clients: ClientCounts,
    max_sockets: usize,
    /// `server.maxSocketsPerClient`; 0 = no cap.
    max_per_client: usize,
    idle_timeout: Duration,
    connect_timeout: Duration,
    wait_timeout: Duration,
    keep_alive: bool,
}

/// A connection to a backend, checked out of its pool. Holds its slot (and its client's) until
/// released or dropped.
pub struct BackendConn {
    stream: Option<BackendStream>,
    addr: BackendAddr,
    /// Came from the idle list (it may turn out to be closed by the backend).
    pub reused: bool,
    permit: Option<Permit>,
    _client: Option<ClientPermit>,
}

impl BackendPools {
    pub fn new(
        max_sockets: usize,
        max_per_client: usize,
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
            clients: Rc::new(RefCell::new(HashMap::new())),
            max_sockets,
            max_per_client,
            idle_timeout,
            connect_timeout,
            wait_timeout,
            keep_alive,
        }
    }

    /// The address to connect to for a backend (IP literals directly, names through a cached lookup).
    pub async fn address_of(&self, target: &BackendTarget) -> io::Result<BackendAddr> {
        if let Some(path) = &target.unix {
            return Ok(BackendAddr::Unix(path.clone()));
        }
        if let Some(addr) = target.addr {
            return Ok(BackendAddr::Tcp(addr));
        }
        let key = (target.host.clone(), target.port);
        if let Some((addr, at)) = self.inner.borrow().dns.get(&key) {
            if at.elapsed() < DNS_TTL {
                return Ok(BackendAddr::Tcp(*addr));
            }
        }
        let addrs =
            crate::dataplane::upstream::resolver::resolve(&target.host, target.port).await?;
        let addr = addrs[0];
        let mut inner = self.inner.borrow_mut();
        if inner.dns.len() > 10_000 {
            inner.dns.clear();
        }
        inner.dns.insert(key, (addr, Instant::now()));
        Ok(BackendAddr::Tcp(addr))
    }

    /// Counts one more backend connection for `client`, unless it is at its cap.
    fn client_permit(&self, client: Option<IpAddr>) -> Result<Option<ClientPermit>, AcquireError> {
        let Some(ip) = client.filter(|_| self.max_per_client > 0) else {
            return Ok(None);
        };
        let mut counts = self.clients.borrow_mut();
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max_per_client {
            return Err(AcquireError::ClientLimit);
        }
        *n += 1;
        Ok(Some(ClientPermit {
            counts: self.clients.clone(),
            ip,
        }))
    }

    /// A connection to `addr` for a request of `client`: idle, new, or (after waiting for a free slot)
    /// none.
    pub async fn acquire(
        &self,
        addr: BackendAddr,
        fresh_only: bool,
        client: Option<IpAddr>,
    ) -> Result<BackendConn, AcquireError> {
        let client = self.client_permit(client)?;
        let wait_deadline = Instant::now() + self.wait_timeout;
        let permit = loop {
            let rx = {
                let mut inner = self.inner.borrow_mut();
                let Some(pool) = inner.pool_for(&addr, self.max_sockets) else {
                    return Err(AcquireError::Saturated);
                };
                if !fresh_only {
                    while let Some(idle) = pool.idle.pop() {
                        let age = idle.since.elapsed();
                        if age > self.idle_timeout
                            || (age > PROBE_AFTER && !looks_open(&idle.stream))
                        {
                            // Dropping it closes the socket and frees its slot.
                            continue;
                        }
                        return Ok(BackendConn {
                            stream: Some(idle.stream),
                            addr,
                            reused: true,
                            permit: Some(idle._permit),
                            _client: client,
                        });
                    }
                } else if pool.slots.taken() >= pool.slots.max {
                    // Make room by closing an idle connection, if any.
                    drop(pool.idle.pop());
                }
                if let Some(permit) = Permit::try_take(&pool.slots) {
                    break permit;
                }
                let mut waiters = pool.slots.waiters.borrow_mut();
                if waiters.len() >= self.max_sockets {
                    waiters.retain(|w| !w.is_closed());
                    if waiters.len() >= self.max_sockets {
                        // As many requests wait as there are slots: refuse now rather than queue.
                        return Err(AcquireError::Saturated);
                    }
                }
                let (tx, rx) = oneshot::channel();
                waiters.push_back(tx);
                rx
            };
            let left = wait_deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || monoio::time::timeout(left, rx).await.is_err() {
                return Err(AcquireError::Saturated);
            }
        };
        // We hold a slot: connect. On failure the permit drops and frees it.
        match monoio::time::timeout(self.connect_timeout, BackendStream::connect(&addr)).await {
            Ok(Ok(stream)) => Ok(BackendConn {
                stream: Some(stream),
                addr,
                reused: false,
                permit: Some(permit),
                _client: client,
            }),
            Ok(Err(e)) => Err(AcquireError::Connect(e)),
            Err(_) => Err(AcquireError::ConnectTimeout),
        }
    }

    /// Returns a connection; `reusable` says the exchange left it clean (whole response read, keep-alive).
    pub fn release(&self, mut conn: BackendConn, reusable: bool) {
        let (Some(stream), Some(permit)) = (conn.stream.take(), conn.permit.take()) else {
            return;
        };
        if !(reusable && self.keep_alive) {
            // Closing it frees the slot (and wakes a waiter) as `permit` drops.
            return;
        }
        let slots = permit.slots.clone();
        {
            let mut inner = self.inner.borrow_mut();
            let Some(pool) = inner
                .pools
                .get_mut(&conn.addr)
                .filter(|pool| Rc::ptr_eq(&pool.slots, &slots))
            else {
                // The pool entry was swept (and maybe re-created) meanwhile: this slot is not counted
                // there.
                return;
            };
            pool.idle.push(Idle {
                stream,
                since: Instant::now(),
                _permit: permit,
            });
        }
        // A waiter can take the idle connection.
        slots.wake_one();
    }

    /// Closes idle connections past the idle timeout and forgets empty pools. Run periodically.
    pub fn sweep(&self) {
        let mut inner = self.inner.borrow_mut();
        let timeout = self.idle_timeout;
        inner.pools.retain(|_, pool| {
            pool.idle.retain(|i| i.since.elapsed() <= timeout);
            pool.slots.waiters.borrow_mut().retain(|w| !w.is_closed());
            pool.slots.taken() > 0 || !pool.slots.waiters.borrow().is_empty()
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
            pool.idle.clear();
        }
    }

    /// (idle, open) connections across all backends, for metrics and tests.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.borrow();
        inner
            .pools
            .values()
            .fold((0, 0), |(i, o), p| (i + p.idle.len(), o + p.slots.taken()))
    }

    /// Client addresses holding backend connections right now (for tests and metrics).
    pub fn clients_holding(&self) -> usize {
        self.clients.borrow().len()
    }
}

impl BackendConn {
    pub fn stream(&mut self) -> &mut BackendStream {
        // Present until release/drop; both consume self.
        self.stream
            .as_mut()
            .expect("backend stream present until release")
    }

    pub fn addr(&self) -> &BackendAddr {
        &self.addr
    }

    /// Takes the connection out of its pool for good (an upgraded tunnel): it no longer counts
    /// toward `maxSockets` nor `maxSocketsPerClient` (its permits drop with `self`).
    pub fn into_stream(mut self) -> Option<BackendStream> {
        self.stream.take()
    }
}

/// Non-blocking check that an idle connection was not closed by the backend (and holds no stray bytes).
fn looks_open(stream: &BackendStream) -> bool {
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
