//! Host normalisation and the ordered list of frontend keys to look up (docs/compatibility.md §2).
//!
//! `Host: A.Example.COM:8080.` becomes `a.example.com`; its candidates are the exact name, then
//! `*.<suffix>` for every proper suffix of at most 5 labels (longest first), then `*`.
//!
//! The Host is client input: a name over [`MAX_HOST_LEN`] bytes or with a label over
//! [`MAX_LABEL_LEN`] is refused here, before it is copied, looked up or cached (README, "Limits").

/// Maximum number of labels in a wildcard suffix (`*.b.c.d.e.f` has 5).
pub const MAX_WILDCARD_LABELS: usize = 5;

/// Longest host name accepted (RFC 1035's 253 characters, without port or trailing dot).
pub const MAX_HOST_LEN: usize = 253;
/// Longest label (between dots) accepted.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a Host header cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum HostError {
    Empty,
    Invalid,
    /// Over [`MAX_HOST_LEN`] bytes, or a label over [`MAX_LABEL_LEN`].
    TooLong,
}

/// Normalises a Host header value into `out` (cleared first): port stripped, lowercased, one trailing
/// dot dropped. IPv6 literals keep their brackets (`[::1]:80` → `[::1]`).
pub fn normalize_host_into(raw: &[u8], out: &mut String) -> Result<(), HostError> {
    out.clear();
    let raw = trim_ows(raw);
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    let host: &[u8] = if raw[0] == b'[' {
        let end = raw
            .iter()
            .position(|&b| b == b']')
            .ok_or(HostError::Invalid)?;
        let rest = &raw[end + 1..];
        if !(rest.is_empty() || (rest[0] == b':' && rest[1..].iter().all(u8::is_ascii_digit))) {
            return Err(HostError::Invalid);
        }
        &raw[..=end]
    } else {
        match raw.iter().rposition(|&b| b == b':') {
            Some(i) if raw[i + 1..].iter().all(u8::is_ascii_digit) => &raw[..i],
            Some(_) => return Err(HostError::Invalid),
            None => raw,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    if host[0] != b'[' && host.split(|&b| b == b'.').any(|l| l.len() > MAX_LABEL_LEN) {
        return Err(HostError::TooLong);
    }
    for &b in host {
        // Registered names, IPv4, bracketed IPv6 (and the odd underscore seen in the wild).
        let ok = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':' | b'*');
        if !ok {
            return Err(HostError::Invalid);
        }
        out.push(b.to_ascii_lowercase() as char);
    }
    Ok(())
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Calls `f` with each candidate key for a normalised host, in lookup order.
pub fn for_each_candidate(host: &str, mut f: impl FnMut(&str)) {
    f(host);
    if !host.starts_with('[') {
        // Dots that start a suffix, from the right: "a.b.c" has suffixes "c" and "b.c".
        let dots: Vec<usize> = host.match_indices('.').map(|(i, _)| i).collect();
        let suffixes = dots.len().min(MAX_WILDCARD_LABELS);
        let mut key = String::with_capacity(host.len() + 2);
        // Longest first: the suffix starting after the `suffixes`-th dot from the right.
        for k in (1..=suffixes).rev() {
            let dot = dots[dots.len() - k];
            key.clear();
            key.push('*');
            key.push_str(&host[dot..]);
            f(&key);
        }
    }
    if host != "*" {
        f("*");
    }
}

/// The candidate keys as a vector (used where a list is needed, e.g. building a pipeline).
pub fn candidates(host: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(8);
    for_each_candidate(host, |k| out.push(k.to_string()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<String, HostError> {
        let mut s = String::new();
        normalize_host_into(raw.as_bytes(), &mut s).map(|_| s)
    }

    #[test]
    fn normalisation() {
        assert_eq!(norm("A.com:8080").unwrap(), "a.com");
        assert_eq!(norm("WWW.Example.COM").unwrap(), "www.example.com");
        assert_eq!(norm("a.com.").unwrap(), "a.com");
        assert_eq!(norm("a.com.:80").unwrap(), "a.com");
        assert_eq!(norm("[::1]:80").unwrap(), "[::1]");
        assert_eq!(norm("[::1]").unwrap(), "[::1]");
        assert_eq!(norm(" a.com ").unwrap(), "a.com");
        assert_eq!(norm(""), Err(HostError::Empty));
        assert_eq!(norm("a.com:x"), Err(HostError::Invalid));
        assert_eq!(norm("a com"), Err(HostError::Invalid));
        assert_eq!(norm("a/b"), Err(HostError::Invalid));
    }

    #[test]
    fn length_bounds() {
        let label = "a".repeat(63);
        let name = format!("{label}.{label}.{label}.{}", "b".repeat(61)); // 253 bytes
        assert_eq!(name.len(), 253);
        assert_eq!(norm(&name).unwrap(), name);
        assert_eq!(norm(&format!("{name}.:8080")).unwrap(), name);
        assert_eq!(norm(&format!("{name}b")), Err(HostError::TooLong));
        assert_eq!(norm(&format!("{label}a.com")), Err(HostError::TooLong));
        assert_eq!(norm(&"x".repeat(30_000)), Err(HostError::TooLong));
    }

    #[test]
    fn candidate_order_matches_the_spec_example() {
        assert_eq!(
            candidates("a.b.c.d.e.f.g"),
            [
                "a.b.c.d.e.f.g",
                "*.c.d.e.f.g",
                "*.d.e.f.g",
                "*.e.f.g",
                "*.f.g",
                "*.g",
                "*"
            ]
        );
        assert_eq!(candidates("foo.bar"), ["foo.bar", "*.bar", "*"]);
        assert_eq!(candidates("localhost"), ["localhost", "*"]);
        assert_eq!(candidates("[::1]"), ["[::1]", "*"]);
    }
}
