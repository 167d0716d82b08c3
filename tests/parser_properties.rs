//! Property tests of the parsers that read hostile input (README, "Running the tests"): HTTP/1.x
//! request heads, the chunked transfer coding, RESP frames, PROXY protocol headers. Any input must give an answer without a
//! panic, within the stated bounds (no output larger than the input, no allocation that grows with a
//! declared length), and the head parser must agree with httparse, its reference, wherever httparse
//! accepts a head.

use hipache_tpc::dataplane::http1::chunked::ChunkedScanner;
use hipache_tpc::dataplane::http1::head::{Parsed, RequestHead, MAX_HEADERS};
use hipache_tpc::drivers::redis::resp::{frame_len, RespReader, MAX_FRAME_BYTES};
use proptest::prelude::*;

const MAX_HEAD: usize = 8192;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A request head built from plausible parts, sometimes broken by the byte edits applied after.
fn request_head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("HEAD".to_string()),
        Just("OPTIONS".to_string()),
        Just("CONNECT".to_string()),
        "[A-Z]{1,8}",
    ];
    let target = prop_oneof![
        "/[a-z0-9/?=&%._-]{0,40}",
        Just("*".to_string()),
        "http://[a-z.]{1,20}(:[0-9]{1,5})?/[a-z]{0,10}",
        "[a-z:/]{1,20}",
    ];
    let version = prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0"), Just("HTTP/2.0")];
    let name = prop_oneof![
        Just("Host".to_string()),
        Just("Content-Length".to_string()),
        Just("Transfer-Encoding".to_string()),
        Just("Connection".to_string()),
        Just("Expect".to_string()),
        Just("Upgrade".to_string()),
        "[A-Za-z_-]{1,20}",
    ];
    let value = prop_oneof![
        "[ -~]{0,30}",
        "[0-9]{1,5}",
        Just("chunked".to_string()),
        Just("close".to_string()),
        Just("100-continue".to_string()),
    ];
    let headers = prop::collection::vec((name, value), 0..12);
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3);
    (method, target, version, headers, edits).prop_map(|(m, t, v, hs, edits)| {
        let mut out = format!("{m} {t} {v}\r\n").into_bytes();
        for (n, val) in hs {
            out.extend_from_slice(format!("{n}: {val}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        for (at, byte) in edits {
            let i = at.index(out.len());
            out[i] = byte;
        }
        out
    })
}

/// What httparse says of the same bytes (with the same header limit).
fn reference(buf: &[u8]) -> Result<Option<(usize, usize)>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf)? {
        httparse::Status::Complete(n) => Ok(Some((n, req.headers.len()))),
        httparse::Status::Partial => Ok(None),
    }
}

fn check_head(buf: &[u8]) -> Result<(), TestCaseError> {
    let mut head = RequestHead::default();
    let ours = head.parse(buf, MAX_HEAD);
    if let Ok(Parsed::Complete) = ours {
        prop_assert!(head.len <= buf.len() && head.len <= MAX_HEAD);
        prop_assert!(head.headers.len() <= MAX_HEADERS);
        for h in &head.headers {
            prop_assert!(h.name.end as usize <= head.len && h.value.end as usize <= head.len);
        }
        for span in [head.method, head.target].into_iter().chain(head.host) {
            prop_assert!(span.start <= span.end && span.end as usize <= head.len);
        }
    }
    if let Err(e) = ours {
        prop_assert!(
            [400, 405, 417, 431, 501].contains(&e.status),
            "status {}",
            e.status
        );
    }
    // Agreement with httparse: the same head length and fields whenever it accepts the head; a head
    // it refuses is refused too. Ours is stricter on meaning (framing, Host), never on syntax.
    match reference(buf) {
        Ok(Some((n, fields))) if n <= MAX_HEAD => match ours {
            Ok(Parsed::Complete) => {
                prop_assert_eq!(head.len, n);
                prop_assert_eq!(head.headers.len(), fields);
            }
            Ok(Parsed::Partial) => prop_assert!(false, "httparse found a complete head"),
            Err(_) => {}
        },
        Ok(Some(_)) => prop_assert!(ours.is_err(), "a head over the limit is refused"),
        Ok(None) => prop_assert!(
            matches!(ours, Ok(Parsed::Partial)) || ours.is_err(),
            "httparse wants more bytes"
        ),
        Err(httparse::Error::TooManyHeaders) => {
            prop_assert_eq!(ours.map_err(|e| e.status), Err(431))
        }
        Err(_) => prop_assert!(ours.is_err(), "httparse refused it"),
    }
    Ok(())
}

