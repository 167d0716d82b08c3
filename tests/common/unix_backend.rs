//! A real HTTP/1.1 backend on a unix socket, for `unix:` backend entries: a thread per connection,
//! keep-alive, and an echo body (`backend: NAME`, `connection: N`, `path: P`, `header: k: v` lines,
//! read by `Response::echo` / `seen_header`). Every answer has the status in [`UnixBackend::status`]
//! (200 unless set), so the active health checker can be shown a sick backend. A request with
//! `Upgrade: websocket` gets `101` and then every byte is echoed back (a tunnel stand-in).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;

pub struct UnixBackend {
    pub path: PathBuf,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// The status of every answer.
    pub status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl UnixBackend {
    pub fn start(name: &str, path: &Path) -> UnixBackend {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind unix backend");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, r, s, st, n) = (
            connections.clone(),
            requests.clone(),
            status.clone(),
            stop.clone(),
            name.to_string(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let id = c.fetch_add(1, Ordering::SeqCst) + 1;
                let (r, s, n) = (r.clone(), s.clone(), n.clone());
                std::thread::spawn(move || serve(conn, id, &n, &r, &s));
            }
        });
        UnixBackend {
            path: path.to_path_buf(),
            connections,
            requests,
            status,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("unix:{}", self.path.display())
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for UnixBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(mut s: UnixStream, id: usize, name: &str, requests: &AtomicUsize, status: &AtomicU16) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16384];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        requests.fetch_add(1, Ordering::SeqCst);
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body_len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < body_len {
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        buf.drain(..body_len);
        if get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
            let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
            if s.write_all(answer.as_bytes()).is_err() {
                return;
            }
            if !buf.is_empty() && s.write_all(&buf).is_err() {
                return;
            }
            loop {
                match s.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&tmp[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let mut body = format!("backend: {name}\nconnection: {id}\npath: {path}\n");
        for (k, v) in &headers {
            body.push_str(&format!("header: {k}: {v}\n"));
        }
        let code = status.load(Ordering::SeqCst);
        let answer = format!(
            "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
