//! RESP2/RESP3 frame boundaries.
//!
//! The redis crate's parser wants a complete value; on a stream we must first know whether the bytes
//! read so far hold one. [`frame_len`] answers that without building values. It does not interpret
//! content beyond lengths.
//!
//! Hand-written because no crate in the tree frames RESP without its own I/O: redis-rs's async
//! connection (which has one) needs tokio, and its parser only takes complete values.
//!
//! Replies are bounded (README, "Limits"): a frame over [`MAX_FRAME_BYTES`] (declared or buffered) or an
//! aggregate of more than [`MAX_ELEMENTS`] elements is a protocol error, which closes the connection,
//! and a buffer grown by a large reply is given back once it has been parsed.

/// A byte sequence that is not RESP.
#[derive(Debug, PartialEq, Eq)]
pub struct RespError(pub String);

/// Upper bound on the elements of one reply (nested aggregates included).
pub const MAX_ELEMENTS: usize = 1 << 20;
/// Upper bound on one reply frame, in bytes: what one Redis answer may make a connection buffer.
pub const MAX_FRAME_BYTES: usize = 32 << 20;
/// A reader's buffer grown beyond this by a large reply is replaced by a small one once empty.
const SHRINK_ABOVE: usize = 1 << 20;
/// The buffer a reader starts with (and shrinks back to).
const INITIAL_BUFFER: usize = 16 * 1024;

/// Length in bytes of the first complete frame in `buf`, or `None` if more bytes are needed.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, RespError> {
    let mut pos = 0usize;
    let mut pending = 1usize;
    while pending > 0 {
        let Some(&kind) = buf.get(pos) else {
            return Ok(None);
        };
        let Some(line_end) = find_crlf(buf, pos + 1) else {
            return Ok(None);
        };
        let line = &buf[pos + 1..line_end];
        pos = line_end + 2;
        pending -= 1;
        match kind {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {}
            b'$' | b'!' | b'=' => {
                let n = parse_len(line)?;
                if n >= 0 {
                    if n as u64 > MAX_FRAME_BYTES as u64 {
                        return Err(RespError(format!("bulk string of {n} bytes")));
                    }
                    let end = pos + n as usize;
                    if buf.len() < end + 2 {
                        return Ok(None);
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        return Err(RespError("bulk string not terminated by CRLF".into()));
                    }
                    pos = end + 2;
                }
            }
            b'*' | b'~' | b'>' => {
                let n = parse_len(line)?;
                if n > 0 {
                    pending = add_pending(pending, n as usize)?;
                }
            }
            b'%' | b'|' => {
                let n = parse_len(line)?;
                if n > 0 {
                    pending = add_pending(pending, 2 * n as usize)?;
                }
                if kind == b'|' {
                    // An attribute is followed by the value it annotates.
                    pending = add_pending(pending, 1)?;
                }
            }
            other => return Err(RespError(format!("unknown RESP type byte 0x{other:02x}"))),
        }
    }
    Ok(Some(pos))
}

fn add_pending(pending: usize, more: usize) -> Result<usize, RespError> {
    let total = pending.saturating_add(more);
    if total > MAX_ELEMENTS {
        return Err(RespError("aggregate too large".into()));
    }
    Ok(total)
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        match memchr_cr(&buf[i..]) {
            Some(off) => {
                let at = i + off;
                if at + 1 < buf.len() && buf[at + 1] == b'\n' {
                    return Some(at);
                }
                if at + 1 >= buf.len() {
                    return None;
                }
                i = at + 1;
            }
            None => return None,
        }
    }
    None
}

fn memchr_cr(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\r')
}

fn parse_len(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= -1)
        .ok_or_else(|| RespError(format!("bad length {:?}", String::from_utf8_lossy(line))))
}

/// Buffered reading of RESP values from a stream: bytes are read into one growing buffer and complete
/// frames handed to the redis crate's parser. Shared by every Redis connection of the proxy.
pub struct RespReader {
    buf: Vec<u8>,
    start: usize,
}

impl RespReader {
    /// A reader that starts with bytes already received (e.g. right after a handshake).
    pub fn new(received: Vec<u8>) -> Self {
        let mut buf = received;
        if buf.capacity() < INITIAL_BUFFER {
            buf.reserve(INITIAL_BUFFER - buf.len());
        }
        RespReader { buf, start: 0 }
    }

