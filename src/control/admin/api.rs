//! hipache-api's endpoints (docs/compatibility.md §9) on the Redis driver: list, read, create, extend, delete
//! frontends, remove a backend, flush.
//!
//! Reads go to the read Redis, changes to the write Redis, with the driver's prefix and database.
//! Every change is one Lua script (atomic: no half-written list, no lost concurrent edit), and also
//! deletes the dead sets whose indexes pointed into the changed list: `dead:<name>` for an exact name,
//! every `dead:<host>` the wildcard serves for `*.<suffix>` and `*` (found with SCAN). Backend URLs are
//! validated (the proxy's own parser) and duplicates (same host and port) refused. Listing uses SCAN,
//! never KEYS.
//!
//! The console's paged listing (`GET /frontends?cursor=<c>&count=<n>&match=<substring>`) walks the
//! same SCAN cursor one bounded step per call and answers each frontend with its backends and dead
//! marks (`dead:<name>` members and TTL); plain `GET /frontends` keeps hipache-api's answer.
//!
//! This module only talks to Redis and builds answers; HTTP is `admin::http`'s job.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::Value;

use super::http::{Request, Response};
use crate::dataplane::routing::route::parse_backend_url;
use crate::drivers::redis::{RedisClient, RedisError};

/// The driver as the API sees it.
pub struct ApiStore {
    pub read: RedisClient,
    pub write: RedisClient,
    pub prefix: String,
}

/// How long a call waits for a Redis connection that is not up (yet) before answering 503.
const REDIS_WAIT: Duration = Duration::from_secs(1);

/// Keys per SCAN page.
const SCAN_COUNT: usize = 1000;
/// Largest page of `GET /frontends?cursor=...` (the `count` parameter is capped to it).
pub const MAX_PAGE: usize = 500;
/// Longest `match` substring of a paged listing.
const MAX_MATCH: usize = 253;
/// SCAN calls (and time) one paged listing (frontends, certificates) may spend looking for matches
/// before it answers with what it found and the cursor to continue from.
const PAGE_SCANS: usize = 64;
const PAGE_TIME: Duration = Duration::from_secs(2);
/// Backends shown per frontend in a paged listing (a hostile list could be huge).
const PAGE_BACKENDS: usize = 200;
/// Tries of an append that raced with another change of the same list.
const APPEND_TRIES: usize = 5;

/// Creates a list unless it exists. KEYS: list, dead set. ARGV: identifier, backends...
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 1, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('DEL', KEYS[2])
return 1
"#;

/// Appends to a list if it is still exactly what was validated. KEYS: list, dead set. ARGV: n, the n
/// elements read, then the backends to append. Returns 1, -1 (absent), -2 (changed meanwhile).
const APPEND: &str = r#"
local n = tonumber(ARGV[1])
local cur = redis.call('LRANGE', KEYS[1], 0, -1)
if #cur == 0 then return -1 end
if #cur ~= n then return -2 end
for i = 1, n do
  if cur[i] ~= ARGV[i + 1] then return -2 end
end
for i = n + 2, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('DEL', KEYS[2])
return 1
"#;

