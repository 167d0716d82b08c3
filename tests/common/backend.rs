//! A real HTTP/1.1 backend for tests: a thread per connection, keep-alive, request bodies read in
//! Content-Length or chunked form and summarised (length and hash), behaviours chosen by path:
//!
//! | path | answer |
//! |---|---|
//! | anything else | 200, text echo: backend name, method, path, version, body length and hash, headers |
//! | `/status/N` | status N |
//! | `/size/N` | N bytes (deterministic pattern), Content-Length |
//! | `/chunked/N` | N bytes, chunked, with a chunk extension and a trailer |
//! | `/close/N` | N bytes delimited by closing the connection |
//! | `/slow/MS` | the echo after MS milliseconds |
//! | `/hang` | never answers |
//! | `/reset` | closes the connection without answering |
//! | `/204`, `/304` | no body |
//! | `/hop-headers` | hop-by-hop headers in the response |
//! | `/continues/N` | N interim `100 Continue` answers, then the echo |
//! | `/reset-mid/N` | a head announcing N bytes, half of them, then the connection ends |

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::free_port;

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicUsize,
    pub requests: AtomicUsize,
}

pub struct Backend {
    pub port: u16,
    pub name: String,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        Self::start_on(name, free_port())
    }

    pub fn start_on(name: &str, port: u16) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind backend");
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (s, st, o, n) = (stats.clone(), stop.clone(), open.clone(), name.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                s.connections.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = conn.try_clone() {
                    o.lock().unwrap().push(clone);
                }
                let (s2, st2, n2) = (s.clone(), st.clone(), n.clone());
                std::thread::spawn(move || serve(conn, &n2, &s2, &st2));
            }
        });
        Backend {
            port,
            name: name.to_string(),
            stats,
            stop,
            open,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes every open connection (the port then refuses connections).
    pub fn stop(&self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Closes idle keep-alive connections from the backend side (as a backend with a short keep-alive
    /// timeout would), while still accepting new ones.
    pub fn close_connections(&self) {
        for c in self.open.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// FNV-1a, to compare bodies without keeping them.
pub fn fnv(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash ^= u64::from(b);
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The deterministic body pattern of `/size/N` and friends.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 65536];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    fn line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            if self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads exactly `n` body bytes into the hash.
    fn body(&mut self, mut n: u64, len: &mut u64, hash: &mut u64) -> std::io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && self.fill()? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let take = (n as usize).min(self.buf.len());
            fnv(hash, &self.buf[..take]);
            *len += take as u64;
            self.buf.drain(..take);
            n -= take as u64;
        }
        Ok(())
    }
}

struct Request {
    method: String,
    path: String,
    version: u8,
    headers: Vec<(String, String)>,
    body_len: u64,
    body_hash: u64,
    keep_alive: bool,
}

fn read_request(c: &mut Conn) -> std::io::Result<Option<Request>> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&c.buf) {
            Ok(httparse::Status::Complete(n)) => {
                let method = req.method.unwrap_or("").to_string();
                let path = req.path.unwrap_or("").to_string();
                let version = req.version.unwrap_or(1);
                let hdrs: Vec<(String, String)> = req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_string(),
                            String::from_utf8_lossy(h.value).to_string(),
                        )
                    })
                    .collect();
                c.buf.drain(..n);
                let get = |name: &str| {
                    hdrs.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                };
                let conn_hdr = get("connection").unwrap_or_default().to_ascii_lowercase();
                let keep_alive = if version == 1 {
                    !conn_hdr.contains("close")
                } else {
                    conn_hdr.contains("keep-alive")
                };
                let mut body_len = 0;
                let mut body_hash = FNV_START;
                if get("transfer-encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
                {
                    loop {
                        let line = c.line()?;
                        let size_text = String::from_utf8_lossy(&line);
                        let size = u64::from_str_radix(
                            size_text.split(';').next().unwrap_or("").trim(),
                            16,
                        )
                        .map_err(|_| std::io::ErrorKind::InvalidData)?;
                        if size == 0 {
                            while !c.line()?.is_empty() {}
                            break;
                        }
                        c.body(size, &mut body_len, &mut body_hash)?;
                        if !c.line()?.is_empty() {
                            return Err(std::io::ErrorKind::InvalidData.into());
                        }
                    }
                } else if let Some(cl) = get("content-length") {
                    let n: u64 = cl
                        .trim()
                        .parse()
                        .map_err(|_| std::io::ErrorKind::InvalidData)?;
                    c.body(n, &mut body_len, &mut body_hash)?;
                }
                return Ok(Some(Request {
                    method,
                    path,
                    version,
                    headers: hdrs,
                    body_len,
                    body_hash,
                    keep_alive,
                }));
            }
            Ok(httparse::Status::Partial) => {
                if c.fill()? == 0 {
                    return Ok(None);
                }
            }
            Err(_) => return Err(std::io::ErrorKind::InvalidData.into()),
        }
    }
}

fn serve(stream: TcpStream, name: &str, stats: &Stats, stop: &AtomicBool) {
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        stream,
        buf: Vec::new(),
    };
    while let Ok(Some(req)) = read_request(&mut c) {
        stats.requests.fetch_add(1, Ordering::SeqCst);
        if respond(&mut c, &req, name, stop).is_err() || !req.keep_alive {
            break;
        }
    }
}

