//! HTTP/1.x message heads, parsed with httparse into offsets (so a parsed head does not borrow the
//! buffer), validated against the framing rules of RFC 9112, and classified for forwarding.
//!
//! This module decides *what* a head means (body framing, keep-alive, which headers are hop-by-hop);
//! it never writes to a socket. Writing heads is `proxy::headers`'s job.

use std::mem::MaybeUninit;

/// Most headers a request or response may carry; more is 431 (request) or 502 (response).
pub const MAX_HEADERS: usize = 128;

/// A byte range inside the buffer the head was parsed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    #[inline]
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }

    fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }
}

/// Headers the proxy treats specially; everything else is `Other` and forwarded verbatim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderKind {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    ProxyAuthorization,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XForwardedProtocol,
    XForwardedPort,
    XRealIp,
    XDebug,
    Referer,
    UserAgent,
    Other,
}

impl HeaderKind {
    /// Classifies a header name (case-insensitive), by length first so most names cost one compare.
    pub fn of(name: &[u8]) -> HeaderKind {
        let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        match name.len() {
            2 if eq("te") => HeaderKind::Te,
            4 if eq("host") => HeaderKind::Host,
            6 if eq("expect") => HeaderKind::Expect,
            7 if eq("trailer") => HeaderKind::Trailer,
            7 if eq("upgrade") => HeaderKind::Upgrade,
            7 if eq("referer") => HeaderKind::Referer,
            7 if eq("x-debug") => HeaderKind::XDebug,
            9 if eq("x-real-ip") => HeaderKind::XRealIp,
            10 if eq("connection") => HeaderKind::Connection,
            10 if eq("keep-alive") => HeaderKind::KeepAlive,
            10 if eq("user-agent") => HeaderKind::UserAgent,
            14 if eq("content-length") => HeaderKind::ContentLength,
            15 if eq("x-forwarded-for") => HeaderKind::XForwardedFor,
            16 if eq("x-forwarded-port") => HeaderKind::XForwardedPort,
            16 if eq("proxy-connection") => HeaderKind::ProxyConnection,
            17 if eq("transfer-encoding") => HeaderKind::TransferEncoding,
            17 if eq("x-forwarded-proto") => HeaderKind::XForwardedProto,
            19 if eq("proxy-authorization") => HeaderKind::ProxyAuthorization,
            20 if eq("x-forwarded-protocol") => HeaderKind::XForwardedProtocol,
            _ => HeaderKind::Other,
        }
    }

    /// Hop-by-hop headers never forwarded as such (docs/compatibility.md §4); framing and upgrades are re-added by the
    /// proxy when needed.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            HeaderKind::Connection
                | HeaderKind::KeepAlive
                | HeaderKind::ProxyConnection
                | HeaderKind::Te
                | HeaderKind::Trailer
                | HeaderKind::Upgrade
                | HeaderKind::TransferEncoding
                | HeaderKind::ProxyAuthorization
        )
    }
}

/// One header line.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub name: Span,
    pub value: Span,
    pub kind: HeaderKind,
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// A request head that cannot be served; `status` is what the client gets (the connection is closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadError {
    pub status: u16,
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> HeadError {
    HeadError {
        status: 400,
        reason,
    }
}

/// Result of a parse attempt on the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Complete,
    Partial,
}

/// Connection-header facts shared by requests and responses.
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectionTokens {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// Names other headers to drop (e.g. `Connection: X-Secret`).
    pub other: bool,
}

/// A parsed, validated request head. Reused across the requests of a connection (no allocation once
/// the header vector has grown).
#[derive(Debug)]
pub struct RequestHead {
    /// Bytes of the head, final blank line included.
    pub len: usize,
    pub method: Span,
    pub target: Span,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<Header>,
    /// Host header, or the authority of an absolute-form target.
    pub host: Option<Span>,
    /// The target was in absolute form (`http://a.test/x?y`): its origin-form part (`/x?y`; empty
    /// when the target has no path, to be sent as `/`). The backend gets this as its target and the
    /// authority (`host`) as its Host header (RFC 9112 §3.2.2).
    pub absolute_origin: Option<Span>,
    pub framing: Framing,
    /// The client wants to keep the connection open after this exchange.
    pub keep_alive: bool,
    pub connection: ConnectionTokens,
    pub expect_continue: bool,
    /// `Upgrade: websocket` was asked for.
    pub websocket: bool,
    pub is_head_method: bool,
    pub x_debug: bool,
    pub referer: Option<Span>,
    pub user_agent: Option<Span>,
}

impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            len: 0,
            method: Span::default(),
            target: Span::default(),
            minor_version: 1,
            headers: Vec::with_capacity(16),
            host: None,
            absolute_origin: None,
            framing: Framing::None,
            keep_alive: true,
            connection: ConnectionTokens::default(),
            expect_continue: false,
            websocket: false,
            is_head_method: false,
            x_debug: false,
            referer: None,
            user_agent: None,
        }
    }
}

