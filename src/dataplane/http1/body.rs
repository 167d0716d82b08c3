//! Where a body ends, and how slowly a client may move it.
//!
//! [`BodyFraming`] is the framing state of one message body, fed with the bytes as they arrive. Used for
//! request bodies (client → backend) and response bodies (backend → client): the caller reads, asks
//! [`BodyFraming::take`] how many of the bytes belong to the body, and writes those.
//!
//! [`BodyPace`] is the minimum-rate rule (`server.minBodyRate`) for one body moved to or from a client:
//! it turns the bytes moved so far into the deadline of the next wait on that client.
//!
//! Neither does I/O nor reads the clock: callers measure and report.

use std::time::Duration;

use super::chunked::{ChunkError, ChunkedScanner, Progress};
use super::head::Framing;

/// The minimum transfer rate of one body between the proxy and a client (README "Limits").
///
/// Only the time the proxy spends waiting on the client counts (a read of the request body, a write of
/// the response body), so a backend that streams slowly (server-sent events, long polls) is never held
/// against its client. A token bucket: the client starts with a reserve of one idle timeout
/// (`tcpTimeout`, 30 s when there is none); every second waited costs a second, every byte moved earns
/// `1 / rate` s, and the reserve never exceeds its initial size (bytes that went into socket buffers
/// cannot buy hours). The reserve running out ends the exchange, so one byte per `tcpTimeout` cannot
/// hold a connection forever; at or above `rate` a client is never cut.
#[derive(Clone, Copy, Debug)]
pub struct BodyPace {
    rate: u64,
    idle: Option<Duration>,
    reserve: Duration,
    left: Duration,
}

impl BodyPace {
    /// `rate` in bytes per second (0: no minimum, only `idle`).
    pub fn new(rate: u64, idle: Option<Duration>) -> Self {
        let reserve = idle.unwrap_or(Duration::from_secs(30));
        BodyPace {
            rate,
            idle,
            reserve,
            left: reserve,
        }
    }

    /// How long the next wait on the client may last; `Some(ZERO)` means the client is already too slow.
    /// `None`: no limit at all (no idle timeout and no minimum rate).
    pub fn next_timeout(&self) -> Option<Duration> {
        if self.rate == 0 {
            return self.idle;
        }
        Some(match self.idle {
            Some(idle) => idle.min(self.left),
            None => self.left,
        })
    }

    /// [`next_timeout`](Self::next_timeout) for a wait about to start; an error when the client is
    /// already below the minimum rate (the caller closes the connection).
    pub fn allowance(&self) -> std::io::Result<Option<Duration>> {
        match self.next_timeout() {
            Some(Duration::ZERO) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client below minBodyRate",
            )),
            t => Ok(t),
        }
    }

    /// Records one wait on the client and the bytes it moved.
    pub fn record(&mut self, waited: Duration, bytes: usize) {
        if self.rate == 0 {
            return;
        }
        let earned = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        self.left = (self.left.saturating_sub(waited) + earned).min(self.reserve);
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_allows_the_reserve_then_demands_the_rate() {
        let idle = Some(Duration::from_secs(10));
        let mut p = BodyPace::new(1000, idle);
        assert_eq!(p.next_timeout(), idle);
        // 10 s waited for 1 byte: the reserve is used up, the next byte is due at once.
        p.record(Duration::from_secs(10), 1);
        assert!(p.next_timeout().unwrap() < Duration::from_millis(2));
        // One byte every 100 ms at a minimum of 1000 B/s: the wait for the next byte is cut short (the
        // exchange ends) after about 10 s.
        let mut p = BodyPace::new(1000, idle);
        let mut waits = 0;
        while p.next_timeout().unwrap() >= Duration::from_millis(100) && waits < 1000 {
            p.record(Duration::from_millis(100), 1);
            waits += 1;
        }
        assert!((100..=102).contains(&waits), "{waits}");
        // A fast client is never cut, but cannot bank more than the reserve.
        let mut p = BodyPace::new(1000, idle);
        p.record(Duration::from_secs(1), 1_000_000);
        assert_eq!(p.next_timeout(), idle);
        p.record(Duration::from_secs(8), 0);
        assert_eq!(p.next_timeout(), Some(Duration::from_secs(2)));
        // No minimum: only the idle timeout.
        let mut p = BodyPace::new(0, None);
        p.record(Duration::from_secs(1000), 1);
        assert_eq!(p.next_timeout(), None);
    }
}
