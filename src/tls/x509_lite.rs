//! A minimal DER walk of an X.509 certificate for the two facts rustls and webpki do not expose:
//! `notAfter` (to skip expired certificates, README "Certificates in Redis") and the issuer's common
//! name (for the admin API's certificate list).
//!
//! Reads only; never allocates more than the issuer name; every length is checked against the input,
//! so hostile bytes give `None`, never a panic.

/// One DER element: (tag, content, rest of the input after it).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;

/// The fields of tbsCertificate up to and including `validity`: (issuer, validity).
fn issuer_and_validity(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, cert, _) = element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    let (_serial_tag, _, r) = element(rest)?;
    let (_sig_alg, _, r) = element(r)?;
    let (tag, issuer, r) = element(r)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, validity, _) = element(r)?;
    if tag != SEQUENCE {
        return None;
    }
    Some((issuer, validity))
}

/// `notAfter` of a DER certificate, as unix seconds.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (_, validity) = issuer_and_validity(der)?;
    let (_, _, rest) = element(validity)?; // notBefore
    let (tag, time, _) = element(rest)?;
    parse_time(tag, time)
}

/// The issuer's common name (or, without one, its organisation), if any.
pub fn issuer_name(der: &[u8]) -> Option<String> {
    let (issuer, _) = issuer_and_validity(der)?;
    let mut cn = None;
    let mut org = None;
    let mut rdns = issuer;
    // Name ::= SEQUENCE OF SET OF SEQUENCE { OID, value }
    while !rdns.is_empty() {
        let (_, set, r) = element(rdns)?;
        rdns = r;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, r) = element(atvs)?;
            atvs = r;
            let (tag, oid, r) = element(atv)?;
            if tag != 0x06 {
                continue;
            }
            let (_, value, _) = element(r)?;
            let text = || std::str::from_utf8(value).ok().map(str::to_string);
            match oid {
                [0x55, 0x04, 0x03] => cn = text(),
                [0x55, 0x04, 0x0a] => org = text(),
                _ => {}
            }
        }
    }
    cn.or(org)
}

/// UTCTime (0x17, `YYMMDDHHMMSSZ`) or GeneralizedTime (0x18, `YYYYMMDDHHMMSSZ`) to unix seconds.
fn parse_time(tag: u8, t: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<i64> {
        let mut v = 0i64;
        for &c in s {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    let (year, rest) = match tag {
        0x17 if t.len() == 13 => {
            let yy = digits(&t[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &t[2..])
        }
        0x18 if t.len() == 15 => (digits(&t[..4])?, &t[4..]),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(&rest[0..2])?;
    let day = digits(&rest[2..4])?;
    let hour = digits(&rest[4..6])?;
    let min = digits(&rest[6..8])?;
    let sec = digits(&rest[8..10])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(parse_time(0x17, b"261206120000Z"), Some(1_796_558_400));
        assert_eq!(parse_time(0x18, b"20261206120000Z"), Some(1_796_558_400));
        assert_eq!(parse_time(0x18, b"99991231235959Z"), Some(253_402_300_799));
        assert_eq!(parse_time(0x17, b"2612061200Z"), None);
        assert_eq!(parse_time(0x17, b"261306120000Z"), None);
    }

    #[test]
    fn hostile_bytes_give_none() {
        for input in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 2, 3, 4, 5],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x30, 0x02, 0x30, 0x00],
        ] {
            assert_eq!(not_after(input), None);
            assert_eq!(issuer_name(input), None);
        }
    }
}
