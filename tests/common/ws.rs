//! WebSocket for tests: an echo backend (tungstenite), a raw upgrade backend for byte-level checks
//! (early data, half-close), and clients over plain TCP and TLS.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tungstenite::handshake::server::{Request, Response};
use tungstenite::{Message, WebSocket};

use super::free_port;

/// The headers of one upgrade request.
pub type SeenHeaders = Vec<(String, String)>;

/// Echoes every message; records the headers of each upgrade request.
pub struct WsEcho {
    pub port: u16,
    pub upgrades: Arc<AtomicUsize>,
    pub headers: Arc<Mutex<Vec<SeenHeaders>>>,
}

impl WsEcho {
    pub fn start() -> WsEcho {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let upgrades = Arc::new(AtomicUsize::new(0));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let (u, h) = (upgrades.clone(), headers.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (u, h) = (u.clone(), h.clone());
                std::thread::spawn(move || {
                    #[allow(clippy::result_large_err)]
                    let callback = |req: &Request, resp: Response| {
                        let hs = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.to_string(),
                                    String::from_utf8_lossy(v.as_bytes()).to_string(),
                                )
                            })
                            .collect();
                        h.lock().unwrap().push(hs);
                        Ok(resp)
                    };
                    let Ok(mut ws) = tungstenite::accept_hdr(stream, callback) else {
                        return;
                    };
                    u.fetch_add(1, Ordering::SeqCst);
                    while let Ok(msg) = ws.read() {
                        let echo = matches!(msg, Message::Text(_) | Message::Binary(_));
                        if matches!(msg, Message::Close(_)) || (echo && ws.send(msg).is_err()) {
                            break;
                        }
                    }
                });
            }
        });
        WsEcho {
            port,
            upgrades,
            headers,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A header of the last upgrade request the backend saw.
    pub fn last_header(&self, name: &str) -> Option<String> {
        let all = self.headers.lock().unwrap();
        all.last()?
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

/// Answers any request with `101`, plus `greeting` right behind it; then echoes bytes until the client
/// half-closes, then sends `EOF after <n> bytes` and closes.
pub fn start_raw_upgrade(greeting: &'static [u8]) -> u16 {
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let mut out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n".to_vec();
                out.extend_from_slice(greeting);
                if stream.write_all(&out).is_err() {
                    return;
                }
                let mut buf = [0u8; 65536];
                let mut total = 0;
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            total += n;
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = stream.write_all(format!("EOF after {total} bytes").as_bytes());
                let _ = stream.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

/// A WebSocket client through the proxy on `port`, for `Host: host`.
pub fn ws_connect(port: u16, host: &str, path: &str) -> Result<WebSocket<TcpStream>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let (ws, _) =
        tungstenite::client(format!("ws://{host}{path}"), tcp).map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The same over TLS (SNI = host).
pub fn wss_connect(
    port: u16,
    host: &str,
    path: &str,
) -> Result<WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>, String> {
    let tls = super::tls::connect(port, super::tls::ClientOptions::sni(host))?;
    let stream = tls.conn.stream;
    let (ws, _) =
        tungstenite::client(format!("wss://{host}{path}"), stream).map_err(|e| e.to_string())?;
    Ok(ws)
}

/// The raw upgrade request a browser would send.
pub fn upgrade_request(host: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}
