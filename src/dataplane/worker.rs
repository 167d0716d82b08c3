//! One worker: a thread pinned to a core, running its own monoio runtime (io_uring, or epoll when
//! io_uring is unavailable), its own listeners, driver (Redis connections, or its copy of the routes
//! file), route cache, backend pools and access-log buffer.
//!
//! This module runs the thread: the runtime (io_uring, else epoll), the accept loops, the drain, the
//! containment of a panicked task, route notifications and housekeeping. The per-core state itself is
//! [`Core`](crate::dataplane::core::Core). A worker must never block: every wait is an `.await` on its
//! runtime.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use log::{debug, error, info, warn};
use monoio::io::Canceller;
use monoio::net::TcpListener;

use crate::common::metrics::{Counter, Gauge, Hist, Metrics};
use crate::common::task::OnPanic;
use crate::config::{Config, DriverConfig};
use crate::dataplane::core::Core;
use crate::dataplane::http1::connection::serve_client;
use crate::dataplane::routing::store::RouteStore;
use crate::dataplane::session::ListenerInfo;
use crate::drivers::file::RouteFeed;
use crate::drivers::redis::tracking::TrackingEvent;
use crate::process::shutdown::ShutdownLatch;

/// How long a starting worker waits for its Redis connection before it accepts anyway.
pub const REDIS_WAIT_AT_START: Duration = Duration::from_secs(2);

/// Everything a worker thread needs, moved into it.
pub struct WorkerSpec {
    pub id: usize,
    pub core: Option<core_affinity::CoreId>,
    pub config: Arc<Config>,
    /// One bound, listening socket per `http.bind` address (SO_REUSEPORT).
    pub listeners: Vec<std::net::TcpListener>,
    /// One per HTTPS listener address, with its TLS configuration.
    pub tls_listeners: Vec<(std::net::TcpListener, Arc<rustls::ServerConfig>)>,
    pub latch: Arc<ShutdownLatch>,
    pub blocking_pool: monoio::blocking::DefaultThreadPool,
    pub metrics: Arc<Metrics>,
    /// Told once the worker accepts connections (or why it could not start).
    pub ready: ReadySender,
    /// With the file driver: the routes table at start-up and the channel newer ones arrive on.
    pub routes: Option<RouteFeed>,
}

/// Tells the supervisor that a worker accepts connections, or why it could not start.
#[derive(Clone)]
pub struct ReadySender {
    pub tx: mpsc::Sender<crate::process::events::Event>,
}

impl ReadySender {
    /// Reports `Ok(worker id)` or `Err(why)`; fails only if the supervisor is gone.
    pub fn send(
        &self,
        result: Result<usize, String>,
    ) -> Result<(), mpsc::SendError<crate::process::events::Event>> {
        self.tx
            .send(crate::process::events::Event::WorkerReady(result))
    }
}

/// How a worker's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEnd {
    /// Shutdown (or hand-over to a successor) and drained.
    Stopped,
    /// One of its tasks panicked; it stopped accepting and gave its connections [`CRASH_DRAIN`].
    Crashed,
    /// It could not start (runtime, driver or access log); the reason was reported on `ready`.
    FailedToStart,
}

/// How long the connections of a worker whose task panicked may finish before it is replaced.
pub const CRASH_DRAIN: Duration = Duration::from_secs(1);

/// Runs a worker on the current thread until shutdown has drained (or one of its tasks panicked).
pub fn run(spec: WorkerSpec) -> WorkerEnd {
    if let Some(core) = spec.core {
        if !core_affinity::set_for_current(core) {
            warn!("worker {}: could not pin to core {}", spec.id, core.id);
        }
    }
    let use_epoll = std::env::var("HIPACHE_TPC_IO").is_ok_and(|v| v == "epoll");
    let ready = spec.ready.clone();
    let id = spec.id;
    let pool = spec.blocking_pool.clone();
    let result = if use_epoll {
        epoll_runtime(pool).map(|mut rt| rt.block_on(worker_main(spec)))
    } else {
        // io_uring with cooperative task running (completions are processed when the worker enters the
        // kernel, not by interrupting it: about a tenth less CPU per request), then without it (kernels
        // before 5.19), then epoll.
        match uring_runtime(pool.clone(), true) {
            Ok(mut rt) => Ok(rt.block_on(worker_main(spec))),
            Err(e) => {
                debug!("worker {id}: io_uring with COOP_TASKRUN unavailable ({e}); trying without");
                match uring_runtime(pool.clone(), false) {
                    Ok(mut rt) => Ok(rt.block_on(worker_main(spec))),
                    Err(e) => {
                        warn!("worker {id}: io_uring unavailable ({e}); using epoll");
                        epoll_runtime(pool).map(|mut rt| rt.block_on(worker_main(spec)))
                    }
                }
            }
        }
    };
    match result {
        Ok(end) => end,
        Err(e) => {
            error!("worker {id}: cannot build its runtime: {e}");
            let _ = ready.send(Err(format!("worker {id}: cannot build its runtime: {e}")));
            WorkerEnd::FailedToStart
        }
    }
}

