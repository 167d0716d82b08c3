//! Single flight: at most one look-up per key in flight on a worker; the requests that want the same
//! key meanwhile wait for its answer instead of asking the driver again.
//!
//! The table is bounded by what is in flight (an entry lives from the leader's start to its end), and
//! a leader that is dropped mid-look-up (its client went away) still removes its entry and wakes its
//! waiters, which then see `None`. Single-thread only (`Rc`, `RefCell`): one table per worker.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::common::local_sync::Notify;

/// The look-ups in flight on one worker, by key.
pub struct Flights<T> {
    map: RefCell<HashMap<Box<str>, Rc<Flight<T>>>>,
}

/// One look-up in progress, shared by the requests waiting for it.
pub struct Flight<T> {
    result: RefCell<Option<T>>,
    done: Notify,
}

/// What a request does about a key: wait for another request's look-up, or lead one.
pub enum Joined<'a, T> {
    Wait(Rc<Flight<T>>),
    Lead(Leader<'a, T>),
}

/// The request doing the look-up. Dropping it (finished or not) removes the key and wakes everyone.
pub struct Leader<'a, T> {
    flights: &'a Flights<T>,
    key: &'a str,
    flight: Rc<Flight<T>>,
}

impl<T: Clone> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            map: RefCell::new(HashMap::new()),
        }
    }
}

impl<T: Clone> Flights<T> {
    /// Joins the look-up of `key` in flight, or starts one.
    pub fn join<'a>(&'a self, key: &'a str) -> Joined<'a, T> {
        if let Some(flight) = self.map.borrow().get(key) {
            return Joined::Wait(flight.clone());
        }
        let flight = Rc::new(Flight {
            result: RefCell::new(None),
            done: Notify::new(),
        });
        self.map.borrow_mut().insert(key.into(), flight.clone());
        Joined::Lead(Leader {
            flights: self,
            key,
            flight,
        })
    }

    /// Look-ups in flight now.
    pub fn len(&self) -> usize {
        self.map.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.borrow().is_empty()
    }
}

impl<T: Clone> Flight<T> {
    /// The leader's answer, or `None` if the leader was dropped before it had one.
    pub async fn wait(&self) -> Option<T> {
        let notified = self.done.notified();
        if self.result.borrow().is_none() {
            notified.await;
        }
        self.result.borrow().clone()
    }
}

impl<T> Leader<'_, T> {
    /// Hands the answer to the waiters (and ends the flight).
    pub fn finish(self, result: T) {
        *self.flight.result.borrow_mut() = Some(result);
    }
}

impl<T> Drop for Leader<'_, T> {
    fn drop(&mut self) {
        self.flights.map.borrow_mut().remove(self.key);
        self.flight.done.notify_all();
    }
}
