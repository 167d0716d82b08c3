//! The web console on the admin listener (README "Web console"), against real redis-server, real
//! backends and the real binary.
//!
//! - `console_in_a_real_browser`: headless Chromium driven by Selenium (tests/browser/console_test.py)
//!   with 10,000 frontends loaded: a wrong key refused, log in, page, find one frontend, add a backend
//!   and see traffic reach it, remove it, a killed backend flagged dead, the traffic, status and
//!   certificates screens, a screenshot of each under `target/console-screenshots/`. Chromium,
//!   chromedriver and Selenium are required: without them the test fails saying how to install them.
//! - The other tests check the HTTP side without a browser: what the console's files are served with,
//!   the Origin check, the paged listing and the JSON metrics, and that hipache-api answers are unchanged.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::admin::{enc, start_with_admin};
use common::client::Conn;
use common::{get, wait_until, Backend, RedisServer};
use serde_json::{json, Value};

const KEY: &str = "console-test-key-7f3a";
const FRONTENDS: usize = 10_000;

/// Fails (never skips) when the browser stack is missing.
fn require_browser() {
    let mut missing = Vec::new();
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !Path::new(bin).exists() {
            missing.push(bin.to_string());
        }
    }
    let selenium = Command::new("python3")
        .args(["-c", "import selenium"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !selenium {
        missing.push("the Python selenium package".into());
    }
    assert!(
        missing.is_empty(),
        "the console test needs a real browser, and {} missing. Install them with:\n    \
         apt-get install -y chromium chromium-driver && pip install selenium\n\
         (.ci/run installs them when missing)",
        missing.join(", ")
    );
}

/// Loads `n` frontends `site-NNNNN.test`, each routed to `backend`, in one pipeline.
fn load_frontends(redis: &RedisServer, n: usize, backend: &str) {
    let mut conn = redis.conn(0);
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("RPUSH")
            .arg(format!("frontend:site-{i:05}.test"))
            .arg(format!("site-{i:05}"))
            .arg(backend)
            .ignore();
    }
    pipe.query::<()>(&mut conn).expect("load frontends");
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/console-screenshots");
    dir
}

