//! The file driver (`driver: "file:routes.json"`): routing through a routes file, hot reload while
//! requests flow, broken edits, start-up errors, `--dry`, and dead marks kept in worker memory. Real
//! binary, real backends, raw-socket clients; no Redis anywhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::backend::BlackHole;
use common::client::Conn;
use common::proxy::{config_for, run_cli, BIN};
use common::{free_port, get, wait_until, Backend, Proxy, TempDir};
use serde_json::{json, Value};

/// Starts a proxy on the routes in `routes` (written to `<dir>/routes.json`), with `driver` as the driver
/// setting (e.g. `"file:routes.json"`) and `extra` merged into the configuration.
fn start(routes: &Value, driver: Value, extra: Value) -> Proxy {
    let dir = TempDir::new("file-driver");
    write_in_place(&dir.path().join("routes.json"), &pretty(routes));
    let port = free_port();
    let mut config = config_for("", port, dir.path(), extra);
    config["driver"] = driver;
    Proxy::start_config(dir, port, &config)
        .unwrap_or_else(|log| panic!("proxy did not start:\n{log}"))
}

fn routes_path(proxy: &Proxy) -> PathBuf {
    proxy.dir.path().join("routes.json")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

/// Rewrites the file in place (truncate, then write: same inode; readers may see it half-written).
fn write_in_place(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Replaces the file atomically: write a temporary file, then rename it over the old one.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Runs the binary; kills it (and fails) if it is still running after 10 s. Returns (code, stdout, stderr).
fn run_to_exit(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hipache-tpc");
    let exited = wait_until(Duration::from_secs(10), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "still running after 10 s: {out:?}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Writes a config (port unused by --dry) whose driver is `driver`; returns its path.
fn write_config(dir: &TempDir, driver: &str) -> String {
    let path = dir.path().join("config.json");
    let config = json!({
        "server": { "accessLog": false, "workers": 1 },
        "http": { "port": free_port(), "bind": ["127.0.0.1"] },
        "driver": driver
    });
    std::fs::write(&path, pretty(&config)).unwrap();
    path.to_string_lossy().to_string()
}

#[test]
fn routing_through_a_file_exact_wildcard_identifier_only_and_unknown() {
    let exact = Backend::start("exact");
    let wild = Backend::start("wild");
    let deeper = Backend::start("deeper");
    let routes = json!({
        "//": "comments are allowed",
        "www.a.com": ["site-a", exact.url()],
        "*.a.com": ["wild-a", wild.url()],
        "*.x.a.com": ["wild-x", deeper.url()],
        "only-id.com": ["lonely"],
        "schemeless.com": ["nos", format!("127.0.0.1:{}", exact.port)]
    });
    // Relative form, resolved against the configuration file's folder.
    let proxy = start(&routes, json!("file:routes.json"), json!({}));
    let p = proxy.port;
    for host in ["www.a.com", "WWW.A.Com", "www.a.com:8080", "www.a.com."] {
        let r = get(p, host, "/");
        assert_eq!((r.status, r.backend()), (200, "exact".into()), "{host}");
    }
    assert_eq!(get(p, "other.a.com", "/").backend(), "wild");
    assert_eq!(get(p, "q.x.a.com", "/").backend(), "deeper");
    assert_eq!(get(p, "deep.er.a.com", "/").backend(), "wild");
    assert_eq!(get(p, "schemeless.com", "/").backend(), "exact");
    // A wildcard never serves the bare domain; no catch-all here: unknown hosts get 400.
    assert_eq!(get(p, "a.com", "/").status, 400);
    let r = get(p, "unknown.org", "/");
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("No Application Configured"),
        "{}",
        r.text()
    );
    // Identifier only: 502.
    let r = get(p, "only-id.com", "/");
    assert_eq!(r.status, 502);
    assert!(r.text().contains("Application Not Responding"));
    // __ping__ is answered by the proxy.
    assert_eq!(get(p, "__ping__", "/").text(), "ok");
    // The access log names the identifier, as with Redis.
    let lines = proxy.access_log_lines(11);
    assert!(lines.iter().any(|l| l.contains("\"site-a\"")), "{lines:#?}");
    assert!(
        proxy.log().contains("routes from the file"),
        "{}",
        proxy.log()
    );

    // Absolute file:/// form, as the only element of a driver list, with a catch-all.
    let catch = Backend::start("catch-all");
    let dir = TempDir::new("file-driver-abs");
    let file = dir.path().join("elsewhere.json");
    write_in_place(
        &file,
        &pretty(&json!({ "*": ["everything", catch.url()], "www.a.com": ["a", exact.url()] })),
    );
    let proxy = start(
        &json!({}),
        json!([format!("file://{}", file.display())]),
        json!({}),
    );
    assert_eq!(get(proxy.port, "unknown.org", "/").backend(), "catch-all");
    assert_eq!(get(proxy.port, "localhost", "/").backend(), "catch-all");
    assert_eq!(get(proxy.port, "www.a.com", "/").backend(), "exact");
}

#[test]
fn edits_are_picked_up_while_requests_flow_with_no_failed_request() {
    let v1 = Backend::start("v1");
    let v2 = Backend::start("v2");
    let v3 = Backend::start("v3");
    let routes = |b: &Backend| pretty(&json!({ "live.com": ["live", b.url()] }));
    // Same length for v2 and v3: an in-place rewrite changes neither the size nor, possibly, the mtime.
    assert_eq!(routes(&v2).len(), routes(&v3).len());
    // A long cache TTL: only clearing the cache when a new table arrives can make edits visible in time.
    let proxy = start(
        &json!({ "live.com": ["live", v1.url()] }),
        json!("file:routes.json"),
        json!({ "server": { "lruCache": { "size": 100, "ttl": 600 } } }),
    );
    let path = routes_path(&proxy);
    let port = proxy.port;

    // Two clients: a new connection per request (spread over both workers), and one keep-alive
    // connection (its worker's cache must not serve the old routes).
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(Mutex::new(std::collections::HashMap::<String, usize>::new()));
    // The backend of the latest answer on the keep-alive connection.
    let kept = Arc::new(Mutex::new(String::new()));
    let clients: Vec<_> = [false, true]
        .into_iter()
        .map(|keep_alive| {
            let (stop, failures, served) = (stop.clone(), failures.clone(), served.clone());
            let kept = kept.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(port);
                while !stop.load(Ordering::SeqCst) {
                    let r = if keep_alive {
                        conn.get("live.com", "/")
                    } else {
                        get(port, "live.com", "/")
                    };
                    if keep_alive {
                        *kept.lock().unwrap() = r.backend();
                    }
                    if r.status == 200 {
                        *served.lock().unwrap().entry(r.backend()).or_default() += 1;
                    } else {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.text()));
                    }
                }
            })
        })
        .collect();
    // Every worker, and the keep-alive connection, must be on `name` within the deadline.
    let switched_to = |name: &str, within: Duration| -> bool {
        wait_until(within, || {
            (0..10).all(|_| get(port, "live.com", "/").backend() == name)
                && *kept.lock().unwrap() == name
        })
    };
    assert!(switched_to("v1", Duration::from_secs(1)));

    // Atomic replacement (write + rename).
    let t = Instant::now();
    write_atomically(&path, &routes(&v2));
    assert!(
        switched_to("v2", Duration::from_millis(1500)),
        "rename not applied within {:?}\n{}",
        t.elapsed(),
        proxy.log()
    );
    // In-place rewrite of the same size.
    let t = Instant::now();
    write_in_place(&path, &routes(&v3));
    assert!(
        switched_to("v3", Duration::from_millis(1500)),
        "in-place rewrite not applied within {:?}\n{}",
        t.elapsed(),
        proxy.log()
    );
    // A burst of edits of both kinds, some faster than the watcher polls.
    for i in 0..16 {
        let b = if i % 2 == 0 { &v2 } else { &v3 };
        if i % 4 < 2 {
            write_in_place(&path, &routes(b));
        } else {
            write_atomically(&path, &routes(b));
        }
        std::thread::sleep(Duration::from_millis(if i % 3 == 0 { 20 } else { 130 }));
    }
    write_in_place(&path, &routes(&v1));
    assert!(
        switched_to("v1", Duration::from_millis(1500)),
        "{}",
        proxy.log()
    );

    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let served = served.lock().unwrap();
    assert!(served.values().sum::<usize>() > 100, "{served:?}");
    assert!(
        served
            .keys()
            .all(|k| ["v1", "v2", "v3"].contains(&k.as_str())),
        "{served:?}"
    );
    let log = proxy.log();
    assert!(log.contains("reloaded, 1 frontends"), "{log}");
    // Half-written reads of in-place rewrites are not reported as broken files.
    assert!(!log.contains("stay in force"), "{log}");
}

