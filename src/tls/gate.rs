//! Keeps TLS handshakes from raising everyone's latency on a worker: at most [`TURN_BUDGET`] of
//! handshake computation per turn of the runtime (one pass over the ready tasks between two visits to
//! the kernel); the handshakes beyond it wait, oldest first, for the next turn.
//!
//! Why: the expensive step of a handshake (processing the ClientHello: key exchange, signature or
//! ticket, key schedule) is synchronous, a few hundred microseconds. Run inline, every handshake of
//! a busy turn adds its whole cost to the wait of every other connection's request on the core
//! (README "TLS"). With the gate, a turn holds at most about one budget of handshakes, and requests
//! that arrive meanwhile are served at the next turn, before the handshakes still waiting. The gate
//! is work-conserving: when only handshakes are ready, each turn runs one budget of them and the next
//! turn starts at once.
//!
//! How a turn is seen: a waiting handshake queue is served by a ticker task that arms a readiness
//! wait on an always-writable socket (one end of a unix socket pair of the worker). That wait
//! completes when the runtime next visits the kernel, which is the turn boundary; the ticker then
//! resets the spent budget and lets the oldest waiter in. Each handshake that finishes inside the
//! budget lets the next one in. On the epoll fallback driver a readiness wait may complete at once,
//! so there the gate lets handshakes through in order without holding them back.
//!
//! Bounded: a waiter is one small slot in a queue (the connections are bounded by `maxSockets`); a
//! handshake's wait counts towards its `handshakeTimeout`; a waiter dropped early (timeout, closed
//! connection) is skipped and, if it had already been let in, passes its turn on. Never blocks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use monoio::net::UnixStream;

use crate::common::task::OnPanic;

/// Handshake computation allowed per turn of a worker's runtime. About three resumed TLS 1.3
/// handshakes (≈0.3 ms each); a single more expensive one (RSA) always gets through.
pub const TURN_BUDGET: Duration = Duration::from_millis(1);

/// One worker's gate (see the module documentation).
pub struct HandshakeGate {
    budget: Duration,
    spent: Cell<Duration>,
    /// Waiting handshakes, oldest first.
    queue: RefCell<VecDeque<Rc<Slot>>>,
    ticker_running: Cell<bool>,
    /// A waiter was let in and has not taken its pass yet: nobody else is let in meanwhile.
    let_in_pending: Cell<bool>,
    /// Always writable: a readiness wait on it completes at the runtime's next visit to the kernel.
    /// The other end is kept open so that it stays so.
    tick: UnixStream,
    _peer: UnixStream,
    /// Handshakes that had to wait for a later turn.
    deferred: Cell<u64>,
}

struct Slot {
    let_in: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl HandshakeGate {
    /// A gate with the default budget; `None` if the worker cannot open the socket pair (then
    /// handshakes are not gated).
    pub fn new() -> Option<Rc<HandshakeGate>> {
        Self::with_budget(TURN_BUDGET)
    }

    pub fn with_budget(budget: Duration) -> Option<Rc<HandshakeGate>> {
        let (tick, peer) = UnixStream::pair().ok()?;
        Some(Rc::new(HandshakeGate {
            budget,
            spent: Cell::new(Duration::ZERO),
            queue: RefCell::new(VecDeque::new()),
            ticker_running: Cell::new(false),
            let_in_pending: Cell::new(false),
            tick,
            _peer: peer,
            deferred: Cell::new(0),
        }))
    }

    /// Waits until this handshake may compute; the returned pass accounts for the time until it
    /// is dropped. Hold it over synchronous work only, never across an I/O wait.
    pub fn enter(self: &Rc<Self>) -> Enter {
        Enter {
            gate: self.clone(),
            slot: None,
        }
    }

    /// Handshakes that waited for a later turn so far.
    pub fn deferred(&self) -> u64 {
        self.deferred.get()
    }

    /// Lets the oldest live waiter in (a waiter whose future is gone holds the only reference).
    fn let_next_in(&self) {
        if self.let_in_pending.get() {
            return;
        }
        let mut queue = self.queue.borrow_mut();
        while let Some(slot) = queue.pop_front() {
            if Rc::strong_count(&slot) > 1 {
                slot.let_in.set(true);
                self.let_in_pending.set(true);
                let waker = slot.waker.borrow_mut().take();
                drop(queue);
                if let Some(w) = waker {
                    w.wake();
                }
                return;
            }
        }
    }

    fn waiting(&self) -> bool {
        let mut queue = self.queue.borrow_mut();
        while queue.front().is_some_and(|s| Rc::strong_count(s) == 1) {
            queue.pop_front();
        }
        !queue.is_empty()
    }

    fn start_ticker(self: &Rc<Self>) {
        if self.ticker_running.replace(true) {
            return;
        }
        crate::common::task::spawn(OnPanic::EndTask, ticker(self.clone()));
    }
}

/// Runs while handshakes wait: at each turn boundary, resets the budget and lets the oldest in.
async fn ticker(gate: Rc<HandshakeGate>) {
    struct Stopped<'a>(&'a HandshakeGate);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            self.0.ticker_running.set(false);
            // Contained panic or normal end: whoever is still queued is let in rather than stranded.
            if self.0.waiting() {
                self.0.let_in_pending.set(false);
                self.0.let_next_in();
            }
        }
    }
    let _stopped = Stopped(&gate);
    while gate.waiting() {
        if gate.tick.writable(false).await.is_err() {
            // Not expected; without a turn boundary to wait for, let the queue go.
            break;
        }
        gate.spent.set(Duration::ZERO);
        gate.let_next_in();
    }
}

