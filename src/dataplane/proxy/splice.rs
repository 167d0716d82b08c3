//! Moving bytes between two plain sockets without copying them through user space: `splice(2)` from
//! one socket into the worker thread's pipe, and from the pipe into the other socket. Used by
//! WebSocket tunnels (`proxy::tunnel::run_plain`) and by response bodies of known length between a
//! plain backend and a plain HTTP/1.1 client (`proxy::relay`, README "Large responses").
//!
//! One pipe per worker thread serves every exchange of that worker, so it must be **empty between two
//! awaits**: a caller moves bytes in and out within one step, and whatever the destination cannot
//! take yet is read back out of the pipe ([`drain_pipe`]) before the caller waits. Splicing into a
//! socket only stays non-blocking when the socket itself is (`SPLICE_F_NONBLOCK` covers the pipe
//! only), so callers make their sockets so ([`NonBlocking`]) for as long as they splice.
//!
//! Also the direct non-blocking `recv`/`send` on such sockets that go with readiness waits.
//!
//! Nothing here waits, times anything out or knows about HTTP.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

/// Bytes the worker's pipe is asked to hold (`F_SETPIPE_SZ`; the kernel's default of 64 KiB stays if
/// refused). A body moves in steps of at most this much.
pub const PIPE_SIZE: usize = 256 * 1024;

/// Bodies of known length with at least this much still to come are spliced; smaller ones cost less
/// copied than moved through a pipe.
pub const SPLICE_BODY_MIN: u64 = 64 * 1024;

/// Splice flags: move pages rather than copy, never block on the pipe.
const FLAGS: libc::c_uint = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;

thread_local! {
    /// The worker's pipe: (read end, write end, size in bytes). Empty between two steps.
    static WORKER_PIPE: RefCell<Option<(RawFd, RawFd, usize)>> = const { RefCell::new(None) };
}

/// The worker's pipe, created on first use; `None` if the system refused one (callers copy instead).
pub fn worker_pipe() -> Option<(RawFd, RawFd, usize)> {
    WORKER_PIPE.with(|p| {
        let mut p = p.borrow_mut();
        if p.is_none() {
            let mut fds = [0 as libc::c_int; 2];
            // SAFETY: `fds` has room for the two descriptors.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } == 0 {
                // SAFETY: fcntl on the pipe just made; no pointers. Failure leaves the default size.
                let size = unsafe {
                    libc::fcntl(fds[1], libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int);
                    libc::fcntl(fds[1], libc::F_GETPIPE_SZ)
                };
                let size = if size > 0 { size as usize } else { 64 * 1024 };
                *p = Some((fds[0], fds[1], size));
            }
        }
        *p
    })
}

/// Closes the worker's pipe (it is in an unknown state); the next use makes a new one.
pub fn discard_pipe() {
    if let Some((pr, pw, _)) = WORKER_PIPE.with(|p| p.borrow_mut().take()) {
        // SAFETY: both ends are ours and no longer referenced.
        unsafe {
            libc::close(pr);
            libc::close(pw);
        }
    }
}

/// One `splice` of at most `len` bytes (retried on EINTR): `Ok(0)` is end of stream on a socket source.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: plain descriptors of the caller's; null offsets (sockets and pipes have none).
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                FLAGS,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads exactly `n` bytes out of the pipe's read end `pr` onto the end of `out`. On failure the
/// pipe is discarded (its content is unknown) and `false` returned.
pub fn drain_pipe(pr: RawFd, n: usize, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.resize(start + n, 0);
    let mut got = 0;
    while got < n {
        // SAFETY: `out` has room for the `n - got` bytes asked for.
        let k = unsafe { libc::read(pr, out[start + got..].as_mut_ptr().cast(), n - got) };
        if k > 0 {
            got += k as usize;
            continue;
        }
        if k < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        out.truncate(start + got);
        discard_pipe();
        return false;
    }
    true
}

/// `O_NONBLOCK` on a socket for as long as this lives; the socket's flags are restored on drop.
pub struct NonBlocking {
    fd: RawFd,
    /// The flags before, when they lacked `O_NONBLOCK` (nothing to restore otherwise).
    restore: Option<libc::c_int>,
}

impl NonBlocking {
    /// `None` if the flags could not be read or set (the caller copies instead).
    ///
    /// The caller must keep the socket open for the guard's life.
    pub fn set(fd: RawFd) -> Option<NonBlocking> {
        // SAFETY: fcntl on an open descriptor of the caller's, no pointers.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return None;
        }
        if flags & libc::O_NONBLOCK != 0 {
            return Some(NonBlocking { fd, restore: None });
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } != 0 {
            return None;
        }
        Some(NonBlocking {
            fd,
            restore: Some(flags),
        })
    }

    /// Leaves the socket non-blocking for good (a tunnel, which ends with the socket).
    pub fn keep(mut self) {
        self.restore = None;
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if let Some(flags) = self.restore {
            // SAFETY: the socket is still open (see `set`).
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) };
        }
    }
}

/// One non-blocking `recv` (retried on EINTR).
pub fn recv_direct(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length; `fd` is an open socket of the caller's.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One non-blocking `send` (retried on EINTR; no SIGPIPE on a closed peer).
pub fn send_direct(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of its length; `fd` is an open socket of the caller's.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
