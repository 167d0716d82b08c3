//! One HTTP/2 stream seen as a one-request HTTP/1.1 connection, so that it goes through exactly the same
//! phases as an HTTP/1.1 request (routing, retries, dead marks, error pages, access log, metrics).
//!
//! *Reading* yields an HTTP/1.1 request head synthesised from the HEADERS frame (`:authority` becomes
//! `Host`, several `cookie` fields are joined with `; `, connection-specific fields dropped), then the
//! body from DATA frames, re-framed as chunked when the client sent no `content-length`. Window updates
//! are released as the proxy consumes the data, so flow control follows the backend's pace.
//! *Writing* takes the proxy's HTTP/1.1 response bytes: the head becomes a HEADERS frame without
//! connection-specific fields, the body (decoded from its HTTP/1.1 framing) becomes DATA frames sent
//! only as the stream's send window allows, so one slow stream never buffers without bound.
//!
//! This adapter never touches the socket; the connection task (`h2::serve`) owns it and drives the frames.

use std::io;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use std::rc::Rc;

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::BufResult;
use monoio_http::h2::server::SendResponse;
use monoio_http::h2::{Reason, RecvStream, SendStream};

use crate::dataplane::http1::body::BodyFraming;
use crate::dataplane::http1::head::{Framing, HeaderKind, Parsed, ResponseHead};
use crate::dataplane::session::ClientStream;

/// Header fields HTTP/2 forbids (RFC 9113 §8.2.2) and HTTP/1.1 hops manage themselves.
fn connection_specific(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "expect"
            | "host"
    )
}

enum ResponseState {
    /// Collecting the proxy's response head.
    Head,
    /// Relaying the body through this framing.
    Body(BodyFraming),
    Done,
}

/// The adapter for one stream.
pub struct H2StreamIo {
    // Request side: bytes for the proxy to read, then the rest of the body.
    pending: Vec<u8>,
    pending_pos: usize,
    body: Option<RecvStream>,
    chunked: bool,
    // Response side.
    respond: Option<SendResponse<Bytes>>,
    send: Option<SendStream<Bytes>>,
    head_buf: Vec<u8>,
    state: ResponseState,
    request_was_head: bool,
    max_head: usize,
    /// The connection's counters (responses sent, for the reset accounting).
    conn: Rc<super::guard::Shared>,
}

impl H2StreamIo {
    /// Builds the HTTP/1.1 view of a request.
    pub fn new(
        req: Request<RecvStream>,
        respond: SendResponse<Bytes>,
        max_head: usize,
        conn: Rc<super::guard::Shared>,
    ) -> H2StreamIo {
        let (parts, body) = req.into_parts();
        let mut head = Vec::with_capacity(512);
        head.extend_from_slice(parts.method.as_str().as_bytes());
        head.push(b' ');
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| !p.is_empty())
            .unwrap_or("/");
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        let authority = parts.uri.authority().map(|a| a.as_str());
        let host_header = parts
            .headers
            .get(http::header::HOST)
            .map(HeaderValue::as_bytes);
        // `:authority` plays the role of Host; a differing Host field is dropped (only one ever reaches
        // the backend, the one the request is routed by).
        match (authority, host_header) {
            (Some(a), _) => push_field(&mut head, b"Host", a.as_bytes()),
            (None, Some(h)) => push_field(&mut head, b"Host", h),
            (None, None) => {}
        }
        let mut cookies: Vec<&[u8]> = Vec::new();
        for (name, value) in parts.headers.iter() {
            let n = name.as_str();
            if n == "cookie" {
                cookies.push(value.as_bytes());
                continue;
            }
            if connection_specific(n) {
                continue;
            }
            push_field(&mut head, n.as_bytes(), value.as_bytes());
        }
        if !cookies.is_empty() {
            head.extend_from_slice(b"cookie: ");
            for (i, c) in cookies.iter().enumerate() {
                if i > 0 {
                    head.extend_from_slice(b"; ");
                }
                head.extend_from_slice(c);
            }
            head.extend_from_slice(b"\r\n");
        }
        let has_body = !body.is_end_stream();
        let chunked = has_body && !parts.headers.contains_key(http::header::CONTENT_LENGTH);
        if chunked {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        head.extend_from_slice(b"\r\n");
        H2StreamIo {
            pending: head,
            pending_pos: 0,
            body: has_body.then_some(body),
            chunked,
            respond: Some(respond),
            send: None,
            head_buf: Vec::new(),
            state: ResponseState::Head,
            request_was_head: parts.method == http::Method::HEAD,
            max_head,
            conn,
        }
    }

