//! The request body, for the forward phase: how much of it is in hand before a backend is taken, and the
//! streaming of the rest once one is (docs/compatibility.md §3).
//!
//! Up to `server.requestBufferSize` of the body is read before a backend connection is taken, so a slow
//! upload holds no backend; a body that fits is read completely and the request can be retried; the rest
//! of a larger one is streamed, and it can only be retried while no byte of it has left the client
//! buffer. Reading from the client is paced (`server.minBodyRate`, see `http1::body::BodyPace`). A large
//! rest of known length between plain sockets is spliced (`proxy::splice`) instead of copied.
//!
//! Failures are [`ErrorKind`]s; nothing here answers the client (but `100 Continue`).

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;

use crate::common::metrics::Counter;
use crate::dataplane::buffers::Loan;
use crate::dataplane::core::Core;
use crate::dataplane::http1::body::{BodyFraming, BodyPace};
use crate::dataplane::http1::io::{read_more, ready_within, write_all_vec, write_range};
use crate::dataplane::proxy::error::{ErrorKind, ProxyError};
use crate::dataplane::proxy::splice::{self, NonBlocking, SPLICE_BODY_MIN};
use crate::dataplane::session::{ClientConn, ClientStream};
use crate::dataplane::upstream::stream::BackendStream;

/// The request body as the forward phase sees it.
pub struct RequestBody {
    /// Body bytes in `c.buf` right after the head.
    pub in_hand: usize,
    /// The whole body is in hand (the request can be re-sent).
    pub complete: bool,
    /// Framing of the part still to come from the client (when not complete).
    pub rest: BodyFraming,
}

/// Reads a body that fits the retry buffer, sends `100 Continue` when the client waits for it.
pub async fn prepare_body<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    max_body: Option<u64>,
) -> Result<RequestBody, ProxyError> {
    // The body is not consumed when any of these fail: the connection closes after the answer.
    let fail = |kind| ProxyError::after_body(kind, false);
    let s = &w.config.server;
    let start = c.head.len;
    let mut framing = BodyFraming::new(c.head.framing, false);
    if framing.is_done() {
        return Ok(RequestBody {
            in_hand: 0,
            complete: true,
            rest: BodyFraming::Done,
        });
    }
    let mut scanned = 0usize;
    let mut continue_sent = false;
    let mut pace = BodyPace::new(s.min_body_rate, s.tcp_timeout);
    loop {
        let end = c.buf.len();
        let progress = framing
            .take(&mut c.buf[start + scanned..end])
            .map_err(|_| fail(ErrorKind::MalformedRequestBody))?;
        // Leading zeros of chunk sizes dropped by the scanner leave a gap behind the bytes to send.
        if progress.produced < progress.consumed {
            let at = start + scanned;
            c.buf.drain(at + progress.produced..at + progress.consumed);
        }
        scanned += progress.produced;
        if max_body.is_some_and(|max| scanned as u64 > max) {
            return Err(fail(ErrorKind::BodyTooLarge));
        }
        if progress.done {
            return Ok(RequestBody {
                in_hand: scanned,
                complete: true,
                rest: BodyFraming::Done,
            });
        }
        // Too large to hold: the first `requestBufferSize` bytes are in hand, stream the rest.
        if scanned >= s.retry_body_buffer {
            if !continue_sent {
                send_continue(c).await.map_err(fail)?;
            }
            return Ok(RequestBody {
                in_hand: scanned,
                complete: false,
                rest: framing,
            });
        }
        if !continue_sent {
            send_continue(c).await.map_err(fail)?;
            continue_sent = true;
        }
        // A body of known length gets the room for what will be held of it at once: one allocation
        // and large reads, instead of a buffer doubling from 4 KiB.
        if let BodyFraming::Length(left) = framing {
            let want = (left as usize).min(s.retry_body_buffer.saturating_sub(scanned));
            let spare = c.buf.capacity() - c.buf.len();
            if want > spare {
                c.buf.reserve_exact(want);
            }
        }
        match read_paced(&mut c.io, &mut c.buf, &mut pace).await {
            Ok(0) | Err(_) => return Err(fail(ErrorKind::ClientGone)),
            Ok(_) => {}
        }
    }
}

