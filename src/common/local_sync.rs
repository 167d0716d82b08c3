//! Single-thread synchronisation primitives for tasks of one worker: a oneshot channel and a notify
//! (broadcast wake-up).
//!
//! Everything here is `!Send` on purpose (`Rc`, `RefCell`): it coordinates tasks of one monoio runtime and
//! must never be used across threads. Cross-thread signalling is `shutdown::ShutdownLatch`'s job.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct OneshotInner<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
    sender_alive: Cell<bool>,
}

/// Sending half of a oneshot channel.
pub struct Sender<T> {
    inner: Rc<OneshotInner<T>>,
}

/// Receiving half: a future resolving to `Some(value)`, or `None` if the sender was dropped unused.
pub struct Receiver<T> {
    inner: Rc<OneshotInner<T>>,
}

/// Creates a oneshot channel.
pub fn oneshot<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Rc::new(OneshotInner {
        value: RefCell::new(None),
        waker: RefCell::new(None),
        sender_alive: Cell::new(true),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver { inner },
    )
}

impl<T> Sender<T> {
    /// False once the receiver was dropped (its task gave up waiting).
    pub fn receiver_alive(&self) -> bool {
        Rc::strong_count(&self.inner) > 1
    }

    /// Delivers the value (dropped silently if the receiver is gone).
    pub fn send(self, value: T) {
        *self.inner.value.borrow_mut() = Some(value);
        // Drop runs next and wakes the receiver.
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.inner.sender_alive.set(false);
        if let Some(waker) = self.inner.waker.borrow_mut().take() {
            waker.wake();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(value) = self.inner.value.borrow_mut().take() {
            return Poll::Ready(Some(value));
        }
        if !self.inner.sender_alive.get() {
            return Poll::Ready(None);
        }
        *self.inner.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

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
