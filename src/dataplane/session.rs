//! One client connection as every phase sees it: the stream it arrived on ([`ClientStream`]: plain TCP,
//! TLS, or one HTTP/2 stream), the listener's facts ([`ListenerInfo`]), the connection's buffers and
//! peer ([`ClientConn`]), and what the access-log line needs to know about the exchange in progress
//! ([`Exchange`]).
//!
//! Only the types: the connection loop is `http1::connection`, the phases are `proxy`. Keeping them
//! here lets both import them without importing each other.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use crate::dataplane::http1::head::{RequestHead, ResponseHead};
use crate::dataplane::routing::Route;

/// A client byte stream the proxy can serve: plain TCP, TLS, or one HTTP/2 stream.
pub trait ClientStream: AsyncReadRent + AsyncWriteRent + Sized {
    /// The protocol written in the access log, when it is not the request line's (HTTP/2 streams).
    const LOG_VERSION: Option<&'static str> = None;
    /// Whether the accept already turned Nagle's algorithm off (`TCP_NODELAY`). A plain TCP client
    /// does not: [`ClientConn::ensure_nodelay`] turns it off only once the connection needs it.
    const NODELAY_AT_ACCEPT: bool = true;
    /// The halves a tunnel reads from and writes to.
    type TunnelRead: AsyncReadRent + 'static;
    type TunnelWrite: AsyncWriteRent + 'static;
    /// Gives the stream up to a tunnel (by value), or `None` when it cannot carry one.
    fn into_tunnel(self) -> Option<(Self::TunnelRead, Self::TunnelWrite)>;
    /// The bare TCP socket, when nothing (TLS, replayed bytes) stands between it and the client: a
    /// tunnel then moves bytes on it directly (`proxy::tunnel::run_plain`).
    fn into_plain(self) -> Result<TcpStream, Self> {
        Err(self)
    }
    /// The bare TCP socket, when bytes written to it reach the client as they are (no TLS, no HTTP/2
    /// framing): a response body may then be spliced into it (`proxy::relay`).
    fn plain_socket(&self) -> Option<&TcpStream> {
        None
    }
}

/// A byte stream that splits into owned halves (a socket, or TLS over one).
macro_rules! splitting_client_stream {
    ($t:ty $(, $plain:item)*) => {
        impl ClientStream for $t {
            type TunnelRead = monoio::io::OwnedReadHalf<$t>;
            type TunnelWrite = monoio::io::OwnedWriteHalf<$t>;
            fn into_tunnel(self) -> Option<(Self::TunnelRead, Self::TunnelWrite)> {
                Some(monoio::io::Splitable::into_split(self))
            }
            $($plain)*
        }
    };
}

splitting_client_stream!(
    TcpStream,
    const NODELAY_AT_ACCEPT: bool = false;,
    fn into_plain(self) -> Result<TcpStream, Self> {
        Ok(self)
    },
    fn plain_socket(&self) -> Option<&TcpStream> {
        Some(self)
    }
);
splitting_client_stream!(monoio_rustls::ServerTlsStream<TcpStream>);
splitting_client_stream!(monoio::io::PrefixedReadIo<TcpStream, std::io::Cursor<Vec<u8>>>);
// TLS after a PROXY protocol header whose read also took the first ClientHello bytes.
splitting_client_stream!(
    monoio_rustls::ServerTlsStream<monoio::io::PrefixedReadIo<TcpStream, std::io::Cursor<Vec<u8>>>>
);

/// Facts about the listener a connection arrived on.
pub struct ListenerInfo {
    pub local: SocketAddr,
    /// The local port as text, for X-Forwarded-Port.
    pub port: String,
    /// `http` or `https`.
    pub proto: &'static str,
    /// `proxyProtocol`: connections start with a PROXY protocol header (see `crate::dataplane::net`).
    pub proxy_protocol: bool,
}

impl ListenerInfo {
    pub fn new(local: SocketAddr, tls: bool) -> Self {
        ListenerInfo {
            local,
            port: local.port().to_string(),
            proto: if tls { "https" } else { "http" },
            proxy_protocol: false,
        }
    }
}

/// One client connection and the request being served on it.
pub struct ClientConn<S> {
    pub io: S,
    /// Received bytes. During an exchange the request head is at `buf[..head.len]`.
    pub buf: Vec<u8>,
    /// First byte not yet consumed by the current exchange (the next request starts here).
    pub pos: usize,
    pub head: RequestHead,
    /// The client address as written in headers and logs: the PROXY protocol source on a
    /// `proxyProtocol` listener, else the socket peer (README, "Behind a load balancer").
    pub peer_ip: String,
    /// The client address (same origin as `peer_ip`), as counted by `server.maxSocketsPerClient`
    /// and matched against `server.trustedProxies` (IPv4-mapped IPv6 as IPv4). This is the one client
    /// address of the connection: use it (not the socket's peer) for anything per client.
    pub peer_addr: std::net::IpAddr,
    pub listener: Rc<ListenerInfo>,
    /// The current request's normalised host.
    pub host: String,
    /// Scratch buffer for outgoing heads.
    pub out: Vec<u8>,
    /// The backend's response head, reused across exchanges (no allocation per request).
    pub resp: ResponseHead,
    /// A write to the client that makes no progress for this long fails (`server.tcpTimeout`).
    pub send_timeout: Option<Duration>,
    /// The client's TCP socket (under TLS too), to shut a tunnel down from outside.
    pub fd: RawFd,
    /// Nagle's algorithm is off on `fd` (`TCP_NODELAY`).
    pub nodelay: bool,
}

impl<S> ClientConn<S> {
    /// Turns Nagle's algorithm off on the client socket, once. As nginx does, a plain connection
    /// keeps it until it needs otherwise: an answer that leaves in one write (the usual one, and all
    /// of a connection-per-request client's) does not wait for Nagle, so the `setsockopt` is saved;
    /// a connection that goes keep-alive, an answer written in several writes (1xx first, a large or
    /// streamed body) and a tunnel turn it off, so that no small write waits for an ACK.
    pub fn ensure_nodelay(&mut self) {
        if self.nodelay {
            return;
        }
        self.nodelay = true;
        let one: libc::c_int = 1;
        // SAFETY: `fd` is the open socket of `io`, which this connection holds; the option value
        // points at a live c_int of the size given.
        unsafe {
            libc::setsockopt(
                self.fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// What the log line needs to know about an exchange.
pub struct Exchange {
    pub start: Instant,
    pub status: u16,
    pub bytes_sent: u64,
    pub route: Option<Rc<Route>>,
    pub backend_secs: f64,
    /// Why the proxy answered on its own, or closed (`proxy::pipeline::fail_to_proxy`).
    pub error: Option<crate::dataplane::proxy::error::ErrorKind>,
}

impl Exchange {
    pub(crate) fn new() -> Self {
        Exchange {
            start: Instant::now(),
            status: 0,
            bytes_sent: 0,
            route: None,
            backend_secs: 0.0,
            error: None,
        }
    }
}
