//! HTTP/2 for clients (docs/compatibility.md §11): h2 over TLS (ALPN `h2`) and h2c with prior knowledge on plain
//! listeners, served with monoio-http's HTTP/2 server. Backends stay on HTTP/1.1 pools.
//!
//! The connection task drives the frames (HEADERS, DATA, SETTINGS, WINDOW_UPDATE, PING, GOAWAY) and
//! starts one task per stream; each stream is served by the same code as an HTTP/1.1 request through
//! [`stream_io::H2StreamIo`]. Protocol errors are answered by the library with RST_STREAM or GOAWAY and
//! the proper code; nothing here panics on client input. On drain, or after `tcpTimeout` without a
//! stream, the connection is closed gracefully with GOAWAY, letting open streams finish.
//!
//! Abuse limits (README "Limits"): every byte read from the client goes through [`guard::GuardedIo`],
//! which counts resets and cheap-frame floods; a client over a limit gets GOAWAY `ENHANCE_YOUR_CALM`
//! and is closed within [`CALM_GRACE`]. A connection holds at most twice `http2MaxStreams` stream
//! tasks (streams beyond are refused with `REFUSED_STREAM`), and a stream the client reset before its
//! task ran is not routed or forwarded at all. A panic in a stream task ends that stream only (reset
//! with `INTERNAL_ERROR`); the connection and the worker go on.

pub mod guard;
pub mod stream_io;

use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{debug, info};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio_http::h2::{server, Reason};

use crate::common::metrics::Counter;
use crate::common::task::OnPanic;
use crate::dataplane::core::Core;
use crate::dataplane::http1::connection::serve_client;
use crate::dataplane::session::ListenerInfo;
use stream_io::H2StreamIo;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// ALPN identifier.
pub const ALPN_H2: &[u8] = b"h2";

/// Per-stream receive window: how much a client may send ahead of the backend.
const STREAM_WINDOW: u32 = 256 * 1024;
/// Per-connection receive window.
const CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Response bytes buffered per stream beyond the client's window.
const SEND_BUFFER: usize = 256 * 1024;
/// How long a connection told to calm down has to take its GOAWAY before it is closed.
pub const CALM_GRACE: Duration = Duration::from_secs(1);

enum Event<T> {
    Stream(T),
    Drain,
    Idle,
    Abuse,
}

