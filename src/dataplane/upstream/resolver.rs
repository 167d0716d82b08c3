//! Name resolution without blocking a worker: IP literals are parsed in place, names go to the small
//! blocking thread pool attached to each runtime (`getaddrinfo` may take seconds).
//!
//! Callers cache results; this module does not.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

/// Resolves `host:port` to addresses (IPv4 first).
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let name = host.to_string();
    let joined = monoio::spawn_blocking(move || {
        (name.as_str(), port)
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>())
    })
    .await;
    let mut addrs = match joined {
        Ok(result) => result?,
        Err(_) => return Err(io::Error::other("name resolution was cancelled")),
    };
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} has no address"),
        ));
    }
    addrs.sort_by_key(|a| a.is_ipv6());
    Ok(addrs)
}