type UringRuntime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

fn uring_runtime(
    pool: monoio::blocking::DefaultThreadPool,
    coop: bool,
) -> std::io::Result<UringRuntime> {
    let mut builder = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(4096)
        .attach_thread_pool(Box::new(pool));
    if coop {
        let mut uring = io_uring::IoUring::builder();
        uring.setup_coop_taskrun().setup_taskrun_flag();
        builder = builder.uring_builder(uring);
    }
    builder.build()
}

fn epoll_runtime(
    pool: monoio::blocking::DefaultThreadPool,
) -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .attach_thread_pool(Box::new(pool))
        .build()
}

async fn worker_main(spec: WorkerSpec) -> WorkerEnd {
    let WorkerSpec {
        id,
        config,
        listeners,
        tls_listeners,
        latch,
        ready,
        metrics,
        routes,
        ..
    } = spec;
    let worker = match Core::new(id, config.clone(), metrics, routes) {
        Ok(w) => Rc::new(w),
        Err(e) => {
            let _ = ready.send(Err(e));
            return WorkerEnd::FailedToStart;
        }
    };
    // A panic in a task that holds worker-wide state (see `task::OnPanic::StopThread`) stops this
    // worker in order, to be replaced by the supervisor.
    let weak = Rc::downgrade(&worker);
    crate::common::task::set_crash_hook(move || {
        if let Some(w) = weak.upgrade() {
            w.crashed.set(true);
            w.crash_notify.notify_all();
        }
    });
    // Do not take connections before the route driver can answer (bounded: a Redis outage must not
    // keep the worker from serving cached and stale routes, or 503s).
    let redis_wait = Instant::now() + REDIS_WAIT_AT_START;
    while !worker.store.is_up() && Instant::now() < redis_wait {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    // Published now, not at the first housekeeping tick: the ready line reads it right after this
    // worker reports ready.
    worker
        .m()
        .set(Gauge::RedisUp, i64::from(worker.store.is_up()));
    let mut accepting = Vec::new();
    let handshake_timeout = config
        .https
        .as_ref()
        .map_or(Duration::from_secs(10), |h| h.handshake_timeout);
    let all = listeners
        .into_iter()
        .map(|l| (l, None))
        .chain(tls_listeners.into_iter().map(|(l, cfg)| (l, Some(cfg))));
    for (std_listener, tls) in all {
        let local = match std_listener.local_addr() {
            Ok(a) => a,
            Err(e) => {
                let _ = ready.send(Err(format!("worker {id}: listener without address: {e}")));
                return WorkerEnd::FailedToStart;
            }
        };
        let listener = match TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!(
                    "worker {id}: cannot use listener {local}: {e}"
                )));
                return WorkerEnd::FailedToStart;
            }
        };
        let mut info = ListenerInfo::new(local, tls.is_some());
        info.proxy_protocol = config.proxy_protocol.contains(&local);
        let info = Rc::new(info);
        let tls = tls.map(|cfg| {
            Rc::new(TlsSetup::new(
                cfg,
                handshake_timeout,
                config.server.first_byte_timeout(),
            ))
        });
        accepting.push(crate::common::task::spawn(
            OnPanic::StopThread,
            accept_loop(listener, info, tls, worker.clone()),
        ));
    }
    // Alive from now on for /status (housekeeping refreshes it every 200 ms).
    worker.m().heartbeat.store(
        crate::common::clock::unix_now(),
        std::sync::atomic::Ordering::Relaxed,
    );
    crate::common::task::spawn(OnPanic::StopThread, housekeeping(worker.clone()));
    start_route_notifications(&worker);
    match &*worker.store {
        RouteStore::Redis(_) => {
            crate::common::task::spawn(OnPanic::StopThread, worker.store.clone().watch_checker());
        }
        RouteStore::File(_) => {
            crate::common::task::spawn(OnPanic::StopThread, follow_routes_file(worker.clone()));
        }
    }
    let _ = ready.send(Ok(id));
    drop(ready);

    let crashed = loop {
        if worker.crashed.get() {
            break true;
        }
        let crash = worker.crash_notify.notified();
        monoio::select! {
            _ = latch.wait() => break false,
            _ = crash => {}
        }
    };
    if crashed {
        error!(
            "worker {id}: a task panicked; this worker stops accepting, gives its connections {} s, and is replaced",
            CRASH_DRAIN.as_secs_f64()
        );
    }
    worker.draining.set(true);
    worker.drain_notify.notify_all();
    for task in accepting {
        task.await;
    }
    // Under io_uring a dropped listener is closed by a queued Close operation: park once so it is
    // submitted now. Until it is, the kernel keeps queueing connections for this worker's socket, and a
    // worker with nothing to drain would otherwise exit with the Close never submitted.
    monoio::time::sleep(Duration::from_millis(1)).await;
    // Let in-flight requests finish, within the drain deadline.
    let deadline = Instant::now()
        + if crashed {
            CRASH_DRAIN.min(config.server.drain_timeout)
        } else {
            config.server.drain_timeout
        };
    while worker.connections.get() > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            warn!(
                "worker {id}: drain deadline reached with {} connections still open; closing them",
                worker.connections.get()
            );
            break;
        }
        let changed = worker.connections_changed.notified();
        let _ = monoio::time::timeout(left, changed).await;
    }
    worker.pools.close_idle();
    worker.access_log.borrow_mut().flush();
    // Submit the Close operations of everything just dropped before the runtime goes away.
    monoio::time::sleep(Duration::from_millis(1)).await;
    info!("worker {id}: stopped");
    if crashed {
        WorkerEnd::Crashed
    } else {
        WorkerEnd::Stopped
    }
}

