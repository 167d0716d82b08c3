//! Phase 4, relay: the backend's answer to the client (docs/compatibility.md §3).
//!
//! The response head is read within the backend timeout (interim 1xx answers passed on, a bounded
//! number of them), rewritten (hop-by-hop headers dropped, `proxy::headers`) and sent with the first body
//! bytes in one write (a small response ends there). The rest of the body goes through a read-ahead of
//! pooled buffers, at most `server.responseBufferSize`: the backend is read as fast as it sends, the
//! client written as fast as it reads, and the backend connection goes back to its pool (only if the
//! exchange left it clean) as soon as the backend is done, however slowly the client reads. Writing to
//! the client is paced (`server.minBodyRate`). A `101` to a WebSocket request is relayed with the bytes
//! behind it, and the connection becomes a tunnel (`proxy::tunnel`).
//!
//! Failures are [`ErrorKind`]s; nothing here writes error pages or marks backends.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use log::debug;
use monoio::io::AsyncWriteRent;

use crate::common::metrics::Counter;
use crate::dataplane::buffers::{BufPool, LargeBufPool};
use crate::dataplane::core::Core;
use crate::dataplane::http1::body::{BodyFraming, BodyPace};
use crate::dataplane::http1::head::{Framing, Parsed, ResponseHead};
use crate::dataplane::http1::io::{read_more, ready_within, write_all_vec};
use crate::dataplane::proxy::error::ErrorKind;
use crate::dataplane::proxy::headers::{write_response_head, DebugInfo, ResponseDelivery};
use crate::dataplane::proxy::splice::{self, NonBlocking, SPLICE_BODY_MIN};
use crate::dataplane::routing::Route;
use crate::dataplane::session::{ClientConn, ClientStream, Exchange};
use crate::dataplane::upstream::pool::BackendConn;
use crate::dataplane::upstream::stream::BackendStream;

/// Bodies up to this size are copied behind the head so both leave in one write (request bodies behind
/// the backend's request head, response bodies behind the client's response head).
pub const COALESCE_LIMIT: usize = 16 * 1024;

/// Interim (1xx) answers relayed per exchange; one more and the client gets 502 (README "Limits").
pub const MAX_INTERIM: usize = 16;

/// The backend that answered: what the client's response head and the log need to know about it.
pub struct Answering<'a> {
    pub route: &'a Rc<Route>,
    /// Index of the backend in the route's list.
    pub index: usize,
    pub conn: BackendConn,
    /// When the attempt at this backend began (backend time in the log and `X-Debug-*`).
    pub started: Instant,
}

/// How the exchange went on once the backend answered.
pub enum Relayed {
    /// The answer was relayed; `keep_client`: the connection may carry another request.
    Done { keep_client: bool },
    /// The backend accepted a WebSocket upgrade; its `101` was relayed. The connection becomes a tunnel.
    Upgraded(BackendConn),
}

/// Writes `buf[start..end]` to the client, each write within what `pace` allows (see `upload::read_paced`).
async fn write_paced<W: AsyncWriteRent>(
    w: &mut W,
    buf: &mut Vec<u8>,
    start: usize,
    end: usize,
    pace: &mut BodyPace,
) -> io::Result<()> {
    let mut pos = start;
    while pos < end {
        let timeout = pace.allowance()?;
        let started = Instant::now();
        let n = crate::dataplane::http1::io::write_once(w, buf, pos, end, timeout).await?;
        pace.record(started.elapsed(), n);
        pos += n;
    }
    Ok(())
}