#[test]
fn a_broken_edit_is_rejected_and_the_old_routes_stay() {
    let old = Backend::start("old");
    let new = Backend::start("new");
    let proxy = start(
        &json!({ "b.com": ["b", old.url()] }),
        json!("file:routes.json"),
        json!({}),
    );
    let path = routes_path(&proxy);
    let shown = path.display().to_string();
    let p = proxy.port;
    assert_eq!(get(p, "b.com", "/").backend(), "old");
    let error_lines = |proxy: &Proxy| -> Vec<String> {
        proxy
            .log()
            .lines()
            .filter(|l| l.contains("stay in force"))
            .map(str::to_string)
            .collect()
    };

    // A missing comma at the end of line 2: the error is found on line 3.
    let broken = format!(
        "{{\n  \"b.com\": [\"b\", \"{}\"]\n  \"c.com\": [\"c\", \"{}\"]\n}}\n",
        new.url(),
        new.url()
    );
    write_atomically(&path, &broken);
    assert!(
        wait_until(Duration::from_secs(3), || error_lines(&proxy)
            .iter()
            .any(|l| l.contains(&shown) && l.contains("line 3, column"))),
        "{}",
        proxy.log()
    );
    for _ in 0..10 {
        assert_eq!(get(p, "b.com", "/").backend(), "old");
    }
    assert_eq!(get(p, "c.com", "/").status, 400);
    // Reported once, not on every poll.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(error_lines(&proxy).len(), 1, "{}", proxy.log());

    // Valid JSON, invalid content: a backend entry that is not a URL, on line 2.
    write_atomically(&path, "{\n  \"b.com\": [\"b\", \"not a url\"]\n}\n");
    assert!(
        wait_until(Duration::from_secs(3), || error_lines(&proxy).iter().any(
            |l| l.contains(&shown) && l.contains("line 2") && l.contains("not a url")
        )),
        "{}",
        proxy.log()
    );
    assert_eq!(get(p, "b.com", "/").backend(), "old");

    // The file disappears: reported, routes kept.
    std::fs::remove_file(&path).unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || error_lines(&proxy)
            .iter()
            .any(|l| l.contains(&shown) && l.contains("cannot read it"))),
        "{}",
        proxy.log()
    );
    assert_eq!(get(p, "b.com", "/").backend(), "old");

    // Fixed: applied.
    write_atomically(
        &path,
        &pretty(&json!({ "b.com": ["b", new.url()], "c.com": ["c", new.url()] })),
    );
    // Workers install the new table independently (within 100 ms of each other): wait for all.
    assert!(wait_until(Duration::from_millis(1500), || {
        (0..10).all(|_| {
            get(p, "b.com", "/").backend() == "new" && get(p, "c.com", "/").backend() == "new"
        })
    }));
}

