//! Listening sockets: one SO_REUSEPORT socket per worker per bind address, so the kernel spreads
//! connections over the workers.
//!
//! On a reload the sockets are not bound again: the successor adopts its predecessor's (see
//! `handover`), so the accept queues, and the connections waiting in them, carry over.
//!
//! SO_REUSEPORT would also let a *different* process (a stale instance, another server) join the group
//! and silently receive part of the traffic. Before binding, each address is probed without
//! SO_REUSEPORT: if anything listens there, start-up fails with a message naming the address.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::process::handover::Inherited;

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

/// One configured address and its listening sockets.
pub struct Bound {
    pub addr: SocketAddr,
    /// `Some` for an HTTPS listener.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Distinct SO_REUSEPORT sockets (one per worker when bound here; as many as the predecessor had
    /// when inherited).
    pub sockets: Vec<std::net::TcpListener>,
    /// Taken over from the previous process (reload) rather than bound here.
    pub inherited: bool,
}

/// Every listening socket of the process. The supervisor keeps it for the life of the process: workers
/// get duplicates, so a worker that dies takes no socket (and no queued connection) with it, and a
/// reload hands these very sockets to the successor.
pub struct ListenSet {
    pub entries: Vec<Bound>,
    /// The admin listener (one socket, no SO_REUSEPORT), handed over on reload like the others.
    pub admin: Option<(SocketAddr, std::net::TcpListener)>,
}

/// What one worker accepts on: plain sockets, and TLS sockets with their configuration.
pub type WorkerSockets = (
    Vec<std::net::TcpListener>,
    Vec<(std::net::TcpListener, Arc<rustls::ServerConfig>)>,
);

impl ListenSet {
    /// Adopts the sockets inherited for each address, and probes then binds `workers` sockets for every
    /// other one. Inherited sockets of addresses not configured any more are closed.
    pub fn bind_all(
        http: &[SocketAddr],
        https: &[(SocketAddr, Arc<rustls::ServerConfig>)],
        admin: Option<SocketAddr>,
        workers: usize,
        inherited: &mut Inherited,
    ) -> Result<ListenSet, String> {
        let adopted_admin = admin.and_then(|a| inherited.take(a).into_iter().next());
        let wanted: Vec<(SocketAddr, Option<Arc<rustls::ServerConfig>>)> = http
            .iter()
            .map(|a| (*a, None))
            .chain(https.iter().map(|(a, c)| (*a, Some(c.clone()))))
            .collect();
        let mut adopted: Vec<Vec<std::net::TcpListener>> = Vec::with_capacity(wanted.len());
        for (addr, _) in &wanted {
            adopted.push(inherited.take(*addr));
        }
        inherited.close_leftovers();
        // Probe every new address before binding any, so a taken port fails before anything is bound.
        for ((addr, _), sockets) in wanted.iter().zip(&adopted) {
            if sockets.is_empty() {
                ensure_free(*addr)?;
            }
        }
        let admin = match (admin, adopted_admin) {
            (Some(addr), Some(socket)) => Some((addr, socket)),
            (Some(addr), None) => Some((
                addr,
                bind_exclusive(addr)
                    .map_err(|e| format!("admin listener (`admin.address`, `admin.port`): {e}"))?,
            )),
            (None, _) => None,
        };
        let mut entries = Vec::with_capacity(wanted.len());
        for ((addr, tls), sockets) in wanted.into_iter().zip(adopted) {
            let inherited = !sockets.is_empty();
            let sockets = if inherited {
                sockets
            } else {
                (0..workers.max(1))
                    .map(|_| bind_reuseport(addr))
                    .collect::<Result<Vec<_>, _>>()?
            };
            entries.push(Bound {
                addr,
                tls,
                sockets,
                inherited,
            });
        }
        Ok(ListenSet { entries, admin })
    }

    /// Duplicates of the sockets worker `worker` (of `workers`) accepts on. With as many sockets as
    /// workers, one each; with more (inherited from a process that had more workers), every socket is
    /// served by one worker; with fewer, workers share sockets (the kernel hands each connection to one
    /// of them). New sockets are never bound here: a process that gave up root could not join the
    /// SO_REUSEPORT group of sockets bound as root.
    pub fn for_worker(&self, worker: usize, workers: usize) -> std::io::Result<WorkerSockets> {
        let workers = workers.max(1);
        let mut plain = Vec::new();
        let mut tls = Vec::new();
        for entry in &self.entries {
            let k = entry.sockets.len();
            let picks: Vec<usize> = if k >= workers {
                (worker..k).step_by(workers).collect()
            } else if k > 0 {
                vec![worker % k]
            } else {
                Vec::new()
            };
            for j in picks {
                let dup = entry.sockets[j].try_clone()?;
                match &entry.tls {
                    None => plain.push(dup),
                    Some(cfg) => tls.push((dup, cfg.clone())),
                }
            }
        }
        Ok((plain, tls))
    }

    /// Duplicates of every socket, by address, for a successor process.
    pub fn handover_fds(&self) -> std::io::Result<Vec<(SocketAddr, Vec<OwnedFd>)>> {
        let mut all = self
            .entries
            .iter()
            .map(|e| {
                let fds = e
                    .sockets
                    .iter()
                    .map(|s| s.try_clone().map(OwnedFd::from))
                    .collect::<std::io::Result<Vec<_>>>()?;
                Ok((e.addr, fds))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        if let Some((addr, socket)) = &self.admin {
            all.push((*addr, vec![OwnedFd::from(socket.try_clone()?)]));
        }
        Ok(all)
    }

    /// A duplicate of the admin socket, for the control thread.
    pub fn admin_socket(&self) -> std::io::Result<Option<std::net::TcpListener>> {
        self.admin.as_ref().map(|(_, s)| s.try_clone()).transpose()
    }

    /// `address` or `address (https)`, with `inherited` when taken over from the previous process.
    pub fn describe(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| {
                let mut s = e.addr.to_string();
                if e.tls.is_some() {
                    s.push_str(" (https)");
                }
                if e.inherited {
                    s.push_str(" (inherited)");
                }
                s
            })
            .collect()
    }
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
