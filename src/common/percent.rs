//! Strict percent-decoding (`%XX` escapes, RFC 3986) for driver URLs and admin API parameters, on the
//! percent-encoding crate (what `url` and `form_urlencoded` decode with).
//!
//! Stricter than those crates on purpose: they pass a malformed escape through and replace bytes
//! that are not UTF-8, where a typo in a driver URL or an admin call must be refused, not acted on.

use std::borrow::Cow;

/// Why a string does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space` (HTML forms, query strings).
pub fn decode(s: &str, plus_is_space: bool) -> Result<String, DecodeError> {
    let well_formed = s.split('%').skip(1).all(|after| {
        after
            .as_bytes()
            .get(..2)
            .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(DecodeError::BadEscape);
    }
    // `+` is replaced before decoding, so that an escaped `%2B` stays a plus.
    let s: Cow<'_, str> = if plus_is_space && s.contains('+') {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| DecodeError::NotUtf8)
}
