//! The checker's Redis writes, each one Lua script run atomically by Redis: the per-URL locks in the
//! `hchecker` hash, and the dead/alive marks guarded by the `LINDEX` check.
//!
//! # Locks (compatible with hipache-hchecker)
//!
//! The hash `<prefix>hchecker` (plain `hchecker` without a driver prefix, as the Go checker uses) maps a
//! backend URL, exactly as it appears in the frontend lists and the `dead` messages, to its owner:
//! `<owner id>;<unix seconds>.<nanoseconds>`. The Go checker writes `<hostname>#<pid>;<time of
//! locking>` and never refreshes it; hipache-tpc writes `hipache-tpc/<hostname>#<pid>#<nonce>;<time of
//! the last refresh>` and refreshes it every `lockTimeout / 3` (at most every 10 s). A lock is taken
//! when the field is absent, or when it is stale: a hipache-tpc lock not refreshed for `lockTimeout`, or
//! a Go checker's lock older than [`FOREIGN_LOCK_MAX_AGE`] (the Go checker gives a check up after 30
//! minutes in one state and then deletes its lock; an older one belongs to a dead process). A value
//! without a timestamp (the Go checker's transient `1`) is never taken over.
//!
//! This module only packs scripts and reads their answers; sending is the caller's job.

use redis::Value;

/// A Go checker's lock older than this is considered abandoned.
pub const FOREIGN_LOCK_MAX_AGE: u64 = 3600;

/// Every hipache-tpc owner id starts with this.
pub const OWNER_PREFIX: &str = "hipache-tpc/";

/// Take the lock when free or stale. KEYS: hash. ARGV: url, new value, now, stale age for hipache-tpc
/// locks, stale age for other locks, hipache-tpc owner prefix, our own owner id + `;`.
/// Returns 1 (was free), 2 (taken over from a stale owner), 3 (already ours), 0 (held by another).
const ACQUIRE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
if string.sub(cur, 1, #ARGV[7]) == ARGV[7] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 3
end
local ts = string.match(cur, ';(%d+)%.?%d*$')
if ts then
  local limit = tonumber(ARGV[5])
  if string.sub(cur, 1, #ARGV[6]) == ARGV[6] then limit = tonumber(ARGV[4]) end
  if tonumber(ARGV[3]) - tonumber(ts) > limit then
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    return 2
  end
end
return 0
"#;

/// Refresh a lock we hold, or take it back if it vanished (a Go checker deletes the whole hash when it
/// starts). KEYS: hash. ARGV: url, our owner id + `;`, new value. Returns 1 (held), 0 (lost).
const REFRESH: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"#;

/// Delete a lock if it is ours. KEYS: hash. ARGV: url, our owner id + `;`.
const RELEASE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
"#;

/// Check that `url` is still backend `index` of the list that routes `host` (the first non-empty
/// candidate list, as the proxy looks it up: exact, wildcards, `*`), and if so write the mark.
/// KEYS: the candidate frontend keys in lookup order, then the host's dead set. ARGV: index, url,
/// action (`check`, `dead` or `alive`), TTL of the dead set. Returns 1 (mapping valid, mark written),
/// 0 (the list no longer holds that URL at that index). A dead mark is written only when the list has
/// more than one backend (docs/compatibility.md §3).
const MARK: &str = r#"
local n = #KEYS - 1
for i = 1, n do
  local len = redis.call('LLEN', KEYS[i])
  if len > 0 then
    if redis.call('LINDEX', KEYS[i], tonumber(ARGV[1]) + 1) ~= ARGV[2] then
      return 0
    end
    if ARGV[3] == 'dead' then
      if len > 2 then
        redis.call('SADD', KEYS[n + 1], ARGV[1])
        redis.call('EXPIRE', KEYS[n + 1], ARGV[4])
      end
    elseif ARGV[3] == 'alive' then
      redis.call('SREM', KEYS[n + 1], ARGV[1])
    end
    return 1
  end
end
return 0
"#;

/// Outcome of an acquisition attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    Free,
    TakenOver,
    AlreadyOurs,
    HeldByOther,
}

/// What a mark writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkAction {
    /// Only verify the mapping.
    Check,
    Dead,
    Alive,
}

impl MarkAction {
    fn as_str(self) -> &'static str {
        match self {
            MarkAction::Check => "check",
            MarkAction::Dead => "dead",
            MarkAction::Alive => "alive",
        }
    }
}