/// What a TLS listener needs to turn a TCP connection into a TLS one.
type TlsSetup = crate::tls::accept::TlsListener;

/// Accepts connections until draining starts; a connection accepted while stopping is still served.
async fn accept_loop(
    listener: TcpListener,
    info: Rc<ListenerInfo>,
    tls: Option<Rc<TlsSetup>>,
    w: Rc<Core>,
) {
    let mut error_logged_at: Option<Instant> = None;
    loop {
        if w.draining.get() {
            debug!("worker {}: stopped accepting on {}", w.id, info.local);
            break;
        }
        let canceller = Canceller::new();
        let accept = listener.cancelable_accept(canceller.handle());
        let drain = w.drain_notify.notified();
        accept_one(
            accept,
            drain,
            canceller,
            &w,
            &info,
            &tls,
            &mut error_logged_at,
        )
        .await;
    }
}

/// Waits for either a connection or the drain signal. On drain, the pending accept is cancelled and a
/// connection the kernel had already handed over is served rather than dropped.
async fn accept_one(
    accept: impl std::future::Future<Output = std::io::Result<(monoio::net::TcpStream, SocketAddr)>>,
    drain: crate::common::local_sync::Notified<'_>,
    canceller: Canceller,
    w: &Rc<Core>,
    info: &Rc<ListenerInfo>,
    tls: &Option<Rc<TlsSetup>>,
    error_logged_at: &mut Option<Instant>,
) {
    let mut accept = std::pin::pin!(accept);
    let result = monoio::select! {
        r = &mut accept => r,
        _ = drain => {
            canceller.cancel();
            accept.await
        }
    };
    match result {
        Ok((stream, peer)) => spawn_connection(stream, peer, info.clone(), tls.clone(), w.clone()),
        Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {}
        Err(e) => {
            // EMFILE and friends: log at most once a second, and pause so the loop does not spin.
            if error_logged_at.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                error!("worker {}: accept on {} failed: {e}", w.id, info.local);
                *error_logged_at = Some(Instant::now());
            }
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn_connection(
    stream: monoio::net::TcpStream,
    peer: SocketAddr,
    info: Rc<ListenerInfo>,
    tls: Option<Rc<TlsSetup>>,
    w: Rc<Core>,
) {
    // Nagle's algorithm: off at once under TLS (handshake flights, records); a plain HTTP/1.1
    // connection turns it off when it needs to (`ClientConn::ensure_nodelay`), h2c when it is sniffed.
    if tls.is_some() {
        let _ = stream.set_nodelay(true);
    }
    let fd = stream.as_raw_fd();
    OPEN_CLIENTS.with(|c| c.borrow_mut().insert(fd, peer));
    w.connections.set(w.connections.get() + 1);
    w.m().inc(Counter::ClientConnectionsAccepted);
    w.m().gauge_add(Gauge::ClientConnections, 1);
    // Every idle keep-alive connection holds this task: keep it small (rare, large states are boxed).
    let task = async move {
        let guard = ConnectionGuard(w.clone(), fd);
        let http2 = w.config.server.http2;
        let mut stream = stream;
        // On a `proxyProtocol` listener the client address is the header's (README, "Behind a load
        // balancer"); bytes read past the header are the client's first bytes, in `first`.
        let mut first = Vec::new();
        let mut peer = peer;
        if info.proxy_protocol {
            first = w.head_bufs.get();
            match crate::dataplane::net::proxy_accept::read_client(
                &mut stream,
                peer,
                &mut first,
                &w,
            )
            .await
            {
                Some(client) => peer = client,
                None => {
                    w.head_bufs.put(first);
                    drop(guard);
                    return;
                }
            }
        }
        match tls {
            None if http2 => {
                // The first bytes say whether this is HTTP/1.x or h2c with prior knowledge; they are
                // handed on, not read twice.
                if first.capacity() == 0 {
                    first = w.head_bufs.get();
                }
                match crate::dataplane::h2::sniff(
                    &mut stream,
                    &mut first,
                    w.config.server.first_byte_timeout(),
                    &w,
                )
                .await
                {
                    crate::dataplane::h2::Sniffed::Http1 => {
                        serve_client(stream, fd, peer, info, &w, first).await
                    }
                    crate::dataplane::h2::Sniffed::H2 => {
                        let _ = stream.set_nodelay(true);
                        let io =
                            monoio::io::PrefixedReadIo::new(stream, std::io::Cursor::new(first));
                        Box::pin(crate::dataplane::h2::serve(io, fd, peer, info, w.clone())).await
                    }
                    crate::dataplane::h2::Sniffed::Closed => w.head_bufs.put(first),
                }
            }
            None => serve_client(stream, fd, peer, info, &w, first).await,
            // Boxed: the handshake and TLS stream states would otherwise enlarge every plain
            // connection's task too (a task is as large as its largest branch).
            Some(tls) if info.proxy_protocol => {
                // The ClientHello may have started in the PROXY header's read: replayed first.
                let io = monoio::io::PrefixedReadIo::new(stream, std::io::Cursor::new(first));
                Box::pin(serve_tls(io, fd, peer, info, tls, &w, http2)).await
            }
            Some(tls) => Box::pin(serve_tls(stream, fd, peer, info, tls, &w, http2)).await,
        }
        drop(guard);
    };
    crate::common::task::spawn(OnPanic::StopThread, task);
}

/// Completes the TLS handshake (within `handshakeTimeout`), then serves HTTP/2 or HTTP/1.1 as ALPN
/// decided.
async fn serve_tls<IO>(
    stream: IO,
    fd: std::os::fd::RawFd,
    peer: SocketAddr,
    info: Rc<ListenerInfo>,
    tls: Rc<TlsSetup>,
    w: &Rc<Core>,
    http2: bool,
) where
    IO: monoio::io::AsyncReadRent + monoio::io::AsyncWriteRent + Unpin + 'static,
    monoio_rustls::ServerTlsStream<IO>: crate::dataplane::session::ClientStream,
{
    // A client that sends garbage is dropped at once; one that sends nothing, at the timeout.
    let sources = crate::tls::accept::CertSources {
        redis: w.certs.as_ref(),
        on_demand: w
            .config
            .acme
            .as_ref()
            .filter(|a| a.on_demand)
            .map(|a| (a.handshake_wait, &w.acme_queued)),
        metrics: w.m(),
        gate: w.handshake_gate.as_ref(),
    };
    // The on-demand ACME wait may be longer than `handshakeTimeout`.
    let limit = tls.handshake_timeout + sources.on_demand.map_or(Duration::ZERO, |(d, _)| d);
    let handshake = crate::tls::accept::accept(stream, &tls, &sources);
    match monoio::time::timeout(limit, handshake).await {
        Ok(Ok(crate::tls::accept::Accepted::AcmeChallenge)) => {
            w.m().inc(Counter::TlsHandshakes);
        }
        Ok(Ok(crate::tls::accept::Accepted::Stream(tls_stream))) => {
            let tls_stream = *tls_stream;
            w.m().inc(Counter::TlsHandshakes);
            if http2 && tls_stream.alpn_protocol().as_deref() == Some(crate::dataplane::h2::ALPN_H2)
            {
                crate::dataplane::h2::serve(tls_stream, fd, peer, info, w.clone()).await
            } else {
                serve_client(tls_stream, fd, peer, info, w, Vec::new()).await
            }
        }
        Ok(Err(e)) => {
            w.m().inc(Counter::TlsHandshakeErrors);
            debug!("worker {}: TLS handshake with {peer} failed: {e}", w.id)
        }
        Err(_) => {
            w.m().inc(Counter::TlsHandshakeErrors);
            debug!("worker {}: TLS handshake with {peer} timed out", w.id)
        }
    }
}

/// Keeps the open-connection count (and the thread's registry of client sockets) right however the
/// connection task ends.
struct ConnectionGuard(Rc<Core>, std::os::fd::RawFd);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        OPEN_CLIENTS.with(|c| c.borrow_mut().remove(&self.1));
        self.0
            .connections
            .set(self.0.connections.get().saturating_sub(1));
        self.0.m().gauge_add(Gauge::ClientConnections, -1);
        self.0.connections_changed.notify_all();
    }
}