#[test]
fn a_missing_or_broken_routes_file_at_start_up_is_a_clear_error() {
    let dir = TempDir::new("file-driver-start");
    let config = write_config(&dir, "file:missing-routes.json");
    let missing = dir.path().join("missing-routes.json");
    let (code, _, err) = run_to_exit(&["-c", &config]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "routes file {}: cannot read it",
            missing.display()
        )),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains(" ready: "),
        "{err}"
    );

    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        "{\n  \"a.com\": [\"a\", \"http://127.0.0.1:1\",]\n}\n",
    )
    .unwrap();
    let config = write_config(&dir, "file:broken.json");
    let (code, _, err) = run_to_exit(&["-c", &config]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("routes file {}: line 2, column", broken.display())),
        "{err}"
    );

    // A file: driver next to a Redis one is a configuration error.
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"server": {"accessLog": false}, "driver": ["file:r.json", "redis://127.0.0.1:6379"]}"#,
    )
    .unwrap();
    let (code, _, err) = run_to_exit(&["-c", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("key `driver[0]`"), "{err}");
}

#[test]
fn dry_run_validates_the_routes_file() {
    let dir = TempDir::new("file-driver-dry");
    let routes = dir.path().join("routes.json");
    std::fs::write(
        &routes,
        r#"{"a.com": ["a", "http://127.0.0.1:8081"], "*": ["all", "http://127.0.0.1:8082"]}"#,
    )
    .unwrap();
    let config = write_config(&dir, "file:routes.json");
    let (code, out, err) = run_cli(&["--dry", "-c", &config], None, &[]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("--dry prints JSON");
    assert_eq!(v["driver"]["type"], "file");
    assert_eq!(v["driver"]["path"], routes.display().to_string());
    assert!(err.contains("is valid: 2 frontends"), "{err}");

    std::fs::write(
        &routes,
        "{\n  \"a.com\": [\"a\", \"http://127.0.0.1:8081\"],\n  \"b.com\": [\"b\", 8082]\n}\n",
    )
    .unwrap();
    let (code, out, err) = run_cli(&["--dry", "-c", &config], None, &[]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!("routes file {}: line 3", routes.display())),
        "{err}"
    );
    assert!(err.contains("backend URL string"), "{err}");
    assert!(out.is_empty(), "nothing printed as valid: {out}");

    std::fs::remove_file(&routes).unwrap();
    let (code, _, err) = run_cli(&["--dry", "-c", &config], None, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read it"), "{err}");

    // The shipped example of the format is valid.
    let example = format!(
        "file://{}/config/routes.example.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let config = write_config(&dir, &example);
    let (code, _, err) = run_cli(&["--dry", "-c", &config], None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("never matches"), "{err}");
}

#[test]
fn dead_marks_live_in_worker_memory_with_the_redis_rules() {
    let healthy = Backend::start("healthy");
    // Nothing listens there: connections are refused.
    let refused = format!("http://127.0.0.1:{}", free_port());
    let hung = BlackHole::start();
    let routes = json!({
        "two.test": ["two", refused, healthy.url()],
        "*.wild.test": ["wild", refused, healthy.url()],
        "one.test": ["one", refused],
        "hang.test": ["hang", hung.url(), healthy.url()]
    });
    // No route cache (ttl 0): every request builds its route from the table and the worker's dead marks,
    // so the marks themselves are what keeps a failed backend out.
    let proxy = start(
        &routes,
        json!("file:routes.json"),
        json!({ "server": {
            "deadBackendTTL": 2,
            "backendTimeout": 0.5,
            "lruCache": { "size": 100, "ttl": 0 }
        } }),
    );
    let p = proxy.port;
    // Attempts on the refused backend for a host, as logged by the (shared) forward phase.
    let attempts = |host: &str| {
        std::thread::sleep(Duration::from_millis(200));
        let needle = format!("backend {refused} of {host}: ");
        proxy.log().matches(&needle).count()
    };

    // Retries hide the refused backend; each worker tries it at most once, then marks it dead.
    for _ in 0..40 {
        let r = get(p, "two.test", "/");
        assert_eq!((r.status, r.backend()), (200, "healthy".into()));
    }
    let first = attempts("two.test");
    assert!(
        (1..=2).contains(&first),
        "{first} attempts\n{}",
        proxy.log()
    );

    // Marks are keyed by the requested host, not by the wildcard that matched.
    for host in ["a.wild.test", "b.wild.test"] {
        for _ in 0..40 {
            assert_eq!(get(p, host, "/").backend(), "healthy");
        }
        let n = attempts(host);
        assert!(
            (1..=2).contains(&n),
            "{host}: {n} attempts\n{}",
            proxy.log()
        );
    }

    // A frontend with a single backend is never marked: every request tries it (then 502).
    for _ in 0..3 {
        assert_eq!(get(p, "one.test", "/").status, 502);
    }
    assert!(attempts("one.test") >= 3, "{}", proxy.log());
    assert!(
        !proxy
            .log()
            .contains("of one.test (frontend one.test) marked dead"),
        "{}",
        proxy.log()
    );

    // A backend that never answers: 504 and a mark, then the healthy one.
    let mut timeouts = 0;
    for _ in 0..30 {
        match get(p, "hang.test", "/").status {
            200 => {}
            504 => timeouts += 1,
            other => panic!("hang.test answered {other}"),
        }
    }
    assert!((1..=2).contains(&timeouts), "{timeouts} timeouts");

    // All marks of a host expire together deadBackendTTL (2 s) after the last one: the backend is tried
    // again.
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..40 {
        assert_eq!(get(p, "two.test", "/").backend(), "healthy");
    }
    let again = attempts("two.test");
    assert!(
        again > first && again <= first + 2,
        "{first} then {again} attempts\n{}",
        proxy.log()
    );
}
