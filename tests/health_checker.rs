//! The built-in active health checker (docs/compatibility.md §10, hipache-hchecker compatible), with real backends in
//! their own processes (python3, so they can be frozen with SIGSTOP), a real redis-server and the real
//! binary: dead on 500 and when frozen, alive again after recovery, discovery through the proxy's own
//! passive failures, one checker per URL across instances (and takeover when the owner dies), the
//! driver's prefix and database, wildcard-routed hosts, list changes, the Go checker's locks.

mod common;

use std::time::{Duration, Instant};

use common::pybackend::PyBackend;
use common::{free_port, get, wait_until, Proxy, RedisServer};
use serde_json::{json, Value};

/// Checks every second, one-second timeouts.
fn checker(extra: Value) -> Value {
    let mut config = json!({
        "healthcheck": { "enabled": true, "interval": 1, "connectTimeout": 1, "timeout": 1 }
    });
    common::proxy::merge(&mut config, extra);
    config
}

/// What the spec promises (interval + timeout), plus slack for a loaded test machine.
const DEADLINE: Duration = Duration::from_millis(2000 + 2500);

fn members(redis: &RedisServer, db: i64, key: &str) -> Vec<String> {
    let mut m: Vec<String> = redis.cmd_db(db, &["SMEMBERS", key]);
    m.sort();
    m
}

/// Publishes `msg` on `dead` (as a proxy does on a passive failure) until `listeners` subscribers
/// got it (the checkers subscribe shortly after start-up).
fn publish(redis: &RedisServer, msg: &str, listeners: i64) {
    assert!(
        wait_until(Duration::from_secs(10), || {
            let n: i64 = redis.cmd(&["PUBLISH", "dead", msg]);
            n >= listeners
        }),
        "no checker subscribed to the dead channel"
    );
}

/// The lock owner id in a check's User-Agent: `hipache-tpc-hchecker/<v> (<owner>)`.
fn owner_of(check_line: &str) -> String {
    check_line
        .rsplit_once('(')
        .map(|(_, o)| o.trim_end_matches(')').to_string())
        .unwrap_or_default()
}

fn pid_in(owner: &str) -> u32 {
    owner
        .split('#')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_backend_answering_500_is_marked_dead_then_alive_again() {
    let redis = RedisServer::start();
    let sick = PyBackend::start("sick");
    let well = PyBackend::start("well");
    redis.set_frontend("h.test", "h", &[sick.url(), well.url()]);
    let proxy = Proxy::start(&redis, checker(json!({})));
    sick.set_health(500);
    let start = Instant::now();
    publish(&redis, &format!("h.test;{};0;2", sick.url()), 1);
    assert!(
        wait_until(DEADLINE, || members(&redis, 0, "dead:h.test") == ["0"]),
        "not marked dead within {:?}:\n{}",
        start.elapsed(),
        proxy.log()
    );
    let ttl: i64 = redis.cmd(&["TTL", "dead:h.test"]);
    assert!((50..=60).contains(&ttl), "TTL {ttl}");
    // The check as hipache-hchecker sends it.
    let first = sick.checks().first().cloned().unwrap_or_default();
    assert!(
        first.starts_with("HEAD ping hipache-tpc-hchecker/"),
        "{first}"
    );
    // The checker announces itself, not prefixed.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(wait_until(Duration::from_secs(2), || {
        let ping: Option<u64> = redis.cmd(&["GET", "hchecker_ping"]);
        ping.is_some_and(|p| p.abs_diff(now) <= 2)
    }));
    // The proxy stops sending traffic to it (within the cache TTL).
    std::thread::sleep(Duration::from_millis(1100));
    for _ in 0..6 {
        let r = get(proxy.port, "h.test", "/x");
        assert_eq!(r.text().split(' ').next(), Some("well"));
    }
    // 503 means "busy", not dead; 404 is alive too.
    sick.set_health(503);
    assert!(
        wait_until(DEADLINE, || members(&redis, 0, "dead:h.test").is_empty()),
        "not alive again:\n{}",
        proxy.log()
    );
    sick.set_health(502);
    assert!(wait_until(DEADLINE, || members(&redis, 0, "dead:h.test") == ["0"]));
    sick.set_health(404);
    assert!(wait_until(DEADLINE, || members(&redis, 0, "dead:h.test").is_empty()));
    assert!(proxy.log().contains("is alive again"), "{}", proxy.log());
}

