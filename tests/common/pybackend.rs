//! A backend in its own process (python3), so that a test can freeze it with SIGSTOP: the kernel keeps
//! accepting connections for it, but nothing answers.
//!
//! | path | answer |
//! |---|---|
//! | `/CloudHealthCheck` (any method) | the status written in the `health` file (200 when absent); logged to `checks.log` as `<method> <Host> <User-Agent>` |
//! | `/status/N` | status N |
//! | anything else | 200 `<name> <path>` |

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until, TempDir};

const SCRIPT: &str = r#"
import sys, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
port, name, folder = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, head_only):
        if self.path == "/CloudHealthCheck":
            with open(os.path.join(folder, "checks.log"), "a") as f:
                f.write("%s %s %s\n" % (self.command, self.headers.get("Host"), self.headers.get("User-Agent")))
            try:
                with open(os.path.join(folder, "health")) as f:
                    code = int(f.read().strip())
            except Exception:
                code = 200
        elif self.path.startswith("/status/"):
            code = int(self.path[len("/status/"):])
        else:
            code = 200
        body = ("%s %s\n" % (name, self.path)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)
    def do_GET(self): self.answer(False)
    def do_POST(self): self.answer(False)
    def do_HEAD(self): self.answer(True)
    def log_message(self, *args): pass
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

pub struct PyBackend {
    pub port: u16,
    pub name: String,
    dir: TempDir,
    child: Option<Child>,
}

impl PyBackend {
    pub fn start(name: &str) -> PyBackend {
        Self::start_on(name, free_port())
    }

    pub fn start_on(name: &str, port: u16) -> PyBackend {
        let dir = TempDir::new("pybackend");
        let child = Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(port.to_string())
            .arg(name)
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 must be installed");
        let b = PyBackend {
            port,
            name: name.to_string(),
            dir,
            child: Some(child),
        };
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "python backend {name} did not start"
        );
        b
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// What `/CloudHealthCheck` answers from now on.
    pub fn set_health(&self, status: u16) {
        let tmp = self.path("health.tmp");
        std::fs::write(&tmp, status.to_string()).unwrap();
        std::fs::rename(tmp, self.path("health")).unwrap();
    }

    /// Every health check received: `<method> <Host> <User-Agent>` lines.
    pub fn checks(&self) -> Vec<String> {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.path("checks.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text.lines().map(str::to_string).collect()
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// Freezes the process (connections are still accepted by the kernel, nothing answers).
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