/// Who we are in the `hchecker` hash.
#[derive(Debug, Clone)]
pub struct LockOwner {
    /// `hipache-tpc/<hostname>#<pid>#<nonce>`
    pub id: String,
    /// `id` followed by `;`: the prefix of every value we write.
    id_semicolon: String,
}

impl LockOwner {
    pub fn new(hostname: &str, pid: u32, nonce: u32) -> LockOwner {
        let host: String = hostname
            .chars()
            .map(|c| {
                if c == ';' || c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        let id = format!("{OWNER_PREFIX}{host}#{pid}#{nonce:08x}");
        LockOwner {
            id_semicolon: format!("{id};"),
            id,
        }
    }

    /// The lock value at time `now` (unix seconds and nanoseconds).
    pub fn value(&self, secs: u64, nanos: u32) -> String {
        format!("{}{secs}.{nanos:09}", self.id_semicolon)
    }

    /// True when `value` is one of ours.
    pub fn owns(&self, value: &str) -> bool {
        value.starts_with(&self.id_semicolon)
    }
}

fn eval<'a>(pipe: &'a mut redis::Pipeline, script: &str, keys: &[&str]) -> &'a mut redis::Pipeline {
    pipe.cmd("EVAL").arg(script).arg(keys.len());
    for k in keys {
        pipe.arg(*k);
    }
    pipe
}

/// Appends an acquisition attempt for `url` to `pipe`.
pub fn pack_acquire(
    pipe: &mut redis::Pipeline,
    hash: &str,
    url: &str,
    owner: &LockOwner,
    now: (u64, u32),
    lock_timeout_secs: u64,
) {
    eval(pipe, ACQUIRE, &[hash])
        .arg(url)
        .arg(owner.value(now.0, now.1))
        .arg(now.0)
        .arg(lock_timeout_secs)
        .arg(FOREIGN_LOCK_MAX_AGE)
        .arg(OWNER_PREFIX)
        .arg(&owner.id_semicolon);
}

/// Appends a refresh of our lock on `url`.
pub fn pack_refresh(
    pipe: &mut redis::Pipeline,
    hash: &str,
    url: &str,
    owner: &LockOwner,
    now: (u64, u32),
) {
    eval(pipe, REFRESH, &[hash])
        .arg(url)
        .arg(&owner.id_semicolon)
        .arg(owner.value(now.0, now.1));
}

/// Appends a release of our lock on `url`.
pub fn pack_release(pipe: &mut redis::Pipeline, hash: &str, url: &str, owner: &LockOwner) {
    eval(pipe, RELEASE, &[hash])
        .arg(url)
        .arg(&owner.id_semicolon);
}

/// Appends a guarded mark of backend `index` (`url`) for `host`, whose candidate frontend keys (with
/// the driver prefix) are `frontend_keys`.
pub fn pack_mark(
    pipe: &mut redis::Pipeline,
    frontend_keys: &[String],
    dead_key: &str,
    index: usize,
    url: &str,
    action: MarkAction,
    ttl_secs: u64,
) {
    pipe.cmd("EVAL").arg(MARK).arg(frontend_keys.len() + 1);
    for k in frontend_keys {
        pipe.arg(k);
    }
    pipe.arg(dead_key)
        .arg(index)
        .arg(url)
        .arg(action.as_str())
        .arg(ttl_secs);
}

/// An integer script answer; a server error (e.g. WRONGTYPE inside the script) is reported.
pub fn int_reply(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::ServerError(e) => Err(format!("{} {}", e.code(), e.details().unwrap_or(""))),
        other => Err(format!("unexpected reply {other:?}")),
    }
}

/// Decodes an [`ACQUIRE`] answer.
pub fn acquired(v: &Value) -> Result<Acquired, String> {
    match int_reply(v)? {
        1 => Ok(Acquired::Free),
        2 => Ok(Acquired::TakenOver),
        3 => Ok(Acquired::AlreadyOurs),
        _ => Ok(Acquired::HeldByOther),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_values() {
        let o = LockOwner::new("web 1;x", 42, 0xabc);
        assert_eq!(o.id, "hipache-tpc/web_1_x#42#00000abc");
        let v = o.value(1_700_000_000, 5);
        assert_eq!(v, "hipache-tpc/web_1_x#42#00000abc;1700000000.000000005");
        assert!(o.owns(&v));
        assert!(!o.owns("hipache-tpc/web_1_x#42#00000abd;1700000000.0"));
        assert!(!o.owns("web1#42;1700000000.5"));
    }
}
