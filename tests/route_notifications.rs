//! Route changes reach every worker at once (issue 8): a change made with redis-cli is seen on the very
//! next request while the cache TTL is long, for exact, wildcard and catch-all frontends and for dead
//! marks; the notification channel killed or Redis restarted: no change missed; prefix and database.

mod common;

use std::time::Duration;

use common::proxy::wait_for_notifications;
use common::{get, wait_until, Backend, Proxy, RedisServer};
use serde_json::json;

/// Long TTLs: without notifications, nothing below would be seen for a minute.
fn long_ttl() -> serde_json::Value {
    json!({ "server": { "workers": 2, "lruCache": { "size": 1000, "ttl": 60, "trackedTtl": 600 } } })
}

/// `n` requests on new connections (spread over the workers by SO_REUSEPORT); the backends that answered.
fn backends_seen(port: u16, host: &str, n: usize) -> Vec<String> {
    (0..n).map(|_| get(port, host, "/").backend()).collect()
}

/// Writes happen, then the test waits a little: far less than any TTL, so only a notification explains
/// a fresh answer.
fn settle() {
    std::thread::sleep(Duration::from_millis(30));
}

#[test]
fn changes_are_seen_on_the_next_request_despite_a_long_ttl() {
    let redis = RedisServer::start();
    let (v1, v2, v3) = (
        Backend::start("v1"),
        Backend::start("v2"),
        Backend::start("v3"),
    );
    redis.set_frontend("exact.test", "e", &[v1.url()]);
    redis.set_frontend("*.wild.test", "w", &[v1.url()]);
    redis.set_frontend("*", "all", &[v1.url()]);
    let proxy = Proxy::start(&redis, long_ttl());
    wait_for_notifications(&proxy, 2);
    // Warm every worker's cache.
    for host in ["exact.test", "a.wild.test", "b.wild.test", "elsewhere.org"] {
        assert!(backends_seen(proxy.port, host, 20)
            .iter()
            .all(|b| b == "v1"));
    }

    // An exact frontend replaced.
    redis.set_frontend("exact.test", "e", &[v2.url()]);
    settle();
    assert!(backends_seen(proxy.port, "exact.test", 20)
        .iter()
        .all(|b| b == "v2"));
    // A wildcard frontend changed: every host it covers follows; others do not move.
    redis.set_frontend("*.wild.test", "w", &[v2.url()]);
    settle();
    assert!(backends_seen(proxy.port, "a.wild.test", 20)
        .iter()
        .all(|b| b == "v2"));
    assert!(backends_seen(proxy.port, "b.wild.test", 20)
        .iter()
        .all(|b| b == "v2"));
    assert!(backends_seen(proxy.port, "exact.test", 10)
        .iter()
        .all(|b| b == "v2"));
    // A more specific frontend created for a host that used the wildcard.
    redis.set_frontend("a.wild.test", "a", &[v3.url()]);
    settle();
    assert!(backends_seen(proxy.port, "a.wild.test", 20)
        .iter()
        .all(|b| b == "v3"));
    // The catch-all changed.
    redis.set_frontend("*", "all", &[v3.url()]);
    settle();
    assert!(backends_seen(proxy.port, "elsewhere.org", 20)
        .iter()
        .all(|b| b == "v3"));
    // A frontend deleted: the host falls back to what is left (the catch-all).
    let _: i64 = redis.cmd(&["DEL", "frontend:exact.test"]);
    settle();
    assert!(backends_seen(proxy.port, "exact.test", 20)
        .iter()
        .all(|b| b == "v3"));
    // A dead mark: the marked backend is no longer chosen.
    redis.set_frontend("pair.test", "p", &[v1.url(), v2.url()]);
    settle();
    let seen = backends_seen(proxy.port, "pair.test", 40);
    assert!(
        seen.contains(&"v1".to_string()) && seen.contains(&"v2".to_string()),
        "{seen:?}"
    );
    let _: i64 = redis.cmd(&["SADD", "dead:pair.test", "0"]);
    settle();
    assert!(backends_seen(proxy.port, "pair.test", 40)
        .iter()
        .all(|b| b == "v2"));
}