/// Reads a response head into `relay[..resp.len]` (body bytes may follow it). A malformed head comes
/// with the parser's reason, for the log.
pub async fn read_response_head(
    stream: &mut BackendStream,
    relay: &mut Vec<u8>,
    resp: &mut ResponseHead,
    timeout: Option<Duration>,
    max_len: usize,
    request_was_head: bool,
) -> Result<(), (ErrorKind, &'static str)> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if !relay.is_empty() {
            match resp.parse(relay, max_len, request_was_head) {
                Ok(Parsed::Complete) => return Ok(()),
                Ok(Parsed::Partial) => {}
                Err(why) => return Err((ErrorKind::InvalidResponse, why)),
            }
        }
        let left = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err((ErrorKind::HeadTimeout, ""));
                }
                Some(left)
            }
            None => None,
        };
        match read_more(stream, relay, left).await {
            Ok(0) => return Err((closed_kind(relay), "")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err((ErrorKind::HeadTimeout, ""))
            }
            Err(_) => return Err((closed_kind(relay), "")),
        }
    }
}

/// A backend that closed before a complete head: before any byte, or mid-head.
fn closed_kind(relay: &[u8]) -> ErrorKind {
    if relay.is_empty() {
        ErrorKind::ClosedBeforeAnswer
    } else {
        ErrorKind::ClosedMidHead
    }
}

/// Passes a 1xx answer to an HTTP/1.1 client and removes it from the buffer.
pub async fn relay_interim<S: ClientStream>(
    c: &mut ClientConn<S>,
    relay: &mut Vec<u8>,
    resp: &ResponseHead,
) -> Result<(), ErrorKind> {
    if c.head.minor_version == 1 {
        // The final answer follows in another write.
        c.ensure_nodelay();
        c.out.clear();
        let how = ResponseDelivery {
            client_http10: false,
            close: false,
            decode_chunked: false,
            upgrade: false,
        };
        write_response_head(&mut c.out, relay, resp, &how, None);
        write_all_vec(&mut c.io, &mut c.out, c.send_timeout)
            .await
            .map_err(|_| ErrorKind::ClientGone)?;
    }
    relay.drain(..resp.len);
    Ok(())
}

/// Relays a `101 Switching Protocols` and any bytes the backend sent after it; the caller then runs the
/// tunnel.
pub async fn answer_upgrade<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    ex: &mut Exchange,
    answering: Answering<'_>,
    relay: &[u8],
    resp: &ResponseHead,
) -> Result<Relayed, ErrorKind> {
    let how = ResponseDelivery {
        client_http10: false,
        close: false,
        decode_chunked: false,
        upgrade: true,
    };
    write_client_head(w, c, ex, &answering, relay, resp, &how);
    // Bytes the backend sent right after its 101 belong to the tunnel.
    c.out.extend_from_slice(&relay[resp.len..]);
    ex.status = 101;
    ex.bytes_sent = c.out.len() as u64;
    ex.backend_secs = answering.started.elapsed().as_secs_f64();
    write_all_vec(&mut c.io, &mut c.out, c.send_timeout)
        .await
        .map_err(|_| ErrorKind::ClientGone)?;
    Ok(Relayed::Upgraded(answering.conn))
}

/// Writes the client's response head into `c.out`: the backend's, rewritten as `how` says, with the
/// `X-Debug-*` headers (`server.debug`) and what the frontend's options add.
fn write_client_head<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    ex: &Exchange,
    answering: &Answering<'_>,
    relay: &[u8],
    resp: &ResponseHead,
    how: &ResponseDelivery,
) {
    let route = answering.route;
    let debug_info;
    let debug = if w.config.server.debug && c.head.x_debug {
        debug_info = DebugInfo {
            backend_url: &route.backends[answering.index].url,
            backend_index: answering.index,
            identifier: &route.identifier,
            frontend_key: &c.host,
            total_ms: ex.start.elapsed().as_millis() as u64,
            backend_ms: answering.started.elapsed().as_millis() as u64,
        };
        Some(&debug_info)
    } else {
        None
    };
    c.out.clear();
    write_response_head(&mut c.out, relay, resp, how, debug);
    if !route.options.is_default() {
        crate::dataplane::proxy::policy::extend_response_head(
            c,
            route,
            answering.index,
            relay,
            resp,
        );
    }
}

