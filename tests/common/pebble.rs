//! Pebble, the ACME test server (Debian package `pebble`), for one test: its HTTPS certificate made
//! with rcgen, its JSON configuration in a temporary folder, and `pebble-challtestsrv` as its DNS
//! server resolving every name to 127.0.0.1. Loopback only. Both processes are killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::tls::{insecure_client_config, TestCa};
use super::{free_port, wait_until, TempDir};

/// What Pebble validates against and how.
pub struct PebbleOptions {
    /// The port HTTP-01 validations connect to (the proxy's plain HTTP listener).
    pub http_port: u16,
    /// The port TLS-ALPN-01 validations connect to (the proxy's HTTPS listener).
    pub tls_port: u16,
    /// `certificateValidityPeriod` (seconds), when set.
    pub validity: Option<u64>,
    /// `PEBBLE_WFE_NONCEREJECT`: the percentage of good nonces Pebble rejects as bad.
    pub nonce_reject: u32,
}

impl PebbleOptions {
    pub fn http(http_port: u16) -> PebbleOptions {
        PebbleOptions {
            http_port,
            tls_port: free_port(),
            validity: None,
            nonce_reject: 0,
        }
    }
}

pub struct Pebble {
    pub port: u16,
    pub management_port: u16,
    /// The CA of Pebble's own HTTPS certificate (the proxy's `acme.caCertificate`).
    pub https_ca: PathBuf,
    pub dir: TempDir,
    pebble: Option<Child>,
    dns: Option<Child>,
    log: Arc<Mutex<String>>,
}

fn capture(child: &mut Child, sink: Arc<Mutex<String>>) {
    use std::io::BufRead;
    if let Some(out) = child.stdout.take() {
        let sink = sink.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
    }
}

impl Pebble {
    pub fn start(opts: PebbleOptions) -> Pebble {
        let dir = TempDir::new("pebble");
        let ca = TestCa::new();
        let (cert, key) = ca.issue_pem(&["localhost", "127.0.0.1"]);
        let https_ca = dir.path().join("https-ca.pem");
        std::fs::write(&https_ca, &ca.pem).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), key).unwrap();
        let port = free_port();
        let management_port = free_port();
        let dns_port = free_port();
        let dns_management = free_port();
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management_port}"),
                "certificate": dir.path().join("cert.pem"),
                "privateKey": dir.path().join("key.pem"),
                "httpPort": opts.http_port,
                "tlsPort": opts.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        if let Some(v) = opts.validity {
            config["pebble"]["certificateValidityPeriod"] = v.into();
        }
        let config_path = dir.path().join("pebble-config.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{dns_management}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pebble-challtestsrv (apt-get install pebble)");
        capture(&mut dns, log.clone());
        let mut pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", opts.nonce_reject.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pebble (apt-get install pebble)");
        capture(&mut pebble, log.clone());
        let p = Pebble {
            port,
            management_port,
            https_ca,
            dir,
            pebble: Some(pebble),
            dns: Some(dns),
            log,
        };
        let up = wait_until(Duration::from_secs(15), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
                && TcpStream::connect(("127.0.0.1", management_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", dns_management)).is_ok()
        });
        assert!(up, "pebble did not start:\n{}", p.log());
        p
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.port)
    }

    /// The proxy's `acme` section for this Pebble, with `extra` merged in.
    pub fn acme_config(&self, extra: serde_json::Value) -> serde_json::Value {
        let mut acme = serde_json::json!({
            "directory": self.directory(),
            "caCertificate": self.https_ca,
            "email": "ops@acme.test",
        });
        super::proxy::merge(&mut acme, extra);
        serde_json::json!({ "acme": acme })
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// GET on the management interface (HTTPS, Pebble's own certificate not checked: loopback).
    pub fn management_get(&self, path: &str) -> String {
        let config = insecure_client_config(Vec::new());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(config, name).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", self.management_port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        write!(
            tls,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        let _ = tls.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        body.to_string()
    }

    /// The root that signs Pebble's issued certificates (PEM).
    pub fn issuing_root(&self) -> String {
        self.management_get("/roots/0")
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in [self.pebble.take(), self.dns.take()].into_iter().flatten() {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
