//! The socket under a Redis connection: plain TCP (`redis://`), TLS over TCP (`rediss://`) or a unix
//! socket (`redis+unix://`), behind one type so that the query connection, the tracking connection and
//! the pub/sub subscriber share one dial function and know nothing of the transport.
//!
//! Dialling runs on the caller's runtime and never blocks it; every step is bounded by the caller's
//! timeout. The TLS client configuration comes ready-made from the configuration (no file is read here).

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::{TcpStream, UnixStream};
use monoio::BufResult;
use rustls::pki_types::ServerName;

use super::handshake::{auth_step, exchange, Step};
use super::sentinel;
use crate::config::driver_url::{SentinelSpec, Transport};
use crate::config::RedisEndpoint;

/// A connected socket to a Redis server.
pub struct RedisStream {
    inner: Inner,
    /// The server's address (`ip:port` or the socket path), for `/status`.
    peer: String,
    /// For a server found through the sentinels: its place in this thread's registry, so that a
    /// failover can move it (dropped with the stream).
    _sentinel: Option<sentinel::Registration>,
}

impl RedisStream {
    fn new(inner: Inner, peer: String) -> Self {
        RedisStream {
            inner,
            peer,
            _sentinel: None,
        }
    }

    /// The server's address (`ip:port`, or the unix socket's path).
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

enum Inner {
    Tcp(TcpStream),
    /// The TLS stream, and its socket's descriptor (for the watchdogs' `shutdown`).
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>, RawFd),
    Unix(UnixStream),
}

// SAFETY: each variant of `Inner` is itself `Split` (monoio's TCP and unix streams; monoio-rustls's stream over a
// `Split` socket), and the enum only forwards to the variant it holds.
unsafe impl Split for RedisStream {}

impl AsRawFd for RedisStream {
    fn as_raw_fd(&self) -> RawFd {
        match &self.inner {
            Inner::Tcp(s) => s.as_raw_fd(),
            Inner::Tls(_, fd) => *fd,
            Inner::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl AsyncReadRent for RedisStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.inner {
            Inner::Tcp(s) => s.read(buf).await,
            Inner::Tls(s, _) => s.read(buf).await,
            Inner::Unix(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.inner {
            Inner::Tcp(s) => s.readv(buf).await,
            Inner::Tls(s, _) => s.readv(buf).await,
            Inner::Unix(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for RedisStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.inner {
            Inner::Tcp(s) => s.write(buf).await,
            Inner::Tls(s, _) => s.write(buf).await,
            Inner::Unix(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match &mut self.inner {
            Inner::Tcp(s) => s.writev(buf).await,
            Inner::Tls(s, _) => s.writev(buf).await,
            Inner::Unix(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Tcp(s) => s.flush().await,
            Inner::Tls(s, _) => s.flush().await,
            Inner::Unix(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Tcp(s) => s.shutdown().await,
            Inner::Tls(s, _) => s.shutdown().await,
            Inner::Unix(s) => s.shutdown().await,
        }
    }
}

/// Opens a connection to a Redis endpoint (any of its addresses; the TLS handshake included) within
/// the timeout (at least a second).
pub async fn dial(ep: &RedisEndpoint, timeout: Duration) -> Result<RedisStream, String> {
    let timeout = timeout.max(Duration::from_secs(1));
    if ep.transport == Transport::Unix {
        return match monoio::time::timeout(timeout, UnixStream::connect(&ep.host)).await {
            Ok(Ok(s)) => Ok(RedisStream::new(Inner::Unix(s), ep.host.clone())),
            Ok(Err(e)) => Err(format!(
                "cannot connect to the unix socket {}: {e}",
                ep.host
            )),
            Err(_) => Err(format!(
                "connecting to the unix socket {} timed out",
                ep.host
            )),
        };
    }
    if let Transport::Sentinel(spec) = &ep.transport {
        return dial_through_sentinels(ep, spec, timeout).await;
    }
    let addrs = crate::dataplane::upstream::resolver::resolve(&ep.host, ep.port)
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", ep.host))?;
    let mut last_err = String::from("no address");
    for addr in addrs {
        match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let Some(tls) = ep.tls() else {
                    return Ok(RedisStream::new(Inner::Tcp(stream), addr.to_string()));
                };
                let Some(client) = tls.client.clone() else {
                    return Err("rediss://: no TLS client configuration (a bug)".into());
                };
                let name = ServerName::try_from(ep.host.clone())
                    .map_err(|_| format!("{:?} is not a valid TLS server name", ep.host))?;
                let fd = stream.as_raw_fd();
                let connector = monoio_rustls::TlsConnector::from(client);
                return match monoio::time::timeout(timeout, connector.connect(name, stream)).await {
                    Ok(Ok(s)) => Ok(RedisStream::new(
                        Inner::Tls(Box::new(s), fd),
                        addr.to_string(),
                    )),
                    Ok(Err(e)) => Err(format!("TLS handshake with {addr} failed: {e}")),
                    Err(_) => Err(format!("TLS handshake with {addr} timed out")),
                };
            }
            Ok(Err(e)) => last_err = e.to_string(),
            Err(_) => last_err = "connect timed out".into(),
        }
    }
    Err(last_err)
}

/// Asks the sentinels where the master (or a replica) is, connects, checks its `ROLE` (after `AUTH`),
/// and registers the socket so that a failover moves it.
async fn dial_through_sentinels(
    ep: &RedisEndpoint,
    spec: &SentinelSpec,
    timeout: Duration,
) -> Result<RedisStream, String> {
    let found = sentinel::resolve(spec, timeout).await?;
    let addrs = sentinel::addresses(&found).await?;
    let mut last_err = String::from("no address");
    for addr in addrs {
        let mut stream = match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                last_err = format!("{addr} (from the sentinels): {e}");
                continue;
            }
            Err(_) => {
                last_err = format!("{addr} (from the sentinels): connect timed out");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut steps: Vec<Step> = auth_step(ep).into_iter().collect();
        steps.push(Step::required("ROLE", redis::cmd("ROLE")));
        let (replies, _) = exchange(&mut stream, &steps, timeout)
            .await
            .map_err(|e| format!("{addr} (from the sentinels): {e}"))?;
        sentinel::check_role(spec, replies.last().unwrap_or(&redis::Value::Nil))?;
        let fd = stream.as_raw_fd();
        return Ok(RedisStream {
            inner: Inner::Tcp(stream),
            peer: addr.to_string(),
            _sentinel: Some(sentinel::register(spec, found, fd, timeout)),
        });
    }
    Err(last_err)
}
