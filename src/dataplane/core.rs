//! [`Core`]: the state of one worker core, which every connection and request of that core sees
//! through an `Rc`: its configuration, route store and cache, single-flight table, backend pools,
//! buffers, access log, random generator, drain and crash flags, and its metric slot.
//!
//! A leaf of the data plane: it names the parts and builds them, and knows nothing of connections or
//! request phases (`worker` runs the thread and its accept loops, `http1`/`h2`/`proxy` the traffic).
//! Nothing in it is shared with other threads except the immutable `Config`, the metric slots and the
//! shutdown latch, and nothing in it blocks.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::local_sync::Notify;
use crate::common::metrics::{Counter, Metrics, WorkerSlot};
use crate::common::rng::Rng;
use crate::config::{Config, DriverConfig};
use crate::dataplane::access_log::AccessLog;
use crate::dataplane::buffers::{BufPool, LargeBufPool};
use crate::dataplane::proxy::error_pages::ErrorPages;
use crate::dataplane::routing::cache::RouteCache;
use crate::dataplane::routing::flight::Flights;
use crate::dataplane::routing::store::{RedisRoutes, RouteStore};
use crate::dataplane::routing::Lookup;
use crate::dataplane::upstream::pool::BackendPools;
use crate::drivers::file::{FileRoutes, RouteFeed};
use crate::drivers::redis::{RedisClient, RedisError};

/// Size of request-head buffers (grown up to `maxHeaderSize` when needed).
pub const HEAD_BUF: usize = 4 * 1024;
/// Size of body relay buffers.
pub const BODY_BUF: usize = 64 * 1024;
/// Size of the large buffers a response body switches to once it outgrew a `BODY_BUF` buffer: fewer,
/// larger reads and writes for large downloads (`proxy::relay`).
pub const LARGE_BODY_BUF: usize = 256 * 1024;
/// Large buffers lent out at once per worker (16 MiB); beyond it, bodies stay on `BODY_BUF` buffers.
pub const LARGE_BODY_BUFS_LENT: usize = 64;
/// Spare large buffers a worker keeps (4 MiB) after a burst of large responses.
pub const LARGE_BODY_BUFS_FREE: usize = 16;

/// The state of one core, borrowed by every task of that core through an `Rc`.
pub struct Core {
    pub id: usize,
    pub config: Arc<Config>,
    pub store: Rc<RouteStore>,
    pub cache: RefCell<RouteCache>,
    /// Route look-ups in flight, by host (single flight).
    pub inflight: Flights<Result<Lookup, RedisError>>,
    pub pools: BackendPools,
    pub error_pages: ErrorPages,
    pub access_log: RefCell<AccessLog>,
    pub rng: Rng,
    pub head_bufs: BufPool,
    pub body_bufs: BufPool,
    /// Large body buffers, bounded per worker (`LARGE_BODY_BUFS_LENT`).
    pub large_bufs: LargeBufPool,
    /// Set when shutdown starts: stop accepting, close idle connections, finish in-flight requests.
    pub draining: Cell<bool>,
    pub drain_notify: Notify,
    /// Open client connections (to know when draining is over).
    pub connections: Cell<usize>,
    pub connections_changed: Notify,
    /// Every worker's metric slots; this worker writes only its own (`m()`).
    pub metrics: Arc<Metrics>,
    /// Set when one of this worker's tasks panicked: the worker stops so that it can be replaced.
    pub crashed: Cell<bool>,
    pub crash_notify: Notify,
    /// Per-core state of `rate` and `max_connections` (README "Per-frontend options").
    pub policy: crate::dataplane::proxy::limits::PolicyState,
    /// Certificates from Redis (`tls:<name>`, README "Certificates in Redis"): with the Redis driver,
    /// an HTTPS listener and `https.redisCertificates` on.
    pub certs: Option<crate::tls::redis_certs::CertStore>,
    /// Names this core queued for on-demand ACME, and when (bounded, see `redis_certs::MAX_QUEUED`).
    pub acme_queued: RefCell<HashMap<String, Instant>>,
    /// Bounds the TLS handshake computation per turn of this core's runtime (`tls::gate`), with an
    /// HTTPS listener.
    pub handshake_gate: Option<Rc<crate::tls::gate::HandshakeGate>>,
}