    /// The next complete value, if one is buffered.
    pub fn next_value(&mut self) -> Result<Option<redis::Value>, String> {
        let n = match frame_len(&self.buf[self.start..]) {
            Ok(Some(n)) => n,
            Ok(None) => {
                if self.buf.len() - self.start > MAX_FRAME_BYTES {
                    return Err(format!(
                        "protocol error: reply larger than {MAX_FRAME_BYTES} bytes"
                    ));
                }
                self.release_if_empty();
                return Ok(None);
            }
            Err(e) => return Err(format!("protocol error: {}", e.0)),
        };
        let value = redis::parse_redis_value(&self.buf[self.start..self.start + n])
            .map_err(|e| format!("protocol error: {e}"))?;
        self.start += n;
        self.release_if_empty();
        Ok(Some(value))
    }

    /// Once everything buffered is parsed: starts again at the front, and gives back a buffer that a
    /// large reply grew.
    fn release_if_empty(&mut self) {
        if self.start == self.buf.len() {
            self.start = 0;
            if self.buf.capacity() > SHRINK_ABOVE {
                self.buf = Vec::with_capacity(INITIAL_BUFFER);
            } else {
                self.buf.clear();
            }
        }
    }

    /// Bytes of buffer held (tests).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads more bytes (compacting or growing the buffer first). `Ok(0)` is end of stream. If the
    /// future is dropped mid-read, the buffer is lost with it: the connection must then be closed.
    pub async fn fill<R: monoio::io::AsyncReadRent>(
        &mut self,
        r: &mut R,
    ) -> std::io::Result<usize> {
        use monoio::buf::IoBufMut;
        if self.buf.len() == self.buf.capacity() {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            } else {
                self.buf.reserve(self.buf.capacity().max(4096));
            }
        }
        let len = self.buf.len();
        let cap = self.buf.capacity();
        let (res, slice) = r
            .read(std::mem::take(&mut self.buf).slice_mut(len..cap))
            .await;
        self.buf = slice.into_inner();
        res
    }

    /// Bytes received but not yet parsed.
    pub fn into_rest(mut self) -> Vec<u8> {
        self.buf.split_off(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_and_partial_frames() {
        assert_eq!(frame_len(b"+OK\r\n"), Ok(Some(5)));
        assert_eq!(frame_len(b"+OK\r"), Ok(None));
        assert_eq!(frame_len(b":12\r\n+x"), Ok(Some(5)));
        assert_eq!(frame_len(b"$3\r\nabc\r\n"), Ok(Some(9)));
        assert_eq!(frame_len(b"$3\r\nab"), Ok(None));
        assert_eq!(frame_len(b"$-1\r\n"), Ok(Some(5)));
        assert_eq!(frame_len(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"), Ok(Some(18)));
        assert_eq!(frame_len(b"*2\r\n$1\r\na\r\n"), Ok(None));
        assert_eq!(frame_len(b"*0\r\n"), Ok(Some(4)));
        assert_eq!(frame_len(b"*-1\r\n"), Ok(Some(5)));
        assert_eq!(frame_len(b"%1\r\n+k\r\n+v\r\n"), Ok(Some(12)));
        assert_eq!(frame_len(b">2\r\n+a\r\n+b\r\n"), Ok(Some(12)));
        // bulk string containing CRLF
        assert_eq!(frame_len(b"$4\r\na\r\nb\r\n"), Ok(Some(10)));
        assert!(frame_len(b"?x\r\n").is_err());
        assert!(frame_len(b"$3\r\nabcde").is_err());
    }

    #[test]
    fn bounds() {
        assert!(
            frame_len(b"$99999999999\r\n").is_err(),
            "declared bulk over the cap"
        );
        assert!(frame_len(b"*2000000\r\n").is_err(), "too many elements");
        assert!(frame_len(b"*9223372036854775807\r\n").is_err());
        let mut r = RespReader::new(Vec::new());
        let big = 4 << 20;
        r.buf.extend_from_slice(format!("${big}\r\n").as_bytes());
        r.buf.resize(r.buf.len() + big, b'x');
        r.buf.extend_from_slice(b"\r\n");
        assert!(r.next_value().unwrap().is_some());
        assert!(
            r.capacity() <= INITIAL_BUFFER,
            "the big buffer was given back"
        );
    }
}
