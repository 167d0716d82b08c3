//! `/metrics` (Prometheus text) and `/status` (JSON health summary) on the admin listener: values move
//! as requests, errors, retries, cache hits and Redis outages happen. Scrape, act, scrape again.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::admin::{start_with_admin, Admin};
use common::backend::BlackHole;
use common::client::Conn;
use common::{free_port, get, wait_until, Backend, RedisServer};
use serde_json::json;

/// Sample name (with labels) → value.
fn scrape(admin: &Admin) -> HashMap<String, f64> {
    let a = admin.get("/metrics");
    assert_eq!(a.status, 200);
    assert_eq!(
        a.response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = a.response.text();
    let mut out = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line.rsplit_once(' ').expect("sample line");
        out.insert(name.to_string(), value.parse::<f64>().expect("number"));
    }
    out
}

fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str) -> f64 {
    after
        .get(name)
        .copied()
        .unwrap_or_else(|| panic!("no {name}"))
        - before.get(name).copied().unwrap_or(0.0)
}

#[test]
fn counters_move_with_requests_errors_and_cache_hits() {
    let redis = RedisServer::start();
    let backend = Backend::start("ok");
    let refused = format!("http://127.0.0.1:{}", free_port());
    redis.set_frontend("m.test", "m", &[backend.url()]);
    redis.set_frontend("retry.test", "r", &[refused, backend.url()]);
    // A long cache TTL so that repeated hosts are cache hits. Route-change notifications are off: here a
    // dead mark must not evict the route (that is tested in tests/route_notifications.rs).
    let (proxy, admin) = start_with_admin(
        &redis,
        json!({}),
        json!({ "server": { "routeNotifications": false, "lruCache": { "size": 100, "ttl": 30 } } }),
    );
    let before = scrape(&admin);
    let mut c = Conn::open(proxy.port);
    for i in 0..5 {
        assert_eq!(c.get("m.test", &format!("/{i}")).status, 200);
    }
    assert_eq!(c.get("m.test", "/status/404").status, 404);
    assert_eq!(c.get("m.test", "/status/502").status, 502);
    for _ in 0..3 {
        assert_eq!(get(proxy.port, "unknown.test", "/").status, 400);
    }
    // The first backend refuses: a backend error, a dead mark, a retry on the second.
    for _ in 0..10 {
        let r = get(proxy.port, "retry.test", "/");
        assert_eq!(r.status, 200);
    }
    drop(c);
    // Gauges are refreshed by each worker every 200 ms.
    std::thread::sleep(Duration::from_millis(500));
    let after = scrape(&admin);
    assert_eq!(
        delta(&before, &after, "hipache_responses_total{class=\"2xx\"}"),
        15.0
    );
    assert_eq!(
        delta(&before, &after, "hipache_responses_total{class=\"4xx\"}"),
        4.0
    );
    assert_eq!(
        delta(&before, &after, "hipache_responses_total{class=\"5xx\"}"),
        1.0
    );
    assert_eq!(
        delta(&before, &after, "hipache_backend_bad_status_total"),
        1.0
    );
    let workers: f64 = (0..2)
        .map(|w| {
            delta(
                &before,
                &after,
                &format!("hipache_worker_responses_total{{worker=\"{w}\"}}"),
            )
        })
        .sum();
    assert_eq!(workers, 20.0);
    // retry.test: each worker picks the refusing backend at random until it fails once (then its
    // cached route has it marked): one backend error, one dead mark and one retry per worker that
    // tried it (1 or 2: missing it 10 times in a row is a 1-in-1000 event). A pooled connection
    // found closed is retried too, hence `>=`.
    let errors = delta(&before, &after, "hipache_backend_errors_total");
    let retries = delta(&before, &after, "hipache_retries_total");
    assert!(
        (1.0..=2.0).contains(&errors) && retries >= errors,
        "errors {errors}, retries {retries}"
    );
    assert_eq!(delta(&before, &after, "hipache_dead_marks_total"), errors);
    // Each worker misses once per host, every other request is a hit.
    let hits = delta(&before, &after, "hipache_route_cache_hits_total");
    let misses = delta(&before, &after, "hipache_route_cache_misses_total");
    assert_eq!(hits + misses, 20.0);
    assert!((3.0..=6.0).contains(&misses), "misses {misses}");
    assert!(delta(&before, &after, "hipache_redis_round_trips_total") >= misses);
    assert_eq!(delta(&before, &after, "hipache_redis_errors_total"), 0.0);
    assert!(after["hipache_route_cache_entries"] >= 3.0);
    assert_eq!(
        delta(&before, &after, "hipache_client_connections_accepted_total"),
        14.0
    );
    assert_eq!(after["hipache_client_connections"], 0.0);
    assert_eq!(after["hipache_redis_up"], 2.0);
    assert_eq!(
        delta(&before, &after, "hipache_request_duration_seconds_count"),
        20.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            "hipache_request_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        20.0
    );
    // Answers from a backend have a backend time; the proxy's own 400s do not.
    assert_eq!(
        delta(&before, &after, "hipache_backend_duration_seconds_count"),
        17.0
    );
    assert!(
        after["hipache_backend_connections"] >= 1.0,
        "keep-alive connections to the backend"
    );
    // An open connection is a gauge.
    let mut open = Conn::open(proxy.port);
    assert_eq!(open.get("m.test", "/").status, 200);
    assert!(wait_until(Duration::from_secs(2), || scrape(&admin)
        ["hipache_client_connections"]
        == 1.0));
    drop(open);
    assert!(wait_until(Duration::from_secs(2), || scrape(&admin)
        ["hipache_client_connections"]
        == 0.0));
}

