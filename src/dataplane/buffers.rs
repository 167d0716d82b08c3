//! Per-worker pools of I/O buffers, so that a request does not allocate its buffers and an idle
//! keep-alive connection holds none.
//!
//! A pool hands out `Vec<u8>`s of one capacity and takes them back; a buffer that grew (a large head) is
//! freed instead of pooled, so memory stays bounded. Single-threaded (`RefCell`), never shared.

use std::cell::RefCell;

pub struct BufPool {
    free: RefCell<Vec<Vec<u8>>>,
    size: usize,
    max_free: usize,
}

impl BufPool {
    /// A pool of `size`-byte buffers keeping at most `max_free` spares.
    pub fn new(size: usize, max_free: usize) -> Self {
        BufPool {
            free: RefCell::new(Vec::new()),
            size,
            max_free,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// An empty buffer with at least `size` capacity.
    pub fn get(&self) -> Vec<u8> {
        self.free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Returns a buffer; grown or surplus buffers are freed.
    pub fn put(&self, mut buf: Vec<u8>) {
        if buf.capacity() != self.size {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < self.max_free {
            buf.clear();
            free.push(buf);
        }
    }
}

/// A pool of large buffers with a bound on how many are lent out at once (per worker), for response
/// bodies that outgrew a [`BufPool`] buffer (`proxy::relay`). Memory is at most `max_lent` buffers in
/// use plus `max_free` spares; when the bound is reached, [`LargeBufPool::lend`] says no and the caller
/// keeps using small buffers.
///
/// The count of buffers lent is kept by the borrower, not by the buffers: a buffer lost on an error path
/// (a write that timed out keeps its buffer) is credited back with [`LargeBufPool::forget`] when the
/// borrower ends, so the bound never leaks.
pub struct LargeBufPool {
    pool: BufPool,
    lent: std::cell::Cell<usize>,
    max_lent: usize,
}

impl LargeBufPool {
    /// A pool of `size`-byte buffers: at most `max_lent` lent out, `max_free` spares kept.
    pub fn new(size: usize, max_lent: usize, max_free: usize) -> Self {
        LargeBufPool {
            pool: BufPool::new(size, max_free),
            lent: std::cell::Cell::new(0),
            max_lent,
        }
    }

    pub fn size(&self) -> usize {
        self.pool.size()
    }

    /// Buffers lent out now.
    pub fn lent(&self) -> usize {
        self.lent.get()
    }

    /// A large empty buffer, or `None` when `max_lent` are already out.
    pub fn lend(&self) -> Option<Vec<u8>> {
        if self.lent.get() >= self.max_lent {
            return None;
        }
        self.lent.set(self.lent.get() + 1);
        Some(self.pool.get())
    }

    /// Takes a lent buffer back.
    pub fn give_back(&self, buf: Vec<u8>) {
        self.forget(1);
        self.pool.put(buf);
    }

    /// Credits back `n` lent buffers that will not come back (dropped on an error path).
    pub fn forget(&self, n: usize) {
        self.lent.set(self.lent.get().saturating_sub(n));
    }
}

/// A large buffer lent for the length of one borrow, given back (or, if an error path took it,
/// credited back) when dropped.
pub struct Loan<'a> {
    pool: &'a LargeBufPool,
    pub buf: Vec<u8>,
}

impl<'a> Loan<'a> {
    /// A large buffer from `pool`, or `None` at the worker's bound.
    pub fn take(pool: &'a LargeBufPool) -> Option<Self> {
        pool.lend().map(|buf| Loan { pool, buf })
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        // A buffer lost to a timed-out operation is empty here: `put` frees it, the count drops anyway.
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_pool_bounds_buffers_lent() {
        let pool = LargeBufPool::new(1024, 2, 1);
        let a = pool.lend().expect("first");
        let b = pool.lend().expect("second");
        assert!(pool.lend().is_none(), "a third is beyond the bound");
        assert_eq!(a.capacity(), 1024);
        pool.give_back(a);
        assert_eq!(pool.lent(), 1);
        let c = pool.lend().expect("room again");
        drop(b); // lost on an error path
        pool.forget(1);
        pool.give_back(c);
        assert_eq!(pool.lent(), 0);
        pool.forget(3);
        assert_eq!(pool.lent(), 0, "never below zero");
        {
            let mut loan = Loan::take(&pool).expect("loan");
            assert_eq!(pool.lent(), 1);
            loan.buf = Vec::new(); // taken by an error path
        }
        assert_eq!(pool.lent(), 0, "a loan is credited back when dropped");
    }
}
