//! Process start-up and shutdown: bind the listeners, start one worker per configured core, handle
//! signals, and wait for the workers to drain.
//!
//! This is control plane only: it runs on the main thread and never handles a request.

use std::sync::{mpsc, Arc};

use log::{error, info, warn};

use crate::config::{Config, DriverConfig};
use crate::file_routes::{watcher, RouteFeed};
use crate::shutdown::ShutdownLatch;
use crate::worker::{self, WorkerSpec};

/// Runs the proxy until SIGTERM/SIGINT and draining are over.
pub fn run(config: Config) -> Result<(), String> {
    let config = Arc::new(config);
    let workers = config.server.workers;
    // Certificates and the routes file first: a bad key or a broken routes file stops the start-up
    // before any port is taken.
    let tls_configs = crate::tls::load_all(&config)?;
    let https_addrs: Vec<std::net::SocketAddr> = config
        .https
        .iter()
        .flat_map(|h| h.listeners.iter().map(|l| l.addr))
        .collect();
    let initial_routes = match &config.driver {
        DriverConfig::File { path } => {
            Some(watcher::load_initial(path).map_err(|e| e.to_string())?)
        }
        DriverConfig::Redis { .. } => None,
    };
    let per_worker = crate::listeners::bind_all(&config.http, workers)?;
    let per_worker_tls = crate::listeners::bind_all(&https_addrs, workers)?;
    let admin_listener = match &config.admin {
        Some(admin) => Some(
            crate::listeners::bind_exclusive(admin.addr)
                .map_err(|e| format!("admin listener (`admin.address`, `admin.port`): {e}"))?,
        ),
        None => None,
    };
    let listeners: Vec<Listeners> = per_worker
        .into_iter()
        .zip(per_worker_tls)
        .map(|(plain, tls)| Listeners {
            plain,
            tls: tls.into_iter().zip(tls_configs.iter().cloned()).collect(),
        })
        .collect();

    let latch = signals_and_latch(&config)?;
    let (feeds, routes_watcher) = match initial_routes {
        Some(initial) => {
            let (feeds, handle) = watcher::spawn(initial, listeners.len(), latch.clone())
                .map_err(|e| format!("cannot start the routes-file watcher thread: {e}"))?;
            (feeds.into_iter().map(Some).collect(), Some(handle))
        }
        None => ((0..listeners.len()).map(|_| None).collect(), None),
    };
    let result = start_workers(
        config.clone(),
        listeners,
        feeds,
        latch.clone(),
        admin_listener,
    );
    if let Some(handle) = routes_watcher {
        latch.trigger();
        if handle.join().is_err() {
            error!("the routes-file watcher thread panicked");
        }
    }
    result
}

/// The sockets of one worker.
struct Listeners {
    plain: Vec<std::net::TcpListener>,
    tls: Vec<(std::net::TcpListener, Arc<rustls::ServerConfig>)>,
}

fn signals_and_latch(config: &Config) -> Result<Arc<ShutdownLatch>, String> {
    crate::signals::block();
    let latch = ShutdownLatch::new();
    crate::signals::spawn(latch.clone(), config.server.drain_timeout.as_secs_f64())
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(latch)
}

fn start_workers(
    config: Arc<Config>,
    per_worker: Vec<Listeners>,
    feeds: Vec<Option<RouteFeed>>,
    latch: Arc<ShutdownLatch>,
    admin_listener: Option<std::net::TcpListener>,
) -> Result<(), String> {
    let workers = per_worker.len();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if !cores.is_empty() && workers > cores.len() {
        warn!(
            "{workers} workers on {} cores: some workers share a core (server.workers)",
            cores.len()
        );
    }
    let blocking_pool = monoio::blocking::DefaultThreadPool::new(2);
    let metrics = crate::metrics::Metrics::new(workers);
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(workers);
    for (id, (listeners, routes)) in per_worker.into_iter().zip(feeds).enumerate() {
        let spec = WorkerSpec {
            id,
            core: if cores.is_empty() {
                None
            } else {
                Some(cores[id % cores.len()])
            },
            config: config.clone(),
            listeners: listeners.plain,
            tls_listeners: listeners.tls,
            latch: latch.clone(),
            blocking_pool: blocking_pool.clone(),
            metrics: metrics.clone(),
            ready: ready_tx.clone(),
            routes,
        };
        let handle = std::thread::Builder::new()
            .name(format!("hipache-w{id}"))
            .spawn(move || worker::run(spec))
            .map_err(|e| format!("cannot start worker thread {id}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                latch.trigger();
                return Err(e);
            }
            Err(_) => {
                latch.trigger();
                return Err("a worker stopped during start-up".into());
            }
        }
    }
    // The admin listener and the health checker run on their own thread, never on a worker.
    let control = if crate::control::wanted(&config) {
        let spec = crate::control::ControlSpec {
            config: config.clone(),
            metrics: metrics.clone(),
            latch: latch.clone(),
            blocking_pool: blocking_pool.clone(),
            admin_listener,
        };
        match crate::control::spawn(spec) {
            Ok(handle) => Some(handle),
            Err(e) => {
                latch.trigger();
                return Err(e);
            }
        }
    } else {
        None
    };
    let binds: Vec<String> = config
        .http
        .iter()
        .map(|a| a.to_string())
        .chain(
            config
                .https
                .iter()
                .flat_map(|h| h.listeners.iter().map(|l| format!("{} (https)", l.addr))),
        )
        .collect();
    let driver = match &config.driver {
        DriverConfig::Redis { read, prefix, .. } => {
            if prefix.is_empty() {
                read.display()
            } else {
                format!("{} (prefix {prefix:?})", read.display())
            }
        }
        DriverConfig::File { path } => {
            format!("the file {} (reloaded on change)", path.display())
        }
    };
    info!(
        "hipache-tpc {} ready: {workers} workers listening on {}, routes from {driver}",
        env!("CARGO_PKG_VERSION"),
        binds.join(", ")
    );
    let mut panicked = 0;
    for handle in handles {
        if handle.join().is_err() {
            panicked += 1;
        }
    }
    if panicked > 0 {
        error!("{panicked} worker thread(s) panicked");
    }
    if let Some(handle) = control {
        // The latch is set (the workers only stop after it): the control thread is stopping too.
        latch.trigger();
        if handle.join().is_err() {
            error!("the control thread panicked");
        }
    }
    info!("hipache-tpc stopped");
    Ok(())
}
