//! Route lookups in Redis (docs/compatibility.md §1-§2): every candidate list and the requested host's dead set in one
//! pipelined round trip, turned into a [`Lookup`].
//!
//! Only packing and interpreting; sending is `RedisClient::query`.
//!
//! Redis data is bounded before it reaches the worker's cache (README, "Limits"): a frontend list is
//! read with `LRANGE key 0 <MAX_FRONTEND_ENTRIES - 1>` (the identifier and the first 256 backends), an
//! identifier is cut to [`MAX_IDENTIFIER_BYTES`], and a backend entry over [`MAX_ENTRY_BYTES`] is kept
//! in its place (dead-set indexes count positions) as an unusable entry, skipped like any bad URL.

use std::rc::Rc;

use redis::Value;

use super::connection::RedisError;
use crate::dataplane::routing::{Lookup, Route};

pub use crate::dataplane::routing::MAX_FRONTEND_ENTRIES;
/// Longest backend entry kept (a URL longer than this is unusable).
pub const MAX_ENTRY_BYTES: usize = 1024;
/// Longest identifier kept (longer ones are cut).
pub const MAX_IDENTIFIER_BYTES: usize = 256;

/// Packs `LRANGE <prefix>frontend:<candidate> 0 256` for each candidate, then `HGETALL
/// <prefix>frontend-options:<candidate>` for each candidate (README "Per-frontend options": the options
/// of the list that matches), then `SMEMBERS <prefix>dead:<host>`. Returns the bytes and the number of
/// replies to expect.
pub fn pack_lookup(prefix: &str, host: &str, candidates: &[String]) -> (Vec<u8>, usize) {
    let mut pipe = redis::pipe();
    for c in candidates {
        pipe.cmd("LRANGE")
            .arg(format!("{prefix}frontend:{c}"))
            .arg(0)
            .arg(MAX_FRONTEND_ENTRIES - 1);
    }
    for c in candidates {
        pipe.cmd("HGETALL")
            .arg(format!("{prefix}frontend-options:{c}"));
    }
    pipe.cmd("SMEMBERS").arg(format!("{prefix}dead:{host}"));
    (pipe.get_packed_pipeline(), 2 * candidates.len() + 1)
}

/// Interprets the replies of [`pack_lookup`]: the first non-empty list wins, with the options hash of
/// the same candidate.
pub fn parse_lookup(candidates: &[String], replies: Vec<Value>) -> Result<Lookup, RedisError> {
    let n = candidates.len();
    if replies.len() != 2 * n + 1 {
        return Err(RedisError::Protocol(format!(
            "expected {} replies, got {}",
            2 * n + 1,
            replies.len()
        )));
    }
    let mut replies = replies.into_iter();
    let mut matched: Option<(usize, Vec<String>)> = None;
    for (i, _) in candidates.iter().enumerate() {
        let reply = replies.next().unwrap_or(Value::Nil);
        let mut list = string_list(reply, "LRANGE")?;
        if matched.is_none() && !list.is_empty() {
            bound_list(&mut list);
            matched = Some((i, list));
        }
    }
    let mut options = Vec::new();
    for i in 0..n {
        let reply = replies.next().unwrap_or(Value::Nil);
        if matched.as_ref().is_some_and(|(m, _)| *m == i) {
            options = option_fields(reply);
        }
    }
    let dead_reply = replies.next().unwrap_or(Value::Nil);
    let Some((index, list)) = matched else {
        return Ok(Lookup::NoFrontend);
    };
    let key = candidates[index].as_str();
    let dead: Vec<usize> = string_list(dead_reply, "SMEMBERS")?
        .iter()
        .filter_map(|s| s.trim().parse::<usize>().ok())
        .collect();
    Ok(Lookup::Found(Rc::new(Route::with_options(
        key, &list, &dead, &options,
    ))))
}

