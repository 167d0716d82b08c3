//! Raw-socket HTTP/1.1 clients: requests are written byte for byte, responses parsed with httparse and
//! their bodies read by framing (Content-Length, chunked, until close).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// A `key: value` line of the test backend's echo body.
    pub fn echo(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}: ");
        self.text()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }

    /// A request header as the backend saw it (from the echo body), `None` if absent.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        self.seen_headers(name).into_iter().next()
    }

    pub fn seen_headers(&self, name: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("header: "))
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
            .collect()
    }

    /// Which test backend answered.
    pub fn backend(&self) -> String {
        self.echo("backend").unwrap_or_default()
    }
}

/// One client connection (plain TCP unless another stream is given).
pub struct Conn<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    /// Wraps any byte stream (e.g. a TLS stream).
    pub fn over(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Wraps a connection opened by hand.
    pub fn from_stream(stream: TcpStream) -> Conn {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }
}

impl<S: Read + Write> Conn<S> {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to proxy");
    }

    /// Sends a request with the given extra header lines and body (Content-Length added when non-empty).
    pub fn request(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.send(&bytes);
        self.read_response(method == "HEAD").expect("read response")
    }

    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.request("GET", host, path, &[], b"")
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 65536];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Reads one final response (interim 1xx responses are skipped).
    pub fn read_response(&mut self, head_request: bool) -> std::io::Result<Response> {
        loop {
            let r = self.read_one(head_request)?;
            if (100..200).contains(&r.status) && r.status != 101 {
                continue;
            }
            return Ok(r);
        }
    }

    /// Reads exactly one response, interim ones included.
    pub fn read_one(&mut self, head_request: bool) -> std::io::Result<Response> {
        let (status, version, headers) = loop {
            let mut hdrs = [httparse::EMPTY_HEADER; 128];
            let mut resp = httparse::Response::new(&mut hdrs);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let out = (
                        resp.code.unwrap_or(0),
                        resp.version.unwrap_or(1),
                        resp.headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_string(),
                                    String::from_utf8_lossy(h.value).to_string(),
                                )
                            })
                            .collect::<Vec<_>>(),
                    );
                    self.buf.drain(..n);
                    break out;
                }
                Ok(httparse::Status::Partial) => {
                    if self.fill()? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{e:?}: {:?}", String::from_utf8_lossy(&self.buf)),
                    ))
                }
            }
        };
        let mut r = Response {
            status,
            version,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(r);
        }
        if r.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                let line = self.line()?;
                let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad chunk size {line:?}"),
                    )
                })?;
                if size == 0 {
                    loop {
                        let t = self.line()?;
                        if t.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = t.split_once(':') {
                            r.trailers
                                .push((k.trim().to_string(), v.trim().to_string()));
                        }
                    }
                    break;
                }
                while self.buf.len() < size + 2 {
                    if self.fill()? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                r.body.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(cl) = r.header("content-length") {
            let n: usize = cl.trim().parse().unwrap_or(0);
            while self.buf.len() < n {
                if self.fill()? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
            r.body = self.buf.drain(..n).collect();
        } else {
            while self.fill()? > 0 {}
            r.body = std::mem::take(&mut self.buf);
        }
        Ok(r)
    }

    fn line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).to_string();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Everything the proxy sends until it closes (for raw checks).
    pub fn read_to_close(&mut self) -> Vec<u8> {
        while let Ok(n) = self.fill() {
            if n == 0 {
                break;
            }
        }
        std::mem::take(&mut self.buf)
    }
}

impl Conn {
    /// True if the proxy closed the connection (EOF or reset) within `wait`.
    pub fn is_closed_within(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let closed = match self.fill() {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        closed
    }
}

/// GET on a new connection.
pub fn get(port: u16, host: &str, path: &str) -> Response {
    Conn::open(port).get(host, path)
}