    /// Refills `pending` from the next DATA frame; false at the end of the body.
    async fn next_body_bytes(&mut self) -> io::Result<bool> {
        let Some(body) = self.body.as_mut() else {
            return Ok(false);
        };
        self.pending.clear();
        self.pending_pos = 0;
        match body.data().await {
            Some(Ok(data)) => {
                // The proxy takes these bytes now: let the client send more.
                let _ = body.flow_control().release_capacity(data.len());
                if self.chunked {
                    if data.is_empty() {
                        return Ok(true);
                    }
                    self.pending
                        .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    self.pending.extend_from_slice(&data);
                    self.pending.extend_from_slice(b"\r\n");
                } else {
                    self.pending.extend_from_slice(&data);
                }
                Ok(true)
            }
            Some(Err(e)) => Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                e.to_string(),
            )),
            None => {
                self.body = None;
                if self.chunked {
                    self.pending.extend_from_slice(b"0\r\n\r\n");
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }

    /// Turns the proxy's response bytes into frames.
    async fn take_response_bytes(&mut self, mut bytes: Vec<u8>) -> io::Result<()> {
        loop {
            if bytes.is_empty() {
                return Ok(());
            }
            match &mut self.state {
                ResponseState::Done => return Ok(()),
                ResponseState::Head => {
                    self.head_buf.extend_from_slice(&bytes);
                    let mut head = ResponseHead::default();
                    match head.parse(&self.head_buf, self.max_head, self.request_was_head) {
                        Ok(Parsed::Partial) => return Ok(()),
                        Err(why) => return Err(io::Error::new(io::ErrorKind::InvalidData, why)),
                        Ok(Parsed::Complete) => {}
                    }
                    bytes = self.head_buf.split_off(head.len);
                    if (100..200).contains(&head.status) {
                        // Interim answers (100 Continue, 103) are not relayed over HTTP/2.
                        self.head_buf.clear();
                        continue;
                    }
                    let framing = BodyFraming::new(head.framing, true);
                    let no_body = framing.is_done() && head.framing != Framing::UntilClose;
                    let response = self.response_from(&head)?;
                    self.head_buf.clear();
                    let Some(mut respond) = self.respond.take() else {
                        return Err(io::Error::other("response already sent"));
                    };
                    let send = respond
                        .send_response(response, no_body)
                        .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))?;
                    self.conn.responses.set(self.conn.responses.get() + 1);
                    if no_body {
                        self.state = ResponseState::Done;
                        return Ok(());
                    }
                    self.send = Some(send);
                    self.state = ResponseState::Body(framing);
                }
                ResponseState::Body(framing) => {
                    // Decoded in place; the buffer then becomes the DATA payload without another copy.
                    let p = framing
                        .take(&mut bytes)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.0))?;
                    let done = p.done;
                    bytes.truncate(p.produced);
                    self.send_data(Bytes::from(bytes), done).await?;
                    if done {
                        self.state = ResponseState::Done;
                    }
                    return Ok(());
                }
            }
        }
    }

    fn response_from(&self, head: &ResponseHead) -> io::Result<Response<()>> {
        let status = StatusCode::from_u16(head.status)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad status"))?;
        let mut headers = HeaderMap::with_capacity(head.headers.len());
        for h in &head.headers {
            if h.kind.is_hop_by_hop() || matches!(h.kind, HeaderKind::Connection) {
                continue;
            }
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(h.name.of(&self.head_buf)),
                HeaderValue::from_bytes(h.value.of(&self.head_buf)),
            ) else {
                continue;
            };
            if connection_specific(name.as_str()) {
                continue;
            }
            headers.append(name, value);
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }

    /// Sends data as the stream's window allows (bounded buffering), ending the stream if asked.
    async fn send_data(&mut self, mut data: Bytes, end: bool) -> io::Result<()> {
        let Some(send) = self.send.as_mut() else {
            return Ok(());
        };
        let mut ended = false;
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let n = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(0)) => continue,
                Some(Ok(n)) => n.min(data.len()),
                Some(Err(e)) => {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "stream closed by the client",
                    ))
                }
            };
            let piece = data.split_to(n);
            ended = end && data.is_empty();
            send.send_data(piece, ended)
                .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))?;
        }
        if end && !ended {
            send.send_data(Bytes::new(), true)
                .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))?;
        }
        if end {
            self.send = None;
        }
        Ok(())
    }

    /// Ends the stream: cleanly if the response was complete (or delimited by close), otherwise with a
    /// reset so the client knows it is truncated.
    fn finish(&mut self) {
        match std::mem::replace(&mut self.state, ResponseState::Done) {
            ResponseState::Done => {}
            ResponseState::Body(BodyFraming::UntilClose) => {
                if let Some(send) = self.send.as_mut() {
                    let _ = send.send_data(Bytes::new(), true);
                }
            }
            ResponseState::Body(_) => {
                if let Some(send) = self.send.as_mut() {
                    send.send_reset(Reason::INTERNAL_ERROR);
                }
            }
            ResponseState::Head => {
                if let Some(respond) = self.respond.as_mut() {
                    respond.send_reset(Reason::INTERNAL_ERROR);
                }
            }
        }
        self.send = None;
    }
}

fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

impl Drop for H2StreamIo {
    fn drop(&mut self) {
        self.finish();
    }
}

impl AsyncReadRent for H2StreamIo {
    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        loop {
            if self.pending_pos < self.pending.len() {
                let n = (self.pending.len() - self.pending_pos).min(buf.bytes_total());
                // SAFETY: `write_ptr` is valid for `bytes_total` bytes and `n` is within it.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.pending.as_ptr().add(self.pending_pos),
                        buf.write_ptr(),
                        n,
                    );
                    buf.set_init(n);
                }
                self.pending_pos += n;
                return (Ok(n), buf);
            }
            match self.next_body_bytes().await {
                Ok(true) => continue,
                Ok(false) => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        (
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "readv on an HTTP/2 stream",
            )),
            buf,
        )
    }
}

impl AsyncWriteRent for H2StreamIo {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        // SAFETY: `read_ptr` is valid for `bytes_init` bytes while we hold `buf`.
        let bytes = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let n = bytes.len();
        match self.take_response_bytes(bytes.to_vec()).await {
            Ok(()) => (Ok(n), buf),
            Err(e) => (Err(e), buf),
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        (
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "writev on an HTTP/2 stream",
            )),
            buf,
        )
    }

    async fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.finish();
        Ok(())
    }
}

impl ClientStream for H2StreamIo {
    const LOG_VERSION: Option<&'static str> = Some("HTTP/2.0");
    // An HTTP/2 stream never becomes a tunnel (Upgrade and Connection are not carried over), so it
    // needs no halves; these types are never built.
    type TunnelRead = H2StreamIo;
    type TunnelWrite = H2StreamIo;
    fn into_tunnel(self) -> Option<(H2StreamIo, H2StreamIo)> {
        None
    }
}