#[test]
fn no_change_is_missed_when_the_channel_dies_or_redis_restarts() {
    let mut redis = RedisServer::start();
    let (v1, v2, v3) = (
        Backend::start("v1"),
        Backend::start("v2"),
        Backend::start("v3"),
    );
    redis.set_frontend("k.test", "k", &[v1.url()]);
    // Notifications lost: the short ttl (1 s) bounds staleness.
    let proxy = Proxy::start(
        &redis,
        json!({ "server": { "workers": 2, "lruCache": { "ttl": 1, "trackedTtl": 600 } } }),
    );
    wait_for_notifications(&proxy, 2);
    assert!(backends_seen(proxy.port, "k.test", 20)
        .iter()
        .all(|b| b == "v1"));
    // Kill the notification connections, then change the route while they are down.
    let clients: String = redis.cmd(&["CLIENT", "LIST"]);
    let mut killed = 0;
    for line in clients.lines().filter(|l| l.contains("-tracking")) {
        let id = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("id="))
            .unwrap();
        let _: i64 = redis.cmd(&["CLIENT", "KILL", "ID", id]);
        killed += 1;
    }
    assert_eq!(
        killed, 2,
        "one notification connection per worker:\n{clients}"
    );
    redis.set_frontend("k.test", "k", &[v2.url()]);
    assert!(
        wait_until(Duration::from_millis(2500), || backends_seen(
            proxy.port, "k.test", 20
        )
        .iter()
        .all(|b| b == "v2")),
        "a change made while the channel was down must be seen within lruCache.ttl"
    );
    // Both workers subscribe again (2 at start, 2 after the kill).
    assert!(wait_until(Duration::from_secs(5), || proxy
        .log()
        .matches("route-change notifications on")
        .count()
        >= 4));

    // Redis restarted (it keeps no data here): the routes come back with new values; no stale answer
    // survives the recovery.
    redis.restart();
    redis.set_frontend("k.test", "k", &[v3.url()]);
    assert!(wait_until(Duration::from_secs(6), || backends_seen(
        proxy.port, "k.test", 20
    )
    .iter()
    .all(|b| b == "v3")));
    // Notifications are back: another change is again immediate.
    assert!(wait_until(Duration::from_secs(5), || proxy
        .log()
        .matches("route-change notifications on")
        .count()
        >= 6));
    redis.set_frontend("k.test", "k", &[v1.url()]);
    settle();
    assert!(backends_seen(proxy.port, "k.test", 20)
        .iter()
        .all(|b| b == "v1"));
}

#[test]
fn prefixed_driver_on_a_non_zero_database() {
    let redis = RedisServer::start();
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    let _: i64 = redis.cmd_db(5, &["RPUSH", "pfxfrontend:p.test", "p", &v1.url()]);
    let url = format!("redis://127.0.0.1:{}/5#pfx", redis.port);
    let mut config = long_ttl();
    config["driver"] = json!(url);
    let proxy = Proxy::start_url(&url, config);
    wait_for_notifications(&proxy, 2);
    assert!(backends_seen(proxy.port, "p.test", 20)
        .iter()
        .all(|b| b == "v1"));
    let _: () = redis.cmd_db(5, &["DEL", "pfxfrontend:p.test"]);
    let _: i64 = redis.cmd_db(5, &["RPUSH", "pfxfrontend:p.test", "p", &v2.url()]);
    settle();
    assert!(backends_seen(proxy.port, "p.test", 20)
        .iter()
        .all(|b| b == "v2"));
    // An unprefixed key of the same name does not disturb it.
    let _: i64 = redis.cmd_db(5, &["RPUSH", "frontend:p.test", "x", &v1.url()]);
    settle();
    assert!(backends_seen(proxy.port, "p.test", 20)
        .iter()
        .all(|b| b == "v2"));
}

#[test]
fn notification_metrics_move() {
    let redis = RedisServer::start();
    let (v1, v2) = (Backend::start("v1"), Backend::start("v2"));
    redis.set_frontend("m.test", "m", &[v1.url()]);
    let (proxy, admin) = common::admin::start_with_admin(&redis, json!({}), long_ttl());
    wait_for_notifications(&proxy, 2);
    let metric = |name: &str| -> f64 {
        let text = admin.get("/metrics").response.text();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert_eq!(metric("hipache_route_notifications_up"), 2.0);
    assert!(backends_seen(proxy.port, "m.test", 20)
        .iter()
        .all(|b| b == "v1"));
    let (inv, evicted) = (
        metric("hipache_cache_invalidations_total"),
        metric("hipache_cache_evictions_total"),
    );
    redis.set_frontend("m.test", "m", &[v2.url()]);
    settle();
    assert!(backends_seen(proxy.port, "m.test", 20)
        .iter()
        .all(|b| b == "v2"));
    // DEL + RPUSH: two notifications per worker; the host was cached by both workers.
    assert!(metric("hipache_cache_invalidations_total") >= inv + 4.0);
    assert!(metric("hipache_cache_evictions_total") >= evicted + 2.0);
    assert!(metric("hipache_route_age_seconds_count") > 0.0);
    // The liveness probe measures the notification lag every second.
    assert!(wait_until(Duration::from_secs(4), || metric(
        "hipache_invalidation_lag_seconds_count"
    ) >= 2.0));
    assert!(
        metric("hipache_invalidation_lag_seconds_bucket{le=\"0.01\"}") >= 1.0,
        "lag under 10 ms on loopback"
    );
}