/// Removes every backend entry equal to ARGV[1] or ARGV[2] (never the identifier). KEYS: list, dead
/// set. Returns the number removed, or -1 when the list is absent.
const REMOVE: &str = r#"
local cur = redis.call('LRANGE', KEYS[1], 0, -1)
if #cur == 0 then return -1 end
local keep = {cur[1]}
local removed = 0
for i = 2, #cur do
  if cur[i] == ARGV[1] or cur[i] == ARGV[2] then
    removed = removed + 1
  else
    keep[#keep + 1] = cur[i]
  end
end
if removed > 0 then
  redis.call('DEL', KEYS[1])
  for i = 1, #keep, 1000 do
    redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 999, #keep)))
  end
  redis.call('DEL', KEYS[2])
end
return removed
"#;

/// Replaces a hash with the field/value pairs in ARGV (none: deletes it). KEYS: the hash.
const REPLACE_HASH: &str = r#"
redis.call('DEL', KEYS[1])
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 1
"#;

/// A Redis failure as an answer.
fn redis_error(e: RedisError) -> Response {
    match e {
        RedisError::Down | RedisError::ConnectionLost => {
            Response::error(503, format!("{e}; try again"))
        }
        RedisError::Timeout => Response::error(503, "Redis did not answer in time; try again"),
        RedisError::Protocol(m) => Response::error(500, format!("Redis: {m}")),
    }
}

fn server_error(v: &Value) -> Option<Response> {
    match v {
        Value::ServerError(e) => Some(Response::error(
            500,
            format!("Redis: {} {}", e.code(), e.details().unwrap_or("").trim()),
        )),
        _ => None,
    }
}

fn int(v: &Value) -> Result<i64, Response> {
    if let Some(r) = server_error(v) {
        return Err(r);
    }
    match v {
        Value::Int(n) => Ok(*n),
        other => Err(Response::error(
            500,
            format!("Redis: unexpected reply {other:?}"),
        )),
    }
}

fn strings(v: Value) -> Result<Vec<String>, Response> {
    if let Some(r) = server_error(&v) {
        return Err(r);
    }
    match v {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) | Value::Set(items) => Ok(items
            .into_iter()
            .filter_map(|i| match i {
                Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                Value::SimpleString(s) => Some(s),
                _ => None,
            })
            .collect()),
        other => Err(Response::error(
            500,
            format!("Redis: unexpected reply {other:?}"),
        )),
    }
}

/// Escapes SCAN/KEYS glob characters.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Validates and normalises a frontend name for creation: lowercased, one trailing dot dropped; an
/// exact host name or IP literal, `*.<name>`, or `*`. No port (the proxy matches hosts without it).
pub fn frontend_name(raw: &str) -> Result<String, String> {
    let name = raw.trim().to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name).to_string();
    let invalid = |why: &str| format!("Invalid host {raw:?}: {why}");
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > 253 {
        return Err(invalid("longer than 253 characters"));
    }
    if name == "*" {
        return Ok(name);
    }
    let exact = name.strip_prefix("*.").unwrap_or(&name);
    if exact.starts_with('[') {
        let inner = exact
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .ok_or_else(|| invalid("malformed IPv6 literal"))?;
        if name.starts_with('*') || inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("malformed IPv6 literal"));
        }
        return Ok(name);
    }
    if exact.contains(':') {
        return Err(invalid(
            "frontends are named without a port (the proxy ignores the port of the Host header)",
        ));
    }
    for label in exact.split('.') {
        if label.is_empty() {
            return Err(invalid("empty label"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(
                "only letters, digits, '-', '_' and '.' are allowed (and a leading '*.')",
            ));
        }
    }
    Ok(name)
}

/// A validated backend: the entry to store and what makes two entries the same backend.
struct NewBackend {
    entry: String,
    identity: (String, u16),
}

/// The entry stored for a backend given by the operator: trimmed, and `http://` added to a
/// scheme-less `host:port` (which hipache-hchecker could not check).
fn backend_entry(raw: &str) -> Result<NewBackend, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("Invalid backend: empty entry in the list".into());
    }
    let target = parse_backend_url(raw).map_err(|e| format!("Invalid backend: {e}"))?;
    let entry = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    Ok(NewBackend {
        entry,
        identity: (target.host.to_ascii_lowercase(), target.port),
    })
}

fn identity_of(entry: &str) -> Option<(String, u16)> {
    parse_backend_url(entry)
        .ok()
        .map(|t| (t.host.to_ascii_lowercase(), t.port))
}

/// Parses `backends` (a comma list) and refuses duplicates, among themselves and with `existing`.
fn new_backends(list: &str, existing: &[String]) -> Result<Vec<String>, Response> {
    let mut out: Vec<NewBackend> = Vec::new();
    for raw in list.split(',') {
        let b = backend_entry(raw).map_err(|m| Response::error(400, m))?;
        if out.iter().any(|o| o.identity == b.identity) {
            return Err(Response::error(
                400,
                format!("Duplicate backend {:?} in the request", b.entry),
            ));
        }
        if let Some(e) = existing
            .iter()
            .find(|e| **e == b.entry || identity_of(e).as_ref() == Some(&b.identity))
        {
            return Err(Response::error(
                400,
                format!(
                    "Backend {:?} is already in the frontend (as {e:?})",
                    b.entry
                ),
            ));
        }
        out.push(b);
    }
    Ok(out.into_iter().map(|b| b.entry).collect())
}