/// One read from the client within what `pace` allows (its idle timeout, shortened for a client below
/// the minimum rate). A timeout is an error: the caller closes the connection.
pub async fn read_paced<R: AsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    pace: &mut BodyPace,
) -> io::Result<usize> {
    let timeout = pace.allowance()?;
    let started = Instant::now();
    let n = read_more(r, buf, timeout).await?;
    pace.record(started.elapsed(), n);
    Ok(n)
}

/// Sends `100 Continue` to an HTTP/1.1 client that waits for it (once).
async fn send_continue<S: ClientStream>(c: &mut ClientConn<S>) -> Result<(), ErrorKind> {
    if c.head.expect_continue && c.head.minor_version == 1 {
        c.head.expect_continue = false;
        // The final answer follows in another write.
        c.ensure_nodelay();
        c.out.clear();
        c.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        write_all_vec(&mut c.io, &mut c.out, c.send_timeout)
            .await
            .map_err(|_| ErrorKind::ClientGone)?;
    }
    Ok(())
}

/// Sends the backend's request head in `c.out` and the body in hand (still in the client buffer, so a
/// failure here can be retried).
pub async fn send_request<S: ClientStream>(
    c: &mut ClientConn<S>,
    stream: &mut BackendStream,
    body: &RequestBody,
    body_in_out: bool,
    timeout: Option<Duration>,
) -> io::Result<()> {
    write_all_vec(stream, &mut c.out, timeout).await?;
    if !body_in_out && body.in_hand > 0 {
        let start = c.head.len;
        write_range(stream, &mut c.buf, start, start + body.in_hand, timeout).await?;
    }
    Ok(())
}

/// Copies the rest of the request body from the client to the backend. Bytes that arrive after the body
/// (a pipelined request) are kept in the client buffer. [`ErrorKind::ClosedDuringUpload`]: the backend
/// stopped reading (it may have answered early).
pub async fn stream_request_body<S: ClientStream>(
    w: &Core,
    c: &mut ClientConn<S>,
    backend: &mut BackendStream,
    body: &mut RequestBody,
    relay: &mut Vec<u8>,
    max_body: Option<u64>,
) -> Result<(), ErrorKind> {
    // Everything in the client buffer so far was head or body.
    c.pos = c.buf.len();
    let mut total = body.in_hand as u64;
    let s = &w.config.server;
    let mut pace = BodyPace::new(s.min_body_rate, s.tcp_timeout);
    // A body larger than the relay buffer goes through a large one (fewer, larger reads and writes)
    // while the worker's bound on large buffers allows; it is given back when this returns.
    let outgrows = match body.rest {
        BodyFraming::Length(left) => left > relay.capacity() as u64,
        BodyFraming::Done => false,
        _ => true,
    };
    let mut loan = if outgrows {
        Loan::take(&w.large_bufs)
    } else {
        None
    };
    let relay = match loan.as_mut() {
        Some(loan) => &mut loan.buf,
        None => relay,
    };
    // A large body of known length from a plain client to a plain backend: spliced.
    if let (BodyFraming::Length(left), Some(client)) = (&body.rest, c.io.plain_socket()) {
        if *left >= SPLICE_BODY_MIN && s.splice {
            let moving = splice_upload(w, client, backend, *left, &mut total, max_body, &mut pace);
            if let Some(result) = moving.await {
                result?;
                w.m().inc(Counter::UploadsSpliced);
                body.rest = BodyFraming::Done;
                body.complete = true;
                return Ok(());
            }
        }
    }
    while !body.rest.is_done() {
        relay.clear();
        match read_paced(&mut c.io, relay, &mut pace).await {
            Ok(0) | Err(_) => return Err(ErrorKind::ClientGone),
            Ok(_) => {}
        }
        let n = relay.len();
        let p = body
            .rest
            .take(&mut relay[..n])
            .map_err(|_| ErrorKind::MalformedRequestBody)?;
        if p.consumed < n {
            c.buf.extend_from_slice(&relay[p.consumed..n]);
        }
        total += p.produced as u64;
        if max_body.is_some_and(|max| total > max) {
            return Err(ErrorKind::BodyTooLarge);
        }
        write_range(
            backend,
            relay,
            0,
            p.produced,
            w.config.server.backend_timeout,
        )
        .await
        .map_err(|_| ErrorKind::ClosedDuringUpload)?;
    }
    body.complete = true;
    Ok(())
}

