//! Phase 3 for upgraded connections: after a `101 Switching Protocols`, bytes are copied both ways
//! between client and backend until each side closes (docs/compatibility.md §5).
//!
//! Each direction has its own task and buffer; end of stream on one side is passed on as a write
//! shutdown to the other (half-close), so either peer can finish sending first. Tunnels have no idle
//! timeout unless `server.websocketIdleTimeout` is set; then a watchdog shuts both sockets down after
//! that long without a byte in either direction. Nothing here parses WebSocket frames.

use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use monoio::net::TcpStream;

/// Per-direction copy buffer.
const TUNNEL_BUF: usize = 32 * 1024;

/// Bytes carried by a finished tunnel.
#[derive(Debug, Default, Clone, Copy)]
pub struct TunnelBytes {
    pub to_client: u64,
    pub to_backend: u64,
}

/// Runs a tunnel to completion. `early` holds bytes the client sent after its upgrade request (they
/// go to the backend first); `client_fd` is the client's TCP socket (also under TLS).
pub async fn run<C>(
    client: C,
    client_fd: RawFd,
    early: Vec<u8>,
    backend: TcpStream,
    idle: Option<Duration>,
) -> TunnelBytes
where
    C: AsyncReadRent + AsyncWriteRent + Split + 'static,
{
    let backend_fd = backend.as_raw_fd();
    let (client_read, client_write) = client.into_split();
    let (backend_read, mut backend_write) = backend.into_split();
    let mut bytes = TunnelBytes::default();
    if !early.is_empty() {
        let n = early.len() as u64;
        let (res, _) = backend_write.write_all(early).await;
        if res.is_err() {
            return bytes;
        }
        bytes.to_backend += n;
    }
    // Activity is tracked (a clock read per read) only when an idle timeout needs it.
    let activity = idle.map(|_| Rc::new(Cell::new(Instant::now())));
    let done = Rc::new(Cell::new(false));
    if let (Some(limit), Some(activity)) = (idle, &activity) {
        monoio::spawn(watchdog(
            activity.clone(),
            done.clone(),
            limit,
            client_fd,
            backend_fd,
        ));
    }
    let up = monoio::spawn(pump(client_read, backend_write, activity.clone()));
    bytes.to_client = pump(backend_read, client_write, activity).await;
    bytes.to_backend += up.await;
    done.set(true);
    bytes
}

/// Copies until end of stream or error, then shuts down the writer (half-close).
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    mut from: R,
    mut to: W,
    activity: Option<Rc<Cell<Instant>>>,
) -> u64 {
    let mut buf: Vec<u8> = Vec::with_capacity(TUNNEL_BUF);
    let mut total = 0u64;
    loop {
        buf.clear();
        let (res, b) = from.read(buf).await;
        buf = b;
        let n = match res {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(a) = &activity {
            a.set(Instant::now());
        }
        let (res, b) = to.write_all(buf).await;
        buf = b;
        if res.is_err() {
            return total;
        }
        total += n as u64;
    }
    let _ = to.shutdown().await;
    total
}

/// Closes both sockets after `limit` without traffic.
async fn watchdog(
    activity: Rc<Cell<Instant>>,
    done: Rc<Cell<bool>>,
    limit: Duration,
    client_fd: RawFd,
    backend_fd: RawFd,
) {
    let tick = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        monoio::time::sleep(tick).await;
        if done.get() {
            return;
        }
        if activity.get().elapsed() >= limit {
            // SAFETY: shutting down sockets still owned by the tunnel's tasks; they then see EOF/errors.
            unsafe {
                libc::shutdown(client_fd, libc::SHUT_RDWR);
                libc::shutdown(backend_fd, libc::SHUT_RDWR);
            }
            return;
        }
    }
}