impl ApiStore {
    fn frontend_key(&self, name: &str) -> String {
        format!("{}frontend:{name}", self.prefix)
    }

    fn dead_key(&self, name: &str) -> String {
        format!("{}dead:{name}", self.prefix)
    }

    async fn one(&self, client: &RedisClient, packed: &[u8]) -> Result<Value, Response> {
        // An admin call is rare and may wait a little: right after start-up or a reconnect, give the
        // connection up to REDIS_WAIT to come up rather than answer 503 at once.
        let waited = Instant::now();
        while !client.is_up() && waited.elapsed() < REDIS_WAIT {
            monoio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut replies = client.query(packed, 1).await.map_err(redis_error)?;
        replies
            .pop()
            .ok_or_else(|| Response::error(500, "Redis: no reply"))
    }

    /// Every key matching `pattern` (SCAN, duplicates removed, sorted).
    pub(super) async fn scan(
        &self,
        client: &RedisClient,
        pattern: &str,
    ) -> Result<Vec<String>, Response> {
        let mut cursor = String::from("0");
        let mut keys = BTreeSet::new();
        loop {
            let packed = redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .get_packed_command();
            let reply = self.one(client, &packed).await?;
            if let Some(r) = server_error(&reply) {
                return Err(r);
            }
            let Value::Array(mut parts) = reply else {
                return Err(Response::error(500, "Redis: unexpected SCAN reply"));
            };
            if parts.len() != 2 {
                return Err(Response::error(500, "Redis: unexpected SCAN reply"));
            }
            let page = parts.pop().unwrap_or(Value::Nil);
            let next = parts.pop().unwrap_or(Value::Nil);
            keys.extend(strings(page)?);
            cursor = match next {
                Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                Value::SimpleString(s) => s,
                Value::Int(n) => n.to_string(),
                _ => return Err(Response::error(500, "Redis: unexpected SCAN cursor")),
            };
            if cursor == "0" {
                return Ok(keys.into_iter().collect());
            }
        }
    }

    /// Deletes `keys` in batches on the write Redis.
    async fn delete_keys(&self, keys: &[String]) -> Result<(), Response> {
        for batch in keys.chunks(500) {
            let mut cmd = redis::cmd("DEL");
            for k in batch {
                cmd.arg(k);
            }
            int(&self.one(&self.write, &cmd.get_packed_command()).await?)?;
        }
        Ok(())
    }

    /// After a change of frontend `name`: the dead sets of the hosts a wildcard serves (the exact
    /// host's set is deleted inside the change's script).
    async fn clear_wildcard_dead_sets(&self, name: &str) -> Result<(), Response> {
        let Some(suffix) = name.strip_prefix('*') else {
            return Ok(());
        };
        let pattern = format!("{}dead:*{}", glob_escape(&self.prefix), glob_escape(suffix));
        let keys = self.scan(&self.write, &pattern).await?;
        self.delete_keys(&keys).await
    }

    /// GET /frontends
    pub async fn list(&self) -> Response {
        let pattern = format!("{}frontend:*", glob_escape(&self.prefix));
        let strip = self.frontend_key("");
        match self.scan(&self.read, &pattern).await {
            Ok(keys) => {
                let names: Vec<&str> = keys.iter().filter_map(|k| k.strip_prefix(&strip)).collect();
                Response::json(200, &serde_json::json!(names))
            }
            Err(r) => r,
        }
    }

    /// SCANs from `cursor` for up to `count` key names matching `pattern` (with `strip` removed), in at
    /// most [`PAGE_SCANS`] steps and [`PAGE_TIME`]: (the cursor to go on from, `"0"` at the end; the
    /// names, sorted). `hint(found so far)` is each step's COUNT.
    pub(super) async fn scan_names(
        &self,
        cursor: &str,
        pattern: &str,
        strip: &str,
        count: usize,
        hint: impl Fn(usize) -> usize,
    ) -> Result<(String, BTreeSet<String>), Response> {
        let started = Instant::now();
        let mut next = cursor.to_string();
        let mut names = BTreeSet::new();
        for _ in 0..PAGE_SCANS {
            let (n, keys) = self
                .scan_step(&self.read, &next, pattern, hint(names.len()))
                .await?;
            names.extend(
                keys.iter()
                    .filter_map(|k| k.strip_prefix(strip))
                    .map(str::to_string),
            );
            next = n;
            if next == "0" || names.len() >= count || started.elapsed() >= PAGE_TIME {
                break;
            }
        }
        Ok((next, names))
    }

    /// One SCAN step: (next cursor, keys).
    pub(super) async fn scan_step(
        &self,
        client: &RedisClient,
        cursor: &str,
        pattern: &str,
        count: usize,
    ) -> Result<(String, Vec<String>), Response> {
        let packed = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(count)
            .get_packed_command();
        let reply = self.one(client, &packed).await?;
        if let Some(r) = server_error(&reply) {
            return Err(r);
        }
        let Value::Array(mut parts) = reply else {
            return Err(Response::error(500, "Redis: unexpected SCAN reply"));
        };
        if parts.len() != 2 {
            return Err(Response::error(500, "Redis: unexpected SCAN reply"));
        }
        let page = parts.pop().unwrap_or(Value::Nil);
        let next = parts.pop().unwrap_or(Value::Nil);
        let next = match next {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::SimpleString(s) => s,
            Value::Int(n) => n.to_string(),
            _ => return Err(Response::error(500, "Redis: unexpected SCAN cursor")),
        };
        Ok((next, strings(page)?))
    }

    /// `GET /frontends?cursor=<c>&count=<n>&match=<substring>`: one page of frontends, each with its
    /// backends and dead marks. `annotate(name, url)` adds what the health checker knows
    /// of a backend. The answer's `cursor` is `"0"` at the end of the walk.
    pub async fn list_page(
        &self,
        req: &Request,
        dead_backend_ttl: u64,
        annotate: &dyn Fn(&str, &str) -> serde_json::Value,
    ) -> Response {
        let cursor = req.param("cursor").unwrap_or("0").trim();
        if cursor.is_empty() || cursor.len() > 20 || !cursor.bytes().all(|b| b.is_ascii_digit()) {
            return Response::error(400, "Invalid 'cursor': a SCAN cursor is a decimal number");
        }
        let count = match req.param("count").map(str::trim) {
            None | Some("") => 50,
            Some(c) => match c.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => {
                    return Response::error(
                        400,
                        format!("Invalid 'count': a number from 1 to {MAX_PAGE}"),
                    )
                }
            },
        };
        let needle = req.param("match").unwrap_or("").trim().to_ascii_lowercase();
        if needle.len() > MAX_MATCH {
            return Response::error(
                400,
                format!("Invalid 'match': longer than {MAX_MATCH} characters"),
            );
        }
        let strip = self.frontend_key("");
        let pattern = if needle.is_empty() {
            format!("{}frontend:*", glob_escape(&self.prefix))
        } else {
            format!(
                "{}frontend:*{}*",
                glob_escape(&self.prefix),
                glob_escape(&needle)
            )
        };
        // Without a filter SCAN's COUNT is about the page size; with one, most keys visited do not
        // match, so each step visits more of them.
        let hint = if needle.is_empty() { count } else { 1000 };
        let (next, names) = match self
            .scan_names(cursor, &pattern, &strip, count, |_| hint)
            .await
        {
            Ok(r) => r,
            Err(r) => return r,
        };
        let names: Vec<String> = names.into_iter().collect();
        let mut pipe = redis::pipe();
        for name in &names {
            pipe.cmd("LRANGE")
                .arg(self.frontend_key(name))
                .arg(0)
                .arg(PAGE_BACKENDS)
                .cmd("LLEN")
                .arg(self.frontend_key(name))
                .cmd("SMEMBERS")
                .arg(self.dead_key(name))
                .cmd("TTL")
                .arg(self.dead_key(name));
        }
        let replies = if names.is_empty() {
            Vec::new()
        } else {
            match self
                .read
                .query(&pipe.get_packed_pipeline(), names.len() * 4)
                .await
            {
                Ok(r) => r,
                Err(e) => return redis_error(e),
            }
        };
        let now = crate::common::clock::unix_now();
        let mut frontends = Vec::with_capacity(names.len());
        let mut replies = replies.into_iter();
        for name in &names {
            let (Some(list), Some(len), Some(dead), Some(ttl)) = (
                replies.next(),
                replies.next(),
                replies.next(),
                replies.next(),
            ) else {
                return Response::error(500, "Redis: missing replies");
            };
            let list = match strings(list) {
                Ok(l) => l,
                Err(r) => return r,
            };
            if list.is_empty() {
                continue; // deleted between SCAN and LRANGE
            }
            let len = int(&len).unwrap_or(list.len() as i64).max(0) as usize;
            let dead: BTreeSet<usize> = strings(dead)
                .unwrap_or_default()
                .iter()
                .filter_map(|m| m.trim().parse().ok())
                .collect();
            let ttl = int(&ttl).unwrap_or(-2);
            // A passive mark lives deadBackendTTL seconds from the last failure seen.
            let marked_at =
                (ttl > 0).then(|| now.saturating_sub(dead_backend_ttl.saturating_sub(ttl as u64)));
            let backends: Vec<serde_json::Value> = list[1..]
                .iter()
                .enumerate()
                .map(|(i, url)| {
                    let is_dead = dead.contains(&i);
                    serde_json::json!({
                        "index": i,
                        "url": url,
                        "dead": is_dead,
                        "markedAt": if is_dead { marked_at } else { None },
                        "checker": annotate(name, url),
                    })
                })
                .collect();
            frontends.push(serde_json::json!({
                "name": name,
                "identifier": list[0],
                "backends": backends,
                "backendCount": len.saturating_sub(1),
                "deadTTL": ttl,
            }));
        }
        Response::json(
            200,
            &serde_json::json!({ "cursor": next, "frontends": frontends }),
        )
    }

