//! The supervisor: the main thread's loop after start-up. It owns the worker threads, the listening
//! sockets and the reload state, and reacts to [`Event`]s sent by the workers, the signal thread and the
//! reload thread:
//!
//! - a worker that panics (or stops on its own) is logged and replaced: the replacement gets duplicates
//!   of the same listening sockets (the supervisor kept them, so nothing queued on them was lost), opens
//!   its own Redis connections (or subscribes to the routes file again) and its access log. A worker
//!   that keeps crashing is restarted at once the first time, then after 1 s, 2 s, 4 s ... up to
//!   [`MAX_BACKOFF`](crate::process::restart::MAX_BACKOFF); a worker that ran [`STABLE_AFTER`] starts the count again.
//! - SIGHUP starts a reload (see `handover`) on a helper thread; when the successor is ready this
//!   process tells systemd the new main PID, stops accepting and drains; when it fails, it logs why and
//!   goes on serving untouched.
//! - SIGTERM/SIGINT (the signal thread sets the latch itself) → `STOPPING=1`, then the loop ends when the
//!   last worker has drained.
//!
//! It never touches a request and never blocks on anything but its event channel.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use crate::common::metrics::Metrics;
use crate::config::Config;
use crate::dataplane::worker::{self, ReadySender, WorkerEnd, WorkerSpec};
use crate::drivers::file::watcher::Subscriptions;
pub use crate::process::events::{channel, Event};
use crate::process::handover::{self, SuccessorPlan};
use crate::process::listeners::ListenSet;
use crate::process::restart::{backoff, STABLE_AFTER};
use crate::process::sd_notify;
use crate::process::shutdown::ShutdownLatch;

/// How to re-execute this program on reload.
pub struct ReloadCommand {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

/// One worker position (its id, core, metric slot and sockets stay; its thread may be replaced).
struct Slot {
    id: usize,
    core: Option<core_affinity::CoreId>,
    incarnation: u64,
    running: bool,
    started: Instant,
    /// Crashes in a row (reset after a stable run).
    crashes: u32,
    restart_at: Option<Instant>,
}

/// Everything the supervisor owns.
pub struct Supervisor {
    config: Arc<Config>,
    listen: ListenSet,
    routes: Option<Subscriptions>,
    latch: Arc<ShutdownLatch>,
    blocking_pool: monoio::blocking::DefaultThreadPool,
    metrics: Arc<Metrics>,
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    slots: Vec<Slot>,
    reload: ReloadCommand,
    reload_in_progress: bool,
    handed_over_to: Option<u32>,
    stopping_sent: bool,
}

impl Supervisor {
    /// Prepares the supervisor; `events` is the channel the signal thread already sends to.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        listen: ListenSet,
        routes: Option<Subscriptions>,
        latch: Arc<ShutdownLatch>,
        events: (Sender<Event>, Receiver<Event>),
        reload: ReloadCommand,
    ) -> Supervisor {
        let workers = config.server.workers.max(1);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        if !cores.is_empty() && workers > cores.len() {
            warn!(
                "{workers} workers on {} cores: some workers share a core (server.workers)",
                cores.len()
            );
        }
        let slots = (0..workers)
            .map(|id| Slot {
                id,
                core: if cores.is_empty() {
                    None
                } else {
                    Some(cores[id % cores.len()])
                },
                incarnation: 0,
                running: false,
                started: Instant::now(),
                crashes: 0,
                restart_at: None,
            })
            .collect();
        Supervisor {
            blocking_pool: monoio::blocking::DefaultThreadPool::new(2),
            metrics: Metrics::new(workers),
            config,
            listen,
            routes,
            latch,
            events_tx: events.0,
            events_rx: events.1,
            slots,
            reload,
            reload_in_progress: false,
            handed_over_to: None,
            stopping_sent: false,
        }
    }

    /// The metric slots of every worker.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Starts every worker and waits until all of them accept connections. On failure the latch is set
    /// (started workers drain and stop) and the error says why.
    pub fn start_all(&mut self) -> Result<(), String> {
        for i in 0..self.slots.len() {
            if let Err(e) = self.spawn(i) {
                self.fail_start();
                return Err(e);
            }
        }
        let mut ready = 0;
        while ready < self.slots.len() {
            match self.events_rx.recv() {
                Ok(Event::WorkerReady(Ok(_))) => ready += 1,
                Ok(Event::WorkerReady(Err(e))) => {
                    self.fail_start();
                    return Err(e);
                }
                Ok(Event::WorkerExited { id, panicked, .. }) => {
                    self.slot_stopped(id);
                    self.fail_start();
                    return Err(if panicked {
                        format!("worker {id} panicked during start-up")
                    } else {
                        format!("worker {id} stopped during start-up")
                    });
                }
                Ok(Event::Shutdown(_)) => {
                    self.fail_start();
                    return Err("stopped by a signal during start-up".into());
                }
                // A reload asked for before this process is ready is not honoured.
                Ok(Event::Reload) => warn!("SIGHUP during start-up ignored"),
                Ok(Event::ReloadDone(_)) => {}
                Err(_) => {
                    self.fail_start();
                    return Err("the supervisor lost its event channel".into());
                }
            }
        }
        Ok(())
    }

