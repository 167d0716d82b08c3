//! HTTP/2 abuse limits: a frame-inspecting shim between the client's byte stream (plain TCP after the
//! sniffed preface, or decrypted TLS) and monoio-http's HTTP/2 server, which has no accounting of its
//! own for resets or cheap-frame floods.
//!
//! [`FrameAudit`] reads only the 9-byte frame headers as the bytes flow (payloads are skipped, no HPACK)
//! and counts what the well-known HTTP/2 attacks are made of: streams reset by the client (rapid reset,
//! CVE-2023-44487), CONTINUATION frames and header-block bytes (CVE-2024-27316), and SETTINGS, PING,
//! PRIORITY, WINDOW_UPDATE and empty DATA frames per second (the 2019 flood advisories). Its state is a
//! few counters: memory does not grow with the input. [`GuardedIo`] feeds it every byte read; on the
//! first limit crossed it records the [`Abuse`], wakes the connection task (which answers with GOAWAY
//! `ENHANCE_YOUR_CALM` through the library, so frames stay well-formed) and reads nothing more from the
//! client.
//!
//! This module must not change, reorder or hold back the bytes it lets through, and must not write to
//! the socket itself (the library owns the write side and may be in the middle of a frame).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;

use crate::common::local_sync::Notify;

/// Length of the client connection preface, which comes before the first frame.
const PREFACE_LEN: u8 = 24;
/// Length of a frame header (RFC 9113 §4.1).
const FRAME_HEADER: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const FLAG_ACK: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

/// The limits one connection is held to. Defaults are documented in README.md ("Limits").
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Streams the client may reset beyond the number of responses it was sent.
    pub reset_allowance: u64,
    /// Bytes of one header block (HEADERS plus its CONTINUATION frames, as sent: HPACK-encoded).
    pub max_header_block: usize,
    /// CONTINUATION frames in one header block.
    pub max_continuations: u32,
    /// Non-ACK SETTINGS frames per second.
    pub settings_per_sec: u32,
    /// Non-ACK PING frames per second.
    pub pings_per_sec: u32,
    /// DATA frames with no payload and no END_STREAM per second.
    pub empty_data_per_sec: u32,
    /// WINDOW_UPDATE frames per second.
    pub window_updates_per_sec: u32,
    /// PRIORITY frames per second.
    pub priorities_per_sec: u32,
}

impl Limits {
    /// The defaults for a server whose `maxHeaderSize` is `max_header_size`.
    pub fn for_header_size(max_header_size: usize) -> Limits {
        Limits {
            reset_allowance: 100,
            // Well above `maxHeaderSize`: a block somewhat too large is the library's to refuse for
            // its stream alone (431); only a block far beyond what any decoded list could be (HPACK
            // output is rarely larger than its input) is treated as an attack on the connection.
            max_header_block: max_header_size.saturating_mul(4).max(64 * 1024),
            max_continuations: 32,
            settings_per_sec: 100,
            pings_per_sec: 100,
            empty_data_per_sec: 100,
            window_updates_per_sec: 100_000,
            priorities_per_sec: 10_000,
        }
    }
}

/// Why a connection was told to calm down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// More streams reset by the client than responses sent, beyond the allowance.
    RapidReset,
    /// A header block larger than the limit.
    HeaderBlockTooLarge,
    /// Too many CONTINUATION frames in one header block.
    TooManyContinuations,
    SettingsFlood,
    PingFlood,
    EmptyDataFlood,
    WindowUpdateFlood,
    PriorityFlood,
}

impl Abuse {
    pub fn describe(self) -> &'static str {
        match self {
            Abuse::RapidReset => "resets streams faster than they complete (rapid reset)",
            Abuse::HeaderBlockTooLarge => "sent a header block over the size limit",
            Abuse::TooManyContinuations => "sent too many CONTINUATION frames in one header block",
            Abuse::SettingsFlood => "floods SETTINGS frames",
            Abuse::PingFlood => "floods PING frames",
            Abuse::EmptyDataFlood => "floods empty DATA frames",
            Abuse::WindowUpdateFlood => "floods WINDOW_UPDATE frames",
            Abuse::PriorityFlood => "floods PRIORITY frames",
        }
    }
}

/// Counts per one-second window.
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    settings: u32,
    pings: u32,
    empty_data: u32,
    window_updates: u32,
    priorities: u32,
}

/// The frame-header parser and its counters. Constant memory whatever it is fed.
#[derive(Debug)]
pub struct FrameAudit {
    limits: Limits,
    /// Preface bytes still to skip.
    preface_left: u8,
    header: [u8; FRAME_HEADER],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: u32,
    /// Inside a header block (HEADERS without END_HEADERS, then CONTINUATIONs).
    in_block: bool,
    block_bytes: usize,
    continuations: u32,
    resets: u64,
    window_start: Option<Instant>,
    window: Window,
    abuse: Option<Abuse>,
}