    /// The list of `name`, identifier included; empty when absent.
    async fn read_list(&self, client: &RedisClient, name: &str) -> Result<Vec<String>, Response> {
        let packed = redis::cmd("LRANGE")
            .arg(self.frontend_key(name))
            .arg(0)
            .arg(-1)
            .get_packed_command();
        strings(self.one(client, &packed).await?)
    }

    /// GET /frontends/:name
    pub async fn backends(&self, name: &str) -> Response {
        match self.read_list(&self.read, name).await {
            Ok(list) if list.is_empty() => not_found(),
            Ok(list) => Response::json(200, &serde_json::json!(list[1..])),
            Err(r) => r,
        }
    }

    /// POST /frontends (host, backends)
    pub async fn create(&self, req: &Request) -> Response {
        let Some(raw) = req.param("host").filter(|h| !h.trim().is_empty()) else {
            return Response::error(400, "Missing parameter 'host'");
        };
        let name = match frontend_name(raw) {
            Ok(n) => n,
            Err(m) => return Response::error(400, m),
        };
        let backends = match req.param("backends").filter(|b| !b.trim().is_empty()) {
            Some(list) => match new_backends(list, &[]) {
                Ok(b) => b,
                Err(r) => return r,
            },
            None => Vec::new(),
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CREATE)
            .arg(2)
            .arg(self.frontend_key(&name))
            .arg(self.dead_key(&name))
            .arg(&name);
        for b in &backends {
            cmd.arg(b);
        }
        let created = match self.one(&self.write, &cmd.get_packed_command()).await {
            Ok(v) => int(&v),
            Err(r) => return r,
        };
        match created {
            Ok(1) => {}
            Ok(_) => return Response::error(400, "Frontend already exists"),
            Err(r) => return r,
        }
        if let Err(r) = self.clear_wildcard_dead_sets(&name).await {
            return r;
        }
        Response::message("Frontend has been created")
    }

