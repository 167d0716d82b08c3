//! Route lookups in Redis (docs/compatibility.md §1-§2): every candidate list and the requested host's dead set in one
//! pipelined round trip, turned into a [`Lookup`].
//!
//! Only packing and interpreting; sending is `RedisClient::query`.

use std::rc::Rc;

use redis::Value;

use super::connection::RedisError;
use crate::routing::{Lookup, Route};

/// Packs `LRANGE <prefix>frontend:<candidate> 0 -1` for each candidate and
/// `SMEMBERS <prefix>dead:<host>`. Returns the bytes and the number of replies to expect.
pub fn pack_lookup(prefix: &str, host: &str, candidates: &[String]) -> (Vec<u8>, usize) {
    let mut pipe = redis::pipe();
    for c in candidates {
        pipe.cmd("LRANGE")
            .arg(format!("{prefix}frontend:{c}"))
            .arg(0)
            .arg(-1);
    }
    pipe.cmd("SMEMBERS").arg(format!("{prefix}dead:{host}"));
    (pipe.get_packed_pipeline(), candidates.len() + 1)
}

/// Interprets the replies of [`pack_lookup`]: the first non-empty list wins.
pub fn parse_lookup(candidates: &[String], replies: Vec<Value>) -> Result<Lookup, RedisError> {
    if replies.len() != candidates.len() + 1 {
        return Err(RedisError::Protocol(format!(
            "expected {} replies, got {}",
            candidates.len() + 1,
            replies.len()
        )));
    }
    let mut replies = replies.into_iter();
    let mut matched: Option<(&str, Vec<String>)> = None;
    for candidate in candidates {
        let reply = replies.next().unwrap_or(Value::Nil);
        let list = string_list(reply, "LRANGE")?;
        if matched.is_none() && !list.is_empty() {
            matched = Some((candidate.as_str(), list));
        }
    }
    let dead_reply = replies.next().unwrap_or(Value::Nil);
    let Some((key, list)) = matched else {
        return Ok(Lookup::NoFrontend);
    };
    let dead: Vec<usize> = string_list(dead_reply, "SMEMBERS")?
        .iter()
        .filter_map(|s| s.trim().parse::<usize>().ok())
        .collect();
    Ok(Lookup::Found(Rc::new(Route::new(key, &list, &dead))))
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