/// A chunked body: chunks of data with optional leading zeros and extensions, optional trailers.
fn chunked_body() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let chunk = (
        prop::collection::vec(any::<u8>(), 1..300),
        0usize..40,
        prop::option::of("[a-z]{1,8}(=[a-z0-9]{1,8})?"),
        any::<bool>(),
    );
    let trailers = prop::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..3);
    (prop::collection::vec(chunk, 0..6), 0usize..30, trailers).prop_map(
        |(chunks, last_zeros, trailers)| {
            let mut wire = Vec::new();
            let mut data = Vec::new();
            for (bytes, zeros, ext, upper) in chunks {
                wire.extend(std::iter::repeat_n(b'0', zeros));
                let size = if upper {
                    format!("{:X}", bytes.len())
                } else {
                    format!("{:x}", bytes.len())
                };
                wire.extend_from_slice(size.as_bytes());
                if let Some(ext) = ext {
                    wire.push(b';');
                    wire.extend_from_slice(ext.as_bytes());
                }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(&bytes);
                wire.extend_from_slice(b"\r\n");
                data.extend_from_slice(&bytes);
            }
            wire.extend(std::iter::repeat_n(b'0', last_zeros + 1));
            wire.extend_from_slice(b"\r\n");
            for t in trailers {
                wire.extend_from_slice(t.as_bytes());
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            (wire, data)
        },
    )
}

/// Feeds `input` in pieces at `cuts`; returns (consumed, output, done) or the error.
fn feed(input: &[u8], cuts: &[usize], decode: bool) -> Result<(usize, Vec<u8>, bool), String> {
    let mut scanner = ChunkedScanner::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let (mut at, mut consumed, mut out) = (0, 0, Vec::new());
    for p in points {
        if p < at {
            continue;
        }
        let mut piece = input[at..p].to_vec();
        let before = piece.len();
        let r = if decode {
            scanner.decode(&mut piece)
        } else {
            scanner.scan(&mut piece)
        }
        .map_err(|e| e.0.to_string())?;
        assert!(r.produced <= r.consumed && r.consumed <= before);
        consumed += r.consumed;
        out.extend_from_slice(&piece[..r.produced]);
        if r.done {
            return Ok((consumed, out, true));
        }
        if r.consumed < before {
            return Err("stopped early without being done".into());
        }
        at = p;
    }
    Ok((consumed, out, false))
}