/// The field/value pairs of an HGETALL reply (RESP2 flat array or RESP3 map), bounded: at most
/// `MAX_FIELDS + 1` pairs are kept (the extra one makes the parser warn), a field name over 64 bytes
/// or a value over the limit is cut (and then reported as malformed). A missing key, a wrong type or
/// anything unexpected is no options: the frontend is served as without them.
fn option_fields(v: Value) -> Vec<(String, String)> {
    use crate::dataplane::routing::options::{MAX_FIELDS, MAX_VALUE_BYTES};
    let cut = |v: Value, max: usize| -> Option<String> {
        let mut s = value_string(v)?;
        if s.len() > max + 1 {
            s.truncate(s.floor_char_boundary(max + 1));
        }
        Some(s)
    };
    let mut out = Vec::new();
    let mut push = |k: Value, v: Value| {
        if out.len() <= MAX_FIELDS {
            if let (Some(k), Some(v)) = (cut(k, 64), cut(v, MAX_VALUE_BYTES)) {
                out.push((k, v));
            }
        }
    };
    match v {
        Value::Array(items) => {
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                push(k, v);
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                push(k, v);
            }
        }
        Value::ServerError(e) => {
            // NOPERM: an ACL user without `+hgetall ~frontend-options:*` (README "Running Redis for a
            // fleet"); the frontend is served without options. Said once per process.
            static WARNED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::warn!(
                    "HGETALL of frontend options refused by Redis ({} {}): frontends are served without their options",
                    e.code(),
                    e.details().unwrap_or("")
                );
            }
        }
        _ => {}
    }
    out
}

/// Applies the size limits to a frontend list (see the module doc).
fn bound_list(list: &mut Vec<String>) {
    list.truncate(MAX_FRONTEND_ENTRIES);
    if let Some(id) = list.first_mut() {
        if id.len() > MAX_IDENTIFIER_BYTES {
            let mut cut = MAX_IDENTIFIER_BYTES;
            while !id.is_char_boundary(cut) {
                cut -= 1;
            }
            id.truncate(cut);
        }
    }
    for entry in list.iter_mut().skip(1) {
        if entry.len() > MAX_ENTRY_BYTES {
            log::debug!("frontend list entry of {} bytes ignored", entry.len());
            *entry = format!("<entry of {} bytes, over {MAX_ENTRY_BYTES}>", entry.len());
        }
    }
}

/// A list (or set) of strings; `Nil` counts as empty; a server error (e.g. WRONGTYPE) is reported.
fn string_list(v: Value, command: &str) -> Result<Vec<String>, RedisError> {
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => {
            Ok(items.into_iter().filter_map(value_string).collect())
        }
        Value::ServerError(e) => Err(RedisError::Protocol(format!(
            "{command} failed: {} {}",
            e.code(),
            e.details().unwrap_or("")
        ))),
        other => Err(RedisError::Protocol(format!(
            "{command} returned {other:?}"
        ))),
    }
}

fn value_string(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_bounded() {
        let cands = vec!["a.test".to_string(), "*".to_string()];
        let mut items = vec![Value::BulkString(vec![b'i'; 10_000])];
        items.push(Value::BulkString(vec![b'x'; 10 << 20]));
        for i in 0..1000 {
            items.push(Value::BulkString(
                format!("http://10.0.0.1:{}", 1000 + i).into_bytes(),
            ));
        }
        let mut opts = Vec::new();
        for i in 0..10_000 {
            opts.push(Value::BulkString(format!("f{i}").into_bytes()));
            opts.push(Value::BulkString(vec![b'v'; 100_000]));
        }
        let replies = vec![
            Value::Array(items),
            Value::Nil,
            Value::Array(opts),
            Value::Nil,
            Value::Set(vec![]),
        ];
        let Ok(Lookup::Found(route)) = parse_lookup(&cands, replies) else {
            panic!("a route");
        };
        assert_eq!(route.backends.len(), MAX_FRONTEND_ENTRIES - 1);
        assert_eq!(route.identifier.len(), MAX_IDENTIFIER_BYTES);
        assert!(route.backends[0].url.len() < 64);
        assert!(
            route.backends[0].target.is_err(),
            "the huge entry is unusable"
        );
        assert!(route.backends[1].target.is_ok());
        assert!(route.options.is_default(), "a hostile hash is ignored");
        let (packed, _) = pack_lookup("", "a.test", &cands);
        let text = String::from_utf8_lossy(&packed);
        assert!(text.contains("\r\n$1\r\n0\r\n$3\r\n256\r\n"), "{text}");
    }
}
