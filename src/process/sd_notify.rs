//! The systemd notification protocol (`sd_notify(3)`), implemented directly: one unix datagram of
//! `KEY=value` lines sent to the socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract
//! namespace). Without `$NOTIFY_SOCKET` (not started by systemd with `Type=notify`) every call is a
//! no-op. Hand-written (one `send_to` of a few bytes) rather than the sd-notify or libsystemd crates,
//! neither of which is in the tree.
//!
//! Used by the control plane only: `READY=1` once every worker listens, `RELOADING=1` / `READY=1`
//! around a reload (with `MAINPID=` when the successor process takes over), `STOPPING=1` on shutdown,
//! `STATUS=` for `systemctl status`. A failure to notify is logged, never fatal.

use std::os::unix::net::UnixDatagram;

use log::{debug, warn};

/// The environment variable systemd sets.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Sends `state` (newline-separated `KEY=value` assignments). Returns whether it was sent.
pub fn notify(state: &str) -> bool {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return false;
    };
    let target = target.to_string_lossy().into_owned();
    match send(&target, state) {
        Ok(()) => {
            debug!("sd_notify: {}", state.replace('\n', " "));
            true
        }
        Err(e) => {
            warn!("cannot notify systemd at {target}: {e}");
            false
        }
    }
}

fn send(target: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), target)?;
    }
    Ok(())
}

/// `READY=1` with a status line.
pub fn ready(status: &str) -> bool {
    notify(&format!("READY=1\nSTATUS={}", one_line(status)))
}

/// `RELOADING=1` (with the monotonic timestamp newer systemd versions ask for).
pub fn reloading(status: &str) -> bool {
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={}",
        monotonic_usec(),
        one_line(status)
    ))
}

/// Hands the service over to `pid`, which is ready: `MAINPID=pid` and `READY=1` in one datagram, so
/// that systemd never sees the old main process exit before it knows the new one.
pub fn handed_over(pid: u32, status: &str) -> bool {
    notify(&format!(
        "MAINPID={pid}\nREADY=1\nSTATUS={}",
        one_line(status)
    ))
}

/// `STOPPING=1`.
pub fn stopping(status: &str) -> bool {
    notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
}

/// A `STATUS=` update only.
pub fn status(status: &str) -> bool {
    notify(&format!("STATUS={}", one_line(status)))
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

fn monotonic_usec() -> u64 {
    // SAFETY: zeroed timespec is valid; clock_gettime writes into it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("sd-notify-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let Ok(listener) = UnixDatagram::bind(&path) else {
            return;
        };
        send(&path.to_string_lossy(), "READY=1").ok();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap_or(0);
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("hipache-tpc-unit-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes());
        if let Ok(abs) = addr.and_then(|a| UnixDatagram::bind_addr(&a)) {
            send(&format!("@{name}"), "STOPPING=1").ok();
            let n = abs.recv(&mut buf).unwrap_or(0);
            assert_eq!(&buf[..n], b"STOPPING=1");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
