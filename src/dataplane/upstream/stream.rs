//! Where a backend lives and the socket to it: TCP (`http://host:port`) or a unix socket
//! (`unix:/run/app/http.sock`, README "Unix-socket backends"). Both speak HTTP/1.1 the same way, so
//! the pools, the request phases and tunnels handle one type, [`BackendStream`], and one key,
//! [`BackendAddr`].
//!
//! Plain delegation: this module must not buffer, retry or time anything out (the callers do).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::{TcpStream, UnixStream};
use monoio::BufResult;

/// `sun_path` holds 108 bytes with the terminating NUL: a longer path cannot be connected to.
pub const MAX_UNIX_PATH: usize = 107;

/// A backend's connectable address: the pool key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BackendAddr {
    Tcp(SocketAddr),
    /// An absolute socket path (at most [`MAX_UNIX_PATH`] bytes).
    Unix(Arc<str>),
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendAddr::Tcp(a) => write!(f, "{a}"),
            BackendAddr::Unix(p) => write!(f, "unix:{p}"),
        }
    }
}

/// A connection to a backend.
pub enum BackendStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl BackendStream {
    /// Connects (no timeout here: the caller bounds it).
    pub async fn connect(addr: &BackendAddr) -> io::Result<BackendStream> {
        match addr {
            BackendAddr::Tcp(a) => {
                let s = TcpStream::connect_addr(*a).await?;
                let _ = s.set_nodelay(true);
                Ok(BackendStream::Tcp(s))
            }
            BackendAddr::Unix(p) => Ok(BackendStream::Unix(UnixStream::connect(&**p).await?)),
        }
    }

    /// Waits until a read would not block (data, end of stream or an error is there).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            BackendStream::Tcp(s) => s.readable(false).await,
            BackendStream::Unix(s) => s.readable(false).await,
        }
    }

    /// Waits until a write would not block.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            BackendStream::Tcp(s) => s.writable(false).await,
            BackendStream::Unix(s) => s.writable(false).await,
        }
    }
}

impl AsRawFd for BackendStream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            BackendStream::Tcp(s) => s.as_raw_fd(),
            BackendStream::Unix(s) => s.as_raw_fd(),
        }
    }
}

// SAFETY: both variants are `Split` (their reads and writes may proceed concurrently on one socket).
unsafe impl Split for BackendStream {}

impl AsyncReadRent for BackendStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            BackendStream::Tcp(s) => s.read(buf).await,
            BackendStream::Unix(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            BackendStream::Tcp(s) => s.readv(buf).await,
            BackendStream::Unix(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for BackendStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            BackendStream::Tcp(s) => s.write(buf).await,
            BackendStream::Unix(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            BackendStream::Tcp(s) => s.writev(buf).await,
            BackendStream::Unix(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            BackendStream::Tcp(s) => s.flush().await,
            BackendStream::Unix(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            BackendStream::Tcp(s) => s.shutdown().await,
            BackendStream::Unix(s) => s.shutdown().await,
        }
    }
}
