//! A real HTTP/2 client for tests: the `h2` crate on a tokio current-thread runtime, over h2c (prior
//! knowledge) or TLS with ALPN `h2`.

use bytes::Bytes;
use h2::client::SendRequest;
use http::Request;
use tokio::net::TcpStream;

use super::client::Response;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// An HTTP/2 connection with prior knowledge (h2c).
pub async fn connect_h2c(port: u16) -> Result<SendRequest<Bytes>, String> {
    connect_h2c_with(port, h2::client::Builder::new()).await
}

/// The same, with client settings (window sizes...).
pub async fn connect_h2c_with(
    port: u16,
    builder: h2::client::Builder,
) -> Result<SendRequest<Bytes>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (send, conn) = builder.handshake(tcp).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// An HTTP/2 connection over TLS; fails unless the server selects ALPN `h2`.
pub async fn connect_h2_tls(port: u16, sni: &str) -> Result<SendRequest<Bytes>, String> {
    let config = super::tls::insecure_client_config(vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("ALPN h2 not selected".into());
    }
    let (send, conn) = h2::client::handshake(tls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

/// Sends one request and reads the whole response (body included) into the shared `Response` type.
pub async fn request(
    send: &SendRequest<Bytes>,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Response, String> {
    let mut send = send.clone().ready().await.map_err(|e| e.to_string())?;
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{authority}{path}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(()).map_err(|e| e.to_string())?;
    let end = body.is_none();
    let (response, mut stream) = send.send_request(req, end).map_err(|e| e.to_string())?;
    if let Some(body) = body {
        send_body(&mut stream, Bytes::from(body)).await?;
    }
    let response = response.await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).to_string(),
            )
        })
        .collect();
    let mut recv = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        version: 2,
        headers,
        body: out,
        trailers: Vec::new(),
    })
}

/// Sends a body respecting flow control, then ends the stream.
pub async fn send_body(stream: &mut h2::SendStream<Bytes>, mut data: Bytes) -> Result<(), String> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len().min(1 << 20));
        let n = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) if n > 0 => n.min(data.len()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("stream closed".into()),
        };
        stream
            .send_data(data.split_to(n), false)
            .map_err(|e| e.to_string())?;
    }
    stream
        .send_data(Bytes::new(), true)
        .map_err(|e| e.to_string())
}