    /// POST /frontends/:name (backends)
    pub async fn append(&self, name: &str, req: &Request) -> Response {
        for _ in 0..APPEND_TRIES {
            let current = match self.read_list(&self.write, name).await {
                Ok(l) if l.is_empty() => return not_found(),
                Ok(l) => l,
                Err(r) => return r,
            };
            let Some(list) = req.param("backends").filter(|b| !b.trim().is_empty()) else {
                return Response::error(400, "Missing 'backends' parameter");
            };
            let backends = match new_backends(list, &current[1..]) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(APPEND)
                .arg(2)
                .arg(self.frontend_key(name))
                .arg(self.dead_key(name))
                .arg(current.len());
            for e in current.iter().chain(&backends) {
                cmd.arg(e);
            }
            let outcome = match self.one(&self.write, &cmd.get_packed_command()).await {
                Ok(v) => int(&v),
                Err(r) => return r,
            };
            match outcome {
                Ok(1) => {
                    if let Err(r) = self.clear_wildcard_dead_sets(name).await {
                        return r;
                    }
                    return Response::message("Backends created");
                }
                Ok(-1) => return not_found(),
                Ok(_) => continue, // changed meanwhile: validate again
                Err(r) => return r,
            }
        }
        Response::error(
            409,
            "The frontend kept changing during the request; try again",
        )
    }

