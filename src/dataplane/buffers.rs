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
