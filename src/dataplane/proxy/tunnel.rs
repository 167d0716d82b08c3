//! Phase 3 for upgraded connections: after a `101 Switching Protocols`, bytes are copied both ways
//! between client and backend until each side closes (docs/compatibility.md §5).
//!
//! Each direction has its own task; end of stream on one side is passed on as a write shutdown to
//! the other (half-close), so either peer can finish sending first. Tunnels have no idle timeout
//! unless `server.websocketIdleTimeout` is set; then a watchdog tells both copy tasks to stop after
//! that long without a byte in either direction, and they close the streams they own. A panic in one
//! copy task ends that direction only. Nothing here parses WebSocket frames.
//!
//! Two ways to copy:
//! - [`run_plain`], when both sides are plain sockets (a TCP client, a TCP or unix backend): each
//!   direction waits for readiness through the runtime, then moves the bytes with direct
//!   non-blocking `recv`/`send` calls through one buffer per worker thread, as an epoll proxy does.
//!   A message thus costs one runtime operation (the readiness wait) instead of two (a read and a
//!   write), and an idle tunnel holds no buffer. Bytes the peer cannot take yet are kept (at most
//!   one buffer's worth per direction) until it is writable, and reading pauses meanwhile. The
//!   direct calls use the descriptor of a stream the copy task holds, so it cannot be closed and
//!   reused under them.
//! - [`run`], for everything else (a TLS client): reads and writes through the streams' own
//!   implementations, with a buffer per direction.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::dataplane::upstream::stream::BackendStream;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::common::local_sync::Notify;
use crate::common::task::OnPanic;
use crate::dataplane::proxy::splice::{self, NonBlocking};

/// Per-direction copy buffer of [`run`].
const TUNNEL_BUF: usize = 32 * 1024;
/// The per-thread buffer of [`run_plain`], and the most it keeps per direction for a slow peer.
const PLAIN_BUF: usize = 64 * 1024;
/// Reads at least this large make the next read of that direction a splice: below it, a copy
/// through the buffer costs less than moving pages (measured with `bench/proto.sh`: splice saved
/// about a tenth of the CPU per 16 KiB message and cost more per 64-byte one).
const SPLICE_MIN: usize = 8 * 1024;
/// Full buffers moved in a row before a direction waits for readiness again (which lets the other
/// tasks of the worker run): a fast sender cannot hold the thread.
const PLAIN_BURST: usize = 16;

/// Bytes carried by a finished tunnel.
#[derive(Debug, Default, Clone, Copy)]
pub struct TunnelBytes {
    pub to_client: u64,
    pub to_backend: u64,
}

/// The idle timeout's shared state: last activity, and the stop signal the watchdog gives the pumps.
/// The pumps own the sockets and close them themselves, so nothing acts on a file descriptor number
/// that another connection may have reused.
struct Idle {
    activity: Cell<Instant>,
    expired: Cell<bool>,
    stop: Notify,
}

/// Runs a tunnel to completion, owning both streams. `early` holds bytes the client sent after its
/// upgrade request (they go to the backend first).
pub async fn run<R, W>(
    client_read: R,
    client_write: W,
    early: Vec<u8>,
    backend: BackendStream,
    idle: Option<Duration>,
) -> TunnelBytes
where
    R: AsyncReadRent + 'static,
    W: AsyncWriteRent + 'static,
{
    let (backend_read, mut backend_write) = backend.into_split();
    let mut bytes = TunnelBytes::default();
    if !early.is_empty() {
        let n = early.len() as u64;
        let (res, _) = backend_write.write_all(early).await;
        if res.is_err() {
            return bytes;
        }
        bytes.to_backend += n;
    }
    // Activity is tracked (a clock read per read) only when an idle timeout needs it.
    let state = idle.map(|_| {
        Rc::new(Idle {
            activity: Cell::new(Instant::now()),
            expired: Cell::new(false),
            stop: Notify::new(),
        })
    });
    let done = Rc::new(Cell::new(false));
    if let (Some(limit), Some(state)) = (idle, &state) {
        crate::common::task::spawn(
            OnPanic::EndTask,
            watchdog(state.clone(), done.clone(), limit),
        );
    }
    let up = crate::common::task::spawn(
        OnPanic::EndTask,
        pump(client_read, backend_write, state.clone()),
    );
    bytes.to_client = pump(backend_read, client_write, state).await;
    // `None`: the other direction's task panicked (contained); its sockets are closed.
    bytes.to_backend += up.await.unwrap_or(0);
    done.set(true);
    bytes
}

