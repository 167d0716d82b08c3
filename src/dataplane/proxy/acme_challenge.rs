//! HTTP-01 answers on the plain-HTTP listeners (README "Automatic HTTPS (ACME)"): with `acme`
//! configured and the Redis driver, `GET /.well-known/acme-challenge/<token>` is answered from
//! `<prefix>acme:http01:<token>` whatever the Host, before routing, by every instance (the CA may ask
//! any of them).
//!
//! Data-plane code: one GET on the worker's Redis read connection per challenge request, nothing
//! cached, nothing allocated for other requests (the path test is a prefix comparison). The token is
//! bounded to `[A-Za-z0-9_-]{1,128}` and the answer to [`MAX_KEY_AUTHORIZATION`] bytes.

use crate::dataplane::core::Core;
use crate::dataplane::routing::store::RouteStore;

/// The path prefix of HTTP-01 challenges (RFC 8555 §8.3).
pub const PREFIX: &[u8] = b"/.well-known/acme-challenge/";
/// Longest token answered.
pub const MAX_TOKEN: usize = 128;
/// Longest key authorization answered (a token, a dot and a 43-character thumbprint).
pub const MAX_KEY_AUTHORIZATION: usize = 512;

/// What to answer.
pub enum ChallengeAnswer {
    /// 200 with the key authorization.
    Found(Vec<u8>),
    /// 404: no such token (or a malformed one).
    NotFound,
    /// 503: Redis did not answer.
    Unavailable,
}

/// True when this request is an HTTP-01 challenge this worker must answer (`path` is the request
/// target in origin form).
#[inline]
pub fn wanted(w: &Core, is_tls: bool, method: &[u8], path: &[u8]) -> bool {
    !is_tls
        && path.starts_with(PREFIX)
        && (method == b"GET" || method == b"HEAD")
        && w.config.acme.is_some()
        && matches!(&*w.store, RouteStore::Redis(_))
}

/// The token of a challenge path, if it is well-formed (a query string is ignored).
pub fn token(path: &[u8]) -> Option<&str> {
    let rest = path.strip_prefix(PREFIX)?;
    let end = rest.iter().position(|&b| b == b'?').unwrap_or(rest.len());
    let token = &rest[..end];
    if token.is_empty()
        || token.len() > MAX_TOKEN
        || !token
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    std::str::from_utf8(token).ok()
}

/// Looks the token up in Redis.
pub async fn answer(w: &Core, path: &[u8]) -> ChallengeAnswer {
    let RouteStore::Redis(r) = &*w.store else {
        return ChallengeAnswer::NotFound;
    };
    let Some(token) = token(path) else {
        return ChallengeAnswer::NotFound;
    };
    let key = format!("{}acme:http01:{token}", r.prefix);
    let packed = redis::cmd("GET").arg(&key).get_packed_command();
    match r.read.query(&packed, 1).await {
        Ok(mut v) => match v.pop() {
            Some(redis::Value::BulkString(b)) if b.len() <= MAX_KEY_AUTHORIZATION => {
                ChallengeAnswer::Found(b)
            }
            Some(redis::Value::ServerError(_)) => ChallengeAnswer::Unavailable,
            _ => ChallengeAnswer::NotFound,
        },
        Err(_) => ChallengeAnswer::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(
            token(b"/.well-known/acme-challenge/abc_-D9"),
            Some("abc_-D9")
        );
        assert_eq!(token(b"/.well-known/acme-challenge/abc?x=1"), Some("abc"));
        assert_eq!(token(b"/.well-known/acme-challenge/"), None);
        assert_eq!(token(b"/.well-known/acme-challenge/a/b"), None);
        assert_eq!(token(b"/.well-known/acme-challenge/a%20b"), None);
        assert_eq!(token(b"/.well-known/acme-challenge/a.b"), None);
        let long = format!("/.well-known/acme-challenge/{}", "a".repeat(129));
        assert_eq!(token(long.as_bytes()), None);
        let ok = format!("/.well-known/acme-challenge/{}", "a".repeat(128));
        assert!(token(ok.as_bytes()).is_some());
        assert_eq!(token(b"/other"), None);
    }
}