impl FrameAudit {
    /// A parser for a connection whose first bytes are the client preface.
    pub fn new(limits: Limits) -> FrameAudit {
        FrameAudit {
            limits,
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER],
            header_len: 0,
            payload_left: 0,
            in_block: false,
            block_bytes: 0,
            continuations: 0,
            resets: 0,
            window_start: None,
            window: Window::default(),
            abuse: None,
        }
    }

    /// The abuse found so far, if any (the first one is kept).
    pub fn abuse(&self) -> Option<Abuse> {
        self.abuse
    }

    /// Streams reset by the client so far.
    pub fn resets(&self) -> u64 {
        self.resets
    }

    /// Accounts for `bytes` read from the client at `now`, when `responses` responses have been sent
    /// on the connection. Returns the abuse, once one is found (feeding more changes nothing).
    pub fn feed(&mut self, mut bytes: &[u8], now: Instant, responses: u64) -> Option<Abuse> {
        if self.abuse.is_some() {
            return self.abuse;
        }
        match self.window_start {
            Some(start) if now.saturating_duration_since(start) < Duration::from_secs(1) => {}
            _ => {
                self.window_start = Some(now);
                self.window = Window::default();
            }
        }
        if self.preface_left > 0 {
            let n = bytes.len().min(usize::from(self.preface_left));
            // `n` is at most PREFACE_LEN, so it fits.
            self.preface_left -= n as u8;
            bytes = &bytes[n..];
        }
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = bytes.len().min(self.payload_left as usize);
                // `n` is at most `payload_left`, a u32.
                self.payload_left -= n as u32;
                bytes = &bytes[n..];
                continue;
            }
            let n = (FRAME_HEADER - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len < FRAME_HEADER {
                break;
            }
            self.header_len = 0;
            let h = self.header;
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
            self.payload_left = len;
            if let Some(abuse) = self.frame(h[3], h[4], len, responses) {
                self.abuse = Some(abuse);
                return self.abuse;
            }
        }
        None
    }

    /// Accounts for one frame header.
    fn frame(&mut self, kind: u8, flags: u8, len: u32, responses: u64) -> Option<Abuse> {
        let l = self.limits;
        let w = &mut self.window;
        let len = len as usize;
        match kind {
            HEADERS => {
                self.block_bytes = len;
                self.continuations = 0;
                self.in_block = flags & FLAG_END_HEADERS == 0;
                if len > l.max_header_block {
                    return Some(Abuse::HeaderBlockTooLarge);
                }
            }
            CONTINUATION => {
                self.continuations = self.continuations.saturating_add(1);
                self.block_bytes = self.block_bytes.saturating_add(len);
                if self.continuations > l.max_continuations {
                    return Some(Abuse::TooManyContinuations);
                }
                if self.block_bytes > l.max_header_block {
                    return Some(Abuse::HeaderBlockTooLarge);
                }
                if flags & FLAG_END_HEADERS != 0 {
                    self.in_block = false;
                }
            }
            RST_STREAM => {
                self.resets += 1;
                if self.resets > l.reset_allowance.saturating_add(responses) {
                    return Some(Abuse::RapidReset);
                }
            }
            SETTINGS if flags & FLAG_ACK == 0 => {
                w.settings += 1;
                if w.settings > l.settings_per_sec {
                    return Some(Abuse::SettingsFlood);
                }
            }
            PING if flags & FLAG_ACK == 0 => {
                w.pings += 1;
                if w.pings > l.pings_per_sec {
                    return Some(Abuse::PingFlood);
                }
            }
            DATA if len == 0 && flags & FLAG_END_STREAM == 0 => {
                w.empty_data += 1;
                if w.empty_data > l.empty_data_per_sec {
                    return Some(Abuse::EmptyDataFlood);
                }
            }
            WINDOW_UPDATE => {
                w.window_updates += 1;
                if w.window_updates > l.window_updates_per_sec {
                    return Some(Abuse::WindowUpdateFlood);
                }
            }
            PRIORITY => {
                w.priorities += 1;
                if w.priorities > l.priorities_per_sec {
                    return Some(Abuse::PriorityFlood);
                }
            }
            _ => {}
        }
        None
    }
}

/// What the shim and the connection task share.
#[derive(Default)]
pub struct Shared {
    /// Responses sent on the connection (incremented by the stream adapters).
    pub responses: Cell<u64>,
    /// Set once, when the client crossed a limit.
    pub abuse: Cell<Option<Abuse>>,
    /// Woken when `abuse` is set.
    pub abuse_notify: Notify,
}