#[test]
fn timeouts_and_redis_outages_show_in_metrics_and_status() {
    let mut redis = RedisServer::start();
    let hole = BlackHole::start();
    redis.set_frontend("hole.test", "h", &[hole.url()]);
    let (proxy, admin) = start_with_admin(
        &redis,
        json!({}),
        json!({ "server": { "backendTimeout": 1, "lruCache": { "size": 100, "ttl": 0 } } }),
    );
    assert!(wait_until(Duration::from_secs(5), || admin
        .get("/status")
        .status
        == 200));
    let s = admin.get("/status");
    assert_eq!(s.json["status"], "ok");
    assert_eq!(s.json["workers"], json!({ "configured": 2, "up": 2 }));
    assert_eq!(s.json["redis"]["workersConnected"], 2);
    assert_eq!(s.json["redis"]["reachable"], true);
    assert_eq!(s.json["version"], env!("CARGO_PKG_VERSION"));
    assert!(s.json["uptimeSeconds"].is_u64());
    assert_eq!(s.json["healthcheck"]["enabled"], false);

    let before = scrape(&admin);
    assert_eq!(get(proxy.port, "hole.test", "/").status, 504);
    let after = scrape(&admin);
    assert_eq!(
        delta(&before, &after, "hipache_responses_total{class=\"5xx\"}"),
        1.0
    );
    assert_eq!(delta(&before, &after, "hipache_backend_errors_total"), 1.0);

    // Redis goes away: lookups fail (503), the gauge drops, /status says degraded.
    redis.kill();
    assert_eq!(get(proxy.port, "other.test", "/").status, 503);
    assert!(wait_until(Duration::from_secs(5), || scrape(&admin)
        ["hipache_redis_up"]
        == 0.0));
    let during = scrape(&admin);
    assert!(delta(&after, &during, "hipache_redis_errors_total") >= 1.0);
    let s = admin.get("/status");
    assert_eq!(s.status, 503);
    assert_eq!(s.json["status"], "degraded");
    assert_eq!(s.json["redis"]["reachable"], false);
    assert!(
        s.json["problems"][0]
            .as_str()
            .unwrap_or("")
            .contains("Redis"),
        "{}",
        s.json
    );
    // The API says Redis is unreachable, as JSON.
    let a = admin.get("/frontends");
    assert_eq!(a.status, 503);
    assert!(a.error().contains("Redis"), "{}", a.error());

    redis.restart();
    assert!(wait_until(Duration::from_secs(10), || admin
        .get("/status")
        .status
        == 200));
    assert_eq!(scrape(&admin)["hipache_redis_up"], 2.0);
}

/// The README's metrics table lists exactly what `/metrics` exposes: every `# TYPE` line of a scrape
/// (with the health checker on, so that its metrics are there too) is a row of the table, with the same
/// type, and every row is exposed.
#[test]
fn the_readme_metrics_table_matches_metrics_exactly() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start_with_admin(
        &redis,
        json!({}),
        json!({ "healthcheck": { "enabled": true } }),
    );
    let scraped: std::collections::BTreeSet<(String, String)> = admin
        .get("/metrics")
        .response
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("\n## Metrics and status\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a \"Metrics and status\" section");
    let documented: std::collections::BTreeSet<(String, String)> = section
        .lines()
        .filter(|l| l.starts_with("| `hipache_"))
        .map(|l| {
            // An escaped `\|` inside a cell is not a cell border.
            let l = l.replace("\\|", "/");
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // | `name{labels}` | type | meaning |
            let name = cells[1].trim_matches('`');
            let name = name.split('{').next().unwrap_or(name);
            (name.to_string(), cells[2].to_string())
        })
        .collect();
    assert!(!scraped.is_empty());
    let missing: Vec<_> = scraped.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&scraped).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "exposed but not in the README: {missing:?}\nin the README but not exposed: {extra:?}"
    );
}
