//! Single-thread synchronisation primitives for tasks of one worker: a oneshot channel and a notify
//! (broadcast wake-up).
//!
//! Everything here is `!Send` on purpose (`Rc`, `RefCell`): it coordinates tasks of one monoio runtime and
//! must never be used across threads. Cross-thread signalling is `shutdown::ShutdownLatch`'s job.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
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
/// Each waiting [`Notified`] holds one registration, removed when it completes or is dropped. (An
/// earlier version kept the waker of every abandoned wait until the next notification: the drain
/// signal is raced against every idle keep-alive wait and notified only at shutdown, so each request
/// left a waker behind, and the waker kept its whole connection task allocated.)
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    next_key: Cell<u64>,
    wakers: RefCell<HashMap<u64, Waker>>,
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes all current waiters.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// A future that completes at the next `notify_all`.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.get(),
            key: None,
        }
    }

    /// Waiters registered now (for tests and gauges).
    pub fn waiters(&self) -> usize {
        self.wakers.borrow().len()
    }
}

/// Future returned by [`Notify::notified`].
pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
    /// This wait's registration in `notify.wakers`, once polled.
    key: Option<u64>,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.notify.generation.get() != this.generation {
            // notify_all took every registration already.
            this.key = None;
            return Poll::Ready(());
        }
        let mut wakers = this.notify.wakers.borrow_mut();
        match this.key {
            Some(key) => match wakers.get_mut(&key) {
                Some(w) if w.will_wake(cx.waker()) => {}
                Some(w) => *w = cx.waker().clone(),
                None => {
                    wakers.insert(key, cx.waker().clone());
                }
            },
            None => {
                let key = this.notify.next_key.get();
                this.notify.next_key.set(key.wrapping_add(1));
                wakers.insert(key, cx.waker().clone());
                this.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for Notified<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if let Ok(mut wakers) = self.notify.wakers.try_borrow_mut() {
                wakers.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_once(f: &mut Notified<'_>) -> Poll<()> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(f).poll(&mut cx)
    }

    #[test]
    fn abandoned_waits_leave_no_registration() {
        let notify = Notify::new();
        for _ in 0..10_000 {
            let mut wait = notify.notified();
            assert!(poll_once(&mut wait).is_pending());
            assert!(poll_once(&mut wait).is_pending());
            drop(wait);
        }
        assert_eq!(notify.waiters(), 0);
    }

    #[test]
    fn notify_all_completes_registered_and_created_waits() {
        let notify = Notify::new();
        let mut a = notify.notified();
        let mut b = notify.notified();
        assert!(poll_once(&mut a).is_pending());
        assert_eq!(notify.waiters(), 1);
        notify.notify_all();
        assert_eq!(notify.waiters(), 0);
        assert!(poll_once(&mut a).is_ready());
        assert!(poll_once(&mut b).is_ready());
        let mut c = notify.notified();
        assert!(poll_once(&mut c).is_pending());
        drop((a, b, c));
        assert_eq!(notify.waiters(), 0);
    }
}