impl RequestHead {
    /// Parses and validates a request head at the start of `buf`.
    ///
    /// `Partial` means more bytes are needed; once `buf` holds `max_len` bytes without a complete head,
    /// the answer is 431.
    pub fn parse(&mut self, buf: &[u8], max_len: usize) -> Result<Parsed, HeadError> {
        let mut raw: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
            [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let status = match req.parse_with_uninit_headers(buf, &mut raw) {
            Ok(s) => s,
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HeadError {
                    status: 431,
                    reason: "too many header fields",
                })
            }
            Err(httparse::Error::Version) => {
                return Err(bad("malformed request line or unsupported HTTP version"))
            }
            Err(httparse::Error::HeaderName) => {
                return Err(bad("malformed header name (or obsolete line folding)"))
            }
            Err(httparse::Error::HeaderValue) => {
                return Err(bad("malformed header value (bare CR or control character)"))
            }
            Err(httparse::Error::NewLine) => return Err(bad("malformed line ending")),
            Err(_) => return Err(bad("malformed request line")),
        };
        let head_len = match status {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => {
                if buf.len() >= max_len {
                    return Err(HeadError {
                        status: 431,
                        reason: "request head too large",
                    });
                }
                return Ok(Parsed::Partial);
            }
        };
        if head_len > max_len {
            return Err(HeadError {
                status: 431,
                reason: "request head too large",
            });
        }
        let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
            return Err(bad("malformed request line"));
        };
        self.len = head_len;
        self.method = Span::within(buf, method.as_bytes());
        self.target = Span::within(buf, path.as_bytes());
        self.minor_version = version;
        self.is_head_method = method == "HEAD";
        self.headers.clear();
        self.host = None;
        self.absolute_origin = None;
        self.framing = Framing::None;
        self.connection = ConnectionTokens::default();
        self.expect_continue = false;
        self.websocket = false;
        self.x_debug = false;
        self.referer = None;
        self.user_agent = None;

        if method == "CONNECT" {
            return Err(HeadError {
                status: 405,
                reason: "CONNECT is not supported",
            });
        }
        let target = path.as_bytes();
        let absolute_authority = if target.first() == Some(&b'/') {
            None
        } else if target == b"*" {
            if method != "OPTIONS" {
                return Err(bad("request target * is only allowed with OPTIONS"));
            }
            None
        } else if let Some(authority) = absolute_form_authority(target) {
            Some(authority)
        } else {
            return Err(bad("malformed request target"));
        };

        let mut host_count = 0;
        let mut content_length: Option<u64> = None;
        let mut chunked = false;
        let mut transfer_encoding = false;
        let mut upgrade_websocket = false;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            let kind = HeaderKind::of(name);
            let value = h.value;
            let header = Header {
                name: Span::within(buf, name),
                value: Span::within(buf, value),
                kind,
            };
            match kind {
                HeaderKind::Host => {
                    host_count += 1;
                    self.host = Some(header.value);
                }
                HeaderKind::ContentLength => {
                    let n = parse_content_length(value).ok_or(bad("invalid Content-Length"))?;
                    if content_length.is_some_and(|prev| prev != n) {
                        return Err(bad("conflicting Content-Length headers"));
                    }
                    content_length = Some(n);
                }
                HeaderKind::TransferEncoding => {
                    transfer_encoding = true;
                    for coding in tokens(value) {
                        if chunked {
                            // Anything after `chunked` (including a second `chunked`) is invalid.
                            return Err(bad("chunked must be the final transfer coding, once"));
                        }
                        if coding.eq_ignore_ascii_case(b"chunked") {
                            chunked = true;
                        } else {
                            return Err(HeadError {
                                status: 501,
                                reason: "unsupported transfer coding",
                            });
                        }
                    }
                }
                HeaderKind::Connection => self.connection.merge(value),
                HeaderKind::Upgrade
                    if tokens(value)
                        .any(|t| protocol_name(t).eq_ignore_ascii_case(b"websocket")) =>
                {
                    upgrade_websocket = true;
                }
                HeaderKind::Expect => {
                    if trim(value).eq_ignore_ascii_case(b"100-continue") {
                        self.expect_continue = true;
                    } else {
                        return Err(HeadError {
                            status: 417,
                            reason: "unsupported expectation",
                        });
                    }
                }
                HeaderKind::XDebug => self.x_debug = true,
                HeaderKind::Referer => self.referer = Some(header.value),
                HeaderKind::UserAgent => self.user_agent = Some(header.value),
                _ => {}
            }
            self.headers.push(header);
        }

        if host_count > 1 {
            return Err(bad("several Host headers"));
        }
        if let Some((authority, origin)) = absolute_authority {
            // RFC 9112 §3.2.2: the target's authority wins over the Host header, and the request is
            // forwarded in origin form with the authority as its Host.
            self.host = Some(Span::within(buf, authority));
            self.absolute_origin = Some(Span::within(buf, origin));
        }
        if transfer_encoding {
            if version == 0 {
                return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
            }
            if content_length.is_some() {
                return Err(bad("both Content-Length and Transfer-Encoding"));
            }
            if !chunked {
                return Err(bad("empty Transfer-Encoding"));
            }
            self.framing = Framing::Chunked;
        } else if let Some(n) = content_length {
            self.framing = if n == 0 {
                Framing::None
            } else {
                Framing::Length(n)
            };
        }
        self.keep_alive = if version == 1 {
            !self.connection.close
        } else {
            self.connection.keep_alive && !self.connection.close
        };
        self.websocket =
            upgrade_websocket && self.connection.upgrade && method == "GET" && version == 1;
        Ok(Parsed::Complete)
    }

    pub fn has_body(&self) -> bool {
        self.framing != Framing::None
    }
}

