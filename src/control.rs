//! The control thread: one thread with its own monoio runtime (not pinned, not a worker) that runs the
//! admin listener and the active health checker, started when either is configured.
//!
//! It owns its own Redis connections (reads, writes, and the `dead` subscription) and shares only
//! `Arc`s with the workers (the configuration, the metric slots, the shutdown latch). It must never
//! make a worker wait: the workers do not know it exists, except through Redis.

use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use log::{error, info};

use crate::admin::{self, api::ApiStore, AdminCtx};
use crate::config::{Config, DriverConfig};
use crate::healthcheck::Checker;
use crate::metrics::Metrics;
use crate::redis::subscriber::Subscriber;
use crate::redis::RedisClient;
use crate::shutdown::ShutdownLatch;

/// Everything the control thread needs, moved into it.
pub struct ControlSpec {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub latch: Arc<ShutdownLatch>,
    pub blocking_pool: monoio::blocking::DefaultThreadPool,
    /// The admin socket, bound (and listening) by the main thread before the workers started.
    pub admin_listener: Option<std::net::TcpListener>,
}

/// True when the configuration asks for a control thread.
pub fn wanted(config: &Config) -> bool {
    config.admin.is_some() || config.healthcheck.enabled
}

/// Starts the control thread; returns once it serves (or why it could not start).
pub fn spawn(spec: ControlSpec) -> Result<std::thread::JoinHandle<()>, String> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("hipache-control".into())
        .spawn(move || run(spec, ready_tx))
        .map_err(|e| format!("cannot start the control thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the control thread stopped during start-up".into()),
    }
}

fn run(spec: ControlSpec, ready: mpsc::Sender<Result<(), String>>) {
    let pool = Box::new(spec.blocking_pool.clone());
    let use_epoll = std::env::var("HIPACHE_TPC_IO").is_ok_and(|v| v == "epoll");
    let failed = ready.clone();
    let result = if use_epoll {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .attach_thread_pool(pool)
            .build()
            .map(|mut rt| rt.block_on(control_main(spec, ready)))
    } else {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .enable_timer()
            .attach_thread_pool(pool)
            .build()
            .map(|mut rt| rt.block_on(control_main(spec, ready)))
    };
    if let Err(e) = result {
        error!("control thread: cannot build its runtime: {e}");
        let _ = failed.send(Err(format!(
            "control thread: cannot build its runtime: {e}"
        )));
    }
}

async fn control_main(spec: ControlSpec, ready: mpsc::Sender<Result<(), String>>) {
    let ControlSpec {
        config,
        metrics,
        latch,
        admin_listener,
        ..
    } = spec;
    // Admin and checker queries may scan or run scripts: allow a little more than a route lookup.
    let timeout = config.server.redis_timeout.max(Duration::from_secs(2));
    let redis = match &config.driver {
        DriverConfig::Redis {
            read,
            write,
            prefix,
        } => {
            let read_client = RedisClient::start(
                read.clone(),
                "control: redis".into(),
                "hipache-tpc-control".into(),
                timeout,
            );
            let write_client = if write == read {
                read_client.clone()
            } else {
                RedisClient::start(
                    write.clone(),
                    "control: redis (writes)".into(),
                    "hipache-tpc-control-writes".into(),
                    timeout,
                )
            };
            Some((read_client, write_client, prefix.clone(), write.clone()))
        }
        DriverConfig::File { .. } => None,
    };
    let checker = match (&redis, config.healthcheck.enabled) {
        (Some((_, write, prefix, endpoint)), true) => {
            // Proxies publish on the write Redis: follow the channel there.
            let subscriber = Subscriber::start(
                endpoint.clone(),
                "health checker: dead channel".into(),
                "hipache-tpc-hchecker-sub".into(),
                vec!["dead".into()],
                timeout,
            );
            Some(Checker::start(
                config.healthcheck.clone(),
                write.clone(),
                subscriber,
                prefix.clone(),
            ))
        }
        _ => None,
    };
    if let Some(std_listener) = admin_listener {
        let local = std_listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let listener = match monoio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot use the admin listener {local}: {e}")));
                return;
            }
        };
        let store = redis.as_ref().map(|(read, write, prefix, _)| ApiStore {
            read: read.clone(),
            write: write.clone(),
            prefix: prefix.clone(),
        });
        let ctx = Rc::new(AdminCtx::new(
            config.clone(),
            metrics,
            store,
            checker.clone(),
        ));
        crate::task::spawn(
            crate::task::OnPanic::StopThread,
            admin::serve(listener, ctx),
        );
        let auth = match config.admin.as_ref().and_then(|a| a.key.as_ref()) {
            Some(_) => "key required",
            None => "no key",
        };
        info!("admin API, /metrics and /status on http://{local} ({auth})");
    }
    let _ = ready.send(Ok(()));
    drop(ready);
    latch.wait().await;
    if let Some(c) = &checker {
        c.shutdown(Duration::from_secs(1)).await;
    }
    // Let queued close operations of the sockets dropped with the runtime be submitted.
    monoio::time::sleep(Duration::from_millis(1)).await;
    info!("control thread: stopped");
}
