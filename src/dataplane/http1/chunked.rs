//! A streaming scanner for the chunked transfer coding (RFC 9112 §7.1).
//!
//! It is fed bytes as they arrive, validates the framing (hex sizes, CRLF after every line and chunk,
//! bounded size lines and trailers), and says where the body ends. In *forward* mode the bytes are
//! passed on unchanged, chunk extensions and trailers included; in *decode* mode (for HTTP/1.0 clients)
//! only the chunk data is kept, compacted to the front of the buffer.
//!
//! It never allocates and never looks past the end of the body: bytes after the final CRLF belong to the
//! next message.

/// Longest chunk-size line accepted (size, extensions, CRLF).
const MAX_SIZE_LINE: usize = 4096;
/// Longest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a chunked body is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: u8,
    },
    /// After the size: extensions until CR.
    Extension,
    /// Expecting LF after the size line's CR.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after chunk data.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Expecting LF ending a trailer line.
    TrailerLf,
    /// Expecting the final LF.
    EndLf,
    Done,
}

/// Progress made by one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes that belong to the body.
    pub consumed: usize,
    /// Decode mode: data bytes now at the front of the buffer. Forward mode: equal to `consumed`.
    pub produced: usize,
    /// The body is complete.
    pub done: bool,
}

/// Scanner state, carried across reads.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    remaining: u64,
    line_len: usize,
    trailer_len: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedScanner {
    pub fn new() -> Self {
        ChunkedScanner {
            state: State::Size { digits: 0 },
            remaining: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Forward mode: validates `buf` and reports how much of it belongs to the body (`consumed`). The
    /// body's bytes are passed on unchanged except for leading zeros of chunk sizes, which are
    /// normalised to at most one (`0000000005` → `05`): the bytes to send are the first `produced`
    /// bytes of `buf` (compacted in place; equal to `consumed` unless zeros were dropped), so a
    /// backend that counts digits cannot read the size differently.
    pub fn scan(&mut self, buf: &mut [u8]) -> Result<Progress, ChunkError> {
        self.run(buf, false)
    }

    /// Decode mode: like [`scan`](Self::scan), but moves the chunk data to the front of `buf` and
    /// drops sizes, extensions and trailers.
    pub fn decode(&mut self, buf: &mut [u8]) -> Result<Progress, ChunkError> {
        self.run(buf, true)
    }

    fn run(&mut self, buf: &mut [u8], decode: bool) -> Result<Progress, ChunkError> {
        let mut i = 0;
        let mut out = 0;
        while i < buf.len() && self.state != State::Done {
            if self.state == State::Data {
                let take = (buf.len() - i).min(self.remaining.min(usize::MAX as u64) as usize);
                if out != i {
                    buf.copy_within(i..i + take, out);
                }
                out += take;
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = buf[i];
            let keep = self.step(b)?;
            i += 1;
            if keep && !decode {
                buf[out] = b;
                out += 1;
            }
        }
        Ok(Progress {
            consumed: i,
            produced: out,
            done: self.state == State::Done,
        })
    }

    /// Advances over one framing byte. Returns false for a byte dropped in forward mode (a second or
    /// later leading zero of a chunk size).
    fn step(&mut self, b: u8) -> Result<bool, ChunkError> {
        match self.state {
            State::Size { digits } => {
                if let Some(v) = hex_value(b) {
                    // `line_len` counts every digit of this size, `digits` the significant ones.
                    self.line_len += 1;
                    if self.line_len > MAX_SIZE_LINE {
                        return Err(ChunkError("chunk size line too long"));
                    }
                    if digits == 0 && v == 0 {
                        // A leading zero: the first is kept, later ones are dropped.
                        return Ok(self.line_len == 1);
                    }
                    if digits >= 16 {
                        return Err(ChunkError("chunk size too large"));
                    }
                    self.remaining = (self.remaining << 4) | u64::from(v);
                    self.state = State::Size { digits: digits + 1 };
                } else if self.line_len == 0 {
                    return Err(ChunkError("missing chunk size"));
                } else {
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b';' | b' ' | b'\t' => self.state = State::Extension,
                        _ => return Err(ChunkError("invalid chunk size")),
                    }
                    self.line_len += 1;
                }
            }
            State::Extension => {
                self.line_len += 1;
                if self.line_len > MAX_SIZE_LINE {
                    return Err(ChunkError("chunk extension too long"));
                }
                match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\t' | 0x20..=0x7e | 0x80..=0xff => {}
                    _ => return Err(ChunkError("invalid byte in chunk extension")),
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError("chunk size line not ended by CRLF"));
                }
                self.line_len = 0;
                if self.remaining == 0 {
                    self.state = State::TrailerStart;
                } else {
                    self.state = State::Data;
                }
            }
            State::Data => unreachable!("data is consumed in bulk"),
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError("chunk data longer than its size"));
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError("chunk data not followed by CRLF"));
                }
                self.state = State::Size { digits: 0 };
            }
            State::TrailerStart => {
                if b == b'\r' {
                    self.state = State::EndLf;
                } else {
                    self.trailer_byte(b)?;
                    self.state = State::TrailerLine;
                }
            }
            State::TrailerLine => {
                if b == b'\r' {
                    self.state = State::TrailerLf;
                } else {
                    self.trailer_byte(b)?;
                }
            }
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkError("trailer line not ended by CRLF"));
                }
                self.state = State::TrailerStart;
            }
            State::EndLf => {
                if b != b'\n' {
                    return Err(ChunkError("chunked body not ended by CRLF"));
                }
                self.state = State::Done;
            }
            State::Done => {}
        }
        Ok(true)
    }

    fn trailer_byte(&mut self, b: u8) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILERS {
            return Err(ChunkError("trailers too large"));
        }
        match b {
            b'\t' | 0x20..=0x7e | 0x80..=0xff => Ok(()),
            _ => Err(ChunkError("invalid byte in trailer")),
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8], step: usize) -> Result<(usize, bool), ChunkError> {
        let mut s = ChunkedScanner::new();
        let mut total = 0;
        for piece in input.chunks(step) {
            let p = s.scan(&mut piece.to_vec())?;
            total += p.consumed;
            if p.done {
                return Ok((total, true));
            }
        }
        Ok((total, false))
    }

    #[test]
    fn finds_the_end_in_any_split() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT";
        for step in 1..body.len() {
            assert_eq!(
                scan_all(body, step),
                Ok((body.len() - 4, true)),
                "step {step}"
            );
        }
    }

    #[test]
    fn leading_zeros_are_accepted_and_normalised() {
        let body = b"00000000000000000000000005\r\nhello\r\n000000000000000000000\r\n\r\nNEXT";
        for step in 1..body.len() {
            let mut s = ChunkedScanner::new();
            let mut sent = Vec::new();
            let mut consumed = 0;
            for piece in body.chunks(step) {
                let mut piece = piece.to_vec();
                let p = s.scan(&mut piece).unwrap();
                consumed += p.consumed;
                sent.extend_from_slice(&piece[..p.produced]);
                if p.done {
                    break;
                }
            }
            assert_eq!(consumed, body.len() - 4, "step {step}");
            assert_eq!(sent, b"05\r\nhello\r\n0\r\n\r\n", "step {step}");
        }
        let mut s = ChunkedScanner::new();
        let mut long = vec![b'0'; 5000];
        long.extend_from_slice(b"5\r\n");
        assert!(s.scan(&mut long).is_err(), "the size line stays bounded");
    }

    #[test]
    fn decodes() {
        let mut buf = b"3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n".to_vec();
        let mut s = ChunkedScanner::new();
        let p = s.decode(&mut buf).unwrap();
        assert!(p.done);
        assert_eq!(&buf[..p.produced], b"abc0123456789");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"00000000000000000000000000000000011111111111111111\r\n",
            b"\r\n",
            b"5\r\nhello\r\n0\r\nBad\x01\r\n\r\n",
            b"5 \x01\r\n",
        ] {
            assert!(
                scan_all(bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