thread_local! {
    /// The client sockets this worker thread serves, with their peers. Touched once per connection by
    /// its own thread only. Read after the worker panicked: a monoio runtime torn down by a panic does
    /// not drop the tasks parked on I/O, so their sockets would stay open and their clients hang.
    static OPEN_CLIENTS: RefCell<HashMap<std::os::fd::RawFd, SocketAddr, crate::common::fast_hash::FxBuild>> =
        RefCell::new(HashMap::default());
}

/// After this thread's worker panicked: shuts down and closes the client sockets its abandoned tasks
/// still held, so their clients see the connection end at once instead of hanging. A descriptor is
/// closed only if it is still connected to the same peer (it cannot have been reused meanwhile by
/// another thread for another connection). Returns how many were closed.
pub fn close_abandoned_connections() -> usize {
    let abandoned: Vec<(std::os::fd::RawFd, SocketAddr)> =
        OPEN_CLIENTS.with(|c| c.borrow_mut().drain().collect());
    let mut closed = 0;
    for (fd, peer) in abandoned {
        let same_peer = socket2::SockRef::from(&BorrowedRawFd(fd))
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            == Some(peer);
        if same_peer {
            // SAFETY: `fd` belonged to a task of this thread's runtime, which is gone and will never
            // use or close it; it still refers to the same connection (checked just above).
            unsafe {
                libc::shutdown(fd, libc::SHUT_RDWR);
                libc::close(fd);
            }
            closed += 1;
        }
    }
    closed
}

