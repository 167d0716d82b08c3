//! Reads and writes on monoio's owned buffers, with deadlines.
//!
//! monoio takes buffers by value; these helpers hide the take-and-give-back dance. A read that times
//! out loses its buffer and must be followed by closing the stream (io_uring may have completed it).

use std::io;
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};

/// Reads once into the spare capacity of `buf` (growing it when full). `Ok(0)` is end of stream.
pub async fn read_more<R: AsyncReadRent>(
    r: &mut R,
    buf: &mut Vec<u8>,
    timeout: Option<Duration>,
) -> io::Result<usize> {
    if buf.len() == buf.capacity() {
        buf.reserve(buf.capacity().max(4096));
    }
    let len = buf.len();
    let cap = buf.capacity();
    let owned = std::mem::take(buf);
    let read = r.read(owned.slice_mut(len..cap));
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
