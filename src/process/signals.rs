//! Signals, handled synchronously on one dedicated thread with `sigwait`.
//!
//! The main thread blocks the signals before any other thread starts, so every thread inherits the mask
//! and only the signal thread ever receives them. It turns them into actions: SIGTERM/SIGINT start a
//! graceful drain (a second one exits at once), SIGUSR1 asks workers to reopen the access log, SIGHUP
//! asks the supervisor for a reload (a successor process, see `handover`). Nothing here touches a worker
//! directly.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::{info, warn};

use crate::dataplane::access_log::REOPEN_GENERATION;
use crate::process::events::Event;
use crate::process::shutdown::ShutdownLatch;

fn handled_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local sigset_t.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks the handled signals in the calling thread (and every thread it spawns afterwards).
pub fn block() {
    let set = handled_set();
    // SAFETY: changes the calling thread's mask with a valid set.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Starts the signal thread.
pub fn spawn(
    latch: Arc<ShutdownLatch>,
    drain_secs: f64,
    events: std::sync::mpsc::Sender<Event>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("hipache-signals".into()).spawn(move || {
        let set = handled_set();
        loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: waits on a valid set; the signals are blocked in every thread.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            match sig {
                libc::SIGTERM | libc::SIGINT => {
                    let name = if sig == libc::SIGTERM { "SIGTERM" } else { "SIGINT" };
                    if latch.is_triggered() {
                        warn!("{name} again: exiting now without waiting for requests in flight");
                        std::process::exit(1);
                    }
                    info!("{name}: no longer accepting connections; finishing requests in flight (at most {drain_secs} s)");
                    latch.trigger();
                    let _ = events.send(Event::Shutdown(name));
                }
                libc::SIGUSR1 => {
                    REOPEN_GENERATION.fetch_add(1, Ordering::Relaxed);
                    info!("SIGUSR1: reopening the access log");
                }
                libc::SIGHUP => {
                    let _ = events.send(Event::Reload);
                }
                _ => {}
            }
        }
    })?;
    Ok(())
}
