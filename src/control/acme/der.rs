//! Reads the two facts ACME needs from an issued certificate: its serial number and its `notAfter`
//! (README "Automatic HTTPS (ACME)": the `notAfter` field of `tls:<name>`). A small, bounded DER
//! walk over the fixed start of an X.509 `TBSCertificate`; anything unexpected is an error, never a
//! panic.
//!
//! It does not verify anything (the CA's chain is checked by whoever serves it).

/// One TLV: (tag, contents, rest).
fn tlv(data: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "malformed DER in the certificate".to_string();
    let (&tag, rest) = data.split_first().ok_or_else(bad)?;
    let (&first, mut rest) = rest.split_first().ok_or_else(bad)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// (serial number bytes, notAfter as unix seconds) of a DER certificate.
pub fn serial_and_not_after(cert: &[u8]) -> Result<(Vec<u8>, u64), String> {
    let (tag, certificate, _) = tlv(cert)?;
    if tag != 0x30 {
        return Err("not an X.509 certificate".into());
    }
    let (tag, tbs, _) = tlv(certificate)?;
    if tag != 0x30 {
        return Err("not an X.509 certificate".into());
    }
    let (mut tag, mut value, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        // [0] version
        (tag, value, rest) = tlv(rest)?;
    }
    if tag != 0x02 {
        return Err("certificate without a serial number".into());
    }
    let serial = value.to_vec();
    let (_, _, rest) = tlv(rest)?; // signature algorithm
    let (_, _, rest) = tlv(rest)?; // issuer
    let (tag, validity, _) = tlv(rest)?;
    if tag != 0x30 {
        return Err("certificate without a validity".into());
    }
    let (_, _, after) = tlv(validity)?; // notBefore
    let (tag, not_after, _) = tlv(after)?;
    Ok((serial, parse_time(tag, not_after)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as unix seconds.
fn parse_time(tag: u8, text: &[u8]) -> Result<u64, String> {
    let bad = || "malformed certificate time".to_string();
    let digits = |s: &[u8]| -> Result<u32, String> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(s.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let (year, rest) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = digits(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return Err(bad()),
    };
    if rest[10] != b'Z' {
        return Err(bad());
    }
    let (month, day) = (digits(&rest[0..2])?, digits(&rest[2..4])?);
    let (h, m, s) = (
        digits(&rest[4..6])?,
        digits(&rest[6..8])?,
        digits(&rest[8..10])?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err(bad());
    }
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(h * 3600 + m * 60 + s);
    u64::try_from(secs).map_err(|_| bad())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time(0x17, b"700101000000Z").unwrap(), 0);
        assert_eq!(parse_time(0x17, b"261206231000Z").unwrap(), 1_796_598_600);
        assert_eq!(parse_time(0x18, b"20261206231000Z").unwrap(), 1_796_598_600);
        assert!(parse_time(0x17, b"2612062310000").is_err());
        assert!(parse_time(0x17, b"261306231000Z").is_err());
        assert!(parse_time(0x05, b"").is_err());
    }

    #[test]
    fn junk_never_panics() {
        for data in [
            &b""[..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x03, 0x30, 0x01, 0x02],
            &[0x30, 0x82, 0xff, 0xff],
        ] {
            assert!(serial_and_not_after(data).is_err());
        }
    }
}
