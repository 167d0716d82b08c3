//! Host normalisation and the ordered list of frontend keys to look up (docs/compatibility.md §2).
//!
//! `Host: A.Example.COM:8080.` becomes `a.example.com`; its candidates are the exact name, then
//! `*.<suffix>` for every proper suffix of at most 5 labels (longest first), then `*`.

/// Maximum number of labels in a wildcard suffix (`*.b.c.d.e.f` has 5).
pub const MAX_WILDCARD_LABELS: usize = 5;

/// Why a Host header cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum HostError {
    Empty,
    Invalid,
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