/// Sends the response head and body to the client; returns the backend connection to its pool when
/// clean. `force_close`: the connection closes after this answer (an early answer to an upload).
pub async fn relay_response<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    ex: &mut Exchange,
    mut answering: Answering<'_>,
    relay: &mut Vec<u8>,
    resp: &mut ResponseHead,
    force_close: bool,
) -> Result<Relayed, ErrorKind> {
    let Answering {
        route,
        index,
        started: backend_start,
        ..
    } = answering;
    let s = &w.config.server;
    // A body of known length that fits the relay buffer but did not all come with the head (backends
    // often send the head first): one more read before anything is written, so that head and body
    // leave in one write and the backend is released before it. Whatever is still missing after it
    // goes the usual way (the read-ahead).
    if let Framing::Length(n) = resp.framing {
        let want = resp.len as u64 + n;
        if (relay.len() as u64) < want && want <= relay.capacity() as u64 {
            let timeout = route.options.backend_timeout.or(s.backend_timeout);
            if read_more(answering.conn.stream(), relay, timeout)
                .await
                .is_err()
                && relay.capacity() == 0
            {
                // The read timed out and took the buffer with it: the backend stalled mid-body.
                return Err(ErrorKind::BrokenMidResponse);
            }
        }
    }
    let client_http10 = c.head.minor_version == 0;
    let decode = resp.framing == Framing::Chunked && client_http10;
    let close = force_close
        || !c.head.keep_alive
        || resp.framing == Framing::UntilClose
        || decode
        || w.draining.get();
    let how = ResponseDelivery {
        client_http10,
        close,
        decode_chunked: decode,
        upgrade: false,
    };
    write_client_head(w, c, ex, &answering, relay, resp, &how);
    ex.status = resp.status;

    // The body bytes that came with the head.
    let mut framing = BodyFraming::new(resp.framing, decode);
    let start = resp.len;
    let end = relay.len();
    let first = match framing.take(&mut relay[start..end]) {
        Ok(p) => p,
        Err(_) => {
            // The head is not sent yet: the client can still get a clean 502.
            return Err(ErrorKind::MalformedChunkedResponse);
        }
    };
    let extra = end - start > first.consumed;
    let clean_head = resp.keep_alive && !resp.must_close && resp.framing != Framing::UntilClose;
    let mut pace = BodyPace::new(s.min_body_rate, c.send_timeout);
    if !(first.done && c.out.len() + first.produced <= COALESCE_LIMIT) {
        // Not one write: no part of the answer may wait for Nagle.
        c.ensure_nodelay();
    }
    if first.done {
        // The whole response is in hand: the backend is free before the client has read a byte.
        ex.backend_secs = backend_start.elapsed().as_secs_f64();
        w.pools.release(answering.conn, clean_head && !extra);
        let result = write_first(
            c,
            relay,
            start,
            first.produced,
            &mut pace,
            &mut ex.bytes_sent,
        );
        result.await.map_err(|_| ErrorKind::ClientGone)?;
        return Ok(Relayed::Done {
            keep_client: !close,
        });
    }
    let backend_timeout = route.options.backend_timeout.or(s.backend_timeout);
    // A large body of known length between two plain sockets: spliced while the client keeps up.
    let mut first_written = false;
    let mut held = None;
    let splice_left = match framing {
        BodyFraming::Length(left) if left >= SPLICE_BODY_MIN && !decode => Some(left),
        _ => None,
    };
    let client_fd =
        c.io.plain_socket()
            .filter(|_| s.splice)
            .map(|sock| sock.as_raw_fd());
    if let (Some(left), Some(cfd)) = (splice_left, client_fd) {
        let first_part = FirstPart {
            head: &c.out,
            start,
            produced: first.produced,
        };
        let backend: &BackendStream = answering.conn.stream();
        let moving = splice_rest(w, backend, cfd, first_part, relay, left, backend_timeout);
        match moving.await {
            Spliced::NotTried => {}
            Spliced::Done { sent } => {
                w.m().inc(Counter::BodiesSpliced);
                ex.bytes_sent = sent;
                ex.backend_secs = backend_start.elapsed().as_secs_f64();
                w.pools.release(answering.conn, clean_head && !extra);
                return Ok(Relayed::Done {
                    keep_client: !close,
                });
            }
            Spliced::Failed { kind, sent } => {
                ex.bytes_sent = sent;
                return Err(kind);
            }
            Spliced::ClientBehind { unsent, left, sent } => {
                w.m().inc(Counter::BodySpliceFallbacks);
                ex.bytes_sent = sent;
                first_written = true;
                framing = BodyFraming::Length(left);
                held = Some(unsent);
            }
        }
    }
    // The rest of the body: read ahead of the client while it is written, from the very first bytes
    // (a client that reads nothing does not hold the backend).
    let ahead = ReadAhead::new(s.response_buffer_size.max(1), &w.body_bufs, &w.large_bufs);
    if let Some(mut buf) = held {
        // What the client's socket could not take goes first.
        if !ahead.push(&mut buf) {
            ahead.recycle(buf);
        }
    }
    let reader = read_ahead(
        w,
        answering.conn,
        backend_timeout,
        &mut framing,
        resp.framing == Framing::UntilClose,
        clean_head,
        extra,
        &ahead,
        backend_start,
    );
    let sent = &mut ex.bytes_sent;
    let writer = async {
        if !first_written {
            write_first(c, relay, start, first.produced, &mut pace, sent).await?;
        }
        write_behind(&mut c.io, &ahead, pace, sent).await
    };
    // Boxed: the two halves' state lives on the heap only for responses that need it, instead of
    // enlarging every connection task (idle ones included).
    let written = Box::pin(run_both(reader, writer)).await;
    // Buffers the reader left behind (the client went away first) go back to the pool.
    ahead.drain();
    ex.backend_secs = ahead
        .backend_secs
        .get()
        .unwrap_or_else(|| backend_start.elapsed().as_secs_f64());
    if written.is_err() {
        return Err(ErrorKind::ClientGone);
    }
    if ahead.end.get() != Some(true) {
        debug!(
            "backend {} closed, stalled or broke framing mid-body for {}",
            route.backends[index].url, c.host
        );
        return Err(ErrorKind::BrokenMidResponse);
    }
    Ok(Relayed::Done {
        keep_client: !close,
    })
}

