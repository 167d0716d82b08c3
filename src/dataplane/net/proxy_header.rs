//! The PROXY protocol header (HAProxy's "PROXY protocol" v1 text and v2 binary forms) as a pure parser:
//! bytes in, a verdict out. README, "Behind a load balancer: PROXY protocol".
//!
//! [`parse`] looks at the first bytes a client sent and answers: a whole header (and its exact length,
//! so the bytes after it are the client's own), "send more" (a prefix of a valid header), or an error.
//! Every length is bounded before it is trusted: a v1 line is at most [`V1_MAX`] bytes, a v2 payload at
//! most [`V2_MAX_PAYLOAD`]; nothing is allocated. It must not read sockets, allocate, or panic on any
//! input: the socket side is `net::proxy_accept`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A v1 line, `PROXY ... \r\n` included, is at most this long (the protocol's own bound).
pub const V1_MAX: usize = 107;
/// The v2 fixed part: 12-byte signature, version/command, family, 2-byte length.
pub const V2_FIXED: usize = 16;
/// The largest v2 payload (addresses + TLVs) accepted. Real load balancers send tens of bytes (AWS NLB,
/// HAProxy with TLS TLVs a few hundred); a longer one is refused rather than buffered.
pub const V2_MAX_PAYLOAD: usize = 2048;
/// The most bytes [`parse`] ever needs to decide.
pub const MAX_HEADER: usize = V2_FIXED + V2_MAX_PAYLOAD;

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection was proxied for this client (`src`), which connected to `dst`.
    Proxied { src: SocketAddr, dst: SocketAddr },
    /// v2 `LOCAL` (the load balancer's own connection, e.g. a health check): use the socket address.
    Local,
    /// v1 `UNKNOWN`, or v2 `PROXY` with an unspecified or unix family: use the socket address.
    Unknown,
}

/// Why the bytes are not a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// Neither `PROXY ` nor the v2 signature.
    NotProxy,
    /// No `\r\n` within [`V1_MAX`] bytes.
    V1TooLong,
    /// A v1 line that does not follow the grammar (what is wrong).
    V1Malformed(&'static str),
    /// v2 with a version other than 2.
    V2Version(u8),
    /// v2 with a command other than LOCAL (0) and PROXY (1).
    V2Command(u8),
    /// v2 with an unknown address family or transport (DGRAM is not a stream).
    V2Family(u8),
    /// v2 payload longer than [`V2_MAX_PAYLOAD`].
    V2TooLong(usize),
    /// v2 payload too short for its address family.
    V2Short,
}

impl std::fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyHeaderError::NotProxy => write!(f, "no PROXY protocol header"),
            ProxyHeaderError::V1TooLong => write!(f, "PROXY v1 line longer than {V1_MAX} bytes"),
            ProxyHeaderError::V1Malformed(what) => write!(f, "malformed PROXY v1 line: {what}"),
            ProxyHeaderError::V2Version(v) => write!(f, "PROXY v2 header with version {v}"),
            ProxyHeaderError::V2Command(c) => write!(f, "PROXY v2 header with command {c}"),
            ProxyHeaderError::V2Family(b) => {
                write!(f, "PROXY v2 header with family/transport byte 0x{b:02x}")
            }
            ProxyHeaderError::V2TooLong(n) => write!(
                f,
                "PROXY v2 payload of {n} bytes (at most {V2_MAX_PAYLOAD} accepted)"
            ),
            ProxyHeaderError::V2Short => write!(f, "PROXY v2 payload too short for its addresses"),
        }
    }
}

impl std::error::Error for ProxyHeaderError {}

/// The verdict on the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A valid prefix: read more (never asked once `buf.len() >= MAX_HEADER`).
    Incomplete,
    /// A whole header of `len` bytes; the client's own bytes start at `buf[len]`.
    Done { len: usize, header: ProxyHeader },
}

