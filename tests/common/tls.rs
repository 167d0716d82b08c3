//! TLS for tests: a private CA issuing certificates (rcgen), and a rustls client that records which
//! certificate the server presented.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

/// A certificate authority for one test.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pub pem: String,
}

/// A certificate and key written to files.
pub struct IssuedCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "hipache-tpc test CA");
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { params, key, pem }
    }

    /// Issues a leaf for `names`; returns (cert PEM, key PEM).
    pub fn issue_pem(&self, names: &[&str]) -> (String, String) {
        self.issue_pem_with(names, |_| {})
    }

    /// As [`TestCa::issue_pem`], with the parameters adjusted first (validity dates...).
    pub fn issue_pem_with(
        &self,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("x"));
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Issues a leaf and writes `<dir>/<stem>.crt` and `<dir>/<stem>.key`.
    pub fn issue_files(&self, dir: &Path, stem: &str, names: &[&str]) -> IssuedCert {
        let (cert, key) = self.issue_pem(names);
        let c = dir.join(format!("{stem}.crt"));
        let k = dir.join(format!("{stem}.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        IssuedCert { cert: c, key: k }
    }
}

/// Accepts any certificate, and remembers the chain presented.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = self.seen.lock().unwrap();
        seen.clear();
        seen.push(end_entity.clone().into_owned());
        seen.extend(intermediates.iter().map(|c| c.clone().into_owned()));
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
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Options for [`connect`].
pub struct ClientOptions {
    /// `None`: send no SNI.
    pub sni: Option<String>,
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    pub alpn: Vec<Vec<u8>>,
}

impl ClientOptions {
    pub fn sni(name: &str) -> ClientOptions {
        ClientOptions {
            sni: Some(name.to_string()),
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: Vec::new(),
        }
    }
}

/// A finished TLS connection and what the server presented.
pub struct TlsConn {
    /// HTTP over the TLS stream (`conn.stream.conn` is the rustls connection).
    pub conn: super::client::Conn<StreamOwned<ClientConnection, TcpStream>>,
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
}

impl TlsConn {
    /// The SAN DNS names of the presented leaf.
    pub fn leaf_names(&self) -> Vec<String> {
        let cert = webpki::EndEntityCert::try_from(&self.chain[0]).unwrap();
        cert.valid_dns_names().map(str::to_string).collect()
    }

    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.conn.stream.conn.alpn_protocol().map(<[u8]>::to_vec)
    }

    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.stream.conn.protocol_version()
    }

    /// GET over this connection.
    pub fn get(&mut self, host: &str, path: &str) -> super::client::Response {
        self.conn.get(host, path)
    }
}

/// Connects and completes a handshake.
pub fn connect(port: u16, opts: ClientOptions) -> Result<TlsConn, String> {
    let recorder = Arc::new(Recorder::default());
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&opts.versions)
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(recorder.clone())
            .with_no_client_auth();
    config.alpn_protocols = opts.alpn.clone();
    config.enable_sni = opts.sni.is_some();
    let name = ServerName::try_from(opts.sni.clone().unwrap_or_else(|| "no-sni.invalid".into()))
        .map_err(|e| e.to_string())?;
    let conn = ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| e.to_string())?;
    }
    let chain = recorder.seen.lock().unwrap().clone();
    Ok(TlsConn {
        conn: super::client::Conn::over(stream),
        chain,
    })
}

/// Reads until the peer closes (for raw checks).
pub fn read_all<R: Read>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = r.read_to_end(&mut out);
    out
}

/// A client configuration that accepts any certificate and offers `alpn`.
pub fn insecure_client_config(alpn: Vec<Vec<u8>>) -> Arc<ClientConfig> {
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Recorder::default()))
            .with_no_client_auth();
    config.alpn_protocols = alpn;
    Arc::new(config)
}