    /// DELETE /frontends/:name
    pub async fn delete(&self, name: &str) -> Response {
        let packed = redis::cmd("DEL")
            .arg(self.frontend_key(name))
            .arg(self.dead_key(name))
            .get_packed_command();
        // DEL counts both keys: look at the list first so that a lone dead set is not "a frontend".
        match self.read_list(&self.write, name).await {
            Ok(l) if l.is_empty() => return not_found(),
            Ok(_) => {}
            Err(r) => return r,
        }
        match self.one(&self.write, &packed).await.and_then(|v| int(&v)) {
            Ok(0) => return not_found(),
            Ok(_) => {}
            Err(r) => return r,
        }
        if let Err(r) = self.clear_wildcard_dead_sets(name).await {
            return r;
        }
        Response::message("Frontend has been deleted")
    }

    /// DELETE /frontends/:name/backend (backend)
    pub async fn remove_backend(&self, name: &str, req: &Request) -> Response {
        let Some(raw) = req
            .param("backend")
            .map(str::trim)
            .filter(|b| !b.is_empty())
        else {
            // Answer 404 for an absent frontend first, as hipache-api looked the frontend up first.
            return match self.read_list(&self.read, name).await {
                Ok(l) if l.is_empty() => not_found(),
                Ok(_) => Response::error(400, "Missing 'backend' parameter"),
                Err(r) => r,
            };
        };
        // The entry as the API would have stored it (`host:port` → `http://host:port`) also matches.
        let normalized = backend_entry(raw)
            .map(|b| b.entry)
            .unwrap_or_else(|_| raw.to_string());
        let packed = redis::cmd("EVAL")
            .arg(REMOVE)
            .arg(2)
            .arg(self.frontend_key(name))
            .arg(self.dead_key(name))
            .arg(raw)
            .arg(&normalized)
            .get_packed_command();
        match self.one(&self.write, &packed).await.and_then(|v| int(&v)) {
            Ok(-1) => not_found(),
            Ok(0) => Response::message("Backend removed"),
            Ok(_) => match self.clear_wildcard_dead_sets(name).await {
                Ok(()) => Response::message("Backend removed"),
                Err(r) => r,
            },
            Err(r) => r,
        }
    }

    fn options_key(&self, name: &str) -> String {
        format!("{}frontend-options:{name}", self.prefix)
    }

    /// GET /frontends/:name/options: the `frontend-options:<name>` hash as a JSON object ({} when
    /// there is none).
    pub async fn options(&self, name: &str) -> Response {
        let name = match frontend_name(name) {
            Ok(n) => n,
            Err(m) => return Response::error(400, m),
        };
        let packed = redis::cmd("HGETALL")
            .arg(self.options_key(&name))
            .get_packed_command();
        let fields = match self.one(&self.read, &packed).await.and_then(strings) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let mut obj = serde_json::Map::new();
        for pair in fields.chunks_exact(2) {
            obj.insert(pair[0].clone(), serde_json::Value::String(pair[1].clone()));
        }
        Response::json(200, &serde_json::Value::Object(obj))
    }

