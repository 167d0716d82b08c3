//! The admin listener's small HTTP/1.1 server side: read one request (head parsed by
//! `http1::head`, reads and the lingering close by `http1::io`; bounded head and body, timeouts),
//! decode its parameters (query string, and a form or JSON body), and write a response with
//! `Content-Length`.
//!
//! It serves the operator, not the public: no streaming, no chunked bodies, no pipelining beyond what
//! keep-alive gives. Bad input is answered with a JSON error and costs only its connection; nothing
//! here panics on what a client sends.

use std::time::Duration;

use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;

use crate::dataplane::http1::head::{Framing, HeaderKind, Parsed, RequestHead};
use crate::dataplane::http1::io;

/// Largest request head.
pub const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 64 * 1024;
/// A started request must arrive completely within this time (per read).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// An idle keep-alive connection is closed after this time.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A decoded request.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    /// Path segments, percent-decoded (`/frontends/a.com` → `["frontends", "a.com"]`).
    pub segments: Vec<String>,
    /// The raw path, for error messages.
    pub path: String,
    /// Query and body parameters, body first (as Go's `FormValue`, which hipache-api used).
    pub params: Vec<(String, String)>,
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// The `Origin` header (browsers send it on state-changing calls: checked against `host`).
    pub origin: Option<String>,
    /// The `Host` header.
    pub host: Option<String>,
    /// The client accepts `text/html` (a browser navigating to `/` gets the console).
    pub accepts_html: bool,
    pub keep_alive: bool,
    pub head_only: bool,
}

impl Request {
    /// The first value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response to write.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    /// hipache-api's error shape: `{"status":<code>,"error":"<message>"}`.
    pub fn error(status: u16, message: impl Into<String>) -> Response {
        Response::json(
            status,
            &serde_json::json!({ "status": status, "error": message.into() }),
        )
    }