/// Copies until end of stream, error or idle expiry, then shuts down the writer (half-close).
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    mut from: R,
    mut to: W,
    idle: Option<Rc<Idle>>,
) -> u64 {
    let mut buf: Vec<u8> = Vec::with_capacity(TUNNEL_BUF);
    let mut total = 0u64;
    loop {
        buf.clear();
        let (res, b) = match &idle {
            None => from.read(buf).await,
            Some(idle) => {
                if idle.expired.get() {
                    break;
                }
                let stop = idle.stop.notified();
                // On expiry the read is dropped (its bytes, if any, are lost: the tunnel closes).
                match monoio::select! {
                    r = from.read(buf) => Some(r),
                    _ = stop => None,
                } {
                    Some(r) => r,
                    None => break,
                }
            }
        };
        buf = b;
        let n = match res {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (res, b) = match &idle {
            None => to.write_all(buf).await,
            Some(idle) => {
                idle.activity.set(Instant::now());
                if idle.expired.get() {
                    break;
                }
                let stop = idle.stop.notified();
                match monoio::select! {
                    r = to.write_all(buf) => Some(r),
                    _ = stop => None,
                } {
                    Some(r) => r,
                    // The peer stopped reading: nothing more will be written to it.
                    None => return total,
                }
            }
        };
        buf = b;
        if res.is_err() {
            return total;
        }
        total += n as u64;
    }
    let _ = to.shutdown().await;
    total
}

/// Stops both directions after `limit` without traffic.
async fn watchdog(idle: Rc<Idle>, done: Rc<Cell<bool>>, limit: Duration) {
    let tick = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        monoio::time::sleep(tick).await;
        if done.get() {
            return;
        }
        if idle.activity.get().elapsed() >= limit {
            idle.expired.set(true);
            idle.stop.notify_all();
            return;
        }
    }
}

/// Runs a tunnel between two plain sockets to completion (see the module documentation). `early`
/// holds bytes the client sent after its upgrade request (they go to the backend first); `splice`:
/// large reads may be spliced (`server.splice`).
pub async fn run_plain(
    client: TcpStream,
    early: Vec<u8>,
    backend: BackendStream,
    idle: Option<Duration>,
    splice: bool,
) -> TunnelBytes {
    // Splicing into a socket blocks unless the socket itself is non-blocking (`SPLICE_F_NONBLOCK`
    // only covers the pipe), and io_uring's sockets are not: both are made so for the tunnel's
    // life (readiness waits and closing do not care). Without that (or with `server.splice` off),
    // bytes are only copied.
    let splice = splice
        && match (
            NonBlocking::set(client.as_raw_fd()),
            NonBlocking::set(backend.as_raw_fd()),
        ) {
            (Some(c), Some(b)) => {
                c.keep();
                b.keep();
                true
            }
            _ => false,
        };
    let client = Rc::new(client);
    let backend = Rc::new(backend);
    let mut bytes = TunnelBytes::default();
    let state = idle.map(|_| {
        Rc::new(Idle {
            activity: Cell::new(Instant::now()),
            expired: Cell::new(false),
            stop: Notify::new(),
        })
    });
    if !early.is_empty() {
        match flush_backlog(&*backend, &early, false, &state).await {
            Flushed::All => bytes.to_backend += early.len() as u64,
            Flushed::Stopped(_) => return bytes,
        }
    }
    drop(early);
    let done = Rc::new(Cell::new(false));
    if let (Some(limit), Some(state)) = (idle, &state) {
        crate::common::task::spawn(
            OnPanic::EndTask,
            watchdog(state.clone(), done.clone(), limit),
        );
    }
    let up = crate::common::task::spawn(
        OnPanic::EndTask,
        pump_plain(client.clone(), backend.clone(), state.clone(), splice),
    );
    bytes.to_client = pump_plain(backend, client, state, splice).await;
    // `None`: the other direction's task panicked (contained).
    bytes.to_backend += up.await.unwrap_or(0);
    done.set(true);
    bytes
}

/// A plain socket a tunnel moves bytes on directly: the runtime only says when it is ready.
trait PlainEnd: AsRawFd {
    fn readable(&self) -> impl Future<Output = io::Result<()>>;
    fn writable(&self) -> impl Future<Output = io::Result<()>>;
}

impl PlainEnd for TcpStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        TcpStream::readable(self, false)
    }
    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        TcpStream::writable(self, false)
    }
}

impl PlainEnd for BackendStream {
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        BackendStream::readable(self)
    }
    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        BackendStream::writable(self)
    }
}

thread_local! {
    /// The buffer every plain tunnel of this worker thread reads into and sends from. It is only
    /// borrowed between two awaits, never across one.
    static PLAIN_RELAY_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; PLAIN_BUF]);
}

/// What one read-and-forward step did.
enum Step {
    /// Nothing to read after all (a spurious readiness).
    Again,
    /// End of stream, or a read error: pass the end on.
    End,
    /// The peer's socket failed: stop without a shutdown.
    WriteFailed,
    /// `read` bytes came in and `sent` of them went out at once; the rest waits in the backlog.
    Moved { read: usize, sent: usize },
}

