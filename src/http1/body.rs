//! Where a body ends: the framing state of one message body, fed with the bytes as they arrive.
//!
//! Used for request bodies (client → backend) and response bodies (backend → client). It does no I/O;
//! the caller reads, asks [`BodyFraming::take`] how many of the bytes belong to the body, and writes
//! those.

use super::chunked::{ChunkError, ChunkedScanner, Progress};
use super::head::Framing;

/// Progress through one body.
pub enum BodyFraming {
    /// Fixed length: bytes still expected.
    Length(u64),
    Chunked {
        scanner: ChunkedScanner,
        decode: bool,
    },
    UntilClose,
    Done,
}

impl BodyFraming {
    /// `decode` only matters for chunked bodies (strip the coding for an HTTP/1.0 client).
    pub fn new(framing: Framing, decode: bool) -> Self {
        match framing {
            Framing::None | Framing::Length(0) => BodyFraming::Done,
            Framing::Length(n) => BodyFraming::Length(n),
            Framing::Chunked => BodyFraming::Chunked {
                scanner: ChunkedScanner::new(),
                decode,
            },
            Framing::UntilClose => BodyFraming::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyFraming::Done)
    }

    /// Takes the body's share of `bytes`. Returns how many input bytes belong to the body
    /// (`consumed`) and how many output bytes are at the front of `bytes` (`produced`: equal to
    /// `consumed` except when decoding chunked).
    pub fn take(&mut self, bytes: &mut [u8]) -> Result<Progress, ChunkError> {
        match self {
            BodyFraming::Done => Ok(Progress {
                consumed: 0,
                produced: 0,
                done: true,
            }),
            BodyFraming::UntilClose => Ok(Progress {
                consumed: bytes.len(),
                produced: bytes.len(),
                done: false,
            }),
            BodyFraming::Length(remaining) => {
                let n = (*remaining).min(bytes.len() as u64) as usize;
                *remaining -= n as u64;
                let done = *remaining == 0;
                if done {
                    *self = BodyFraming::Done;
                }
                Ok(Progress {
                    consumed: n,
                    produced: n,
                    done,
                })
            }
            BodyFraming::Chunked { scanner, decode } => {
                let p = if *decode {
                    scanner.decode(bytes)?
                } else {
                    scanner.scan(bytes)?
                };
                if p.done {
                    *self = BodyFraming::Done;
                }
                Ok(p)
            }
        }
    }
}