/// The client stream seen through a [`FrameAudit`].
pub struct GuardedIo<T> {
    inner: T,
    audit: FrameAudit,
    shared: Rc<Shared>,
}

impl<T> GuardedIo<T> {
    pub fn new(inner: T, limits: Limits, shared: Rc<Shared>) -> GuardedIo<T> {
        GuardedIo {
            inner,
            audit: FrameAudit::new(limits),
            shared,
        }
    }
}

impl<T: AsyncReadRent> AsyncReadRent for GuardedIo<T> {
    async fn read<B: IoBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        if self.audit.abuse().is_some() {
            // Nothing more is taken from this client; the connection task closes it after GOAWAY.
            return std::future::pending().await;
        }
        let (res, mut buf) = self.inner.read(buf).await;
        if let Ok(n) = res {
            // SAFETY: the read initialised `n` bytes from `write_ptr` on (within `bytes_total`).
            let bytes = unsafe {
                std::slice::from_raw_parts(buf.write_ptr().cast_const(), n.min(buf.bytes_total()))
            };
            let responses = self.shared.responses.get();
            if let Some(abuse) = self.audit.feed(bytes, Instant::now(), responses) {
                self.shared.abuse.set(Some(abuse));
                self.shared.abuse_notify.notify_all();
            }
        }
        (res, buf)
    }

    async fn readv<B: IoVecBufMut>(&mut self, buf: B) -> BufResult<usize, B> {
        // The HTTP/2 codec reads into one buffer; a vectored read would bypass the audit.
        (
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "readv on an audited HTTP/2 connection",
            )),
            buf,
        )
    }
}

