//! Reads and writes on monoio's owned buffers, with deadlines, and the lingering close after an error
//! answer. Used by the client connections and by the admin server (`control/admin/http.rs`).
//!
//! monoio takes buffers by value; these helpers hide the take-and-give-back dance. A read that times
//! out loses its buffer and must be followed by closing the stream (io_uring may have completed it).

use std::io;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};

/// Waits for a readiness (`readable()`/`writable()` of a socket) within `timeout`; running out of time
/// is an error of kind `TimedOut`.
pub async fn ready_within(
    wait: impl std::future::Future<Output = io::Result<()>>,
    timeout: Option<Duration>,
) -> io::Result<()> {
    match timeout {
        Some(t) => monoio::time::timeout(t, wait)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
        None => wait.await,
    }
}

/// Reads once into the spare capacity of `buf` (growing it when full). `Ok(0)` is end of stream.
pub async fn read_more<R: AsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    if buf.len() == buf.capacity() {
        buf.reserve(buf.capacity().max(4096));
    }
    let end = buf.capacity();
    read_into(r, buf, end, timeout).await
}

/// Reads once, keeping `buf` within `limit` bytes: at most `limit - len` more (and 16 KiB at a time).
/// `Ok(0)` is end of stream, or `buf` already full.
pub async fn read_within<R: AsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    if buf.len() >= limit {
        return Ok(0);
    }
    let want = (limit - buf.len()).min(16 * 1024);
    buf.reserve(want);
    let end = buf.len() + want;
    read_into(r, buf, end, timeout).await
}

/// Reads once into `buf[len..end]` (`end` within the capacity).
async fn read_into<R: AsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    end: usize,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    let len = buf.len();
    let owned = std::mem::take(buf);
    let read = r.read(owned.slice_mut(len..end));
    let (res, slice) = match timeout {
        Some(d) => match monoio::time::timeout(d, read).await {
            Ok(done) => done,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
        },
        None => read.await,
    };
    *buf = slice.into_inner();
    res
}

/// One `write` of `buf[pos..end]` within `timeout`: the bytes written (never 0: a zero write is an
/// error). Shared by [`write_range`] and the paced response writer (`proxy/relay.rs`).
pub async fn write_once<W: AsyncWriteRent>(
    w: &mut W,
    buf: &mut Vec<u8>,
    pos: usize,
    end: usize,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    loop {
        let owned = std::mem::take(buf);
        let write = w.write(owned.slice(pos..end));
        let (res, slice) = match timeout {
            Some(d) => match monoio::time::timeout(d, write).await {
                Ok(done) => done,
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
            },
            None => write.await,
        };
        *buf = slice.into_inner();
        match res {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes `buf[start..end]` entirely. With a timeout, each `write` must make progress within it (a
/// peer that stops reading is dropped, like nginx's `send_timeout`); the stream must then be closed.
pub async fn write_range<W: AsyncWriteRent>(
    w: &mut W,
    buf: &mut Vec<u8>,
    start: usize,
    end: usize,
    timeout: Option<Duration>,
) -> io::Result<()> {
    let mut pos = start;
    while pos < end {
        pos += write_once(w, buf, pos, end, timeout).await?;
    }
    Ok(())
}

/// Writes all of `buf` (see [`write_range`]).
pub async fn write_all_vec<W: AsyncWriteRent>(
    w: &mut W,
    buf: &mut Vec<u8>,
    timeout: Option<Duration>,
) -> io::Result<()> {
    let end = buf.len();
    write_range(w, buf, 0, end, timeout).await
}

/// After answering a request that was not read to its end: stop writing, then read and discard what
/// the peer still sends (for up to `wait` and 1 MiB, in `scratch`), so that closing with unread bytes
/// does not reset the connection before the peer has read the answer (RFC 9112 §9.6).
pub async fn linger<S: AsyncReadRent + AsyncWriteRent>(
    s: &mut S,
    scratch: &mut Vec<u8>,
    wait: Duration,
) {
    let _ = s.shutdown().await;
    let deadline = Instant::now() + wait;
    let mut drained = 0usize;
    while drained < 1 << 20 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        scratch.clear();
        match read_more(s, scratch, Some(left)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}
