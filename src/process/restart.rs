//! Restarting a thread that crashed: the back-off the supervisor applies to workers, and
//! [`supervise_thread`], which keeps a helper thread (the control thread, the routes-file watcher)
//! alive the same way.
//!
//! A leaf of `process`: the supervisor, the control plane and the file driver's watcher use it, and it
//! uses only the shutdown latch, so none of them imports another for it.

use std::time::{Duration, Instant};

use log::{error, info};

use crate::process::shutdown::ShutdownLatch;

/// Longest pause before restarting a worker that keeps crashing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A worker that ran this long before crashing is restarted at once again.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The pause before restarting a worker after `crashes` earlier crashes in a row: none for the first,
/// then 1 s doubling up to [`MAX_BACKOFF`].
pub fn backoff(crashes: u32) -> Duration {
    if crashes == 0 {
        return Duration::ZERO;
    }
    let secs = 1u64 << (crashes - 1).min(6);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// How a supervised helper thread's body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It finished (the latch is set): the thread ends.
    Done,
    /// It crashed (a contained panic it reported, or `Err` of its own): restart it.
    Crashed,
}

/// Supervises a helper thread (the control thread, the routes-file watcher) like a worker: runs
/// `body` on the calling thread, and after a panic (or [`Ended::Crashed`]) logs it and runs it again,
/// at once the first time, then after 1 s, 2 s, 4 s ... up to [`MAX_BACKOFF`]; a run that lasted
/// [`STABLE_AFTER`] starts the count again. Returns when `body` is done or the latch is set.
pub fn supervise_thread(what: &str, latch: &ShutdownLatch, mut body: impl FnMut() -> Ended) {
    let mut crashes = 0u32;
    loop {
        let started = Instant::now();
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut body))
            .unwrap_or(Ended::Crashed);
        if ended == Ended::Done || latch.is_triggered() {
            return;
        }
        let ran = started.elapsed();
        if ran >= STABLE_AFTER {
            crashes = 0;
        }
        let wait = backoff(crashes);
        crashes = crashes.saturating_add(1);
        if wait.is_zero() {
            error!(
                "{what} crashed after {:.1} s; restarting it now",
                ran.as_secs_f64()
            );
        } else {
            error!(
                "{what} crashed after {:.1} s; restarting it in {} s ({crashes} crashes in a row)",
                ran.as_secs_f64(),
                wait.as_secs()
            );
        }
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if latch.is_triggered() {
                return;
            }
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
        info!("{what}: restarted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_supervised_thread_is_restarted_after_a_panic_and_stops_when_done() {
        let latch = ShutdownLatch::new();
        let mut runs = 0;
        supervise_thread("test thread", &latch, || {
            runs += 1;
            match runs {
                1 => panic!("on purpose"),
                2 => Ended::Crashed,
                _ => Ended::Done,
            }
        });
        assert_eq!(runs, 3);
        // A set latch ends supervision after a crash.
        latch.trigger();
        let mut runs = 0;
        supervise_thread("test thread", &latch, || {
            runs += 1;
            Ended::Crashed
        });
        assert_eq!(runs, 1);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let secs: Vec<u64> = (0..10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, vec![0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