/// A raw descriptor seen through `AsFd` for a `SockRef`, without taking ownership.
struct BorrowedRawFd(std::os::fd::RawFd);

impl std::os::fd::AsFd for BorrowedRawFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: used only while the descriptor is known to be open (an abandoned connection of this
        // thread, not yet closed).
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) }
    }
}

/// How often a worker looks for a new routes table from the file watcher.
pub const ROUTES_FILE_DRAIN: Duration = Duration::from_millis(100);

/// File driver only: installs the tables the watcher thread sends (clearing the route cache, so that no
/// request is answered from the old routes afterwards) and forgets expired dead marks. The look at the
/// channel is a non-blocking `try_recv`; parsing happened on the watcher thread.
async fn follow_routes_file(w: Rc<Core>) {
    let RouteStore::File(f) = &*w.store else {
        return;
    };
    let mut tick: u64 = 0;
    loop {
        monoio::time::sleep(ROUTES_FILE_DRAIN).await;
        if f.install_update() {
            w.cache.borrow_mut().clear();
            debug!(
                "worker {}: routes file {} installed ({} frontends), route cache cleared",
                w.id,
                f.path.display(),
                f.frontends()
            );
        }
        tick += 1;
        if tick.is_multiple_of(10) {
            f.sweep_dead(Instant::now());
        }
    }
}