#[test]
fn a_frozen_backend_is_marked_dead_and_revives_after_sigcont() {
    let redis = RedisServer::start();
    let frozen = PyBackend::start("frozen");
    let other = PyBackend::start("other");
    redis.set_frontend("f.test", "f", &[other.url(), frozen.url()]);
    let proxy = Proxy::start(&redis, checker(json!({})));
    publish(&redis, &format!("f.test;{};1;2", frozen.url()), 1);
    // First check: alive (SREM of a mark that is not there).
    assert!(wait_until(Duration::from_secs(5), || !frozen
        .checks()
        .is_empty()));
    assert!(members(&redis, 0, "dead:f.test").is_empty());
    frozen.freeze();
    let start = Instant::now();
    assert!(
        wait_until(DEADLINE, || members(&redis, 0, "dead:f.test") == ["1"]),
        "not marked dead within {:?}:\n{}",
        start.elapsed(),
        proxy.log()
    );
    assert!(proxy.log().contains("no answer within"), "{}", proxy.log());
    frozen.thaw();
    assert!(
        wait_until(DEADLINE, || members(&redis, 0, "dead:f.test").is_empty()),
        "not alive again after SIGCONT:\n{}",
        proxy.log()
    );
}

#[test]
fn a_passive_failure_in_the_proxy_starts_a_check() {
    let redis = RedisServer::start();
    let up = PyBackend::start("up");
    let port = free_port();
    let down = format!("http://127.0.0.1:{port}");
    redis.set_frontend("e.test", "e", &[up.url(), down.clone()]);
    let proxy = Proxy::start(
        &redis,
        checker(json!({ "server": { "deadBackendTTL": 5 } })),
    );
    // Requests until one tried the refusing backend (and was retried on the other).
    assert!(wait_until(Duration::from_secs(10), || {
        let r = get(proxy.port, "e.test", "/");
        assert_eq!(r.status, 200);
        members(&redis, 0, "dead:e.test") == ["1"]
    }));
    // The checker wrote the mark (its TTL is 60 s; the proxy's own would be 5 s).
    let start = Instant::now();
    assert!(
        wait_until(DEADLINE, || {
            let ttl: i64 = redis.cmd(&["TTL", "dead:e.test"]);
            ttl > 5
        }),
        "the checker did not mark it:\n{}",
        proxy.log()
    );
    assert!(start.elapsed() < DEADLINE);
    let lock: Option<String> = redis.cmd(&["HGET", "hchecker", &down]);
    assert!(
        lock.as_deref()
            .is_some_and(|v| v.starts_with("hipache-tpc/")),
        "{lock:?}"
    );
    // The backend comes up: alive again.
    let _revived = PyBackend::start_on("revived", port);
    assert!(
        wait_until(DEADLINE, || members(&redis, 0, "dead:e.test").is_empty()),
        "{}",
        proxy.log()
    );
}

