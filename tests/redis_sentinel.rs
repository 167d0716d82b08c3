//! Redis under Sentinel (README "Running Redis for a fleet"): two proxy instances on one Sentinel group
//! (a master, a replica, three sentinels, all real `redis-server` processes) keep serving cached hosts
//! with zero failed requests while the master is SIGKILLed, serve a route written to the new master
//! within 2 s of its promotion, write passive dead marks there, and follow a graceful `SENTINEL
//! FAILOVER` (the old master stays up: only `+switch-master` tells the proxies to move).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::admin::start_url_with_admin;
use common::client::Conn;
use common::sentinel::{sentinel_cmd, SentinelGroup, MASTER};
use common::{free_port, get, wait_until, Backend, Proxy};
use serde_json::json;

/// Keep-alive clients hammering `host` on each port until stopped: (requests, failures).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(ports: &[u16], host: &'static str, per_port: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        for &port in ports {
            for _ in 0..per_port {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                threads.push(std::thread::spawn(move || {
                    let mut conn = Conn::open(port);
                    while !stop.load(Ordering::Relaxed) {
                        let r = conn.request("GET", host, "/", &[], b"");
                        if r.status == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            eprintln!("failed: {} {}", r.status, r.text());
                            failed.fetch_add(1, Ordering::Relaxed);
                            conn = Conn::open(port);
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }));
            }
        }
        Load {
            stop,
            ok,
            failed,
            threads,
        }
    }

    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

fn served_by_all(ports: &[u16], host: &str, backend: &str) -> bool {
    ports.iter().all(|p| {
        (0..6).all(|_| {
            let r = get(*p, host, "/");
            r.status == 200 && r.backend() == backend
        })
    })
}

fn proxies(group: &SentinelGroup) -> (Proxy, Proxy) {
    let extra = json!({ "server": { "workers": 2 } });
    (
        Proxy::start_url(&group.url(), extra.clone()),
        Proxy::start_url(&group.url(), extra),
    )
}

#[test]
fn a_killed_master_costs_no_request_and_routes_follow_the_new_one() {
    let mut group = SentinelGroup::start();
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    group.master().set_frontend("cached.test", "c", &[a.url()]);
    // Let the replica catch up before the master dies.
    std::thread::sleep(Duration::from_millis(300));
    let (p1, p2) = proxies(&group);
    let ports = [p1.port, p2.port];
    assert!(served_by_all(&ports, "cached.test", "a"));

    let load = Load::start(&ports, "cached.test", 3);
    std::thread::sleep(Duration::from_millis(300));
    let old = group.master_port();
    group.server_mut(old).kill();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let now = group.master_port();
            now != 0 && now != old
        }),
        "the sentinels never promoted the replica"
    );
    let promoted = Instant::now();
    group.master().set_frontend("new.test", "n", &[b.url()]);
    assert!(
        wait_until(Duration::from_secs(5), || served_by_all(
            &ports, "new.test", "b"
        )),
        "a route written to the new master was not served:\n{}\n{}",
        p1.log(),
        p2.log()
    );
    let took = promoted.elapsed();
    let (ok, failed) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the failover",
        ok + failed
    );
    assert!(ok > 100, "too little load: {ok}");
    assert!(
        took < Duration::from_millis(2500),
        "the new master's route took {took:?} after the promotion"
    );
    eprintln!(
        "route on the new master served {took:?} after the promotion; {ok} requests, 0 failed"
    );

    // Passive dead marks go to the new master.
    let refused = format!("http://127.0.0.1:{}", free_port());
    group
        .master()
        .set_frontend("pair.test", "p", &[refused, b.url()]);
    // Requests go on until a random choice has picked the refused backend and the mark is there.
    assert!(
        wait_until(Duration::from_secs(5), || {
            assert!(served_by_all(&ports, "pair.test", "b"));
            let members: Vec<String> = group.master().cmd(&["SMEMBERS", "dead:pair.test"]);
            members == ["0"]
        }),
        "no dead mark on the new master:\n{}",
        p1.log()
    );
}

#[test]
fn a_graceful_failover_moves_every_connection() {
    let group = SentinelGroup::start();
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    group.master().set_frontend("g.test", "g", &[a.url()]);
    std::thread::sleep(Duration::from_millis(300));
    // A long TTL: only the notifications of the new master can make the change visible.
    let extra = json!({ "server": { "workers": 2, "lruCache": { "ttl": 60, "trackedTtl": 600 } } });
    let (p1, p1_admin) = start_url_with_admin(&group.url(), json!({}), extra.clone());
    let p2 = Proxy::start_url(&group.url(), extra);
    let ports = [p1.port, p2.port];
    assert!(served_by_all(&ports, "g.test", "a"));
    let old = group.master_port();
    let load = Load::start(&ports, "g.test", 2);
    let out = sentinel_cmd(group.sentinel_ports[0], &["SENTINEL", "FAILOVER", MASTER]);
    assert!(out.contains("OK"), "SENTINEL FAILOVER: {out}");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let now = group.master_port();
            now != 0 && now != old
        }),
        "no failover"
    );
    let new = group.master_port();
    // Every proxy connection leaves the old master (which is still up) for the new one.
    let ours = |port: u16| -> usize {
        let s = group.servers.iter().find(|s| s.port == port).unwrap();
        let list: String = s.cmd(&["CLIENT", "LIST"]);
        list.lines()
            .filter(|l| l.contains("name=hipache-tpc"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(5), || ours(old) == 0 && ours(new) >= 8),
        "connections on the old master: {}, on the new one: {}\n{}",
        ours(old),
        ours(new),
        p1.log()
    );
    // The new master's notifications reach both instances. (Replaced atomically with RENAME: a DEL
    // then RPUSH would let a lookup see no frontend in between.)
    let _: i64 = group
        .master()
        .cmd(&["RPUSH", "frontend:g.next", "g", &b.url()]);
    let _: () = group
        .master()
        .cmd(&["RENAME", "frontend:g.next", "frontend:g.test"]);
    assert!(
        wait_until(Duration::from_secs(2), || served_by_all(
            &ports, "g.test", "b"
        )),
        "a change on the new master was not seen:\n{}",
        p1.log()
    );
    // /metrics and /status say it.
    // (The workers publish their count with their housekeeping tick: wait for it.)
    assert!(
        wait_until(Duration::from_secs(5), || p1_admin
            .get("/metrics")
            .response
            .text()
            .lines()
            .any(
                |l| l.starts_with("hipache_redis_failovers_seen ") && !l.ends_with(" 0")
            )),
        "{}",
        p1_admin.get("/metrics").response.text()
    );
    assert!(
        wait_until(Duration::from_secs(5), || p1_admin.get("/status").json
            ["redis"]["failoversSeen"]
            == 1),
        "{}",
        p1_admin.get("/status").json
    );
    let st = p1_admin.get("/status").json;
    assert_eq!(
        st["redis"]["read"]["connectedTo"],
        format!("127.0.0.1:{new}"),
        "{st}"
    );
    let (ok, failed) = load.finish();
    // Requests racing the switch of the backend list are answered by a or b: all 200.
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(
        p1.log().contains("failover of \"mymaster\""),
        "{}",
        p1.log()
    );
}