/// Parses a PROXY header (v1 or v2) at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(Parsed::Incomplete)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        return if n < V1_PREFIX.len() {
            Ok(Parsed::Incomplete)
        } else {
            parse_v1(buf)
        };
    }
    Err(ProxyHeaderError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        // Only printable ASCII may come before the CRLF: a bad byte is an error now, not at 107.
        if window
            .iter()
            .any(|&b| !(b == b'\r' || (0x20..0x7f).contains(&b)))
        {
            return Err(ProxyHeaderError::V1Malformed(
                "a byte that is not printable ASCII",
            ));
        }
        return if buf.len() >= V1_MAX {
            Err(ProxyHeaderError::V1TooLong)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let len = cr + 2;
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..cr])
        .map_err(|_| ProxyHeaderError::V1Malformed("not ASCII"))?;
    if !line.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ProxyHeaderError::V1Malformed(
            "a byte that is not printable ASCII",
        ));
    }
    // `UNKNOWN` may be followed by anything up to the CRLF (the protocol says to ignore it).
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(Parsed::Done {
            len,
            header: ProxyHeader::Unknown,
        });
    }
    let mut parts = line.split(' ');
    let family = parts.next().unwrap_or("");
    let (src, dst, sport, dport) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
        _ => {
            return Err(ProxyHeaderError::V1Malformed(
                "expected 4 fields after the family",
            ))
        }
    };
    if parts.next().is_some() {
        return Err(ProxyHeaderError::V1Malformed(
            "more than 4 fields after the family",
        ));
    }
    let (src, dst): (IpAddr, IpAddr) = match family {
        "TCP4" => (
            IpAddr::V4(
                src.parse::<Ipv4Addr>()
                    .map_err(|_| ProxyHeaderError::V1Malformed("bad IPv4 source"))?,
            ),
            IpAddr::V4(
                dst.parse::<Ipv4Addr>()
                    .map_err(|_| ProxyHeaderError::V1Malformed("bad IPv4 destination"))?,
            ),
        ),
        "TCP6" => (
            IpAddr::V6(
                src.parse::<Ipv6Addr>()
                    .map_err(|_| ProxyHeaderError::V1Malformed("bad IPv6 source"))?,
            ),
            IpAddr::V6(
                dst.parse::<Ipv6Addr>()
                    .map_err(|_| ProxyHeaderError::V1Malformed("bad IPv6 destination"))?,
            ),
        ),
        _ => {
            return Err(ProxyHeaderError::V1Malformed(
                "family is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let sport = v1_port(sport).ok_or(ProxyHeaderError::V1Malformed("bad source port"))?;
    let dport = v1_port(dport).ok_or(ProxyHeaderError::V1Malformed("bad destination port"))?;
    Ok(Parsed::Done {
        len,
        header: ProxyHeader::Proxied {
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
        },
    })
}

/// A decimal port, 0-65535, digits only (no sign, at most 5 digits).
fn v1_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok()
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    if buf.len() < V2_FIXED {
        // Check what has arrived already, so garbage is refused without waiting.
        if let Some(&vc) = buf.get(12) {
            check_ver_cmd(vc)?;
        }
        if let Some(&fam) = buf.get(13) {
            check_family(fam)?;
        }
        return Ok(Parsed::Incomplete);
    }
    let cmd = check_ver_cmd(buf[12])?;
    let fam = check_family(buf[13])?;
    let payload = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if payload > V2_MAX_PAYLOAD {
        return Err(ProxyHeaderError::V2TooLong(payload));
    }
    let len = V2_FIXED + payload;
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[V2_FIXED..len];
    if cmd == 0 {
        // LOCAL: the addresses (if any) and TLVs are skipped.
        return Ok(Parsed::Done {
            len,
            header: ProxyHeader::Local,
        });
    }
    // The TLVs after the addresses are skipped whole: the payload length bounds them.
    let header = match fam >> 4 {
        1 => {
            if body.len() < 12 {
                return Err(ProxyHeaderError::V2Short);
            }
            let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            let sport = u16::from_be_bytes([body[8], body[9]]);
            let dport = u16::from_be_bytes([body[10], body[11]]);
            ProxyHeader::Proxied {
                src: SocketAddr::new(IpAddr::V4(src), sport),
                dst: SocketAddr::new(IpAddr::V4(dst), dport),
            }
        }
        2 => {
            if body.len() < 36 {
                return Err(ProxyHeaderError::V2Short);
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&body[0..16]);
            d.copy_from_slice(&body[16..32]);
            let sport = u16::from_be_bytes([body[32], body[33]]);
            let dport = u16::from_be_bytes([body[34], body[35]]);
            ProxyHeader::Proxied {
                src: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s)), sport),
                dst: SocketAddr::new(IpAddr::V6(Ipv6Addr::from(d)), dport),
            }
        }
        // AF_UNSPEC, AF_UNIX: no IP address to use.
        _ => ProxyHeader::Unknown,
    };
    Ok(Parsed::Done { len, header })
}

/// The command (0 LOCAL, 1 PROXY) of a version-2 ver/cmd byte.
fn check_ver_cmd(b: u8) -> Result<u8, ProxyHeaderError> {
    if b >> 4 != 2 {
        return Err(ProxyHeaderError::V2Version(b >> 4));
    }
    match b & 0x0f {
        c @ (0 | 1) => Ok(c),
        c => Err(ProxyHeaderError::V2Command(c)),
    }
}

/// Families UNSPEC/INET/INET6/UNIX with transport UNSPEC or STREAM.
fn check_family(b: u8) -> Result<u8, ProxyHeaderError> {
    if b >> 4 > 3 || b & 0x0f > 1 {
        return Err(ProxyHeaderError::V2Family(b));
    }
    Ok(b)
}

/// A v1 header line for `src` → `dst` (tests and tools).
pub fn encode_v1(src: SocketAddr, dst: SocketAddr) -> String {
    let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
}