#[test]
fn two_instances_never_check_one_url_twice_and_take_over_from_a_dead_one() {
    let redis = RedisServer::start();
    let sick = PyBackend::start("sick");
    let well = PyBackend::start("well");
    sick.set_health(500);
    redis.set_frontend("t.test", "t", &[sick.url(), well.url()]);
    let extra = checker(json!({ "healthcheck": { "lockTimeout": 2 } }));
    let mut one = Proxy::start(&redis, extra.clone());
    let mut two = Proxy::start(&redis, extra);
    publish(&redis, &format!("t.test;{};0;2", sick.url()), 2);
    assert!(wait_until(Duration::from_secs(5), || sick.checks().len() >= 2));
    // Over a few seconds: one checker's requests, at the interval.
    let before = sick.checks().len();
    std::thread::sleep(Duration::from_secs(4));
    let checks = sick.checks();
    let window = checks.len() - before;
    assert!((2..=6).contains(&window), "{window} checks in 4 s");
    let owners: std::collections::BTreeSet<String> = checks.iter().map(|l| owner_of(l)).collect();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let owner = owners.into_iter().next().unwrap_or_default();
    let hash: std::collections::HashMap<String, String> = redis.cmd(&["HGETALL", "hchecker"]);
    assert_eq!(hash.len(), 1, "{hash:?}");
    assert!(
        hash[&sick.url()].starts_with(&format!("{owner};")),
        "{hash:?}"
    );
    // The owner dies without releasing its lock; the other instance takes the URL over once the
    // lock is stale (lockTimeout 2 s).
    let (dead, survivor) = if pid_in(&owner) == one.pid() {
        (&mut one, &mut two)
    } else {
        assert_eq!(pid_in(&owner), two.pid(), "{owner}");
        (&mut two, &mut one)
    };
    dead.signal(libc::SIGKILL);
    assert!(dead.wait_exit(Duration::from_secs(5)).is_some());
    let killed_at = sick.checks().len();
    assert!(
        wait_until(Duration::from_secs(8), || {
            sick.checks()
                .iter()
                .skip(killed_at)
                .any(|l| pid_in(&owner_of(l)) == survivor.pid())
        }),
        "no takeover:\n{}",
        survivor.log()
    );
    assert!(survivor.log().contains("took over"), "{}", survivor.log());
    let value: String = redis.cmd(&["HGET", "hchecker", &sick.url()]);
    assert_eq!(pid_in(&value), survivor.pid(), "{value}");
    assert_eq!(members(&redis, 0, "dead:t.test"), ["0"]);
}

#[test]
fn the_driver_prefix_and_database_are_honoured() {
    let redis = RedisServer::start();
    let sick = PyBackend::start("sick");
    let well = PyBackend::start("well");
    let foreign = PyBackend::start("foreign");
    sick.set_health(500);
    foreign.set_health(500);
    let _: i64 = redis.cmd_db(
        2,
        &[
            "RPUSH",
            "pfx:frontend:p.test",
            "p",
            &sick.url(),
            &well.url(),
        ],
    );
    // A frontend of another deployment (no prefix, database 0) on the same Redis.
    redis.set_frontend("q.test", "q", &[foreign.url(), well.url()]);
    let url = format!("redis://127.0.0.1:{}/2#pfx:", redis.port);
    let proxy = Proxy::start_url(&url, checker(json!({})));
    publish(&redis, &format!("p.test;{};0;2", sick.url()), 1);
    assert!(
        wait_until(DEADLINE, || members(&redis, 2, "pfx:dead:p.test") == ["0"]),
        "{}",
        proxy.log()
    );
    let lock: Option<String> = redis.cmd_db(2, &["HGET", "pfx:hchecker", &sick.url()]);
    assert!(lock.is_some());
    assert!(
        wait_until(Duration::from_secs(2), || {
            let ping: Option<u64> = redis.cmd_db(2, &["GET", "hchecker_ping"]);
            ping.is_some()
        }),
        "hchecker_ping in the driver's database, unprefixed"
    );
    for key in ["dead:p.test", "hchecker", "pfx:dead:p.test"] {
        let n: i64 = redis.cmd_db(0, &["EXISTS", key]);
        assert_eq!(n, 0, "{key} in database 0");
    }
    // The other deployment's message is not ours: no check, no lock, no mark.
    publish(&redis, &format!("q.test;{};0;2", foreign.url()), 1);
    std::thread::sleep(Duration::from_secs(2));
    assert!(foreign.checks().is_empty());
    let lock: Option<String> = redis.cmd_db(2, &["HGET", "pfx:hchecker", &foreign.url()]);
    assert_eq!(lock, None);
    assert!(members(&redis, 0, "dead:q.test").is_empty());
}