/// The response head (in `head`) and the first body bytes (`relay[start..start + produced]`), not
/// yet written: see [`write_first`].
struct FirstPart<'a> {
    head: &'a [u8],
    start: usize,
    produced: usize,
}

/// How a spliced response body went. `sent`: bytes the client's socket took (head included).
enum Spliced {
    /// The pipe or the sockets' flags were refused: nothing was written; the read-ahead does it all.
    NotTried,
    /// The whole answer went into the client's socket.
    Done {
        sent: u64,
    },
    /// The client's socket could not take more: `unsent` holds what was read and not sent (head
    /// bytes included), `left` bytes of the body are still at the backend. The read-ahead takes over,
    /// so a slow client does not hold the backend.
    ClientBehind {
        unsent: Vec<u8>,
        left: u64,
        sent: u64,
    },
    Failed {
        kind: ErrorKind,
        sent: u64,
    },
}

/// Sends the answer's head and first body bytes, then moves the `left` last bytes of the body from a
/// plain backend socket to the plain client socket `cfd` through the worker's pipe
/// (`proxy::splice`): no copy through user space, one `splice` in and one out per step of up to the
/// pipe's size. Both sockets are non-blocking meanwhile (restored before this returns, while the
/// caller still holds them), so nothing here waits on the client: the only wait is on the backend
/// (within `timeout`), and when the client's socket is full, whatever is in hand is returned for the
/// read-ahead. The pipe is empty whenever this waits or returns.
async fn splice_rest(
    w: &Core,
    backend: &BackendStream,
    cfd: RawFd,
    first: FirstPart<'_>,
    relay: &mut [u8],
    mut left: u64,
    timeout: Option<Duration>,
) -> Spliced {
    let bfd = backend.as_raw_fd();
    let Some((pr, pw, size)) = splice::worker_pipe() else {
        return Spliced::NotTried;
    };
    let (Some(_client_nb), Some(_backend_nb)) = (NonBlocking::set(cfd), NonBlocking::set(bfd))
    else {
        return Spliced::NotTried;
    };
    let mut sent = 0u64;
    // The head and the first body bytes, as `write_first` lays them out.
    let h = first.head.len();
    let body = first.start..first.start + first.produced;
    let parts: [&[u8]; 2] = if h <= first.start {
        let from = first.start - h;
        relay[from..first.start].copy_from_slice(first.head);
        [&relay[from..body.end], &[]]
    } else {
        [first.head, &relay[body]]
    };
    let mut unsent = Vec::new();
    for part in parts {
        if !unsent.is_empty() {
            unsent.extend_from_slice(part);
            continue;
        }
        let mut off = 0;
        while off < part.len() {
            match splice::send_direct(cfd, &part[off..]) {
                Ok(k) if k > 0 => off += k,
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                    let kind = ErrorKind::ClientGone;
                    return Spliced::Failed { kind, sent };
                }
                _ => {
                    unsent.extend_from_slice(&part[off..]);
                    break;
                }
            }
        }
        sent += off as u64;
    }
    if !unsent.is_empty() {
        return Spliced::ClientBehind { unsent, left, sent };
    }
    while left > 0 {
        let want = left.min(size as u64) as usize;
        let n = match splice::splice(bfd, pw, want) {
            Ok(0) => {
                let kind = ErrorKind::BrokenMidResponse;
                return Spliced::Failed { kind, sent };
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if ready_within(backend.readable(), timeout).await.is_err() {
                    let kind = ErrorKind::BrokenMidResponse;
                    return Spliced::Failed { kind, sent };
                }
                continue;
            }
            Err(_) => {
                let kind = ErrorKind::BrokenMidResponse;
                return Spliced::Failed { kind, sent };
            }
        };
        left -= n as u64;
        let mut out = 0;
        while out < n {
            match splice::splice(pr, cfd, n - out) {
                Ok(k) if k > 0 => out += k,
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                    // The client is gone: empty the pipe for the worker's next user.
                    splice::drain_pipe(pr, n - out, &mut Vec::new());
                    sent += out as u64;
                    let kind = ErrorKind::ClientGone;
                    return Spliced::Failed { kind, sent };
                }
                _ => {
                    sent += out as u64;
                    let mut unsent = if n - out <= w.body_bufs.size() {
                        w.body_bufs.get()
                    } else {
                        Vec::with_capacity(n - out)
                    };
                    if !splice::drain_pipe(pr, n - out, &mut unsent) {
                        let kind = ErrorKind::BrokenMidResponse;
                        return Spliced::Failed { kind, sent };
                    }
                    return Spliced::ClientBehind { unsent, left, sent };
                }
            }
        }
        sent += n as u64;
    }
    Spliced::Done { sent }
}