/// Serves one HTTP/2 connection until it closes.
pub async fn serve<T>(io: T, fd: RawFd, peer: SocketAddr, listener: Rc<ListenerInfo>, w: Rc<Core>)
where
    T: AsyncReadRent + AsyncWriteRent + Unpin + 'static,
{
    let s = &w.config.server;
    let shared = Rc::new(guard::Shared::default());
    let io = guard::GuardedIo::new(
        io,
        guard::Limits::for_header_size(s.max_header_size),
        shared.clone(),
    );
    let mut builder = server::Builder::new();
    builder
        .max_concurrent_streams(s.http2_max_streams)
        .max_header_list_size(u32::try_from(s.max_header_size).unwrap_or(u32::MAX))
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER);
    let mut conn = match monoio::time::timeout(
        s.header_timeout,
        builder.handshake::<guard::GuardedIo<T>, Bytes>(io),
    )
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            debug!("worker {}: HTTP/2 handshake with {peer} failed: {e}", w.id);
            return;
        }
        Err(_) => {
            debug!("worker {}: HTTP/2 handshake with {peer} timed out", w.id);
            return;
        }
    };
    // Stream tasks a connection may hold: the library bounds open streams, but a stream reset by the
    // client is closed for it while its task may still be waiting on a backend.
    let max_tasks = (s.http2_max_streams as usize).saturating_mul(2).max(1);
    let active = Rc::new(Cell::new(0usize));
    let last_activity = Rc::new(Cell::new(Instant::now()));
    let mut closing = false;
    let mut calm_deadline: Option<Instant> = None;
    loop {
        if w.draining.get() && !closing {
            conn.graceful_shutdown();
            closing = true;
        }
        if calm_deadline.is_none() {
            if let Some(abuse) = shared.abuse.get() {
                info!(
                    "worker {}: HTTP/2 client {peer} {}: GOAWAY ENHANCE_YOUR_CALM, closing",
                    w.id,
                    abuse.describe()
                );
                conn.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                closing = true;
                calm_deadline = Some(Instant::now() + CALM_GRACE);
            }
        }
        let timer = match (calm_deadline, s.tcp_timeout) {
            (Some(deadline), _) => Some(deadline.saturating_duration_since(Instant::now())),
            (None, Some(limit)) if !closing && active.get() == 0 => {
                Some(limit.saturating_sub(last_activity.get().elapsed()))
            }
            _ => None,
        };
        let drain = w.drain_notify.notified();
        let abuse = shared.abuse_notify.notified();
        let event = monoio::select! {
            next = conn.accept() => Event::Stream(next),
            _ = drain, if !closing => Event::Drain,
            _ = abuse, if calm_deadline.is_none() => Event::Abuse,
            _ = monoio::time::sleep(timer.unwrap_or(Duration::ZERO)), if timer.is_some() => Event::Idle,
        };
        match event {
            Event::Stream(Some(Ok((request, mut respond)))) => {
                if calm_deadline.is_some() || active.get() >= max_tasks {
                    respond.send_reset(Reason::REFUSED_STREAM);
                    continue;
                }
                active.set(active.get() + 1);
                last_activity.set(Instant::now());
                let stream = StreamTask {
                    fd,
                    peer,
                    listener: listener.clone(),
                    worker: w.clone(),
                    shared: shared.clone(),
                    active: active.clone(),
                    last_activity: last_activity.clone(),
                };
                // A panic while serving a stream costs that stream only (reset on drop).
                crate::common::task::spawn(OnPanic::EndTask, stream.run(request, respond));
            }
            Event::Stream(Some(Err(e))) => {
                debug!("worker {}: HTTP/2 connection from {peer} ended: {e}", w.id);
                break;
            }
            Event::Stream(None) => break,
            Event::Drain => {
                conn.graceful_shutdown();
                closing = true;
            }
            Event::Abuse => {}
            Event::Idle => {
                if calm_deadline.is_some_and(|d| Instant::now() >= d) {
                    debug!("worker {}: HTTP/2 client {peer} closed after GOAWAY", w.id);
                    break;
                }
                if active.get() == 0
                    && s.tcp_timeout
                        .is_some_and(|limit| last_activity.get().elapsed() >= limit)
                {
                    conn.graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// What a stream task needs from its connection. Dropping it (at the end of the task, or when a panic
/// ended it) gives its place back.
struct StreamTask {
    fd: RawFd,
    peer: SocketAddr,
    listener: Rc<ListenerInfo>,
    worker: Rc<Core>,
    shared: Rc<guard::Shared>,
    active: Rc<Cell<usize>>,
    last_activity: Rc<Cell<Instant>>,
}

impl Drop for StreamTask {
    fn drop(&mut self) {
        self.active.set(self.active.get().saturating_sub(1));
        self.last_activity.set(Instant::now());
    }
}

impl StreamTask {
    async fn run(
        self,
        request: http::Request<monoio_http::h2::RecvStream>,
        mut respond: server::SendResponse<Bytes>,
    ) {
        let w = &self.worker;
        // Let the connection task read the rest of what arrived with the HEADERS frame: a stream the
        // client reset at once (the rapid-reset pattern) is then seen as reset and costs nothing more.
        yield_once().await;
        if reset_already(&mut respond) {
            debug!(
                "worker {}: HTTP/2 stream from {} reset before it was served",
                w.id, self.peer
            );
            return;
        }
        crate::common::fault::maybe_panic_h2(
            request
                .uri()
                .authority()
                .map_or("", |a| a.as_str())
                .as_bytes(),
            w.id,
        );
        w.m().inc(Counter::H2Streams);
        let io = H2StreamIo::new(
            request,
            respond,
            w.config.server.max_header_size,
            self.shared.clone(),
        );
        serve_client(io, self.fd, self.peer, self.listener.clone(), w, Vec::new()).await;
    }
}

/// Returns `Pending` once (waking itself), so that other ready tasks run first.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Whether the client already reset the stream (or the connection is gone), without waiting.
fn reset_already(respond: &mut server::SendResponse<Bytes>) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    respond.poll_reset(&mut cx).is_ready()
}

/// What the first bytes of a plain connection say it speaks.
pub enum Sniffed {
    /// The HTTP/2 preface (h2c with prior knowledge).
    H2,
    /// Anything else: HTTP/1.x.
    Http1,
    /// Closed, timed out or draining before a decision.
    Closed,
}

/// Reads the first bytes of a plain connection into `buf` and tells HTTP/2 from HTTP/1.x. Reading more
/// is needed only while the bytes are a proper prefix of the preface.
pub async fn sniff<S: AsyncReadRent>(
    io: &mut S,
    buf: &mut Vec<u8>,
    limit: Duration,
    w: &Core,
) -> Sniffed {
    let deadline = Instant::now() + limit;
    loop {
        // `buf` may start with bytes read already (after a PROXY protocol header).
        if !buf.is_empty() {
            let n = buf.len().min(PREFACE.len());
            if buf[..n] != PREFACE[..n] {
                return Sniffed::Http1;
            }
            if n == PREFACE.len() {
                return Sniffed::H2;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero()
            || !crate::dataplane::http1::connection::read_idle(io, buf, Some(left), w).await
        {
            return Sniffed::Closed;
        }
    }
}