/// Copies from `from` to `to` until end of stream, error or idle expiry, then shuts down the
/// writer (half-close). Returns the bytes written to `to`.
async fn pump_plain<F: PlainEnd, T: PlainEnd>(
    from: Rc<F>,
    to: Rc<T>,
    idle: Option<Rc<Idle>>,
    splice: bool,
) -> u64 {
    let (from_fd, to_fd) = (from.as_raw_fd(), to.as_raw_fd());
    let mut total = 0u64;
    let mut last_read = 0usize;
    'wait: loop {
        if !ready(from.readable(), &idle).await {
            break;
        }
        for _ in 0..PLAIN_BURST {
            let mut backlog = Vec::new();
            // The next read is guessed to be like the last one: large ones are spliced.
            let step = if splice && last_read >= SPLICE_MIN {
                splice_step(from_fd, to_fd, &mut backlog)
            } else {
                copy_step(from_fd, to_fd, &mut backlog)
            };
            match step {
                Step::Again => continue 'wait,
                Step::End => break 'wait,
                Step::WriteFailed => return total,
                Step::Moved { read, sent } => {
                    last_read = read;
                    if let Some(idle) = &idle {
                        idle.activity.set(Instant::now());
                    }
                    total += sent as u64;
                    if !backlog.is_empty() {
                        // The peer is slow: reading pauses until it has taken these.
                        match flush_backlog(&*to, &backlog, true, &idle).await {
                            Flushed::All => total += backlog.len() as u64,
                            Flushed::Stopped(k) => return total + k as u64,
                        }
                    }
                    if read < PLAIN_BUF {
                        // Most likely drained: wait for more rather than try a read that fails.
                        continue 'wait;
                    }
                }
            }
        }
    }
    // SAFETY: `to_fd` is the open socket of `to`, which this task holds.
    unsafe { libc::shutdown(to_fd, libc::SHUT_WR) };
    total
}

/// Reads once from `from_fd` into the worker's buffer and sends what came at once to `to_fd`;
/// what `to_fd` cannot take yet goes to `backlog`.
fn copy_step(from_fd: RawFd, to_fd: RawFd, backlog: &mut Vec<u8>) -> Step {
    PLAIN_RELAY_BUF.with(|b| {
        let mut b = b.borrow_mut();
        let read = match splice::recv_direct(from_fd, &mut b) {
            Ok(0) => return Step::End,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Again,
            Err(_) => return Step::End,
        };
        let mut sent = 0;
        while sent < read {
            match splice::send_direct(to_fd, &b[sent..read]) {
                Ok(k) if k > 0 => sent += k,
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Step::WriteFailed,
                _ => {
                    backlog.extend_from_slice(&b[sent..read]);
                    break;
                }
            }
        }
        Step::Moved { read, sent }
    })
}

/// The same as [`copy_step`] through the worker's pipe (`proxy::splice`): the bytes are not copied
/// through user space.
fn splice_step(from_fd: RawFd, to_fd: RawFd, backlog: &mut Vec<u8>) -> Step {
    let Some((pr, pw, _)) = splice::worker_pipe() else {
        return copy_step(from_fd, to_fd, backlog);
    };
    let read = match splice::splice(from_fd, pw, PLAIN_BUF) {
        Ok(0) => return Step::End,
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Again,
        Err(_) => return Step::End,
    };
    let mut sent = 0;
    let mut failed = false;
    while sent < read {
        match splice::splice(pr, to_fd, read - sent) {
            Ok(n) if n > 0 => sent += n,
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                failed = true;
                break;
            }
            _ => break,
        }
    }
    if sent < read {
        // Empty the pipe: into the backlog, or away on a failed peer.
        let start = backlog.len();
        if !splice::drain_pipe(pr, read - sent, backlog) {
            return Step::WriteFailed;
        }
        if failed {
            backlog.truncate(start);
            return Step::WriteFailed;
        }
    }
    Step::Moved { read, sent }
}

/// How sending a backlog ended.
enum Flushed {
    All,
    /// An error or idle expiry after this many bytes.
    Stopped(usize),
}

/// Sends `data` to `to`, waiting for writability as needed (bounded by the idle watchdog);
/// `blocked`: `to` just refused a send, so wait first.
async fn flush_backlog<T: PlainEnd>(
    to: &T,
    data: &[u8],
    blocked: bool,
    idle: &Option<Rc<Idle>>,
) -> Flushed {
    let fd = to.as_raw_fd();
    let mut sent = 0;
    if blocked && !ready(to.writable(), idle).await {
        return Flushed::Stopped(0);
    }
    while sent < data.len() {
        let blocked = match splice::send_direct(fd, &data[sent..]) {
            Ok(k) if k > 0 => {
                sent += k;
                false
            }
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
            Err(_) => return Flushed::Stopped(sent),
        };
        if blocked && !ready(to.writable(), idle).await {
            return Flushed::Stopped(sent);
        }
    }
    Flushed::All
}

/// Waits for a readiness, or for the idle watchdog's stop (false; an error is false too).
async fn ready(wait: impl Future<Output = io::Result<()>>, idle: &Option<Rc<Idle>>) -> bool {
    match idle {
        None => wait.await.is_ok(),
        Some(idle) => {
            if idle.expired.get() {
                return false;
            }
            let stop = idle.stop.notified();
            // A readiness wait dropped on expiry consumed nothing.
            monoio::select! {
                r = wait => r.is_ok(),
                _ = stop => false,
            }
        }
    }
}