/// Writes the response head in `c.out` and the first body bytes `relay[start..start + produced]`, in one
/// write when the head fits where the backend's head was or the body is small, counting what is sent in
/// `sent`. The backend's head at `relay[..start]` is overwritten.
async fn write_first<S: ClientStream>(
    c: &mut ClientConn<S>,
    relay: &mut Vec<u8>,
    start: usize,
    produced: usize,
    pace: &mut BodyPace,
    sent: &mut u64,
) -> io::Result<()> {
    let head = c.out.len();
    if head <= start && produced > 0 {
        // The rewritten head (usually shorter: hop-by-hop headers dropped) goes right in front of the
        // body, over the backend's: one write, and no copy of the body.
        let from = start - head;
        relay[from..start].copy_from_slice(&c.out);
        *sent = (head + produced) as u64;
        return write_paced(&mut c.io, relay, from, start + produced, pace).await;
    }
    if c.out.len() + produced <= COALESCE_LIMIT {
        c.out.extend_from_slice(&relay[start..start + produced]);
        *sent = c.out.len() as u64;
        let n = c.out.len();
        write_paced(&mut c.io, &mut c.out, 0, n, pace).await
    } else {
        *sent = (c.out.len() + produced) as u64;
        let n = c.out.len();
        write_paced(&mut c.io, &mut c.out, 0, n, pace).await?;
        write_paced(&mut c.io, relay, start, start + produced, pace).await
    }
}

