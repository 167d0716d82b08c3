//! The process-wide shutdown latch: set once by the signal thread, observed by every worker.
//!
//! This is the only state shared between threads besides the immutable configuration. It is touched once
//! per worker at start (to register a waker) and once at shutdown, never on the request path.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// A one-way flag with cross-thread wake-up.
#[derive(Default)]
pub struct ShutdownLatch {
    triggered: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl ShutdownLatch {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Sets the latch and wakes every waiter (idempotent).
    pub fn trigger(&self) {
        self.triggered.store(true, Ordering::SeqCst);
        let wakers = match self.wakers.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        for waker in wakers {
            waker.wake();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Completes once the latch is set.
    pub fn wait(self: &Arc<Self>) -> LatchWait {
        LatchWait {
            latch: self.clone(),
        }
    }
}

/// Future returned by [`ShutdownLatch::wait`].
pub struct LatchWait {
    latch: Arc<ShutdownLatch>,
}

impl Future for LatchWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.latch.is_triggered() {
            return Poll::Ready(());
        }
        match self.latch.wakers.lock() {
            Ok(mut guard) => guard.push(cx.waker().clone()),
            Err(poisoned) => poisoned.into_inner().push(cx.waker().clone()),
        }
        // Re-check: trigger() may have run between the first check and the push.
        if self.latch.is_triggered() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}