impl ConnectionTokens {
    fn merge(&mut self, value: &[u8]) {
        for t in tokens(value) {
            if t.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if t.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else {
                self.other = true;
            }
        }
    }
}

/// True when `name` is listed in a Connection header among `headers` (to drop it as hop-by-hop). Host
/// and framing headers are never dropped this way.
pub fn named_by_connection(buf: &[u8], headers: &[Header], name: &[u8]) -> bool {
    let protected = matches!(
        HeaderKind::of(name),
        HeaderKind::Host | HeaderKind::ContentLength
    );
    !protected
        && headers
            .iter()
            .filter(|h| h.kind == HeaderKind::Connection)
            .any(|h| tokens(h.value.of(buf)).any(|t| t.eq_ignore_ascii_case(name)))
}

/// A parsed backend response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub minor_version: u8,
    pub reason: Span,
    pub headers: Vec<Header>,
    pub framing: Framing,
    /// The backend allows reusing the connection after this response.
    pub keep_alive: bool,
    pub connection: ConnectionTokens,
    /// Transfer-Encoding present but not ending in chunked, or with Content-Length: close after.
    pub must_close: bool,
}

impl Default for ResponseHead {
    fn default() -> Self {
        ResponseHead {
            headers: Vec::with_capacity(16),
            ..ResponseHead::empty()
        }
    }
}

impl ResponseHead {
    /// A head holding no allocation (a placeholder while the connection's own is in use).
    pub fn empty() -> Self {
        ResponseHead {
            len: 0,
            status: 0,
            minor_version: 1,
            reason: Span::default(),
            headers: Vec::new(),
            framing: Framing::None,
            keep_alive: true,
            connection: ConnectionTokens::default(),
            must_close: false,
        }
    }

    /// Parses a response head at the start of `buf`; errors name what is wrong (the client gets 502).
    pub fn parse(
        &mut self,
        buf: &[u8],
        max_len: usize,
        request_was_head: bool,
    ) -> Result<Parsed, &'static str> {
        let mut raw: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS] =
            [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let head_len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut raw)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if buf.len() >= max_len {
                    Err("response head too large")
                } else {
                    Ok(Parsed::Partial)
                }
            }
            Err(httparse::Error::TooManyHeaders) => return Err("too many response header fields"),
            Err(_) => return Err("malformed response head"),
        };
        if head_len > max_len {
            return Err("response head too large");
        }
        let (Some(code), Some(version)) = (resp.code, resp.version) else {
            return Err("malformed status line");
        };
        if !(100..=999).contains(&code) {
            return Err("invalid status code");
        }
        self.len = head_len;
        self.status = code;
        self.minor_version = version;
        self.reason = resp
            .reason
            .map(|r| Span::within(buf, r.as_bytes()))
            .unwrap_or_default();
        self.headers.clear();
        self.connection = ConnectionTokens::default();
        self.must_close = false;
        let mut content_length: Option<u64> = None;
        let mut te_present = false;
        let mut te_chunked_last = false;
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            let kind = HeaderKind::of(name);
            match kind {
                HeaderKind::ContentLength => {
                    let n = parse_content_length(h.value)
                        .ok_or("invalid Content-Length in response")?;
                    if content_length.is_some_and(|prev| prev != n) {
                        return Err("conflicting Content-Length headers in response");
                    }
                    content_length = Some(n);
                }
                HeaderKind::TransferEncoding => {
                    te_present = true;
                    for t in tokens(h.value) {
                        te_chunked_last = t.eq_ignore_ascii_case(b"chunked");
                    }
                }
                HeaderKind::Connection => self.connection.merge(h.value),
                _ => {}
            }
            self.headers.push(Header {
                name: Span::within(buf, name),
                value: Span::within(buf, h.value),
                kind,
            });
        }
        self.keep_alive = if version == 1 {
            !self.connection.close
        } else {
            self.connection.keep_alive && !self.connection.close
        };
        self.framing =
            if request_was_head || (100..200).contains(&code) || code == 204 || code == 304 {
                Framing::None
            } else if te_present {
                if content_length.is_some() {
                    // RFC 9112 §6.3: Transfer-Encoding wins, and the connection must not be reused.
                    self.must_close = true;
                }
                if te_chunked_last {
                    Framing::Chunked
                } else {
                    self.must_close = true;
                    Framing::UntilClose
                }
            } else if let Some(n) = content_length {
                if n == 0 {
                    Framing::None
                } else {
                    Framing::Length(n)
                }
            } else {
                Framing::UntilClose
            };
        Ok(Parsed::Complete)
    }
}

