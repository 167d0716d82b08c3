//! The one way to start a task on one of this process's monoio runtimes (workers and the control
//! thread): [`spawn`] wraps the future so that a panic inside it never unwinds through the runtime.
//!
//! A panic unwinding through a monoio runtime abandons every task parked on it, with their sockets, so
//! it would cost every connection of the core instead of one. Here a panic ends only its own task: the
//! task's state is dropped (a second panic while dropping is contained too), which closes its sockets,
//! and then the task's [`OnPanic`] policy applies:
//!
//! - [`OnPanic::StopThread`]: the task held state shared by the whole thread (a listener, a Redis
//!   connection, the cache housekeeping), so the thread's crash hook runs: a worker marks itself crashed
//!   and is replaced in order by the supervisor, the control thread restarts its runtime.
//! - [`OnPanic::EndTask`]: the task owned nothing but its own work (one HTTP/2 stream, one copy
//!   direction of a tunnel): it just ends, and the rest of the thread goes on.
//!
//! `monoio::spawn` is banned elsewhere by `clippy.toml` (`disallowed-methods`); this module must not
//! grow other ways to spawn.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use log::error;

/// What a panic in a task means for the rest of its thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPanic {
    /// Run the thread's crash hook (see [`set_crash_hook`]).
    StopThread,
    /// Only this task ends.
    EndTask,
}

thread_local! {
    static CRASH_HOOK: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

/// Sets what a panic in a [`OnPanic::StopThread`] task of this thread does (looked up at the time of
/// the panic, so tasks spawned earlier are covered too).
pub fn set_crash_hook(hook: impl Fn() + 'static) {
    CRASH_HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
}

/// Spawns `fut` on the current monoio runtime with its panics contained. The handle yields `None`
/// when the task panicked.
pub fn spawn<F>(on_panic: OnPanic, fut: F) -> monoio::task::JoinHandle<Option<F::Output>>
where
    F: Future + 'static,
    F::Output: 'static,
{
    #[allow(clippy::disallowed_methods)]
    monoio::spawn(Contained {
        inner: Some(fut),
        on_panic,
    })
}

/// A future that turns a panic of its inner future into `None`.
struct Contained<F> {
    inner: Option<F>,
    on_panic: OnPanic,
}

impl<F: Future> Future for Contained<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        // SAFETY: `inner` is structurally pinned: it is never moved out, only polled in place or
        // dropped in place through `Pin::set`; `on_panic` is `Copy` and never pinned.
        let this = unsafe { self.get_unchecked_mut() };
        let on_panic = this.on_panic;
        let mut inner = unsafe { Pin::new_unchecked(&mut this.inner) };
        let Some(fut) = inner.as_mut().as_pin_mut() else {
            return Poll::Ready(None);
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(out)) => {
                inner.set(None);
                Poll::Ready(Some(out))
            }
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => {
                // The panic hook has logged the message. Drop the task's state now (closing its
                // sockets); a second panic there is contained as well.
                let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    inner.as_mut().set(None)
                }));
                if dropped.is_err() {
                    // Its drop already ran (and unwound): mark it gone without dropping it twice.
                    // SAFETY: overwrites a value whose destructor has run; nothing is moved.
                    unsafe { std::ptr::write(&mut this.inner, None) };
                }
                match on_panic {
                    OnPanic::StopThread => {
                        let ran = CRASH_HOOK.with(|h| match &*h.borrow() {
                            Some(hook) => {
                                hook();
                                true
                            }
                            None => false,
                        });
                        if !ran {
                            error!("a task panicked on a thread without a crash hook; it ended");
                        }
                    }
                    OnPanic::EndTask => {
                        error!("a task panicked; it ended alone, the rest of its thread goes on");
                    }
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn block_on<F: Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    struct SetOnDrop(Rc<Cell<bool>>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }

    #[test]
    fn a_panic_ends_only_its_task_and_runs_the_hook_when_asked() {
        let hooked = Rc::new(Cell::new(0));
        let h = hooked.clone();
        set_crash_hook(move || h.set(h.get() + 1));
        let dropped = Rc::new(Cell::new(false));
        let d = SetOnDrop(dropped.clone());
        let (a, b, c) = block_on(async move {
            let a = spawn(OnPanic::EndTask, async move {
                let _d = d;
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                panic!("on purpose");
            });
            let b = spawn(OnPanic::EndTask, async { 7 });
            let c = spawn(OnPanic::StopThread, async { panic!("on purpose too") });
            (a.await, b.await, c.await)
        });
        assert_eq!(a, None::<()>);
        assert_eq!(b, Some(7));
        assert_eq!(c, None::<()>);
        assert!(dropped.get(), "the panicked task's state was dropped");
        assert_eq!(hooked.get(), 1, "only the StopThread task ran the hook");
    }
}