/// Subscribes this worker to route-change notifications (Redis driver, `server.routeNotifications`).
fn start_route_notifications(w: &Rc<Core>) {
    let (DriverConfig::Redis { read, prefix, .. }, RouteStore::Redis(routes)) =
        (&w.config.driver, &*w.store)
    else {
        return;
    };
    if !w.config.server.route_notifications {
        return;
    }
    let events = Rc::downgrade(w);
    let lags = Rc::downgrade(w);
    let prefix_owned = prefix.clone();
    let setup = crate::drivers::redis::tracking::TrackingSetup {
        read: read.clone(),
        write: routes.write.clone(),
        prefix: prefix.clone(),
        label: format!("worker {}", w.id),
        client_name: format!("hipache-tpc-w{}-{}", w.id, std::process::id()),
        timeout: w.config.server.redis_timeout,
    };
    crate::drivers::redis::tracking::start(
        setup,
        Box::new(move |event| {
            if let Some(w) = events.upgrade() {
                on_route_event(&w, &prefix_owned, event);
            }
        }),
        Box::new(move |lag| {
            if let Some(w) = lags.upgrade() {
                w.m().observe(Hist::InvalidationLag, lag);
            }
        }),
    );
}

/// Applies a route-change notification to the route cache.
fn on_route_event(w: &Core, prefix: &str, event: TrackingEvent) {
    let mut cache = w.cache.borrow_mut();
    let m = w.m();
    match event {
        TrackingEvent::Up => {
            if let Some(certs) = &w.certs {
                certs.tracking(true);
            }
            cache.tracking_up(Instant::now());
            m.set(Gauge::NotificationsUp, 1);
        }
        TrackingEvent::Down => {
            if let Some(certs) = &w.certs {
                certs.tracking(false);
            }
            cache.tracking_down();
            m.set(Gauge::NotificationsUp, 0);
        }
        TrackingEvent::All => {
            m.inc(Counter::Invalidations);
            if let Some(certs) = &w.certs {
                certs.invalidate_all();
            }
            cache.invalidate_all(Instant::now());
        }
        TrackingEvent::Keys(keys) => {
            for key in keys {
                m.inc(Counter::Invalidations);
                let Some(rest) = key.strip_prefix(prefix) else {
                    continue;
                };
                if let Some(name) = rest.strip_prefix("tls:") {
                    if let Some(certs) = &w.certs {
                        certs.invalidate(name);
                    }
                    continue;
                }
                if let Some(name) = rest.strip_prefix("acme:alpn:") {
                    if let Some(certs) = &w.certs {
                        certs.alpn_written(name);
                    }
                    continue;
                }
                // `frontend-options:<key>` follows its list: the same cached hosts depend on it.
                let evicted = if let Some(frontend) = rest
                    .strip_prefix("frontend:")
                    .or_else(|| rest.strip_prefix("frontend-options:"))
                {
                    cache.invalidate_frontend(frontend)
                } else if let Some(host) = rest.strip_prefix("dead:") {
                    cache.invalidate_host(host)
                } else {
                    0
                };
                m.add(Counter::CacheEvictions, evicted as u64);
            }
        }
    }
}

/// Periodic chores: flush the access log (every 200 ms), sweep idle backend connections and expired
/// route-cache entries (every second).
async fn housekeeping(w: Rc<Core>) {
    let mut tick: u64 = 0;
    loop {
        monoio::time::sleep(Duration::from_millis(200)).await;
        w.access_log.borrow_mut().flush();
        let m = w.m();
        m.set(Gauge::CacheEntries, w.cache.borrow().len() as i64);
        if let Some(certs) = &w.certs {
            m.set(Gauge::TlsCertificateCacheEntries, certs.cache_len() as i64);
        }
        m.set(Gauge::BackendConnections, w.pools.counts().1 as i64);
        m.set(Gauge::LargeBodyBuffers, w.large_bufs.lent() as i64);
        m.set(Gauge::RedisUp, i64::from(w.store.is_up()));
        m.set(
            Gauge::RedisFailovers,
            crate::drivers::redis::sentinel::failovers_seen() as i64,
        );
        m.heartbeat.store(
            crate::common::clock::unix_now(),
            std::sync::atomic::Ordering::Relaxed,
        );
        tick += 1;
        if tick.is_multiple_of(5) {
            w.pools.sweep();
            w.cache.borrow_mut().sweep(Instant::now());
        }
    }
}