impl<T: AsyncWriteRent> AsyncWriteRent for GuardedIo<T> {
    #[inline]
    async fn write<B: IoBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        self.inner.write(buf).await
    }

    #[inline]
    async fn writev<B: IoVecBuf>(&mut self, buf: B) -> BufResult<usize, B> {
        self.inner.writev(buf).await
    }

    #[inline]
    async fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().await
    }

    #[inline]
    async fn shutdown(&mut self) -> std::io::Result<()> {
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = len.to_be_bytes()[1..].to_vec();
        f.push(kind);
        f.push(flags);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn audit() -> FrameAudit {
        FrameAudit::new(Limits::for_header_size(8192))
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    #[test]
    fn resets_beyond_the_allowance_are_abuse_unless_responses_keep_up() {
        let now = Instant::now();
        let mut a = audit();
        assert_eq!(a.feed(PREFACE, now, 0), None);
        let mut bytes = Vec::new();
        for i in 0..100u32 {
            bytes.extend(frame(
                HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                2 * i + 1,
                b"ab",
            ));
            bytes.extend(frame(RST_STREAM, 0, 2 * i + 1, &[0, 0, 0, 8]));
        }
        assert_eq!(a.feed(&bytes, now, 0), None);
        assert_eq!(a.resets(), 100);
        // With responses sent, more resets are fine.
        let rst = frame(RST_STREAM, 0, 301, &[0, 0, 0, 8]);
        assert_eq!(a.feed(&rst, now, 1), None);
        assert_eq!(a.feed(&rst, now, 1), Some(Abuse::RapidReset));
        // Sticky.
        assert_eq!(a.feed(b"", now, 1000), Some(Abuse::RapidReset));
    }

    #[test]
    fn frames_split_anywhere_are_counted_once() {
        let now = Instant::now();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..101 {
            bytes.extend(frame(PING, 0, 0, &[1; 8]));
        }
        // One byte at a time: the 101st PING is the flood.
        let mut a = audit();
        let mut found = None;
        for b in &bytes {
            found = found.or(a.feed(std::slice::from_ref(b), now, 0));
        }
        assert_eq!(found, Some(Abuse::PingFlood));
        // Acknowledgements do not count, and a new second starts a new count.
        let mut a = audit();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..1000 {
            bytes.extend(frame(PING, FLAG_ACK, 0, &[1; 8]));
        }
        for _ in 0..100 {
            bytes.extend(frame(PING, 0, 0, &[1; 8]));
        }
        assert_eq!(a.feed(&bytes, now, 0), None);
        let later = now + Duration::from_secs(1);
        assert_eq!(a.feed(&frame(PING, 0, 0, &[1; 8]), later, 0), None);
    }

    #[test]
    fn continuation_floods_and_large_blocks_are_caught() {
        let now = Instant::now();
        let mut a = audit();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, 0, 1, b"x"));
        for _ in 0..33 {
            bytes.extend(frame(CONTINUATION, 0, 1, b""));
        }
        assert_eq!(a.feed(&bytes, now, 0), Some(Abuse::TooManyContinuations));

        let mut a = audit();
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(HEADERS, 0, 1, &[0; 16_000]));
        for _ in 0..4 {
            bytes.extend(frame(CONTINUATION, 0, 1, &[0; 16_000]));
        }
        assert_eq!(a.feed(&bytes, now, 0), Some(Abuse::HeaderBlockTooLarge));

        // An ordinary block in a few frames is fine, again and again.
        let mut a = audit();
        let mut bytes = PREFACE.to_vec();
        for i in 0..1000u32 {
            bytes.extend(frame(HEADERS, 0, 2 * i + 1, &[0; 3000]));
            bytes.extend(frame(CONTINUATION, FLAG_END_HEADERS, 2 * i + 1, &[0; 3000]));
        }
        assert_eq!(a.feed(&bytes, now, 0), None);
    }

    #[test]
    fn settings_empty_data_window_update_and_priority_floods() {
        let now = Instant::now();
        let cases = [
            (frame(SETTINGS, 0, 0, &[]), 100, Abuse::SettingsFlood),
            (frame(DATA, 0, 1, &[]), 100, Abuse::EmptyDataFlood),
            (
                frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1]),
                100_000,
                Abuse::WindowUpdateFlood,
            ),
            (
                frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 1]),
                10_000,
                Abuse::PriorityFlood,
            ),
        ];
        for (f, limit, abuse) in cases {
            let mut a = audit();
            let mut bytes = PREFACE.to_vec();
            for _ in 0..limit {
                bytes.extend_from_slice(&f);
            }
            assert_eq!(a.feed(&bytes, now, 0), None, "{abuse:?}");
            assert_eq!(a.feed(&f, now, 0), Some(abuse));
        }
        // DATA with END_STREAM, or with a payload, is not "empty".
        let mut a = audit();
        let mut bytes = PREFACE.to_vec();
        for _ in 0..1000 {
            bytes.extend(frame(DATA, FLAG_END_STREAM, 1, &[]));
            bytes.extend(frame(DATA, 0, 1, b"x"));
        }
        assert_eq!(a.feed(&bytes, now, 0), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A simple reference: counts the frames of a whole buffer at once.
        fn reference(bytes: &[u8]) -> (u64, usize) {
            let mut rest = bytes.get(24..).unwrap_or(&[]);
            let (mut resets, mut frames) = (0, 0);
            while rest.len() >= 9 {
                let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
                frames += 1;
                if rest[3] == RST_STREAM {
                    resets += 1;
                }
                rest = rest.get(9 + len..).unwrap_or(&[]);
            }
            (resets, frames)
        }

        fn lenient() -> Limits {
            Limits {
                reset_allowance: u64::MAX / 2,
                max_header_block: usize::MAX,
                max_continuations: u32::MAX,
                settings_per_sec: u32::MAX,
                pings_per_sec: u32::MAX,
                empty_data_per_sec: u32::MAX,
                window_updates_per_sec: u32::MAX,
                priorities_per_sec: u32::MAX,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any bytes, cut anywhere: no panic, the same verdict and counts as one whole feed, and
            /// the state stays the same size (no buffering).
            #[test]
            fn any_bytes_in_any_chunks(
                bytes in proptest::collection::vec(any::<u8>(), 0..4096),
                cuts in proptest::collection::vec(any::<usize>(), 0..16),
            ) {
                let now = Instant::now();
                let mut whole = audit();
                let verdict = whole.feed(&bytes, now, 0);
                let mut pieces = audit();
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
                cuts.sort_unstable();
                let mut at = 0;
                let mut found = None;
                for c in cuts.into_iter().chain([bytes.len()]) {
                    found = found.or(pieces.feed(&bytes[at..c], now, 0));
                    at = c;
                }
                prop_assert_eq!(found, verdict);
                prop_assert_eq!(pieces.resets(), whole.resets());
                prop_assert_eq!(std::mem::size_of_val(&pieces), std::mem::size_of::<FrameAudit>());
            }

            /// Sequences of well-formed frames: resets counted exactly as the reference does.
            #[test]
            fn frame_sequences_agree_with_the_reference(
                frames in proptest::collection::vec((0u8..12, any::<u8>(), 0usize..64), 0..200),
                chunk in 1usize..64,
            ) {
                let mut bytes = PREFACE.to_vec();
                for (kind, flags, len) in frames {
                    bytes.extend(frame(kind, flags, 1, &vec![0; len]));
                }
                let mut a = FrameAudit::new(lenient());
                let now = Instant::now();
                for piece in bytes.chunks(chunk) {
                    prop_assert_eq!(a.feed(piece, now, 0), None);
                }
                prop_assert_eq!(a.resets(), reference(&bytes).0);
            }
        }
    }
}