fn respond(c: &mut Conn, req: &Request, name: &str, stop: &AtomicBool) -> std::io::Result<()> {
    let head = req.method == "HEAD";
    let path = req.path.split('?').next().unwrap_or("").to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let arg = parts
        .get(1)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let conn_hdr = if req.keep_alive {
        ""
    } else {
        "Connection: close\r\n"
    };
    match parts[0] {
        "status" => {
            let body = format!("status {arg} from {name}\n");
            send(
                c,
                &format!(
                    "HTTP/1.1 {arg} Scripted\r\nContent-Length: {}\r\n{conn_hdr}\r\n",
                    body.len()
                ),
                body.as_bytes(),
                head,
            )
        }
        "size" => send(
            c,
            &format!("HTTP/1.1 200 OK\r\nContent-Length: {arg}\r\n{conn_hdr}\r\n"),
            &pattern(arg as usize),
            head,
        ),
        "chunked" => {
            c.stream.write_all(format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n{conn_hdr}\r\n").as_bytes())?;
            if head {
                return Ok(());
            }
            let data = pattern(arg as usize);
            for piece in data.chunks(8000) {
                c.stream
                    .write_all(format!("{:x};ext=1\r\n", piece.len()).as_bytes())?;
                c.stream.write_all(piece)?;
                c.stream.write_all(b"\r\n")?;
            }
            c.stream.write_all(b"0\r\nX-Checksum: done\r\n\r\n")
        }
        "close" => {
            c.stream
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            if !head {
                c.stream.write_all(&pattern(arg as usize))?;
            }
            let _ = c.stream.shutdown(Shutdown::Both);
            Err(std::io::ErrorKind::ConnectionAborted.into())
        }
        "slow" => {
            std::thread::sleep(Duration::from_millis(arg));
            echo(c, req, name, conn_hdr, head)
        }
        "hang" => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(std::io::ErrorKind::ConnectionAborted.into())
        }
        "reset" => {
            let _ = c.stream.shutdown(Shutdown::Both);
            Err(std::io::ErrorKind::ConnectionAborted.into())
        }
        "204" => send(
            c,
            &format!("HTTP/1.1 204 No Content\r\n{conn_hdr}\r\n"),
            b"",
            true,
        ),
        "304" => send(
            c,
            &format!("HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n{conn_hdr}\r\n"),
            b"",
            true,
        ),
        "continues" => {
            let interim = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(arg as usize);
            c.stream.write_all(&interim)?;
            echo(c, req, name, conn_hdr, head)
        }
        "reset-mid" => {
            let head_text = format!("HTTP/1.1 200 OK\r\nContent-Length: {arg}\r\n\r\n");
            c.stream.write_all(head_text.as_bytes())?;
            c.stream.write_all(&pattern(arg as usize / 2))?;
            // SO_LINGER 0: the last close sends a reset; the shutdown ends the stream at once even
            // though `Backend` keeps a clone of the socket.
            let _ = socket2::SockRef::from(&c.stream).set_linger(Some(Duration::ZERO));
            let _ = c.stream.shutdown(Shutdown::Both);
            Err(std::io::ErrorKind::ConnectionAborted.into())
        }
        "hop-headers" => {
            let body = b"hop";
            send(
                c,
                &format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n{conn_hdr}\r\n"
                ),
                body,
                head,
            )
        }
        _ => echo(c, req, name, conn_hdr, head),
    }
}

fn echo(
    c: &mut Conn,
    req: &Request,
    name: &str,
    conn_hdr: &str,
    head: bool,
) -> std::io::Result<()> {
    let mut body = format!(
        "backend: {name}\nmethod: {}\npath: {}\nversion: 1.{}\nbody-length: {}\nbody-hash: {:016x}\n",
        req.method, req.path, req.version, req.body_len, req.body_hash
    );
    for (k, v) in &req.headers {
        body.push_str(&format!("header: {k}: {v}\n"));
    }
    send(
        c,
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{conn_hdr}\r\n",
            body.len()
        ),
        body.as_bytes(),
        head,
    )
}

fn send(c: &mut Conn, head_text: &str, body: &[u8], head_only: bool) -> std::io::Result<()> {
    let mut out = head_text.as_bytes().to_vec();
    if !head_only {
        out.extend_from_slice(body);
    }
    c.stream.write_all(&out)
}

/// Accepts connections and reads from them, but never answers (a hung application).
pub struct BlackHole {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl BlackHole {
    pub fn start() -> BlackHole {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind black hole");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let st2 = st.clone();
                std::thread::spawn(move || {
                    conn.set_read_timeout(Some(Duration::from_millis(100))).ok();
                    let mut buf = [0u8; 4096];
                    while !st2.load(Ordering::SeqCst) {
                        if let Ok(0) = conn.read(&mut buf) {
                            break;
                        }
                    }
                });
            }
        });
        BlackHole { port, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Reads `limit` bytes of each request, then closes the connection (a backend dying mid-upload).
pub fn start_dropper(limit: usize) -> u16 {
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind dropper");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let mut total = 0;
                while total < limit {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n,
                    }
                }
                let _ = conn.shutdown(Shutdown::Both);
            });
        }
    });
    port
}