/// A valid RESP value, encoded.
fn resp_value() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,20}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
        "[a-zA-Z0-9 ]{0,20}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
        any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| {
            let mut v = format!("${}\r\n", b.len()).into_bytes();
            v.extend_from_slice(&b);
            v.extend_from_slice(b"\r\n");
            v
        }),
        Just(b"$-1\r\n".to_vec()),
        Just(b"_\r\n".to_vec()),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        (
            // (`>` push frames are left out: the redis crate wants them at top level with a kind.)
            prop_oneof![Just(b'*'), Just(b'~'), Just(b'%')],
            prop::collection::vec(inner, 0..6),
        )
            .prop_map(|(kind, items)| {
                let mut items = items;
                if kind == b'%' && items.len() % 2 == 1 {
                    items.pop();
                }
                let n = if kind == b'%' {
                    items.len() / 2
                } else {
                    items.len()
                };
                let mut v = format!("{}{n}\r\n", kind as char).into_bytes();
                for i in items {
                    v.extend_from_slice(&i);
                }
                v
            })
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn request_heads_any_bytes(buf in prop::collection::vec(any::<u8>(), 0..600)) {
        check_head(&buf)?;
    }

    #[test]
    fn request_heads_structured(buf in request_head()) {
        check_head(&buf)?;
        // Every prefix is Partial or an error, never a different complete head.
        let mut head = RequestHead::default();
        if let Ok(Parsed::Complete) = head.parse(&buf, MAX_HEAD) {
            let n = head.len;
            for cut in [n / 3, n / 2, n - 1] {
                let mut h = RequestHead::default();
                prop_assert!(!matches!(h.parse(&buf[..cut], MAX_HEAD), Ok(Parsed::Complete)));
            }
        }
    }

    #[test]
    fn chunked_valid_bodies_in_any_split(
        (wire, data) in chunked_body(),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
        tail in prop::collection::vec(any::<u8>(), 0..20),
    ) {
        let mut input = wire.clone();
        input.extend_from_slice(&tail);
        // Decode mode: exactly the data, and the end of the body found at the right byte.
        let (consumed, out, done) = feed(&input, &cuts, true).map_err(TestCaseError::fail)?;
        prop_assert!(done);
        prop_assert_eq!(consumed, wire.len());
        prop_assert_eq!(&out, &data);
        // Forward mode: what is sent is a valid body with the same data and no run of leading
        // zeros, whatever the split.
        let (consumed, sent, done) = feed(&input, &cuts, false).map_err(TestCaseError::fail)?;
        prop_assert!(done);
        prop_assert_eq!(consumed, wire.len());
        prop_assert!(sent.len() <= wire.len());
        // Size lines only: chunk data may itself start with "00".
        let mut pos = 0;
        while let Some(e) = sent[pos..].windows(2).position(|w| w == b"\r\n") {
            let line = &sent[pos..pos + e];
            prop_assert!(!line.starts_with(b"00"), "leading zeros left");
            let hex: Vec<u8> = line.iter().copied().take_while(u8::is_ascii_hexdigit).collect();
            let size = usize::from_str_radix(std::str::from_utf8(&hex).unwrap_or("0"), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            pos += e + 2 + size + 2;
            if pos > sent.len() {
                break;
            }
        }
        let (n, again, done) = feed(&sent, &[], true).map_err(TestCaseError::fail)?;
        prop_assert!(done && n == sent.len());
        prop_assert_eq!(&again, &data);
    }

    #[test]
    fn chunked_any_bytes(
        input in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
        decode in any::<bool>(),
    ) {
        // Errors are fine; panics, overlong output and reading past the end are not (checked in feed).
        let _ = feed(&input, &cuts, decode);
    }

    #[test]
    fn chunked_mutated(
        (wire, _) in chunked_body(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        decode in any::<bool>(),
    ) {
        let mut input = wire;
        for (at, b) in edits {
            let i = at.index(input.len());
            input[i] = b;
        }
        let _ = feed(&input, &[7, 31], decode);
    }

    #[test]
    fn resp_valid_frames(value in resp_value(), tail in prop::collection::vec(any::<u8>(), 0..10)) {
        let mut buf = value.clone();
        buf.extend_from_slice(&tail);
        prop_assert_eq!(frame_len(&buf), Ok(Some(value.len())));
        for cut in 0..value.len() {
            prop_assert_eq!(frame_len(&value[..cut]), Ok(None));
        }
        let mut reader = RespReader::new(buf);
        prop_assert!(reader.next_value().map_err(TestCaseError::fail)?.is_some());
    }

    #[test]
    fn resp_any_bytes(buf in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Some(n)) = frame_len(&buf) {
            prop_assert!(n <= buf.len());
        }
        let len = buf.len();
        let mut reader = RespReader::new(buf);
        for _ in 0..len + 1 {
            match reader.next_value() {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        prop_assert!(reader.capacity() <= (16 * 1024).max(len));
    }

    #[test]
    fn resp_declared_lengths_allocate_nothing(n in 0u64..u64::MAX, kind in prop::sample::select(vec![b'$', b'*', b'%', b'~', b'!', b'='])) {
        let buf = format!("{}{n}\r\n", kind as char).into_bytes();
        match frame_len(&buf) {
            Ok(None) => prop_assert!(
                (kind == b'$' || kind == b'!' || kind == b'=') && n <= MAX_FRAME_BYTES as u64
                    || n <= (1 << 20)
            ),
            Ok(Some(_)) => prop_assert!(n == 0),
            Err(_) => {}
        }
    }
}

/// A PROXY header (v1 or v2, with TLVs) for arbitrary addresses.
fn proxy_header() -> impl Strategy<Value = (Vec<u8>, std::net::SocketAddr)> {
    let v4 =
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| std::net::SocketAddr::from((ip, p)));
    let v6 = (any::<[u8; 16]>(), any::<u16>())
        .prop_map(|(ip, p)| std::net::SocketAddr::from((std::net::Ipv6Addr::from(ip), p)));
    let addr = prop_oneof![v4, v6];
    (
        addr,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(src, v2, tlv)| {
            let dst = if src.is_ipv4() {
                "10.0.0.1:80".parse().unwrap()
            } else {
                "[2001:db8::1]:80".parse().unwrap()
            };
            let bytes = if v2 {
                hipache_tpc::dataplane::net::proxy_header::encode_v2(Some((src, dst)), &tlv)
            } else {
                hipache_tpc::dataplane::net::proxy_header::encode_v1(src, dst).into_bytes()
            };
            (bytes, src)
        })
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes: an answer, never a panic; a header never claims more bytes than given, and a
    /// prefix is never still "incomplete" past the largest header.
    #[test]
    fn proxy_header_any_bytes(buf in prop::collection::vec(any::<u8>(), 0..400)) {
        use hipache_tpc::dataplane::net::proxy_header::{parse, Parsed, MAX_HEADER};
        match parse(&buf) {
            Ok(Parsed::Done { len, .. }) => prop_assert!(len <= buf.len()),
            Ok(Parsed::Incomplete) => prop_assert!(buf.len() < MAX_HEADER),
            Err(_) => {}
        }
    }

    /// Valid headers parse to their source at any split point: every strict prefix asks for more,
    /// and bytes after the header are not part of it.
    #[test]
    fn proxy_header_round_trip((bytes, src) in proxy_header(), tail in prop::collection::vec(any::<u8>(), 0..32)) {
        use hipache_tpc::dataplane::net::proxy_header::{parse, Parsed, ProxyHeader};
        for n in 0..bytes.len() {
            prop_assert_eq!(parse(&bytes[..n]), Ok(Parsed::Incomplete));
        }
        let mut all = bytes.clone();
        all.extend_from_slice(&tail);
        match parse(&all) {
            Ok(Parsed::Done { len, header: ProxyHeader::Proxied { src: got, .. } }) => {
                prop_assert_eq!(len, bytes.len());
                prop_assert_eq!(got, src);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// One byte changed in a valid header: still no panic, and never a length past the input.
    #[test]
    fn proxy_header_mutated((bytes, _src) in proxy_header(), at in any::<usize>(), to in any::<u8>()) {
        use hipache_tpc::dataplane::net::proxy_header::{parse, Parsed};
        let mut b = bytes;
        let i = at % b.len();
        b[i] = to;
        if let Ok(Parsed::Done { len, .. }) = parse(&b) {
            prop_assert!(len <= b.len());
        }
    }
}