/// Moves the `left` last bytes of a request body from a plain client socket to a plain backend socket
/// through the worker's pipe (`proxy::splice`), without copying them through user space: waits for
/// the client within what `pace` allows; when the backend cannot take a step at once, that step is
/// read back out of the pipe and sent as the backend takes it (within `backendTimeout`). `None`:
/// the pipe or the sockets' flags were refused and nothing was moved (the caller copies instead).
async fn splice_upload(
    w: &Core,
    client: &TcpStream,
    backend: &BackendStream,
    mut left: u64,
    total: &mut u64,
    max_body: Option<u64>,
    pace: &mut BodyPace,
) -> Option<Result<(), ErrorKind>> {
    let (cfd, bfd) = (client.as_raw_fd(), backend.as_raw_fd());
    let (pr, pw, size) = splice::worker_pipe()?;
    // Restored when this returns, while the caller still holds both sockets.
    let _client_nb = NonBlocking::set(cfd)?;
    let _backend_nb = NonBlocking::set(bfd)?;
    let timeout = w.config.server.backend_timeout;
    let mut backlog = Vec::new();
    while left > 0 {
        let want = left.min(size as u64) as usize;
        let n = match splice::splice(cfd, pw, want) {
            Ok(0) => return Some(Err(ErrorKind::ClientGone)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let Ok(allowed) = pace.allowance() else {
                    return Some(Err(ErrorKind::ClientGone));
                };
                let started = Instant::now();
                let ready = ready_within(client.readable(false), allowed).await;
                pace.record(started.elapsed(), 0);
                if ready.is_err() {
                    return Some(Err(ErrorKind::ClientGone));
                }
                continue;
            }
            Err(_) => return Some(Err(ErrorKind::ClientGone)),
        };
        pace.record(Duration::ZERO, n);
        left -= n as u64;
        *total += n as u64;
        if max_body.is_some_and(|max| *total > max) {
            // Empty the pipe for the worker's next user.
            splice::drain_pipe(pr, n, &mut Vec::new());
            return Some(Err(ErrorKind::BodyTooLarge));
        }
        let mut out = 0;
        while out < n {
            match splice::splice(pr, bfd, n - out) {
                Ok(k) if k > 0 => out += k,
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                    splice::drain_pipe(pr, n - out, &mut Vec::new());
                    return Some(Err(ErrorKind::ClosedDuringUpload));
                }
                _ => {
                    // The backend is behind: this step leaves the pipe before anything waits.
                    backlog.clear();
                    if !splice::drain_pipe(pr, n - out, &mut backlog)
                        || send_all_direct(backend, &backlog, timeout).await.is_err()
                    {
                        return Some(Err(ErrorKind::ClosedDuringUpload));
                    }
                    out = n;
                }
            }
        }
    }
    Some(Ok(()))
}

/// Sends `data` on a non-blocking backend socket, waiting for writability (each wait within
/// `timeout`).
async fn send_all_direct(
    backend: &BackendStream,
    data: &[u8],
    timeout: Option<Duration>,
) -> io::Result<()> {
    let fd = backend.as_raw_fd();
    let mut sent = 0;
    while sent < data.len() {
        match splice::send_direct(fd, &data[sent..]) {
            Ok(k) if k > 0 => sent += k,
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ => ready_within(backend.writable(), timeout).await?,
        }
    }
    Ok(())
}
