//! A load client for `bench/proto.sh`'s `tls-redis` and `tls-files` scenarios: every request on a
//! new TLS connection whose SNI name rotates over N names, which wrk cannot do (it sends one name).
//! It measures what a full handshake per request costs a proxy that must pick one of N certificates.
//!
//! - `sni_rotate gen --names N --pattern s%d.sni.test --dir DIR`: a private CA (`DIR/ca.pem`) and one
//!   ECDSA P-256 leaf per name (`DIR/certs/<name>.crt`, `DIR/certs/<name>.key`: the `certificatesDir`
//!   layout; the bench also stores them in Redis as `tls:<name>`).
//! - `sni_rotate check --port P --names N --pattern ... --ca DIR/ca.pem`: one handshake per name,
//!   verified against the CA for that name (the right certificate is served for every name), and one
//!   request over it; exits 1 on the first mismatch.
//! - `sni_rotate load --port P --names N --pattern ... --threads T --duration S [--path /30]`: T
//!   threads, each a loop of connect, full handshake (TLS 1.3, no session resumption, ALPN
//!   http/1.1), `GET <path>` with `Connection: close`, read to the end; names taken in turn. Prints
//!   one JSON line: requests, seconds, req/s, p50/p99 latency (µs, connect to last byte), errors.
//!
//! The load client checks no signature and no certificate (the check command does), so that its own
//! cost per handshake stays below the server's (key exchange only). It is a measuring instrument,
//! not a client to copy: it trusts every certificate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

/// Latency samples kept per thread (beyond it, requests are counted but not sampled).
const MAX_SAMPLES: usize = 4_000_000;
/// Error messages kept for the report.
const MAX_ERROR_SAMPLES: usize = 5;

fn usage() -> ! {
    eprintln!(
        "usage: sni_rotate gen --names N --pattern PAT --dir DIR\n       \
         sni_rotate check --port P --names N --pattern PAT --ca FILE [--path /30]\n       \
         sni_rotate load --port P --names N --pattern PAT --threads T --duration S [--path /30]\n\
         PAT holds %d, replaced by 0..N-1 (s%d.sni.test)"
    );
    std::process::exit(2)
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("sni_rotate: {msg}");
    std::process::exit(1)
}

struct Args {
    names: usize,
    pattern: String,
    dir: Option<PathBuf>,
    port: u16,
    ca: Option<PathBuf>,
    threads: usize,
    duration: f64,
    path: String,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Args {
    let mut a = Args {
        names: 1000,
        pattern: "s%d.sni.test".into(),
        dir: None,
        port: 0,
        ca: None,
        threads: 16,
        duration: 10.0,
        path: "/30".into(),
    };
    while let Some(opt) = it.next() {
        let Some(val) = it.next() else { usage() };
        let num = |v: &str| -> f64 {
            v.parse()
                .unwrap_or_else(|_| fail(format!("{opt} needs a number, got {v:?}")))
        };
        match opt.as_str() {
            "--names" => a.names = num(&val) as usize,
            "--pattern" => a.pattern = val,
            "--dir" => a.dir = Some(val.into()),
            "--port" => a.port = num(&val) as u16,
            "--ca" => a.ca = Some(val.into()),
            "--threads" => a.threads = num(&val) as usize,
            "--duration" => a.duration = num(&val),
            "--path" => a.path = val,
            _ => usage(),
        }
    }
    if a.names == 0 || a.threads == 0 || !a.pattern.contains("%d") {
        usage()
    }
    a
}

fn name(pattern: &str, i: usize) -> String {
    pattern.replacen("%d", &i.to_string(), 1)
}

fn main() {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    let a = parse_args(it);
    match cmd.as_str() {
        "gen" => gen(&a),
        "check" => check(&a),
        "load" => load(&a),
        _ => usage(),
    }
}

fn gen(a: &Args) {
    let Some(dir) = &a.dir else { usage() };
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap_or_else(|e| fail(format!("{}: {e}", certs.display())));
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail(e));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "hipache-tpc bench CA");
    let ca_key = KeyPair::generate().unwrap_or_else(|e| fail(e));
    let ca_cert = ca.self_signed(&ca_key).unwrap_or_else(|e| fail(e));
    write(&dir.join("ca.pem"), &ca_cert.pem());
    let issuer = Issuer::from_params(&ca, &ca_key);
    for i in 0..a.names {
        let n = name(&a.pattern, i);
        let mut params = CertificateParams::new(vec![n.clone()]).unwrap_or_else(|e| fail(e));
        params.distinguished_name.push(DnType::CommonName, &n);
        let key = KeyPair::generate().unwrap_or_else(|e| fail(e));
        let cert = params.signed_by(&key, &issuer).unwrap_or_else(|e| fail(e));
        write(&certs.join(format!("{n}.crt")), &cert.pem());
        write(&certs.join(format!("{n}.key")), &key.serialize_pem());
    }
    eprintln!(
        "sni_rotate: {} certificates in {}",
        a.names,
        certs.display()
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| fail(format!("{}: {e}", path.display())));
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration: TLS 1.3, no resumption (every connection a full handshake), ALPN
/// http/1.1; verifying against `ca` when given, trusting everything otherwise.
fn client_config(ca: Option<&Path>) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap_or_else(|e| fail(e));
    let mut config = match ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(path).unwrap_or_else(|e| fail(e)) {
                roots
                    .add(c.unwrap_or_else(|e| fail(e)))
                    .unwrap_or_else(|e| fail(e));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustAll(
                provider()
                    .signature_verification_algorithms
                    .supported_schemes(),
            )))
            .with_no_client_auth(),
    };
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One request on a new connection; the status line's code.
fn request(config: &Arc<ClientConfig>, port: u16, host: &str, path: &str) -> Result<u16, String> {
    let server = ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(config.clone(), server).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("handshake or write: {e}"))?;
    let mut body = Vec::with_capacity(512);
    match tls.read_to_end(&mut body) {
        Ok(_) => {}
        // A server closing without close_notify after a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !body.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let code = body
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "no HTTP status line: {:?}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            )
        })?;
    Ok(code)
}

