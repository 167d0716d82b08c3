//! The process around the two planes: start-up, threads, signals, reloads. None of it runs per request.
//!
//! - [`cli`]: the command line; [`preflight`]: checks shared by `--dry` and a real start.
//! - [`startup`]: load certificates and routes, bind or adopt listeners, drop privileges, start the
//!   workers and the control thread, then hand the main thread to the [`supervisor`].
//! - [`supervisor`]: worker threads, their replacement after a panic, reloads; [`events`]: what it
//!   hears about; [`restart`]: the back-off after a crash, and the same for helper threads.
//! - [`listeners`]: SO_REUSEPORT listening sockets, one per worker per address.
//! - [`handover`]: zero-downtime reload (listening sockets passed to a successor process).
//! - [`signals`]: the signal thread; [`shutdown`]: the process-wide shutdown latch.
//! - [`privileges`]: the switch from root to `user`/`group`; [`pid_file`]: `server.pidFile`.
//! - [`sd_notify`]: systemd readiness and status notifications.

pub mod cli;
pub mod events;
pub mod handover;
pub mod listeners;
pub mod pid_file;
pub mod preflight;
pub mod privileges;
pub mod restart;
pub mod sd_notify;
pub mod shutdown;
pub mod signals;
pub mod startup;
pub mod supervisor;