/// Response body bytes read from the backend and not yet written to the client: a queue of pooled
/// buffers shared by the two halves of one exchange ([`read_ahead`], [`write_behind`]), polled by one task
/// ([`run_both`]), so one waker slot serves both.
///
/// Buffers start small (`BODY_BUF`, 64 KiB) and become large (`LARGE_BODY_BUF`, 256 KiB: a quarter of the
/// reads and writes) once the body has outgrown a small one, while the worker's bound on large buffers
/// (`LARGE_BODY_BUFS_LENT`) allows. Memory per exchange stays `limit` plus two buffers.
struct ReadAhead<'a> {
    /// Every buffer but the last is full, so memory is about `queued` (plus one buffer).
    chunks: RefCell<VecDeque<Vec<u8>>>,
    /// Bytes queued.
    queued: Cell<usize>,
    /// `responseBufferSize`: no read while this much is queued (one read may pass it by a buffer).
    limit: usize,
    /// Set when the reader stops: `true` if the body ended cleanly.
    end: Cell<Option<bool>>,
    /// When the backend finished (for the access log).
    backend_secs: Cell<Option<f64>>,
    waker: RefCell<Option<Waker>>,
    small: &'a BufPool,
    large: &'a LargeBufPool,
    /// Large buffers this exchange holds (lent and not given back), credited back when it ends.
    large_out: Cell<usize>,
}

impl Drop for ReadAhead<'_> {
    fn drop(&mut self) {
        // Large buffers not given back were dropped on an error path (a timed-out write keeps its
        // buffer): they no longer count against the worker's bound.
        self.large.forget(self.large_out.get());
    }
}

impl<'a> ReadAhead<'a> {
    fn new(limit: usize, small: &'a BufPool, large: &'a LargeBufPool) -> Self {
        ReadAhead {
            chunks: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            limit,
            end: Cell::new(None),
            backend_secs: Cell::new(None),
            waker: RefCell::new(None),
            small,
            large,
            large_out: Cell::new(0),
        }
    }

    /// An empty buffer to read into: a large one when `large` and the worker's bound allows.
    fn buffer(&self, large: bool) -> Vec<u8> {
        if large {
            if let Some(buf) = self.large.lend() {
                self.large_out.set(self.large_out.get() + 1);
                return buf;
            }
        }
        self.small.get()
    }

    /// Gives a buffer back to the pool it came from.
    fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() == self.large.size() && self.large_out.get() > 0 {
            self.large_out.set(self.large_out.get() - 1);
            self.large.give_back(buf);
        } else {
            self.small.put(buf);
        }
    }

    fn wake(&self) {
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn park(&self, cx: &Context<'_>) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *slot = Some(cx.waker().clone());
        }
    }

    /// Waits until the queue holds less than its limit.
    async fn room(&self) {
        poll_fn(|cx| {
            if self.queued.get() < self.limit {
                Poll::Ready(())
            } else {
                self.park(cx);
                Poll::Pending
            }
        })
        .await
    }

    /// Queues the bytes of `buf`, filling the last queued buffer first (it only waits there when the
    /// client is behind, so packing costs a copy only then). Returns `true` if `buf` itself was queued
    /// (the caller needs a new buffer), `false` if its bytes were all copied (it is left empty).
    fn push(&self, buf: &mut Vec<u8>) -> bool {
        if buf.is_empty() {
            return false;
        }
        self.queued.set(self.queued.get() + buf.len());
        let mut chunks = self.chunks.borrow_mut();
        if let Some(last) = chunks.back_mut() {
            let k = (last.capacity() - last.len()).min(buf.len());
            last.extend_from_slice(&buf[..k]);
            if k == buf.len() {
                buf.clear();
                drop(chunks);
                self.wake();
                return false;
            }
            buf.drain(..k);
        }
        chunks.push_back(std::mem::take(buf));
        drop(chunks);
        self.wake();
        true
    }

    fn finish(&self, clean: bool, backend_secs: f64) {
        self.end.set(Some(clean));
        self.backend_secs.set(Some(backend_secs));
        self.wake();
    }

    /// The next buffer to write, or `None` once the reader stopped and everything was written.
    async fn next(&self) -> Option<Vec<u8>> {
        poll_fn(|cx| {
            if let Some(buf) = self.chunks.borrow_mut().pop_front() {
                self.queued.set(self.queued.get() - buf.len());
                self.wake();
                return Poll::Ready(Some(buf));
            }
            if self.end.get().is_some() {
                return Poll::Ready(None);
            }
            self.park(cx);
            Poll::Pending
        })
        .await
    }

    fn drain(&self) {
        let chunks = std::mem::take(&mut *self.chunks.borrow_mut());
        for buf in chunks {
            self.recycle(buf);
        }
    }
}

