//! The control thread: one thread with its own monoio runtime (not pinned, not a worker) that runs the
//! admin listener, the active health checker and the ACME client (README "Automatic HTTPS (ACME)"),
//! started when any of them is configured.
//!
//! It owns its own Redis connections (reads, writes, and the `dead` subscription) and shares only
//! `Arc`s with the workers (the configuration, the metric slots, the shutdown latch). It must never
//! make a worker wait: the workers do not know it exists, except through Redis.
//!
//! It is supervised like a worker: a panic in one of its tasks (or one unwinding out of its runtime)
//! ends the run, and a new runtime with new Redis connections and a new duplicate of the admin socket
//! starts, at once and then with back-off (`process::restart::supervise_thread`).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use log::{error, info};

use crate::common::local_sync::Notify;
use crate::common::metrics::Metrics;
use crate::config::{Config, DriverConfig};
use crate::control::admin::{self, api::ApiStore, AdminCtx};
use crate::control::healthcheck::Checker;
use crate::drivers::redis::subscriber::Subscriber;
use crate::drivers::redis::RedisClient;
use crate::process::restart::Ended;
use crate::process::shutdown::ShutdownLatch;

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
    config.admin.is_some() || config.healthcheck.enabled || config.acme.is_some()
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

/// The thread's body: the runtime, supervised like a worker (rebuilt after a panic, with back-off).
fn run(spec: ControlSpec, ready: mpsc::Sender<Result<(), String>>) {
    let ControlSpec {
        config,
        metrics,
        latch,
        blocking_pool,
        admin_listener,
    } = spec;
    let use_epoll = std::env::var("HIPACHE_TPC_IO").is_ok_and(|v| v == "epoll");
    let supervised_latch = latch.clone();
    crate::process::restart::supervise_thread("the control thread", &supervised_latch, || {
        // Each run gets its own duplicate of the admin socket (the kept one never closes, so nothing
        // queued on it is lost across a restart).
        let admin_listener = match admin_listener
            .as_ref()
            .map(std::net::TcpListener::try_clone)
        {
            None => None,
            Some(Ok(l)) => Some(l),
            Some(Err(e)) => {
                error!("control thread: cannot duplicate the admin socket: {e}");
                let _ = ready.send(Err(format!("cannot duplicate the admin socket: {e}")));
                return Ended::Crashed;
            }
        };
        let run = ControlRun {
            config: config.clone(),
            metrics: metrics.clone(),
            latch: latch.clone(),
            admin_listener,
        };
        let pool = Box::new(blocking_pool.clone());
        let ready_now = ready.clone();
        let result = if use_epoll {
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .attach_thread_pool(pool)
                .build()
                .map(|mut rt| rt.block_on(control_main(run, ready_now)))
        } else {
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .enable_timer()
                .attach_thread_pool(pool)
                .build()
                .map(|mut rt| rt.block_on(control_main(run, ready_now)))
        };
        match result {
            Ok(ended) => ended,
            Err(e) => {
                error!("control thread: cannot build its runtime: {e}");
                let _ = ready.send(Err(format!(
                    "control thread: cannot build its runtime: {e}"
                )));
                Ended::Crashed
            }
        }
    });
}

/// What one run of the control runtime gets.
struct ControlRun {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    latch: Arc<ShutdownLatch>,
    admin_listener: Option<std::net::TcpListener>,
}

/// One run of the control runtime: `Crashed` when one of its tasks panicked (the thread restarts it).
/// Readiness is reported on `ready` (heard at start-up only; a restart's report goes nowhere).
async fn control_main(run: ControlRun, ready: mpsc::Sender<Result<(), String>>) -> Ended {
    let ControlRun {
        config,
        metrics,
        latch,
        admin_listener,
    } = run;
    // A panic in a task holding this thread's state (a Redis connection, the admin listener, the
    // checker) ends this run; the supervision in `run` starts a new one.
    let crashed = Rc::new(Cell::new(false));
    let crash_notify = Rc::new(Notify::new());
    {
        let (crashed, crash_notify) = (crashed.clone(), crash_notify.clone());
        crate::common::task::set_crash_hook(move || {
            crashed.set(true);
            crash_notify.notify_all();
        });
    }
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
    if let (Some((_, _, prefix, endpoint)), Some(acme)) = (&redis, &config.acme) {
        // Its own connection to the write Redis (it polls the queue and holds locks there).
        crate::control::acme::start(acme.clone(), endpoint.clone(), prefix.clone(), timeout);
    }
    if let Some(std_listener) = admin_listener {
        let local = std_listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let listener = match monoio::net::TcpListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot use the admin listener {local}: {e}")));
                return Ended::Crashed;
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
        crate::common::task::spawn(
            crate::common::task::OnPanic::StopThread,
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
    while !crashed.get() {
        let crash = crash_notify.notified();
        monoio::select! {
            _ = latch.wait() => break,
            _ = crash => {}
        }
    }
    if crashed.get() {
        error!("control thread: a task panicked; restarting the admin API and the health checker");
        // Let queued close operations of the sockets dropped with the runtime be submitted.
        monoio::time::sleep(Duration::from_millis(1)).await;
        return Ended::Crashed;
    }
    if let Some(c) = &checker {
        c.shutdown(Duration::from_secs(1)).await;
    }
    monoio::time::sleep(Duration::from_millis(1)).await;
    info!("control thread: stopped");
    Ended::Done
}