    /// The blocking-task pool the workers share (for file reads off the runtime threads).
    pub fn blocking_pool(&self) -> monoio::blocking::DefaultThreadPool {
        self.blocking_pool.clone()
    }

    /// Stops the workers started by [`Supervisor::start_all`] when a later start-up step failed.
    pub fn stop_after_failed_start(&mut self) {
        self.fail_start();
    }

    fn fail_start(&mut self) {
        self.latch.trigger();
        // Let the workers that did start drain and stop before the process exits.
        while self.slots.iter().any(|s| s.running) {
            match self.events_rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Event::WorkerExited { id, .. }) => self.slot_stopped(id),
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }

    fn slot_stopped(&mut self, id: usize) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.running = false;
        }
    }

    /// Starts the thread of slot `i` (a new incarnation).
    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let workers = self.slots.len();
        let (plain, tls) = self
            .listen
            .for_worker(i, workers)
            .map_err(|e| format!("worker {i}: cannot duplicate its listening sockets: {e}"))?;
        let slot = &mut self.slots[i];
        slot.incarnation += 1;
        let incarnation = slot.incarnation;
        let spec = WorkerSpec {
            id: slot.id,
            core: slot.core,
            config: self.config.clone(),
            listeners: plain,
            tls_listeners: tls,
            latch: self.latch.clone(),
            blocking_pool: self.blocking_pool.clone(),
            metrics: self.metrics.clone(),
            ready: ReadySender {
                tx: self.events_tx.clone(),
            },
            routes: self.routes.as_ref().map(Subscriptions::subscribe),
        };
        let id = slot.id;
        let exits = self.events_tx.clone();
        std::thread::Builder::new()
            .name(format!("hipache-w{id}"))
            .spawn(move || {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker::run(spec)));
                if !matches!(outcome, Ok(WorkerEnd::Stopped | WorkerEnd::FailedToStart)) {
                    let closed = worker::close_abandoned_connections();
                    if closed > 0 {
                        warn!(
                            "worker {id}: closed {closed} client connections its crash abandoned"
                        );
                    }
                }
                let _ = exits.send(Event::WorkerExited {
                    id,
                    incarnation,
                    panicked: !matches!(outcome, Ok(WorkerEnd::Stopped | WorkerEnd::FailedToStart)),
                });
            })
            .map_err(|e| format!("cannot start worker thread {id}: {e}"))?;
        slot.running = true;
        slot.started = Instant::now();
        slot.restart_at = None;
        Ok(())
    }

    /// Runs until every worker has stopped after the latch was set (shutdown, or hand-over to a
    /// successor).
    pub fn run(mut self) {
        loop {
            let now = Instant::now();
            let next_restart = self.slots.iter().filter_map(|s| s.restart_at).min();
            let wait = next_restart
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            match self.events_rx.recv_timeout(wait) {
                Ok(event) => self.handle(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.latch.is_triggered() {
                // Stopping (or handed over): the sockets kept for replacements are not needed any
                // more. Once the workers closed their duplicates too, the ports close (on shutdown new
                // connections are refused; after a hand-over the successor holds its own copies).
                if !self.listen.entries.is_empty() || self.listen.admin.is_some() {
                    self.listen.entries.clear();
                    self.listen.admin = None;
                }
                if !self.stopping_sent && self.handed_over_to.is_none() {
                    self.stopping_sent = true;
                    sd_notify::stopping("draining");
                }
                // A successor still starting is waited for, so that it is stopped rather than orphaned.
                if self.slots.iter().all(|s| !s.running) && !self.reload_in_progress {
                    break;
                }
                continue;
            }
            self.restart_due();
        }
        match self.handed_over_to {
            Some(pid) => info!(
                "hipache-tpc pid {} stopped; pid {pid} serves now",
                std::process::id()
            ),
            None => info!("hipache-tpc stopped"),
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::WorkerReady(Ok(id)) => {
                if self.slots.get(id).is_some_and(|s| s.incarnation > 1) {
                    info!("worker {id}: replacement is serving");
                }
            }
            Event::WorkerReady(Err(e)) => error!("{e}"),
            Event::WorkerExited {
                id,
                incarnation,
                panicked,
            } => self.worker_exited(id, incarnation, panicked),
            Event::Reload => self.start_reload(),
            Event::ReloadDone(result) => self.reload_done(result),
            Event::Shutdown(name) => {
                if self.handed_over_to.is_none() && !self.stopping_sent {
                    self.stopping_sent = true;
                    sd_notify::stopping(&format!("{name}: draining"));
                }
            }
        }
    }

    fn worker_exited(&mut self, id: usize, incarnation: u64, panicked: bool) {
        let latch_set = self.latch.is_triggered();
        let Some(slot) = self.slots.get_mut(id) else {
            return;
        };
        if slot.incarnation != incarnation {
            return;
        }
        slot.running = false;
        if latch_set {
            if panicked {
                error!("worker {id} panicked while stopping");
            }
            return;
        }
        let ran = slot.started.elapsed();
        if ran >= STABLE_AFTER {
            slot.crashes = 0;
        }
        let delay = backoff(slot.crashes);
        slot.crashes += 1;
        slot.restart_at = Some(Instant::now() + delay);
        let how = if panicked {
            "panicked"
        } else {
            "stopped unexpectedly"
        };
        let when = if delay.is_zero() {
            "now".to_string()
        } else {
            format!(
                "in {} s ({} crashes in a row)",
                delay.as_secs(),
                slot.crashes
            )
        };
        error!(
            "worker {id} {how} after {:.1} s; the other workers keep serving; replacing it {when} (its listening sockets are kept)",
            ran.as_secs_f64()
        );
        sd_notify::status(&format!("worker {id} {how}; replacing it {when}"));
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            let due = self.slots[i].restart_at.is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            match self.spawn(i) {
                Ok(()) => info!(
                    "worker {i}: replacement started (incarnation {})",
                    self.slots[i].incarnation
                ),
                Err(e) => {
                    let slot = &mut self.slots[i];
                    let delay = backoff(slot.crashes.max(1));
                    slot.crashes += 1;
                    slot.restart_at = Some(now + delay);
                    error!("{e}; trying again in {} s", delay.as_secs());
                }
            }
        }
    }

    fn start_reload(&mut self) {
        if let Some(pid) = self.handed_over_to {
            info!("SIGHUP ignored: this process already handed over to pid {pid} and is draining");
            return;
        }
        if self.latch.is_triggered() {
            info!("SIGHUP ignored: shutting down");
            return;
        }
        if self.reload_in_progress {
            info!("SIGHUP ignored: a reload is already in progress");
            return;
        }
        let sockets = match self.listen.handover_fds() {
            Ok(s) => s,
            Err(e) => {
                error!("reload failed: cannot duplicate the listening sockets: {e}; still serving");
                return;
            }
        };
        info!(
            "SIGHUP: reloading: starting {} {} with the listening sockets; this process (pid {}) serves until it is ready",
            self.reload.exe.display(),
            self.reload
                .args
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            std::process::id()
        );
        sd_notify::reloading("reloading: starting a new process");
        let plan = SuccessorPlan {
            exe: self.reload.exe.clone(),
            args: self.reload.args.clone(),
            sockets,
        };
        let tx = self.events_tx.clone();
        let spawned = std::thread::Builder::new()
            .name("hipache-reload".into())
            .spawn(move || {
                let result = handover::start_successor(plan, handover::READY_TIMEOUT)
                    .map(|successor| successor.pid);
                let _ = tx.send(Event::ReloadDone(result));
            });
        match spawned {
            Ok(_) => self.reload_in_progress = true,
            Err(e) => {
                error!("reload failed: cannot start the reload thread: {e}; still serving");
                sd_notify::ready("serving; the last reload failed");
            }
        }
    }

    fn reload_done(&mut self, result: Result<u32, String>) {
        self.reload_in_progress = false;
        match result {
            Ok(pid) if self.latch.is_triggered() => {
                warn!("reload: pid {pid} became ready while this process is stopping; stopping it too");
                // SAFETY: kill with the pid of our own child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
            }
            Ok(pid) => {
                self.handed_over_to = Some(pid);
                sd_notify::handed_over(pid, &format!("serving (pid {pid}, reloaded)"));
                info!(
                    "reload: pid {pid} is ready and accepting; pid {} stops accepting and finishes its requests and tunnels (at most {} s)",
                    std::process::id(),
                    self.config.server.drain_timeout.as_secs_f64()
                );
                self.latch.trigger();
            }
            Err(e) => {
                error!(
                    "reload failed: {e}; pid {} keeps serving with its current configuration and binary",
                    std::process::id()
                );
                sd_notify::ready(&format!("serving; the last reload failed: {e}"));
            }
        }
    }
}
