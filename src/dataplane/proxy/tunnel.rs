//! Phase 3 for upgraded connections: after a `101 Switching Protocols`, bytes are copied both ways
//! between client and backend until each side closes (docs/compatibility.md §5).
//!
//! Each direction has its own task and buffer; end of stream on one side is passed on as a write
//! shutdown to the other (half-close), so either peer can finish sending first. Tunnels have no idle
//! timeout unless `server.websocketIdleTimeout` is set; then a watchdog tells both copy tasks to stop
//! after that long without a byte in either direction, and they close the streams they own (nothing
//! here touches a raw file descriptor). A panic in one copy task ends that direction only. Nothing
//! here parses WebSocket frames.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::dataplane::upstream::stream::BackendStream;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};

use crate::common::local_sync::Notify;
use crate::common::task::OnPanic;

/// Per-direction copy buffer.
const TUNNEL_BUF: usize = 32 * 1024;

/// Bytes carried by a finished tunnel.
#[derive(Debug, Default, Clone, Copy)]
pub struct TunnelBytes {
    pub to_client: u64,
    pub to_backend: u64,
}

/// The idle timeout's shared state: last activity, and the stop signal the watchdog gives the pumps.
/// The pumps own the sockets and close them themselves, so nothing acts on a file descriptor number
/// that another connection may have reused.
struct Idle {
    activity: Cell<Instant>,
    expired: Cell<bool>,
    stop: Notify,
}

/// Runs a tunnel to completion, owning both streams. `early` holds bytes the client sent after its
/// upgrade request (they go to the backend first).
pub async fn run<R, W>(
    client_read: R,
    client_write: W,
    early: Vec<u8>,
    backend: BackendStream,
    idle: Option<Duration>,
) -> TunnelBytes
where
    R: AsyncReadRent + 'static,
    W: AsyncWriteRent + 'static,
{
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
    let state = idle.map(|_| {
        Rc::new(Idle {
            activity: Cell::new(Instant::now()),
            expired: Cell::new(false),
            stop: Notify::new(),
        })
    });
    let done = Rc::new(Cell::new(false));
    if let (Some(limit), Some(state)) = (idle, &state) {
        crate::common::task::spawn(
            OnPanic::EndTask,
            watchdog(state.clone(), done.clone(), limit),
        );
    }
    let up = crate::common::task::spawn(
        OnPanic::EndTask,
        pump(client_read, backend_write, state.clone()),
    );
    bytes.to_client = pump(backend_read, client_write, state).await;
    // `None`: the other direction's task panicked (contained); its sockets are closed.
    bytes.to_backend += up.await.unwrap_or(0);
    done.set(true);
    bytes
}

/// Copies until end of stream, error or idle expiry, then shuts down the writer (half-close).
async fn pump<R: AsyncReadRent, W: AsyncWriteRent>(
    mut from: R,
    mut to: W,
    idle: Option<Rc<Idle>>,
) -> u64 {
    let mut buf: Vec<u8> = Vec::with_capacity(TUNNEL_BUF);
    let mut total = 0u64;
    loop {
        buf.clear();
        let (res, b) = match &idle {
            None => from.read(buf).await,
            Some(idle) => {
                if idle.expired.get() {
                    break;
                }
                let stop = idle.stop.notified();
                // On expiry the read is dropped (its bytes, if any, are lost: the tunnel closes).
                match monoio::select! {
                    r = from.read(buf) => Some(r),
                    _ = stop => None,
                } {
                    Some(r) => r,
                    None => break,
                }
            }
        };
        buf = b;
        let n = match res {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (res, b) = match &idle {
            None => to.write_all(buf).await,
            Some(idle) => {
                idle.activity.set(Instant::now());
                if idle.expired.get() {
                    break;
                }
                let stop = idle.stop.notified();
                match monoio::select! {
                    r = to.write_all(buf) => Some(r),
                    _ = stop => None,
                } {
                    Some(r) => r,
                    // The peer stopped reading: nothing more will be written to it.
                    None => return total,
                }
            }
        };
        buf = b;
        if res.is_err() {
            return total;
        }
        total += n as u64;
    }
    let _ = to.shutdown().await;
    total
}

/// Stops both directions after `limit` without traffic.
async fn watchdog(idle: Rc<Idle>, done: Rc<Cell<bool>>, limit: Duration) {
    let tick = (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        monoio::time::sleep(tick).await;
        if done.get() {
            return;
        }
        if idle.activity.get().elapsed() >= limit {
            idle.expired.set(true);
            idle.stop.notify_all();
            return;
        }
    }
}
