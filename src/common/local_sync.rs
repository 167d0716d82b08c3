//! A notify (broadcast wake-up) for the tasks of one worker.
//!
//! Hand-written because no crate in the tree has one: local-sync (used for oneshot channels and
//! semaphores) has no notify, monoio none either, and tokio's needs tokio.
//!
//! Everything here is `!Sync` on purpose (`Cell`, `RefCell`): it coordinates tasks of one monoio runtime and
//! must never be used across threads. Cross-thread signalling is `shutdown::ShutdownLatch`'s job.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every task waiting on it. A notification is a generation bump: a waiter created before the
/// bump completes, one created after waits for the next.
///
/// Each waiting future holds a slot in a reusable table and frees it when dropped, so a waiter that
/// gives up (an idle connection that gets a request first) leaves nothing behind: memory is bounded by
/// the number of waiters alive at once.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    slots: RefCell<WakerSlots>,
}

#[derive(Default)]
struct WakerSlots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes all current waiters.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let woken: Vec<Waker> = self
            .slots
            .borrow_mut()
            .wakers
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in woken {
            waker.wake();
        }
    }

    /// A future that completes at the next `notify_all`.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.get(),
            slot: None,
        }
    }

    /// Waiters currently registered (for tests and metrics).
    pub fn waiters(&self) -> usize {
        let slots = self.slots.borrow();
        slots.wakers.len() - slots.free.len()
    }
}

/// Future returned by [`Notify::notified`].
pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    slot: Option<usize>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut slots = self.notify.slots.borrow_mut();
        match self.slot {
            Some(i) => match &mut slots.wakers[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                entry => *entry = Some(cx.waker().clone()),
            },
            None => {
                let i = match slots.free.pop() {
                    Some(i) => {
                        slots.wakers[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        slots.wakers.push(Some(cx.waker().clone()));
                        slots.wakers.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            let mut slots = self.notify.slots.borrow_mut();
            slots.wakers[i] = None;
            slots.free.push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn dropped_waiters_leave_nothing_behind() {
        let notify = Notify::new();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            let mut fut = std::pin::pin!(notify.notified());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(notify.waiters(), 0);
        let mut a = Box::pin(notify.notified());
        let mut b = Box::pin(notify.notified());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert_eq!(notify.waiters(), 2);
        notify.notify_all();
        assert!(a.as_mut().poll(&mut cx).is_ready());
        assert!(b.as_mut().poll(&mut cx).is_ready());
        drop((a, b));
        assert_eq!(notify.waiters(), 0);
        assert!(notify.slots.borrow().wakers.len() <= 2);
    }
}