    /// PUT /frontends/:name/options: replaces the hash with the fields given (a JSON object or a
    /// form), each validated as the proxy reads it (README "Per-frontend options"); 400 names the
    /// first bad field. An empty object removes the options.
    pub async fn put_options(&self, name: &str, req: &Request) -> Response {
        use crate::dataplane::routing::options::{check_field, MAX_FIELDS};
        let name = match frontend_name(name) {
            Ok(n) => n,
            Err(m) => return Response::error(400, m),
        };
        if req.params.len() > MAX_FIELDS {
            return Response::error(400, format!("more than {MAX_FIELDS} fields"));
        }
        let mut seen = BTreeSet::new();
        for (field, value) in &req.params {
            if let Err(m) = check_field(field, value) {
                return Response::error(400, format!("Invalid option: {m}"));
            }
            if !seen.insert(field.as_str()) {
                return Response::error(
                    400,
                    format!("Invalid option: field {field:?} given twice"),
                );
            }
        }
        // Weights are one per backend: more than the list has is refused.
        if let Some((_, w)) = req.params.iter().find(|(f, _)| f == "weights") {
            let list = match self.read_list(&self.read, &name).await {
                Ok(l) => l,
                Err(r) => return r,
            };
            let backends = list.len().saturating_sub(1);
            if !list.is_empty() && w.split(',').count() > backends {
                return Response::error(
                    400,
                    format!(
                        "Invalid option: field \"weights\": more weights than the {backends} backends"
                    ),
                );
            }
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(REPLACE_HASH).arg(1).arg(self.options_key(&name));
        for (field, value) in &req.params {
            cmd.arg(field).arg(value.trim());
        }
        if let Err(r) = self
            .one(&self.write, &cmd.get_packed_command())
            .await
            .and_then(|v| int(&v))
        {
            return r;
        }
        self.options(&name).await
    }

    /// DELETE /frontends/:name/options.
    pub async fn delete_options(&self, name: &str) -> Response {
        let name = match frontend_name(name) {
            Ok(n) => n,
            Err(m) => return Response::error(400, m),
        };
        let packed = redis::cmd("DEL")
            .arg(self.options_key(&name))
            .get_packed_command();
        match self.one(&self.write, &packed).await.and_then(|v| int(&v)) {
            Ok(0) => Response::error(404, "Frontend has no options"),
            Ok(_) => Response::message("Frontend options have been deleted"),
            Err(r) => r,
        }
    }

    /// POST /flush: every frontend and every dead set of this prefix.
    pub async fn flush(&self) -> Response {
        for kind in ["frontend", "dead"] {
            let pattern = format!("{}{kind}:*", glob_escape(&self.prefix));
            let keys = match self.scan(&self.write, &pattern).await {
                Ok(k) => k,
                Err(r) => return r,
            };
            if let Err(r) = self.delete_keys(&keys).await {
                return r;
            }
        }
        Response::message("All frontends are now flushed")
    }
}

fn not_found() -> Response {
    Response::error(404, "Frontend does not exist")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontend_names() {
        assert_eq!(
            frontend_name("WWW.Example.com.").unwrap(),
            "www.example.com"
        );
        assert_eq!(frontend_name("*.example.com").unwrap(), "*.example.com");
        assert_eq!(frontend_name("*").unwrap(), "*");
        assert_eq!(frontend_name("10.0.0.1").unwrap(), "10.0.0.1");
        assert_eq!(frontend_name("[::1]").unwrap(), "[::1]");
        assert!(frontend_name("a.com:8080").is_err());
        assert!(frontend_name("a..com").is_err());
        assert!(frontend_name("a*.com").is_err());
        assert!(frontend_name("*.*.com").is_err());
        assert!(frontend_name("a b").is_err());
        assert!(frontend_name("").is_err());
        assert!(frontend_name("[nope]").is_err());
    }

    #[test]
    fn backend_lists() {
        assert_eq!(
            new_backends("http://a:1, b:2", &[]).unwrap(),
            vec!["http://a:1".to_string(), "http://b:2".to_string()]
        );
        assert!(new_backends("http://a:1,,http://b:2", &[]).is_err());
        assert!(new_backends("ftp://a", &[]).is_err());
        // Same host and port, however written.
        assert!(new_backends("http://A:80,a", &[]).is_err());
        assert!(new_backends("http://a:1/x", &["http://a:1".into()]).is_err());
        assert!(new_backends("http://a:2", &["http://a:1".into()]).is_ok());
    }

    #[test]
    fn glob_escapes() {
        assert_eq!(glob_escape("p*[x]?\\"), "p\\*\\[x\\]\\?\\\\");
    }
}