#[test]
fn wildcard_hosts_are_covered_and_list_changes_stop_the_marks() {
    let redis = RedisServer::start();
    let sick = PyBackend::start("sick");
    let well = PyBackend::start("well");
    let single = PyBackend::start("single");
    sick.set_health(500);
    redis.set_frontend("*.w.test", "w", &[sick.url(), well.url()]);
    let proxy = Proxy::start(&redis, checker(json!({})));
    // The message names the requested host; the list that matched is the wildcard's.
    publish(&redis, &format!("x.w.test;{};0;2", sick.url()), 1);
    assert!(
        wait_until(DEADLINE, || members(&redis, 0, "dead:x.w.test") == ["0"]),
        "{}",
        proxy.log()
    );
    // The operator reorders the list (and clears the marks, as the admin API does). The checker's
    // next write finds another URL at index 0: it drops that host, and with no host left, the check.
    redis.set_frontend("*.w.test", "w", &[well.url(), sick.url()]);
    let _: i64 = redis.cmd(&["DEL", "dead:x.w.test"]);
    sick.set_health(200);
    assert!(
        wait_until(Duration::from_secs(6), || {
            let lock: Option<String> = redis.cmd(&["HGET", "hchecker", &sick.url()]);
            lock.is_none()
        }),
        "lock not released:\n{}",
        proxy.log()
    );
    assert!(proxy.log().contains("no longer has"), "{}", proxy.log());
    assert!(members(&redis, 0, "dead:x.w.test").is_empty());
    let checks = sick.checks().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sick.checks().len(), checks, "the check ended");
    // Groups of one backend are ignored (docs/compatibility.md §10).
    redis.set_frontend("one.test", "o", &[single.url()]);
    publish(&redis, &format!("one.test;{};0;1", single.url()), 1);
    std::thread::sleep(Duration::from_secs(2));
    assert!(single.checks().is_empty());
}

#[test]
fn the_go_checkers_locks_are_respected_until_stale() {
    let redis = RedisServer::start();
    let sick = PyBackend::start("sick");
    let well = PyBackend::start("well");
    sick.set_health(500);
    redis.set_frontend("g.test", "g", &[sick.url(), well.url()]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // hipache-hchecker's lock: `<hostname>#<pid>;<unix>.<nanos>`, taken now.
    let go_lock = format!("gohost#42;{now}.123456789");
    let _: i64 = redis.cmd(&["HSET", "hchecker", &sick.url(), &go_lock]);
    let proxy = Proxy::start(
        &redis,
        checker(json!({ "healthcheck": { "lockTimeout": 3 } })),
    );
    publish(&redis, &format!("g.test;{};0;2", sick.url()), 1);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        sick.checks().is_empty(),
        "checked a URL locked by another checker"
    );
    let value: String = redis.cmd(&["HGET", "hchecker", &sick.url()]);
    assert_eq!(value, go_lock);
    // A Go lock more than an hour old belongs to a dead checker: taken over (by the watcher).
    let stale = format!("gohost#42;{}.1", now - 4000);
    let _: i64 = redis.cmd(&["HSET", "hchecker", &sick.url(), &stale]);
    assert!(
        wait_until(Duration::from_secs(6), || !sick.checks().is_empty()),
        "{}",
        proxy.log()
    );
    let value: String = redis.cmd(&["HGET", "hchecker", &sick.url()]);
    assert!(value.starts_with("hipache-tpc/"), "{value}");
    assert!(wait_until(DEADLINE, || members(&redis, 0, "dead:g.test") == ["0"]));
    // A Go checker that starts deletes the whole hash; ours takes its lock back at the next refresh.
    let _: i64 = redis.cmd(&["DEL", "hchecker"]);
    assert!(wait_until(Duration::from_secs(4), || {
        let v: Option<String> = redis.cmd(&["HGET", "hchecker", &sick.url()]);
        v.is_some_and(|v| v.starts_with("hipache-tpc/"))
    }));
}