impl Core {
    /// This worker's metric slot.
    #[inline]
    pub fn m(&self) -> &WorkerSlot {
        self.metrics.slot(self.id)
    }

    pub(crate) fn new(
        id: usize,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        routes: Option<RouteFeed>,
    ) -> Result<Core, String> {
        let s = &config.server;
        let store = match &config.driver {
            DriverConfig::Redis {
                read,
                write,
                prefix,
            } => {
                let timeout = s.redis_timeout;
                let read_client = RedisClient::start(
                    read.clone(),
                    format!("worker {id}: redis"),
                    format!("hipache-tpc-w{id}"),
                    timeout,
                );
                let write_client = if write == read {
                    read_client.clone()
                } else {
                    RedisClient::start(
                        write.clone(),
                        format!("worker {id}: redis (writes)"),
                        format!("hipache-tpc-w{id}-writes"),
                        timeout,
                    )
                };
                RouteStore::Redis(Rc::new(RedisRoutes {
                    read: read_client,
                    write: write_client,
                    prefix: prefix.clone(),
                    checker_alive: Cell::new(config.healthcheck.enabled),
                    local_checker: config.healthcheck.enabled,
                    dead_ttl: s.dead_backend_ttl,
                }))
            }
            DriverConfig::File { path } => {
                let feed = routes.ok_or_else(|| {
                    format!(
                        "worker {id}: the routes file {} was not loaded",
                        path.display()
                    )
                })?;
                RouteStore::File(FileRoutes::new(
                    path.clone(),
                    feed,
                    Duration::from_secs(s.dead_backend_ttl),
                ))
            }
        };
        let certs = match (&store, &config.https) {
            (RouteStore::Redis(r), Some(h)) if h.redis_certificates => Some(
                crate::tls::redis_certs::CertStore::new(r.read.clone(), r.prefix.clone()),
            ),
            _ => None,
        };
        let handshake_gate = config
            .https
            .as_ref()
            .and_then(|_| crate::tls::gate::HandshakeGate::new());
        let access_log = AccessLog::open(s.access_log.as_deref())
            .map_err(|e| format!("worker {id}: cannot open the access log: {e}"))?;
        Ok(Core {
            id,
            store: Rc::new(store),
            cache: RefCell::new(RouteCache::new(
                s.cache.size,
                s.cache.ttl,
                s.cache.tracked_ttl,
            )),
            inflight: Flights::default(),
            pools: BackendPools::new(
                s.max_sockets,
                s.max_sockets_per_client,
                s.backend_idle_timeout,
                s.connect_timeout,
                Duration::from_secs(1),
                s.http_keep_alive,
            ),
            error_pages: ErrorPages::new(s.static_dir.clone()),
            access_log: RefCell::new(access_log),
            rng: Rng::new(id as u64 + 1),
            head_bufs: BufPool::new(HEAD_BUF, 256),
            body_bufs: BufPool::new(BODY_BUF, 64),
            large_bufs: LargeBufPool::new(
                LARGE_BODY_BUF,
                LARGE_BODY_BUFS_LENT,
                LARGE_BODY_BUFS_FREE,
            ),
            draining: Cell::new(false),
            drain_notify: Notify::new(),
            connections: Cell::new(0),
            connections_changed: Notify::new(),
            metrics,
            config,
            crashed: Cell::new(false),
            crash_notify: Notify::new(),
            policy: Default::default(),
            certs,
            acme_queued: RefCell::new(HashMap::new()),
            handshake_gate,
        })
    }

    /// Marks backend `index` of `route` dead for `host`: at once in this worker's cache entry, and in the
    /// driver for everyone (docs/compatibility.md §3). Only frontends with more than one backend are marked.
    pub fn mark_dead(&self, route: &crate::dataplane::routing::Route, host: &str, index: usize) {
        let count = route.backends.len();
        if count <= 1 {
            return;
        }
        route.mark_dead(
            index,
            Duration::from_secs(self.config.server.dead_backend_ttl),
        );
        self.m().inc(Counter::DeadMarks);
        if let Some(b) = route.backends.get(index) {
            if let RouteStore::Redis(_) = &*self.store {
                self.m().inc(Counter::RedisRoundTrips);
            }
            self.store.mark_dead(host, &b.url, index, count);
        }
    }
}
