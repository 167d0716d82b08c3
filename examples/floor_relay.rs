//! The cost floor of a proxied request, measured: the smallest relay that makes the same socket
//! operations per request as a proxy, and nothing else.
//!
//! One client connection is mapped to one backend connection (connected when the client arrives),
//! and bytes are copied in both directions as they come: a read on one side, a write of what was read
//! on the other, on the same monoio runtime (io_uring, epoll fallback) hipache-tpc runs on. No
//! parsing, no routing, no pooling, no timers, no logging. With keep-alive traffic each request costs
//! it exactly what it costs any proxy at the minimum: a receive and a send on each side. The bench
//! (`bench/run.sh --targets floor,…`, `bench/proto.sh`) pins it to the proxies' core and reports every
//! proxy's CPU per request as a multiple of this one ("× floor").
//!
//! It is a measuring instrument, not a proxy: it trusts both peers, never times anything out, and
//! must not be used outside the bench.
//!
//! It spawns with a bare `monoio::spawn` (which `clippy.toml` forbids in the proxy, whose tasks go
//! through `task::spawn` to contain panics): the floor must carry no cost the relay itself does not need.
//!
//! Usage: `floor_relay LISTEN_ADDR BACKEND_ADDR [THREADS]` (e.g. `127.0.0.1:9000 127.0.0.1:8080 2`).
//! With THREADS > 1 each thread runs its own runtime and its own SO_REUSEPORT listener, as
//! hipache-tpc's workers do; the threads stay within the CPU set the process was started with.

#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::{TcpListener, TcpStream};

/// Relay buffer per direction: the size of hipache-tpc's own relay buffers, so that large bodies take
/// as many operations here as there.
const BUF_SIZE: usize = 64 * 1024;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(backend)) = (args.next(), args.next()) else {
        eprintln!("usage: floor_relay LISTEN_ADDR BACKEND_ADDR [THREADS]");
        std::process::exit(2);
    };
    let threads: usize = match args.next().map(|t| t.parse()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            eprintln!("floor_relay: THREADS must be a whole number of at least 1");
            std::process::exit(2)
        }
    };
    let parse = |s: &str| -> SocketAddr {
        s.parse().unwrap_or_else(|e| {
            eprintln!("floor_relay: bad address {s:?}: {e}");
            std::process::exit(2)
        })
    };
    let (listen, backend) = (parse(&listen), parse(&backend));
    let others: Vec<_> = (1..threads)
        .map(|_| std::thread::spawn(move || serve(listen, backend)))
        .collect();
    serve(listen, backend);
    for t in others {
        let _ = t.join();
    }
}

/// One runtime and one listener (SO_REUSEPORT, monoio's default) on the calling thread.
fn serve(listen: SocketAddr, backend: SocketAddr) {
    // The io_uring set-up of hipache-tpc's workers (src/dataplane/worker.rs): completions run when the
    // thread enters the kernel (COOP_TASKRUN), not by interrupting it; epoll where io_uring is off.
    let mut uring = io_uring::IoUring::builder();
    uring.setup_coop_taskrun().setup_taskrun_flag();
    let runtime = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .with_entries(4096)
        .uring_builder(uring)
        .build()
        .or_else(|_| {
            monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
                .with_entries(4096)
                .build()
        });
    let mut runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("floor_relay: cannot start the runtime: {e}");
            std::process::exit(1)
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(listen) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("floor_relay: cannot listen on {listen}: {e}");
                std::process::exit(1)
            }
        };
        eprintln!("floor_relay: {listen} -> {backend}");
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            monoio::spawn(relay(client, backend));
        }
    });
}

/// Connects the backend for this client and copies both ways until either side closes.
async fn relay(client: TcpStream, backend: SocketAddr) {
    let Ok(upstream) = TcpStream::connect(backend).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (up_r, up_w) = upstream.into_split();
    let up = monoio::spawn(copy(client_r, up_w));
    copy(up_r, client_w).await;
    up.await;
}

/// Copies from `from` to `to` until EOF or an error, then shuts `to`'s write side down so the peer
/// sees the close (a `Connection: close` exchange ends as it would through a proxy).
async fn copy(mut from: OwnedReadHalf<TcpStream>, mut to: OwnedWriteHalf<TcpStream>) {
    let mut buf = Vec::with_capacity(BUF_SIZE);
    loop {
        // The read fills from index 0 and sets the length to what it read.
        buf.clear();
        let (res, b) = from.read(buf.slice_mut(0..BUF_SIZE)).await;
        buf = b.into_inner();
        match res {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let (res, b) = to.write_all(buf).await;
        buf = b;
        if res.is_err() {
            break;
        }
    }
    let _ = monoio::io::AsyncWriteRent::shutdown(&mut to).await;
}
