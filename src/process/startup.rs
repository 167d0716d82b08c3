//! Process start-up: load certificates and routes, bind (or adopt) the listeners, give up root, start
//! the signal thread and the workers, report readiness (to systemd, or to the predecessor on a reload),
//! then hand over to the supervisor until shutdown.
//!
//! This is control plane only: it runs on the main thread and never handles a request.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use log::{error, info, warn};

use crate::config::{Config, DriverConfig};
use crate::drivers::file::watcher;
use crate::process::handover::{Inherited, ReadyPipe};
use crate::process::listeners::ListenSet;
use crate::process::privileges::{self, Plan};
use crate::process::sd_notify;
use crate::process::shutdown::ShutdownLatch;
use crate::process::supervisor::{self, ReloadCommand, Supervisor};

/// How this process was started.
pub struct Startup {
    /// Listening sockets handed over by a predecessor (empty on a cold start).
    pub inherited: Inherited,
    /// Set when started by a predecessor: where to report readiness.
    pub ready_pipe: Option<ReadyPipe>,
    /// What to execute on reload.
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl Startup {
    /// A cold start (no predecessor), re-executing `exe args` on reload.
    pub fn cold(exe: PathBuf, args: Vec<OsString>) -> Startup {
        Startup {
            inherited: Inherited::default(),
            ready_pipe: None,
            exe,
            args,
        }
    }
}

/// Runs the proxy until SIGTERM/SIGINT and draining are over, or until a successor took over. On a
/// start-up error the predecessor (if any) is told why.
pub fn run(config: Config, startup: Startup) -> Result<(), String> {
    let Startup {
        mut inherited,
        ready_pipe,
        exe,
        args,
    } = startup;
    let mut ready_pipe = ready_pipe;
    let result = start(config, &mut inherited, &mut ready_pipe, exe, args);
    if let (Err(e), Some(pipe)) = (&result, ready_pipe.take()) {
        pipe.failed(e);
    }
    result
}

fn start(
    config: Config,
    inherited: &mut Inherited,
    ready_pipe: &mut Option<ReadyPipe>,
    exe: PathBuf,
    args: Vec<OsString>,
) -> Result<(), String> {
    let config = Arc::new(config);
    let workers = config.server.workers.max(1);
    // Certificates, the routes file and the account first: a bad key, a broken routes file or an unknown
    // user stops the start-up before any port is taken.
    // The same checks as --dry, in the same words.
    let checked = crate::process::preflight::check(&config)?;
    for w in &checked.warnings {
        warn!("{w}");
    }
    let plan = checked.plan;
    let tls_configs = crate::tls::load_all(&config)?;
    let https: Vec<(std::net::SocketAddr, Arc<rustls::ServerConfig>)> = config
        .https
        .iter()
        .flat_map(|h| h.listeners.iter().map(|l| l.addr))
        .zip(tls_configs)
        .collect();
    let initial_routes = match &config.driver {
        DriverConfig::File { path } => {
            Some(watcher::load_initial(path).map_err(|e| e.to_string())?)
        }
        DriverConfig::Redis { .. } => None,
    };
    if !inherited.is_empty() {
        info!("started by the previous process: adopting its listening sockets");
    }
    let admin_addr = config.admin.as_ref().map(|a| a.addr);
    let listen = ListenSet::bind_all(&config.http, &https, admin_addr, workers, inherited)?;
    drop_privileges(&config, &plan)?;
    if let Some(path) = &config.server.access_log {
        crate::dataplane::access_log::keep_open(path)
            .map_err(|e| format!("cannot open the access log {}: {e}", path.display()))?;
    }
    if crate::common::fault::armed() {
        warn!("fault injection is armed (HIPACHE_TPC_FAULT_INJECTION=1): a test build, not for production");
    }

    let latch = ShutdownLatch::new();
    let events = supervisor::channel();
    crate::process::signals::block();
    crate::process::signals::spawn(
        latch.clone(),
        config.server.drain_timeout.as_secs_f64(),
        events.0.clone(),
    )
    .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    let (routes, routes_watcher) = match initial_routes {
        Some(initial) => {
            let (subscriptions, handle) = watcher::spawn(initial, latch.clone())
                .map_err(|e| format!("cannot start the routes-file watcher thread: {e}"))?;
            (Some(subscriptions), Some(handle))
        }
        None => (None, None),
    };
    let binds = listen.describe();
    let admin_listener = listen
        .admin_socket()
        .map_err(|e| format!("cannot duplicate the admin socket: {e}"))?;
    let mut supervisor = Supervisor::new(
        config.clone(),
        listen,
        routes,
        latch.clone(),
        events,
        ReloadCommand { exe, args },
    );
    let started = supervisor.start_all();
    if let Err(e) = started {
        stop_watcher(&latch, routes_watcher);
        return Err(e);
    }
    // The admin listener and the health checker run on their own thread, never on a worker.
    let control = if crate::control::thread::wanted(&config) {
        let spec = crate::control::thread::ControlSpec {
            config: config.clone(),
            metrics: supervisor.metrics(),
            latch: latch.clone(),
            blocking_pool: supervisor.blocking_pool(),
            admin_listener,
        };
        match crate::control::thread::spawn(spec) {
            Ok(handle) => Some(handle),
            Err(e) => {
                supervisor.stop_after_failed_start();
                stop_watcher(&latch, routes_watcher);
                return Err(e);
            }
        }
    } else {
        None
    };
    // Workers waited (up to 2 s each) for Redis: a proxy that cannot reach or authenticate to it says
    // so instead of a plain "ready".
    let not_ready = match &config.driver {
        DriverConfig::Redis { .. } => {
            let connected = supervisor
                .metrics()
                .gauge_total(crate::common::metrics::Gauge::RedisUp)
                .max(0) as usize;
            (connected < workers).then(|| {
                let why = crate::common::metrics::redis_problem();
                format!(
                    "; {} of {workers} workers have no Redis connection{}",
                    workers - connected,
                    if why.is_empty() {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                )
            })
        }
        DriverConfig::File { .. } => None,
    };
    let status = format!(
        "hipache-tpc {} {}: {workers} workers listening on {}, routes from {}{}",
        env!("CARGO_PKG_VERSION"),
        if not_ready.is_some() {
            "not ready"
        } else {
            "ready"
        },
        binds.join(", "),
        describe_driver(&config),
        not_ready.unwrap_or_default()
    );
    info!("{status} (pid {})", std::process::id());
    if let Some(path) = &config.server.pid_file {
        if let Err(e) = crate::process::pid_file::write(path) {
            error!("{e}");
        }
    }
    match ready_pipe.take() {
        // The predecessor tells systemd (MAINPID and READY) once it has heard this.
        Some(pipe) => pipe.ready(),
        None => {
            sd_notify::ready(&status);
        }
    }
    supervisor.run();
    if let Some(path) = &config.server.pid_file {
        // Only when it still names this process (a reload's successor rewrote it otherwise).
        crate::process::pid_file::remove_if_ours(path);
    }
    stop_watcher(&latch, routes_watcher);
    if let Some(handle) = control {
        // The latch is set (the workers only stop after it): the control thread is stopping too.
        latch.trigger();
        if handle.join().is_err() {
            error!("the control thread panicked");
        }
    }
    Ok(())
}

/// Applies the privilege plan after binding: the access log (and pid file) are created, or taken over
/// from root, for the user, then the process switches; the log is checked to stay appendable.
fn drop_privileges(config: &Config, plan: &Plan) -> Result<(), String> {
    match plan {
        Plan::Unprivileged => Ok(()),
        Plan::KeepRoot => {
            warn!("running as root (\"user\": \"root\"): workers serve with every privilege");
            Ok(())
        }
        Plan::SwitchTo(who) => {
            if let Some(path) = &config.server.access_log {
                privileges::prepare_access_log(path, who)?;
            }
            if let Some(path) = &config.server.pid_file {
                crate::process::pid_file::prepare(path, who)?;
            }
            privileges::switch_to(who)?;
            if let Some(path) = &config.server.access_log {
                privileges::check_access_log_writable(path)?;
            }
            info!(
                "listeners bound as root; now running as user {} (uid {}) and group {} (gid {})",
                who.user, who.uid, who.group, who.gid
            );
            Ok(())
        }
    }
}

fn stop_watcher(latch: &ShutdownLatch, handle: Option<std::thread::JoinHandle<()>>) {
    if let Some(handle) = handle {
        latch.trigger();
        if handle.join().is_err() {
            error!("the routes-file watcher thread panicked");
        }
    }
}

fn describe_driver(config: &Config) -> String {
    match &config.driver {
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
    }
}
