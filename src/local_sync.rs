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
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes all current waiters.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// A future that completes at the next `notify_all`.
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            notify: self,
            generation: self.generation.get(),
        }
    }
}

/// Future returned by [`Notify::notified`].
pub struct Notified<'a> {
    notify: &'a Notify,
    generation: u64,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.generation {
            return Poll::Ready(());
        }
        let mut wakers = self.notify.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