#[test]
fn console_in_a_real_browser() {
    require_browser();
    let redis = RedisServer::start();
    let good = Backend::start("good");
    let doomed = Backend::start("doomed");
    let added = Backend::start("added");
    load_frontends(&redis, FRONTENDS, &good.url());
    let target = "site-04242.test";
    redis.set_frontend(target, "site-04242", &[good.url(), doomed.url()]);
    let (proxy, admin) = start_with_admin(&redis, json!({ "key": KEY }), json!({}));
    let shots = screenshots_dir();
    for entry in std::fs::read_dir(&shots).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(entry.path());
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console_test.py");
    let mut child = Command::new("python3")
        .arg(&script)
        .env("ADMIN_URL", format!("http://127.0.0.1:{}", admin.port))
        .env("ADMIN_KEY", KEY)
        .env("TARGET", target)
        .env("NEW_BACKEND", added.url())
        .env("DOOMED", doomed.url())
        .env("SHOTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut stdin = child.stdin.take().expect("stdin");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let stderr = child.stderr.take().expect("stderr");
    let stderr_text = std::thread::spawn(move || {
        let mut s = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            s.push_str(&line);
            s.push('\n');
        }
        s
    });

    let started = Instant::now();
    let traffic_stop = Arc::new(AtomicBool::new(false));
    let mut traffic = None;
    let mut result: Option<Value> = None;
    let mut failure: Option<String> = None;
    let mut steps = Vec::new();
    while result.is_none() && failure.is_none() {
        let line = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(l) => l,
            Err(_) => {
                failure = Some("the browser script stopped answering (or exited)".into());
                break;
            }
        };
        steps.push(line.clone());
        let ok = match line.as_str() {
            "ADDED" => {
                // Traffic for the frontend reaches the backend added in the browser.
                wait_until(Duration::from_secs(10), || {
                    get(proxy.port, target, "/via-console");
                    added.requests() > 0
                })
            }
            "REMOVED" => {
                let list: Vec<String> =
                    redis.cmd(&["LRANGE", &format!("frontend:{target}"), "0", "-1"]);
                let before = added.requests();
                for _ in 0..20 {
                    get(proxy.port, target, "/after-removal");
                }
                !list.contains(&added.url()) && added.requests() == before
            }
            "KILL" => {
                doomed.stop();
                let marked = wait_until(Duration::from_secs(10), || {
                    get(proxy.port, target, "/until-marked");
                    let dead: Vec<String> = redis.cmd(&["SMEMBERS", &format!("dead:{target}")]);
                    dead.contains(&"1".to_string())
                });
                // From here on, steady traffic for the traffic screen's charts.
                let (port, stop) = (proxy.port, traffic_stop.clone());
                traffic = Some(std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let path = if n % 10 == 0 {
                            "/status/404"
                        } else {
                            "/steady"
                        };
                        get(port, "site-00001.test", path);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }));
                marked
            }
            l if l.starts_with("RESULT ") => {
                result = Some(serde_json::from_str(&l["RESULT ".len()..]).expect("RESULT json"));
                continue;
            }
            l if l.starts_with("FAIL ") => {
                failure = Some(l.to_string());
                break;
            }
            _ => continue,
        };
        if !ok {
            failure = Some(format!("the check after {line} failed"));
            let _ = writeln!(stdin, "NO");
            break;
        }
        let _ = writeln!(stdin, "OK");
    }
    drop(stdin);
    traffic_stop.store(true, Ordering::Relaxed);
    if let Some(t) = traffic {
        let _ = t.join();
    }
    let exited = wait_until(Duration::from_secs(30), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = stderr_text.join().unwrap_or_default();
    if let Some(f) = failure {
        panic!(
            "{f}\nsteps: {steps:?}\nscript stderr:\n{stderr}\nproxy log:\n{}",
            proxy.log()
        );
    }
    let r = result.expect("a RESULT line");
    eprintln!(
        "console test: {r} ({:.1} s)",
        started.elapsed().as_secs_f64()
    );

    assert_eq!(
        steps.iter().filter(|s| s.len() < 10).count(),
        3,
        "{steps:?}"
    );
    assert!(
        r["wrong_key_message"]
            .as_str()
            .unwrap_or("")
            .contains("Invalid api key"),
        "{r}"
    );
    // `count` is SCAN's hint: a page holds about that many (a SCAN step is never cut short).
    assert!(
        r["first_page_rows"]
            .as_u64()
            .is_some_and(|n| (50..=100).contains(&n)),
        "{r}"
    );
    assert_eq!(r["pages_differ"], json!(true), "{r}");
    assert_eq!(r["key_in_url"], json!(false), "{r}");
    assert_eq!(r["key_in_cookies"], json!(false), "{r}");
    assert_eq!(r["key_after_logout"], Value::Null, "{r}");
    assert!(
        r["search_seconds"].as_f64().is_some_and(|s| s < 5.0),
        "finding one frontend among {FRONTENDS} took too long: {r}"
    );
    assert!(
        r["add_message"]
            .as_str()
            .unwrap_or("")
            .contains("Backends created"),
        "{r}"
    );
    assert!(
        r["duplicate_message"]
            .as_str()
            .unwrap_or("")
            .contains("is already in the frontend"),
        "{r}"
    );
    assert!(
        r["remove_message"]
            .as_str()
            .unwrap_or("")
            .contains("Backend removed"),
        "{r}"
    );
    assert_eq!(r["dead_badge"], json!("dead"), "{r}");
    assert!(
        r["dead_detail"]
            .as_str()
            .unwrap_or("")
            .contains("passive marks"),
        "{r}"
    );
    assert!(
        r["rps_text"].as_str().unwrap_or("").contains("req/s"),
        "{r}"
    );
    assert_eq!(r["chart_drawn"], json!(true), "{r}");
    assert!(
        r["worker_legend"]
            .as_str()
            .unwrap_or("")
            .contains("worker 0"),
        "{r}"
    );
    assert!(r["status_rows"].as_u64().is_some_and(|n| n >= 5), "{r}");
    assert!(
        r["certificates_text"]
            .as_str()
            .unwrap_or("")
            .contains("HTTPS issue"),
        "{r}"
    );
    assert_eq!(r["browser_errors"], json!([]), "CSP or script errors: {r}");
    for name in [
        "01-login",
        "02-wrong-key",
        "03-frontends",
        "04-search",
        "05-backend-added",
        "06-dead-backend",
        "07-traffic",
        "08-status",
        "09-certificates",
    ] {
        let p = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", p.display());
    }
}