    /// hipache-api's success shape: `{"message":"<message>"}`.
    pub fn message(message: &str) -> Response {
        Response::json(200, &serde_json::json!({ "message": message }))
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// Why no request could be read.
pub enum ReadError {
    /// Closed, idle, or timed out: close without answering.
    Gone,
    /// Answer this, then close.
    Answer(Response),
}

/// Reads the next request from `stream`; `buf` carries bytes already received (keep-alive).
pub async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Request, ReadError> {
    let mut head = RequestHead::default();
    loop {
        match head.parse(buf, MAX_HEAD) {
            Ok(Parsed::Complete) => break,
            Ok(Parsed::Partial) => {
                let wait = if buf.is_empty() {
                    IDLE_TIMEOUT
                } else {
                    REQUEST_TIMEOUT
                };
                if read_more(stream, buf, MAX_HEAD, wait).await? == 0 {
                    return Err(if buf.is_empty() {
                        ReadError::Gone
                    } else {
                        ReadError::Answer(Response::error(400, "incomplete request head"))
                    });
                }
            }
            Err(e) => return Err(ReadError::Answer(Response::error(e.status, e.reason))),
        }
    }
    let body_len = match head.framing {
        Framing::None => 0,
        Framing::Length(n) if n > MAX_BODY as u64 => {
            return Err(ReadError::Answer(Response::error(
                413,
                format!("request body larger than {MAX_BODY} bytes"),
            )))
        }
        Framing::Length(n) => n as usize,
        Framing::Chunked | Framing::UntilClose => {
            return Err(ReadError::Answer(Response::error(
                411,
                "chunked request bodies are not supported: send Content-Length",
            )))
        }
    };
    let total = head.len + body_len;
    if buf.len() < total && head.expect_continue {
        let (res, _) = stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        if res.is_err() {
            return Err(ReadError::Gone);
        }
    }
    while buf.len() < total {
        if read_more(stream, buf, total, REQUEST_TIMEOUT).await? == 0 {
            return Err(ReadError::Gone);
        }
    }
    let request = decode(&head, &buf[..head.len], &buf[head.len..total]);
    buf.drain(..total);
    request.map_err(ReadError::Answer)
}

/// Reads into `buf` (up to `limit` bytes in all) within `wait`. A timeout closes the connection, so a
/// read lost to io_uring cancellation does not matter.
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    limit: usize,
    wait: Duration,
) -> Result<usize, ReadError> {
    io::read_within(stream, buf, limit, Some(wait))
        .await
        .map_err(|_| ReadError::Gone)
}

fn decode(head: &RequestHead, raw: &[u8], body: &[u8]) -> Result<Request, Response> {
    let method = String::from_utf8_lossy(head.method.of(raw)).into_owned();
    let target = String::from_utf8_lossy(head.target.of(raw)).into_owned();
    // An absolute-form target (`http://host/path`) is reduced to its path.
    let origin = match target.find("://") {
        Some(i) if !target.starts_with('/') => {
            let after = &target[i + 3..];
            after.find('/').map_or("/", |j| &after[j..]).to_string()
        }
        _ => target,
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (origin, None),
    };
    let trimmed = path.strip_prefix('/').unwrap_or(&path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    let mut segments = Vec::new();
    if !trimmed.is_empty() {
        for raw_segment in trimmed.split('/') {
            segments.push(
                percent_decode(raw_segment, false)
                    .ok_or_else(|| Response::error(400, format!("malformed path {path:?}")))?,
            );
        }
    }
    let mut params = Vec::new();
    let mut bearer = None;
    let mut content_type = None;
    let mut origin = None;
    let mut host = None;
    let mut accepts_html = false;
    for h in &head.headers {
        let name = h.name.of(raw);
        let value = String::from_utf8_lossy(h.value.of(raw)).trim().to_string();
        if name.eq_ignore_ascii_case(b"authorization") {
            if let Some((scheme, token)) = value.split_once(' ') {
                if scheme.eq_ignore_ascii_case("bearer") {
                    bearer = Some(token.trim().to_string());
                }
            }
        } else if h.kind == HeaderKind::Other && name.eq_ignore_ascii_case(b"content-type") {
            content_type = Some(value.to_ascii_lowercase());
        } else if name.eq_ignore_ascii_case(b"origin") {
            origin = Some(value);
        } else if name.eq_ignore_ascii_case(b"host") {
            host = Some(value);
        } else if name.eq_ignore_ascii_case(b"accept") {
            accepts_html |= value.to_ascii_lowercase().contains("text/html");
        }
    }
    if !body.is_empty() {
        let ct = content_type.as_deref().unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        match mime {
            "application/x-www-form-urlencoded" | "" => {
                let text = std::str::from_utf8(body)
                    .map_err(|_| Response::error(400, "the form body is not UTF-8"))?;
                params.extend(parse_form(text).map_err(|m| Response::error(400, m))?);
            }
            "application/json" => params.extend(parse_json_body(body)?),
            other => {
                return Err(Response::error(
                    415,
                    format!(
                        "unsupported Content-Type {other:?}: send application/x-www-form-urlencoded (or application/json)"
                    ),
                ))
            }
        }
    }
    if let Some(q) = query {
        params.extend(parse_form(&q).map_err(|m| Response::error(400, m))?);
    }
    Ok(Request {
        head_only: method == "HEAD",
        method,
        segments,
        path,
        params,
        bearer,
        origin,
        host,
        accepts_html,
        keep_alive: head.keep_alive,
    })
}

/// `a=1&b=x%20y` (`+` is a space). Split as `form_urlencoded::parse` does, but decoded strictly: that
/// crate passes a malformed escape through, where this API answers 400 naming the parameter.
pub fn parse_form(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key =
            percent_decode(k, true).ok_or_else(|| format!("malformed parameter name {k:?}"))?;
        let value = percent_decode(v, true)
            .ok_or_else(|| format!("malformed value of parameter {key:?}"))?;
        out.push((key, value));
    }
    Ok(out)
}

/// A JSON object body: strings as they are, numbers and booleans as text, lists joined by commas
/// (so `"backends": ["http://a:80", "http://b:80"]` works).
fn parse_json_body(body: &[u8]) -> Result<Vec<(String, String)>, Response> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Response::error(400, format!("invalid JSON body: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| Response::error(400, "the JSON body must be an object"))?;
    let scalar = |v: &serde_json::Value| -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    };
    let mut out = Vec::new();
    for (k, v) in obj {
        let text = match v {
            serde_json::Value::Array(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(|parts| parts.join(",")),
            other => scalar(other),
        }
        .ok_or_else(|| {
            Response::error(
                400,
                format!("JSON parameter {k:?} must be a string or a list of strings"),
            )
        })?;
        out.push((k.clone(), text));
    }
    Ok(out)
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set). `None` if an escape is malformed
/// or the result is not UTF-8.
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    crate::common::percent::decode(s, plus).ok()
}

/// Writes `resp` (without its body for HEAD). Returns false if the connection failed.
pub async fn write_response(
    stream: &mut TcpStream,
    resp: Response,
    head_only: bool,
    keep_alive: bool,
) -> bool {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n",
        resp.status,
        http::StatusCode::from_u16(resp.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or(""),
        resp.content_type,
        resp.body.len()
    );
    for (name, value) in &resp.headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&resp.body);
    }
    let (res, _) = stream.write_all(bytes).await;
    res.is_ok()
}

/// After an error answer on a connection whose request was not read to its end: stop writing, and
/// read (and discard) what the client still sends for a moment, so that closing with unread bytes
/// does not reset the connection before the client has read the answer.
pub async fn linger(stream: &mut TcpStream) {
    io::linger(
        stream,
        &mut Vec::with_capacity(16 * 1024),
        Duration::from_secs(1),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_escapes() {
        assert_eq!(
            parse_form("host=a.com&backends=http%3A%2F%2Fh%3A1,http://x:2&flag").unwrap(),
            vec![
                ("host".into(), "a.com".into()),
                ("backends".into(), "http://h:1,http://x:2".into()),
                ("flag".into(), "".into())
            ]
        );
        assert_eq!(percent_decode("a+b%20c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(
            percent_decode("%2A.b.com", false).as_deref(),
            Some("*.b.com")
        );
        assert_eq!(percent_decode("%zz", false), None);
        assert_eq!(percent_decode("%4", false), None);
        assert_eq!(percent_decode("%ff", false), None);
        assert!(parse_form("a=%").is_err());
    }

    #[test]
    fn json_bodies() {
        let p =
            parse_json_body(br#"{"host":"a.com","backends":["http://a:1","http://b:2"],"n":3}"#)
                .unwrap();
        assert_eq!(p[1], ("backends".into(), "http://a:1,http://b:2".into()));
        assert_eq!(p[2], ("n".into(), "3".into()));
        assert!(parse_json_body(b"[1]").is_err());
        assert!(parse_json_body(br#"{"a":{"b":1}}"#).is_err());
        assert!(parse_json_body(b"{").is_err());
    }
}