/// A v2 `PROXY` header for `src` → `dst` followed by `tlvs` (raw TLV bytes), or a `LOCAL` one when
/// `addrs` is `None` (tests and tools).
pub fn encode_v2(addrs: Option<(SocketAddr, SocketAddr)>, tlvs: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    let mut body = Vec::new();
    match addrs {
        None => {
            out.push(0x20);
            out.push(0x00);
        }
        Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
            out.push(0x21);
            out.push(0x11);
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            body.extend_from_slice(&s.port().to_be_bytes());
            body.extend_from_slice(&d.port().to_be_bytes());
        }
        Some((s, d)) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.push(0x21);
            body.extend_from_slice(&v6(s).octets());
            body.extend_from_slice(&v6(d).octets());
            body.extend_from_slice(&s.port().to_be_bytes());
            body.extend_from_slice(&d.port().to_be_bytes());
        }
    }
    body.extend_from_slice(tlvs);
    let len = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let b = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n";
        assert_eq!(
            parse(b),
            Ok(Parsed::Done {
                len: 45,
                header: ProxyHeader::Proxied {
                    src: sa("192.0.2.1:56324"),
                    dst: sa("198.51.100.2:443")
                }
            })
        );
        let b = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n";
        match parse(b) {
            Ok(Parsed::Done {
                len,
                header: ProxyHeader::Proxied { src, .. },
            }) => {
                assert_eq!(len, b.len());
                assert_eq!(src, sa("[2001:db8::1]:1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\nxx"),
            Ok(Parsed::Done {
                len: 15,
                header: ProxyHeader::Unknown
            })
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").map(|p| matches!(
                p,
                Parsed::Done {
                    header: ProxyHeader::Unknown,
                    ..
                }
            )),
            Ok(true)
        );
    }

    #[test]
    fn v1_errors() {
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2",
        ] {
            assert!(
                matches!(parse(bad), Err(ProxyHeaderError::V1Malformed(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                parse(bad)
            );
        }
        let long = format!("PROXY TCP4 {}", "1".repeat(200));
        assert_eq!(parse(long.as_bytes()), Err(ProxyHeaderError::V1TooLong));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n"),
            Err(ProxyHeaderError::NotProxy)
        );
        assert_eq!(parse(b"\x16\x03\x01"), Err(ProxyHeaderError::NotProxy));
    }

    #[test]
    fn partial_input_asks_for_more() {
        let whole = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
        for n in 0..whole.len() {
            assert_eq!(parse(&whole[..n]), Ok(Parsed::Incomplete), "{n}");
        }
        let v2 = encode_v2(
            Some((sa("10.0.0.1:1000"), sa("10.0.0.2:80"))),
            &[0x03, 0, 4, 1, 2, 3, 4],
        );
        for n in 0..v2.len() {
            assert_eq!(parse(&v2[..n]), Ok(Parsed::Incomplete), "{n}");
        }
        assert!(matches!(parse(&v2), Ok(Parsed::Done { len, .. }) if len == v2.len()));
    }

    #[test]
    fn v2_forms() {
        let tlv = [0x04u8, 0, 3, b'a', b'b', b'c'];
        let h = encode_v2(Some((sa("10.0.0.1:1000"), sa("10.0.0.2:80"))), &tlv);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Done {
                len: h.len(),
                header: ProxyHeader::Proxied {
                    src: sa("10.0.0.1:1000"),
                    dst: sa("10.0.0.2:80")
                }
            })
        );
        let h6 = encode_v2(Some((sa("[2001:db8::7]:5"), sa("[2001:db8::8]:443"))), &[]);
        assert!(matches!(
            parse(&h6),
            Ok(Parsed::Done { header: ProxyHeader::Proxied { src, .. }, .. }) if src == sa("[2001:db8::7]:5")
        ));
        let local = encode_v2(None, &[]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Done {
                len: 16,
                header: ProxyHeader::Local
            })
        );
        // Version 1 in a v2 frame, unknown command, DGRAM, too long, too short.
        let mut bad = h.clone();
        bad[12] = 0x11;
        assert_eq!(parse(&bad), Err(ProxyHeaderError::V2Version(1)));
        bad[12] = 0x22;
        assert_eq!(parse(&bad), Err(ProxyHeaderError::V2Command(2)));
        let mut dgram = h.clone();
        dgram[13] = 0x12;
        assert_eq!(parse(&dgram), Err(ProxyHeaderError::V2Family(0x12)));
        let mut long = h.clone();
        long[14] = 0xff;
        assert_eq!(
            parse(&long),
            Err(ProxyHeaderError::V2TooLong(0xff00 | long[15] as usize))
        );
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert_eq!(parse(&short), Err(ProxyHeaderError::V2Short));
        // AF_UNSPEC with PROXY: no address to use.
        let mut unspec = V2_SIGNATURE.to_vec();
        unspec.extend_from_slice(&[0x21, 0x00, 0, 0]);
        assert_eq!(
            parse(&unspec),
            Ok(Parsed::Done {
                len: 16,
                header: ProxyHeader::Unknown
            })
        );
    }
}