fn header<'a>(r: &'a common::Response, name: &str) -> &'a str {
    r.header(name).unwrap_or("")
}

#[test]
fn console_files_headers_and_compatibility() {
    let redis = RedisServer::start();
    let (_proxy, admin) = start_with_admin(&redis, json!({ "key": KEY }), json!({}));
    // A browser gets the page, without the key, with a strict policy.
    let page = Conn::open(admin.port).request(
        "GET",
        "127.0.0.1",
        "/",
        &[("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
        b"",
    );
    assert_eq!(page.status, 200);
    assert!(header(&page, "content-type").starts_with("text/html"));
    let csp = header(&page, "content-security-policy");
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert!(page.text().contains("/console/console.js"));
    for (path, ct) in [
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let r = admin.get(path);
        assert_eq!((r.status, header(&r.response, "content-type")), (200, ct));
        assert!(!r.response.body.is_empty());
    }
    assert_eq!(admin.get("/console/secret.txt").status, 404);
    // Without text/html, `/` is still the JSON index, behind the key.
    let a = admin.get("/");
    assert_eq!(a.status, 401);
    let a = admin.get(&format!("/?api_key={KEY}"));
    assert_eq!(a.json["service"], json!("hipache-tpc admin"));
    // hipache-api's listing is unchanged.
    redis.set_frontend("b.test", "b", &["http://10.0.0.2:80".into()]);
    redis.set_frontend("a.test", "a", &["http://10.0.0.1:80".into()]);
    let auth = format!("Bearer {KEY}");
    let bearer = [("Authorization", auth.as_str())];
    let a = admin.call("GET", "/frontends", &bearer, "");
    assert_eq!(a.json, json!(["a.test", "b.test"]));

    // Origin on changes: another origin is refused (before anything is written), this one works.
    let form = format!("host=c.test&backends={}", enc("http://10.0.0.3:80"));
    let evil = [
        ("Authorization", auth.as_str()),
        ("Origin", "http://evil.example"),
    ];
    let a = admin.call("POST", "/frontends", &evil, &form);
    assert_eq!(a.status, 403, "{}", a.response.text());
    assert!(a.error().contains("Origin"), "{}", a.error());
    let exists: i64 = redis.cmd(&["EXISTS", "frontend:c.test"]);
    assert_eq!(exists, 0);
    let a = admin.call(
        "DELETE",
        "/frontends/a.test",
        &[("Authorization", auth.as_str()), ("Origin", "null")],
        "",
    );
    assert_eq!(a.status, 403);
    // The test client sends `Host: 127.0.0.1`.
    let same = [
        ("Authorization", auth.as_str()),
        ("Origin", "http://127.0.0.1"),
    ];
    let a = admin.call("POST", "/frontends", &same, &form);
    assert_eq!(a.status, 200, "{}", a.response.text());
    // Reads are not refused for an Origin (the answer is JSON behind the key either way).
    let a = admin.call("GET", "/frontends/c.test", &evil, "");
    assert_eq!(a.status, 200);

    // The paged listing: each frontend with its backends and dead marks.
    let _: i64 = redis.cmd(&["SADD", "dead:a.test", "0"]);
    let _: i64 = redis.cmd(&["EXPIRE", "dead:a.test", "20"]);
    let a = admin.call("GET", "/frontends?cursor=0&count=10", &bearer, "");
    assert_eq!(a.status, 200, "{}", a.response.text());
    assert_eq!(a.json["cursor"], json!("0"));
    let names: Vec<&str> = a.json["frontends"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["a.test", "b.test", "c.test"]);
    let fa = &a.json["frontends"][0];
    assert_eq!(fa["identifier"], json!("a"));
    assert_eq!(fa["backends"][0]["url"], json!("http://10.0.0.1:80"));
    assert_eq!(fa["backends"][0]["dead"], json!(true));
    // deadBackendTTL 30 − TTL ≤ 20: marked about 10 s ago.
    let marked = fa["backends"][0]["markedAt"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((8..=13).contains(&(now - marked)), "{fa}");
    assert_eq!(a.json["frontends"][1]["backends"][0]["dead"], json!(false));
    let a = admin.call("GET", "/frontends?match=B.T", &bearer, "");
    assert_eq!(a.json["frontends"].as_array().map(Vec::len), Some(1));
    assert_eq!(a.json["frontends"][0]["name"], json!("b.test"));
    for bad in ["cursor=x", "count=0", "count=501", "cursor=-1"] {
        let a = admin.call("GET", &format!("/frontends?{bad}"), &bearer, "");
        assert_eq!(a.status, 400, "{bad}: {}", a.response.text());
    }
    // The key is still needed for the data.
    assert_eq!(admin.get("/frontends?cursor=0").status, 401);

    // The metrics' JSON form, per worker.
    let a = admin.call("GET", "/metrics?format=json", &bearer, "");
    assert_eq!(a.status, 200);
    assert!(a.json["workers"].as_array().is_some_and(|w| !w.is_empty()));
    assert!(a.json["workers"][0]["connections"].is_i64());
    assert_eq!(
        a.json["latency"]["counts"].as_array().map(Vec::len),
        Some(17)
    );
    assert!(a.json["responses"]["2xx"].is_u64());
}

#[test]
fn the_listing_says_which_marks_the_active_checker_made() {
    let redis = RedisServer::start();
    let up = Backend::start("up");
    let down = format!("http://127.0.0.1:{}", common::free_port());
    redis.set_frontend("e.test", "e", &[up.url(), down.clone()]);
    let (proxy, admin) = start_with_admin(
        &redis,
        json!({ "key": KEY }),
        json!({ "healthcheck": { "enabled": true, "interval": 1, "connectTimeout": 1, "timeout": 1 } }),
    );
    let auth = format!("Bearer {KEY}");
    let bearer = [("Authorization", auth.as_str())];
    // What a proxy publishes on a passive failure: the checker takes the URL and finds it dead.
    let msg = format!("e.test;{down};1;2");
    let mut listing = Value::Null;
    let shown = wait_until(Duration::from_secs(10), || {
        let _: i64 = redis.cmd(&["PUBLISH", "dead", &msg]);
        listing = admin
            .call("GET", "/frontends?match=e.test", &bearer, "")
            .json;
        listing["frontends"][0]["backends"][1]["dead"] == json!(true)
            && listing["frontends"][0]["backends"][1]["checker"]["state"] == json!("dead")
    });
    assert!(shown, "{listing}\n{}", proxy.log());
    let b = &listing["frontends"][0]["backends"][1];
    assert_eq!(b["url"], json!(down));
    assert_eq!(b["checker"]["marksThisFrontend"], json!(true), "{b}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for field in ["since", "lastCheck"] {
        let t = b["checker"][field].as_u64().unwrap_or(0);
        assert!(t <= now && now - t < 15, "{field}: {b}");
    }
    // The live backend was never reported, so the checker knows nothing of it.
    let a = &listing["frontends"][0]["backends"][0];
    assert_eq!(
        (a["dead"].clone(), a["checker"].clone()),
        (json!(false), Value::Null)
    );
}