/// `http://authority/...` → authority (absolute-form request target).
fn absolute_form_authority(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = if target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        &target[7..]
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    let authority = match authority.iter().rposition(|&b| b == b'@') {
        Some(i) => &authority[i + 1..],
        None => authority,
    };
    // The path and query; a fragment has no place in a request and is not forwarded.
    let origin = &rest[end..];
    let origin = &origin[..origin
        .iter()
        .position(|&b| b == b'#')
        .unwrap_or(origin.len())];
    (!authority.is_empty()).then_some((authority, origin))
}

/// Content-Length: one or more digits, nothing else.
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

/// Comma-separated list elements, trimmed, empty ones skipped.
pub fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

/// `websocket/13` → `websocket`.
fn protocol_name(t: &[u8]) -> &[u8] {
    t.split(|&b| b == b'/').next().unwrap_or(t)
}

pub fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Result<RequestHead, HeadError> {
        let mut h = RequestHead::default();
        match h.parse(raw.as_bytes(), 8192)? {
            Parsed::Complete => Ok(h),
            Parsed::Partial => Err(HeadError {
                status: 0,
                reason: "partial",
            }),
        }
    }

    #[test]
    fn framing_rules() {
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
                .unwrap()
                .framing,
            Framing::Length(5)
        );
        assert_eq!(
            req("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .framing,
            Framing::Chunked
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
                .unwrap()
                .framing,
            Framing::Length(3)
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(req("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err().status, 400);
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n")
                .unwrap_err()
                .status,
            501
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            req("GET / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn malformed_heads() {
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            req("GET  / HTTP/1.1\r\nHost: a\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            req("GET x HTTP/1.1\r\nHost: a\r\n\r\n").unwrap_err().status,
            400
        );
        assert_eq!(
            req("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        let mut h = RequestHead::default();
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(h.parse(big.as_bytes(), 8192).unwrap_err().status, 431);
    }

    #[test]
    fn keep_alive_and_upgrade() {
        assert!(req("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().keep_alive);
        assert!(
            !req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(!req("GET / HTTP/1.0\r\nHost: a\r\n\r\n").unwrap().keep_alive);
        assert!(
            req("GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n")
                .unwrap()
                .keep_alive
        );
        assert!(
            req("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n")
                .unwrap()
                .websocket
        );
        assert!(
            !req("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                .unwrap()
                .websocket
        );
    }

    #[test]
    fn absolute_form_routes_by_its_authority() {
        let raw = "GET http://b.com:81/x HTTP/1.1\r\nHost: a.com\r\n\r\n";
        let h = req(raw).unwrap();
        assert_eq!(h.host.unwrap().of(raw.as_bytes()), b"b.com:81");
    }

    #[test]
    fn response_framing() {
        let mut r = ResponseHead::default();
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(r.parse(raw, 8192, false), Ok(Parsed::Complete));
        assert_eq!(r.framing, Framing::Length(10));
        assert_eq!(r.parse(raw, 8192, true), Ok(Parsed::Complete));
        assert_eq!(r.framing, Framing::None);
        assert_eq!(
            r.parse(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
                8192,
                false
            ),
            Ok(Parsed::Complete)
        );
        assert_eq!(r.framing, Framing::None);
        assert_eq!(
            r.parse(b"HTTP/1.1 200 OK\r\n\r\n", 8192, false),
            Ok(Parsed::Complete)
        );
        assert_eq!(r.framing, Framing::UntilClose);
        assert_eq!(
            r.parse(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", 8192, false),
            Ok(Parsed::Complete)
        );
        assert!(!r.keep_alive);
        assert_eq!(
            r.parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                8192,
                false
            ),
            Ok(Parsed::Complete)
        );
        assert_eq!(r.framing, Framing::Chunked);
        assert!(r.must_close);
    }
}