fn check(a: &Args) {
    let Some(ca) = &a.ca else { usage() };
    let config = client_config(Some(ca));
    for i in 0..a.names {
        let n = name(&a.pattern, i);
        match request(&config, a.port, &n, &a.path) {
            Ok(200) => {}
            Ok(code) => fail(format!("{n}: status {code}")),
            Err(e) => fail(format!("{n}: {e}")),
        }
    }
    eprintln!(
        "sni_rotate: port {}: the certificate of each of the {} names verified, 200 for each",
        a.port, a.names
    );
}

fn load(a: &Args) {
    let config = client_config(None);
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new((0usize, Vec::<String>::new())));
    let names: Arc<Vec<String>> = Arc::new((0..a.names).map(|i| name(&a.pattern, i)).collect());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.duration);
    let threads: Vec<_> = (0..a.threads)
        .map(|_| {
            let (config, next, errors, names) =
                (config.clone(), next.clone(), errors.clone(), names.clone());
            let (port, path) = (a.port, a.path.clone());
            std::thread::spawn(move || {
                let mut samples: Vec<u32> = Vec::with_capacity(64 * 1024);
                let mut done = 0usize;
                while Instant::now() < deadline {
                    let host = &names[next.fetch_add(1, Ordering::Relaxed) % names.len()];
                    let t = Instant::now();
                    let result = request(&config, port, host, &path);
                    let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    let problem = match result {
                        Ok(200) => None,
                        Ok(code) => Some(format!("{host}: status {code}")),
                        Err(e) => Some(format!("{host}: {e}")),
                    };
                    match problem {
                        None => {
                            done += 1;
                            if samples.len() < MAX_SAMPLES {
                                samples.push(us);
                            }
                        }
                        Some(p) => {
                            if let Ok(mut e) = errors.lock() {
                                e.0 += 1;
                                if e.1.len() < MAX_ERROR_SAMPLES {
                                    e.1.push(p);
                                }
                            }
                        }
                    }
                }
                (done, samples)
            })
        })
        .collect();
    let mut done = 0;
    let mut samples = Vec::new();
    for t in threads {
        let (d, s) = t.join().unwrap_or_else(|_| fail("a load thread panicked"));
        done += d;
        samples.extend(s);
    }
    let seconds = started.elapsed().as_secs_f64();
    samples.sort_unstable();
    let pct = |p: f64| -> Option<u32> {
        (!samples.is_empty()).then(|| samples[((samples.len() - 1) as f64 * p).round() as usize])
    };
    let (error_count, error_samples) = errors
        .lock()
        .map(|e| (e.0, e.1.clone()))
        .unwrap_or_default();
    println!(
        "{{\"requests\":{done},\"seconds\":{seconds:.3},\"rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\
         \"names\":{},\"threads\":{},\"error_count\":{error_count},\"errors\":{}}}",
        done as f64 / seconds,
        pct(0.50).map_or("null".into(), |v| v.to_string()),
        pct(0.99).map_or("null".into(), |v| v.to_string()),
        a.names,
        a.threads,
        json_strings(&error_samples),
    );
}

fn json_strings(v: &[String]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|s| {
            let escaped: String = s
                .chars()
                .flat_map(|c| match c {
                    '"' => vec!['\\', '"'],
                    '\\' => vec!['\\', '\\'],
                    c if c.is_control() => vec![' '],
                    c => vec![c],
                })
                .collect();
            format!("\"{escaped}\"")
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// Trusts every certificate and signature (the load runs; `check` verifies).
#[derive(Debug)]
struct TrustAll(Vec<SignatureScheme>);

impl ServerCertVerifier for TrustAll {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _m: &[u8],
        _c: &CertificateDer<'_>,
        _d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}
