//! What the supervisor hears about: the messages workers, the signal thread and the reload helper send
//! to the main thread. A leaf (std types only), so that senders need not import the supervisor.

use std::sync::mpsc::{self, Receiver, Sender};

/// What the supervisor hears about.
pub enum Event {
    /// A worker accepts connections (`Ok(id)`) or could not start.
    WorkerReady(Result<usize, String>),
    /// A worker thread ended (`panicked`: by a panic).
    WorkerExited {
        id: usize,
        incarnation: u64,
        panicked: bool,
    },
    /// SIGHUP: start a successor with the current binary and configuration file.
    Reload,
    /// The reload helper's verdict: the successor's PID, or why there is none.
    ReloadDone(Result<u32, String>),
    /// SIGTERM/SIGINT (the latch is already set).
    Shutdown(&'static str),
}

/// A channel for supervisor events.
pub fn channel() -> (Sender<Event>, Receiver<Event>) {
    mpsc::channel()
}
