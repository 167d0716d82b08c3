//! Listening sockets: one SO_REUSEPORT socket per worker per bind address, so the kernel spreads
//! connections over the workers.
//!
//! SO_REUSEPORT would also let a *different* process (a stale instance, another server) join the group
//! and silently receive part of the traffic. Before binding, each address is probed without
//! SO_REUSEPORT: if anything listens there, start-up fails with a message naming the address.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog (the kernel caps it at net.core.somaxconn).
const BACKLOG: i32 = 4096;

/// Fails if another socket already listens on `addr`.
pub fn ensure_free(addr: SocketAddr) -> Result<(), String> {
    let socket = new_socket(addr).map_err(|e| format!("cannot create a socket for {addr}: {e}"))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| format!("cannot set SO_REUSEADDR for {addr}: {e}"))?;
    socket
        .bind(&addr.into())
        .map_err(|e| describe_bind_error(addr, &e))?;
    Ok(())
}

/// A listening, non-blocking SO_REUSEPORT socket on `addr`.
pub fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let socket = new_socket(addr).map_err(|e| format!("cannot create a socket for {addr}: {e}"))?;
    let setup = || -> io::Result<()> {
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        Ok(())
    };
    setup().map_err(|e| format!("cannot configure the socket for {addr}: {e}"))?;
    socket
        .bind(&addr.into())
        .map_err(|e| describe_bind_error(addr, &e))?;
    socket
        .listen(BACKLOG)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(socket.into())
}

/// One listening, non-blocking socket on `addr` without SO_REUSEPORT (the admin listener): binding
/// fails if anything listens there already.
pub fn bind_exclusive(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let socket = new_socket(addr).map_err(|e| format!("cannot create a socket for {addr}: {e}"))?;
    let setup = || -> io::Result<()> {
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        Ok(())
    };
    setup().map_err(|e| format!("cannot configure the socket for {addr}: {e}"))?;
    socket
        .bind(&addr.into())
        .map_err(|e| describe_bind_error(addr, &e))?;
    socket
        .listen(128)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(socket.into())
}

/// Probes every address, then binds `workers` sockets for each: result\[worker\]\[address\].
pub fn bind_all(
    addrs: &[SocketAddr],
    workers: usize,
) -> Result<Vec<Vec<std::net::TcpListener>>, String> {
    for addr in addrs {
        ensure_free(*addr)?;
    }
    let mut per_worker: Vec<Vec<std::net::TcpListener>> = (0..workers)
        .map(|_| Vec::with_capacity(addrs.len()))
        .collect();
    for addr in addrs {
        for sockets in per_worker.iter_mut() {
            sockets.push(bind_reuseport(*addr)?);
        }
    }
    Ok(per_worker)
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `::` must not also take the IPv4 port: binding 0.0.0.0 and :: together must work.
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

fn describe_bind_error(addr: SocketAddr, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => format!(
            "{addr} is already in use by another process; stop it first (hipache-tpc will not share a port with another program)"
        ),
        Some(libc::EACCES) => format!("permission denied binding {addr}: ports below 1024 need root or CAP_NET_BIND_SERVICE"),
        Some(libc::EADDRNOTAVAIL) => format!("cannot bind {addr}: the address does not belong to this host"),
        _ => format!("cannot bind {addr}: {e}"),
    }
}