/// Reads the rest of a response body from the backend into `ahead` as fast as the backend sends and
/// the read-ahead has room, then hands the connection back to its pool at once (or closes it).
#[allow(clippy::too_many_arguments)]
async fn read_ahead(
    w: &Core,
    mut conn: BackendConn,
    timeout: Option<Duration>,
    framing: &mut BodyFraming,
    until_close: bool,
    clean_head: bool,
    mut extra: bool,
    ahead: &ReadAhead<'_>,
    backend_start: Instant,
) {
    let mut buf = ahead.buffer(outgrown(framing, 0, ahead.small.size()));
    let mut read = 0usize;
    let clean = loop {
        ahead.room().await;
        let before = buf.len();
        match read_more(conn.stream(), &mut buf, timeout).await {
            Ok(0) if until_close => break true,
            Ok(0) | Err(_) => break false,
            Ok(_) => {}
        }
        let n = buf.len() - before;
        read += n;
        let p = match framing.take(&mut buf[before..]) {
            Ok(p) => p,
            Err(_) => break false,
        };
        extra |= n > p.consumed;
        // Decoding (HTTP/1.0 clients) produces fewer bytes than it consumes; bytes past the body are
        // not the client's.
        buf.truncate(before + p.produced);
        if ahead.push(&mut buf) {
            buf = ahead.buffer(outgrown(framing, read, ahead.small.size()));
        }
        if p.done {
            break true;
        }
    };
    ahead.recycle(buf);
    let backend_secs = backend_start.elapsed().as_secs_f64();
    if clean {
        w.pools.release(conn, clean_head && !extra);
    } else {
        drop(conn);
    }
    ahead.finish(clean, backend_secs);
}

/// Whether a body is larger than a small buffer: what is left of it by its length, or what was read.
fn outgrown(framing: &BodyFraming, read: usize, small: usize) -> bool {
    match framing {
        BodyFraming::Length(left) => *left > small as u64,
        _ => read >= small,
    }
}

/// Writes what [`read_ahead`] queued to the client, paced; `Err` if the client failed or was too slow.
async fn write_behind<S: ClientStream>(
    io: &mut S,
    ahead: &ReadAhead<'_>,
    mut pace: BodyPace,
    sent: &mut u64,
) -> io::Result<()> {
    while let Some(mut buf) = ahead.next().await {
        let n = buf.len();
        write_paced(io, &mut buf, 0, n, &mut pace).await?;
        *sent += n as u64;
        ahead.recycle(buf);
    }
    Ok(())
}

/// Runs the reader and the writer of one response body in the calling task, until the writer is done.
/// A writer that fails first drops the reader (and with it the backend connection, which then closes).
async fn run_both<R, W, T>(reader: R, writer: W) -> T
where
    R: Future<Output = ()>,
    W: Future<Output = T>,
{
    let mut reader = pin!(reader);
    let mut writer = pin!(writer);
    let mut reader_done = false;
    poll_fn(|cx| {
        if !reader_done && reader.as_mut().poll(cx).is_ready() {
            reader_done = true;
        }
        writer.as_mut().poll(cx)
    })
    .await
}