/// The future of [`HandshakeGate::enter`].
pub struct Enter {
    gate: Rc<HandshakeGate>,
    slot: Option<Rc<Slot>>,
}

impl Future for Enter {
    type Output = Pass;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Pass> {
        let gate = self.gate.clone();
        match &self.slot {
            None => {
                if !gate.waiting() && gate.spent.get() < gate.budget {
                    return Poll::Ready(Pass {
                        gate,
                        start: Instant::now(),
                    });
                }
                let slot = Rc::new(Slot {
                    let_in: Cell::new(false),
                    waker: RefCell::new(Some(cx.waker().clone())),
                });
                gate.queue.borrow_mut().push_back(slot.clone());
                gate.deferred.set(gate.deferred.get() + 1);
                self.slot = Some(slot);
                gate.start_ticker();
                Poll::Pending
            }
            Some(slot) if slot.let_in.get() => {
                self.slot = None;
                gate.let_in_pending.set(false);
                Poll::Ready(Pass {
                    gate,
                    start: Instant::now(),
                })
            }
            Some(slot) => {
                *slot.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        // Let in but never used: the turn passes to the next waiter. Still queued: the queue
        // skips the slot once this reference is gone.
        if let Some(slot) = self.slot.take() {
            if slot.let_in.get() {
                self.gate.let_in_pending.set(false);
                self.gate.let_next_in();
            }
        }
    }
}

/// Permission to compute; adds the time held to the turn's budget when dropped.
pub struct Pass {
    gate: Rc<HandshakeGate>,
    start: Instant,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let spent = self.gate.spent.get() + self.start.elapsed();
        self.gate.spent.set(spent);
        if spent < self.gate.budget {
            self.gate.let_next_in();
        } else if self.gate.waiting() {
            // The ticker lets the next one in at the next turn (it runs while anyone waits; this
            // restarts it if it had to stop).
            self.gate.start_ticker();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>> {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .expect("io_uring runtime")
    }

    /// Busy work standing in for a handshake's computation.
    fn compute(d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_turn_runs_about_one_budget_of_handshakes_and_the_rest_wait_in_order() {
        runtime().block_on(async {
            let gate = HandshakeGate::with_budget(Duration::from_millis(2)).unwrap();
            let order = Rc::new(RefCell::new(Vec::new()));
            // A probe standing in for another connection: it runs once per turn (a readiness wait
            // on an always-writable socket) and counts its runs.
            let runs = Rc::new(Cell::new(0u32));
            let probing = Rc::new(Cell::new(true));
            let (r, p, g) = (runs.clone(), probing.clone(), gate.clone());
            let probe = crate::common::task::spawn(OnPanic::EndTask, async move {
                while p.get() {
                    let _ = g._peer.writable(false).await;
                    r.set(r.get() + 1);
                }
            });
            let mut tasks = Vec::new();
            for i in 0..12 {
                let (gate, order, runs) = (gate.clone(), order.clone(), runs.clone());
                tasks.push(crate::common::task::spawn(OnPanic::EndTask, async move {
                    let pass = gate.enter().await;
                    order.borrow_mut().push((i, runs.get()));
                    compute(Duration::from_micros(900));
                    drop(pass);
                }));
            }
            for t in tasks {
                t.await.expect("no panic");
            }
            probing.set(false);
            let _ = probe.await;
            let order = order.borrow();
            // Everyone got in, oldest first.
            assert_eq!(
                order.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
                (0..12).collect::<Vec<_>>()
            );
            // Three 0.9 ms computations fit a 2 ms turn (the third starts under budget), so the
            // probe never waits behind more than two turns' worth: six, not all twelve.
            for seen in order.iter().map(|(_, r)| *r) {
                let between = order.iter().filter(|(_, r)| *r == seen).count();
                assert!(
                    between <= 6,
                    "{between} handshakes between two probe runs: {order:?}"
                );
            }
            assert!(gate.deferred() >= 6, "deferred {}", gate.deferred());
        });
    }

    #[test]
    fn a_waiter_dropped_after_being_let_in_passes_its_turn_on() {
        runtime().block_on(async {
            let gate = HandshakeGate::with_budget(Duration::from_millis(1)).unwrap();
            // Use the whole budget so that the next ones must wait.
            let pass = gate.enter().await;
            compute(Duration::from_millis(2));
            drop(pass);
            let gone = Rc::new(Cell::new(false));
            let mut first = Box::pin(gate.enter());
            let mut cx = Context::from_waker(Waker::noop());
            assert!(first.as_mut().poll(&mut cx).is_pending());
            let second = {
                let gate = gate.clone();
                let gone = gone.clone();
                crate::common::task::spawn(OnPanic::EndTask, async move {
                    let _pass = gate.enter().await;
                    gone.get()
                })
            };
            // Wait until the ticker has let the first waiter in, then drop it unused.
            while !first.slot.as_ref().is_some_and(|s| s.let_in.get()) {
                monoio::time::sleep(Duration::from_millis(1)).await;
            }
            gone.set(true);
            drop(first);
            assert_eq!(second.await, Some(true), "the second waiter got in");
        });
    }
}
