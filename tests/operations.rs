//! Operations (issue 6): privilege drop, systemd notifications, zero-downtime reload and upgrade under
//! load, broken configurations on reload, and worker supervision. Real processes only: the proxy binary
//! (built with the `fault-injection` feature by the test build), redis-server, backends, and clients on
//! raw sockets. The tests run as root (as CI does).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::Conn;
use common::proxy::{config_for, run_cli, BIN};
use common::ws::{ws_connect, WsEcho};
use common::{free_port, wait_until, Backend, Proxy, RedisServer, TempDir};
use serde_json::json;
use tungstenite::Message;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `Uid:` / `Gid:` of /proc/<pid>/status: real, effective, saved, filesystem.
fn ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| !s.contains("State:\tZ"))
        .unwrap_or(false)
}

/// Kills a successor process at the end of a test (the harness only knows the first process).
struct Successor(u32);

impl Drop for Successor {
    fn drop(&mut self) {
        if self.0 > 0 && alive(self.0) {
            // SAFETY: kill with a pid the test saw in the proxy's log.
            unsafe {
                libc::kill(self.0 as i32, libc::SIGKILL);
            }
        }
    }
}

/// The pid the log says took over (`reload: pid N is ready`), the `nth` time (0-based).
fn successor_pid(log: &str, nth: usize) -> Option<u32> {
    log.match_indices("reload: pid ")
        .filter_map(|(i, _)| {
            let rest = &log[i + "reload: pid ".len()..];
            let (num, tail) = rest.split_once(' ')?;
            tail.starts_with("is ready").then(|| num.parse().ok())?
        })
        .nth(nth)
}

/// One GET on an open keep-alive connection; `Ok(keep)` when the answer is a 200 and the connection
/// may be reused.
fn get_on(conn: &mut Conn, host: &str) -> Result<bool, String> {
    let req = format!("GET /hammer HTTP/1.1\r\nHost: {host}\r\n\r\n");
    conn.stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let sent_at = Instant::now();
    let resp = conn.read_response(false).map_err(|e| {
        let local = conn.stream.local_addr().map(|a| a.port()).unwrap_or(0);
        let ss = std::process::Command::new("ss")
            .args([
                "-tnpio",
                &format!("( sport = :{local} or dport = :{local} )"),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        format!(
            "read after {:?}: {e} (client port {local})\n{ss}",
            sent_at.elapsed()
        )
    })?;
    if resp.status != 200 {
        return Err(format!("status {}", resp.status));
    }
    Ok(!resp
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close")))
}

fn open(port: u16) -> Result<Conn, String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(Conn::over(stream))
}

/// Clients that hammer the proxy until stopped, counting successes and every failure (non-200,
/// connection error, reset).
struct Hammer {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hammer {
    /// `keep_alive` threads reuse connections (reconnecting only after `Connection: close`),
    /// `fresh` threads open a new connection per request.
    fn start(port: u16, host: &'static str, keep_alive: usize, fresh: usize) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let t0 = Instant::now();
        for i in 0..keep_alive + fresh {
            let reuse = i < keep_alive;
            let (stop, ok, errors) = (stop.clone(), ok.clone(), errors.clone());
            threads.push(std::thread::spawn(move || {
                let mut conn: Option<Conn> = None;
                while !stop.load(Ordering::SeqCst) {
                    let result = match conn.take() {
                        Some(c) => Ok(c),
                        None => open(port),
                    }
                    .and_then(|mut c| get_on(&mut c, host).map(|keep| (c, keep)));
                    match result {
                        Ok((c, keep)) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            if reuse && keep {
                                conn = Some(c);
                            }
                        }
                        Err(e) => {
                            let kind = if reuse { "keep-alive" } else { "fresh" };
                            errors.lock().unwrap().push(format!(
                                "{kind} client, {} ms in: {e}",
                                t0.elapsed().as_millis()
                            ));
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            }));
        }
        Hammer {
            stop,
            ok,
            errors,
            threads,
        }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Stops the clients: (successes, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.ok.load(Ordering::SeqCst), errors)
    }
}

// ------------------------------------------------------------------------------------------------
// Privileges
// ------------------------------------------------------------------------------------------------

#[test]
fn started_as_root_it_binds_then_switches_to_user_and_group() {
    if !is_root() {
        eprintln!("skipped: the privilege drop needs the tests to run as root");
        return;
    }
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("priv.test", "priv", &[backend.url()]);
    // nobody:nogroup exist on Debian; the group is given explicitly here. The log folder must be
    // writable by the user (reloads and log rotation run as the user).
    let dir = TempDir::new("ops-priv");
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let port = free_port();
    let config = config_for(
        &redis.url(0),
        port,
        dir.path(),
        json!({ "user": "nobody", "group": "nogroup" }),
    );
    let proxy = Proxy::start_config(dir, port, &config).unwrap_or_else(|log| panic!("{log}"));
    let pid = proxy.pid();
    assert_eq!(ids(pid, "Uid"), vec![65534; 4], "{}", proxy.log());
    assert_eq!(ids(pid, "Gid"), vec![65534; 4], "{}", proxy.log());
    let groups = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let groups = groups
        .lines()
        .find(|l| l.starts_with("Groups:"))
        .unwrap_or("")
        .to_string();
    assert_eq!(
        groups.split_whitespace().collect::<Vec<_>>(),
        vec!["Groups:", "65534"]
    );
    // Every worker thread too (set*id is process-wide).
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let tid = task.unwrap().file_name().to_string_lossy().to_string();
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        assert!(
            status.contains("Uid:\t65534\t65534\t65534\t65534"),
            "thread {tid} still privileged"
        );
    }
    assert!(proxy
        .log()
        .contains("now running as user nobody (uid 65534) and group nogroup"));
    // It serves, and the access log (created by root for the user) is written by the workers.
    let r = common::get(proxy.port, "priv.test", "/");
    assert_eq!(r.status, 200);
    assert_eq!(proxy.access_log_lines(1).len(), 1);
    let meta = std::fs::metadata(proxy.dir.path().join("access.log")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
}

#[test]
fn group_defaults_to_the_users_primary_group() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let redis = RedisServer::start();
    let proxy = Proxy::start(
        &redis,
        json!({ "user": "www-data", "server": { "accessLog": false } }),
    );
    assert_eq!(ids(proxy.pid(), "Uid"), vec![33; 4]);
    assert_eq!(ids(proxy.pid(), "Gid"), vec![33; 4]);
    // `user: root` keeps root.
    let root = Proxy::start(&redis, json!({ "user": "root" }));
    assert_eq!(ids(root.pid(), "Uid"), vec![0; 4]);
}

#[test]
fn unknown_user_or_group_refuses_to_start_with_a_clear_message() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = TempDir::new("ops-user");
    let port = free_port();
    for (extra, expected) in [
        (
            json!({ "user": "no-such-user-hipache" }),
            "the user \"no-such-user-hipache\" (configuration key \"user\") does not exist",
        ),
        (
            json!({ "user": "nobody", "group": "no-such-group-hipache" }),
            "the group \"no-such-group-hipache\" (configuration key \"group\") does not exist",
        ),
    ] {
        let config = config_for("redis://127.0.0.1:1", port, dir.path(), extra);
        let path = dir.path().join("bad-user.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let (code, _, err) = run_cli(&["-c", path.to_str().unwrap()], None, &[]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(expected), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        // Nothing stays bound.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
}

/// Hipache's own example configuration (README, master): no `user` key, the log in a root-owned folder,
/// `server.port`, legacy Redis keys, an `https` section. Ports, paths and certificates substituted.
fn hipache_master_config(
    dir: &std::path::Path,
    redis: &RedisServer,
    port: u16,
    tls_port: u16,
) -> serde_json::Value {
    let ca = common::tls::TestCa::new();
    let issued = ca.issue_files(dir, "ssl", &["hip.test"]);
    json!({
        "server": {
            "accessLog": dir.join("log/hipache_access.log").to_string_lossy(),
            "port": port, "workers": 2, "maxSockets": 100, "deadBackendTTL": 30, "tcpTimeout": 30,
            "retryOnError": 3, "deadBackendOn500": true, "httpKeepAlive": false
        },
        "https": { "port": tls_port, "bind": ["127.0.0.1"], "key": issued.key, "cert": issued.cert },
        "redisHost": "127.0.0.1", "redisPort": redis.port, "redisDatabase": 0
    })
}

/// The folder www-data cannot write: root-owned 0755, as /var/log.
fn root_folder(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn hipache_master_example_config_starts_as_root_and_serves() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("hip.test", "hip", &[backend.url()]);
    let dir = TempDir::new("ops-hipache");
    let logdir = root_folder(dir.path(), "log");
    // A log left by Hipache, which ran as root.
    let log = logdir.join("hipache_access.log");
    std::fs::write(&log, "old line from hipache\n").unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let config = hipache_master_config(dir.path(), &redis, port, tls_port);
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let folder_warning = format!(
        "the access-log folder {} is not writable by user www-data: the log is written, but rotation must use logrotate's `create` (or `copytruncate`); a reopen (SIGUSR1) after the file was moved away fails, logs an error and keeps writing to the open file",
        logdir.display()
    );
    let (code, _, err) = run_cli(&["-c", path.to_str().unwrap(), "--dry"], None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&folder_warning), "{err}");
    let proxy = Proxy::start_config(dir, port, &config).unwrap_or_else(|log| panic!("{log}"));
    assert!(proxy.log().contains(&folder_warning), "{}", proxy.log());
    assert_eq!(ids(proxy.pid(), "Uid"), vec![33; 4], "{}", proxy.log());
    assert_eq!(common::get(port, "hip.test", "/").status, 200);
    let mut tls =
        common::tls::connect(tls_port, common::tls::ClientOptions::sni("hip.test")).unwrap();
    assert_eq!(tls.get("hip.test", "/").status, 200);
    // The old file was taken over (owned by www-data now) and appended to.
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .map(|t| t.lines().count() >= 3)
            .unwrap_or(false)
    }));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with("old line from hipache\n"), "{text}");
    assert_eq!(std::fs::metadata(&log).unwrap().uid(), 33);
}

#[test]
fn hipache_0_3_config_starts_and_serves() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.cmd_db::<i64>(1, &["rpush", "frontend:old.test", "old", &backend.url()]);
    let dir = TempDir::new("ops-hipache03");
    let logdir = root_folder(dir.path(), "log");
    let port = free_port();
    let config = json!({
        "server": {
            "accessLog": logdir.join("access.log").to_string_lossy(),
            "port": port, "address": ["127.0.0.1"], "workers": 2, "deadBackendTTL": 30
        },
        "redis": { "host": "127.0.0.1", "port": redis.port, "database": 1 }
    });
    let proxy = Proxy::start_config(dir, port, &config).unwrap_or_else(|log| panic!("{log}"));
    assert_eq!(ids(proxy.pid(), "Uid"), vec![33; 4], "{}", proxy.log());
    assert_eq!(common::get(port, "old.test", "/").status, 200);
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(logdir.join("access.log"))
            .map(|t| t.contains("\"old\""))
            .unwrap_or(false)
    }));
}

/// `--dry` and a real start stop on the same problem with the same words.
#[test]
fn dry_run_agrees_with_the_real_start_on_each_bad_case() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("ops-dry");
    let logdir = root_folder(dir.path(), "log");
    // A log file of a third account, not writable by www-data.
    let foreign = logdir.join("foreign.log");
    std::fs::write(&foreign, "").unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o600)).unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let port = free_port();
    let cases = [
        (
            json!({ "server": { "accessLog": foreign.to_string_lossy() } }),
            format!(
                "the access log {} (owner uid 65534, mode 600) cannot be appended to as user www-data: give it to that account (chown), or remove it so that it is created for it",
                foreign.display()
            ),
        ),
        (
            json!({ "server": { "accessLog": false }, "user": "no-such-user-hipache" }),
            "started as root, but the user \"no-such-user-hipache\" (configuration key \"user\") does not exist".to_string(),
        ),
        (
            json!({ "server": { "accessLog": false }, "http": { "port": held_port } }),
            format!("127.0.0.1:{held_port} is already in use by another process; stop it first"),
        ),
        (
            json!({ "server": { "accessLog": false }, "https": { "port": free_port(), "bind": ["127.0.0.1"], "key": "missing.key", "cert": "missing.crt" } }),
            "missing.crt".to_string(),
        ),
        (
            json!({ "server": { "accessLog": false, "pidFile": "/nonexistent-hipache/x.pid" } }),
            "the pid file /nonexistent-hipache/x.pid: its folder /nonexistent-hipache does not exist".to_string(),
        ),
    ];
    for (extra, expected) in cases {
        let mut config = json!({ "http": { "port": port, "bind": ["127.0.0.1"] }, "driver": "redis://127.0.0.1:1" });
        common::proxy::merge(&mut config, extra);
        let path = dir.path().join("bad.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let (code, _, dry) = run_cli(&["-c", path.to_str().unwrap(), "--dry"], None, &[]);
        let (real_code, _, real) = run_cli(&["-c", path.to_str().unwrap()], None, &[]);
        assert_eq!(
            (code, real_code),
            (1, 1),
            "{config}\n--dry: {dry}\nstart: {real}"
        );
        assert!(dry.contains(&expected), "--dry: {dry}\nwanted: {expected}");
        assert!(
            real.contains(&expected),
            "start: {real}\nwanted: {expected}"
        );
        let last = |t: &str| {
            t.lines()
                .rfind(|l| l.starts_with("hipache-tpc: "))
                .unwrap_or("")
                .to_string()
        };
        assert_eq!(last(&dry), last(&real), "the same words");
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
    drop(held);
}

// ------------------------------------------------------------------------------------------------
// systemd notifications
// ------------------------------------------------------------------------------------------------

fn recv_state(sock: &UnixDatagram, wait: Duration) -> Option<String> {
    sock.set_read_timeout(Some(wait)).ok()?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_only_once_listening_and_stopping_on_sigterm() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("sd.test", "sd", &[backend.url()]);
    let dir = TempDir::new("ops-notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let port = free_port();
    let config = config_for(&redis.url(0), port, dir.path(), json!({}));
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut child = std::process::Command::new(BIN)
        .arg("-c")
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Successor(child.id());
    let ready = recv_state(&sock, Duration::from_secs(15)).unwrap_or_default();
    // The very moment READY arrives, the port must accept and serve.
    let served = TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains("STATUS=hipache-tpc"), "{ready:?}");
    assert!(served, "READY=1 sent before the port accepted");
    assert_eq!(common::get(port, "sd.test", "/").status, 200);
    // SAFETY: signals our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let stopping = recv_state(&sock, Duration::from_secs(10)).unwrap_or_default();
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn notifications_reach_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let redis = RedisServer::start();
    let name = format!("hipache-tpc-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    let dir = TempDir::new("ops-abstract");
    let port = free_port();
    let config = config_for(&redis.url(0), port, dir.path(), json!({}));
    let env_value = format!("@{name}");
    let mut proxy =
        Proxy::start_config_env(dir, port, &config, &[("NOTIFY_SOCKET", env_value.as_str())])
            .unwrap();
    let ready = recv_state(&sock, Duration::from_secs(10)).unwrap_or_default();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    proxy.terminate(Duration::from_secs(10));
    let stopping = recv_state(&sock, Duration::from_secs(5)).unwrap_or_default();
    assert!(stopping.contains("STOPPING=1"), "{stopping:?}");
}

// ------------------------------------------------------------------------------------------------
// Reload and upgrade
// ------------------------------------------------------------------------------------------------

#[test]
fn reload_under_load_loses_nothing_and_keeps_tunnels() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    let echo = WsEcho::start();
    redis.set_frontend("load.test", "load", &[backend.url()]);
    redis.set_frontend("ws.test", "ws", &[echo.url()]);
    let dir = TempDir::new("ops-reload");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let port = free_port();
    let mut config = config_for(
        &redis.url(0),
        port,
        dir.path(),
        json!({ "server": { "drainTimeout": 20 } }),
    );
    let notify = sock_path.to_string_lossy().to_string();
    let mut proxy =
        Proxy::start_config_env(dir, port, &config, &[("NOTIFY_SOCKET", notify.as_str())])
            .unwrap_or_else(|log| panic!("{log}"));
    let old_pid = proxy.pid();
    let ready = recv_state(&sock, Duration::from_secs(5)).unwrap_or_default();
    assert!(ready.contains("READY=1"), "{ready:?}");

    let mut ws = ws_connect(port, "ws.test", "/").unwrap();
    ws.send(Message::Text("before".into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Text("before".into()));

    let hammer = Hammer::start(port, "load.test", 2, 2);
    assert!(wait_until(Duration::from_secs(5), || hammer.ok() > 200));

    // A changed configuration: three workers instead of two, and a second listener.
    let port2 = free_port();
    config["server"]["workers"] = json!(3);
    config["http"]["bind"] = json!([
        "127.0.0.1",
        { "address": "127.0.0.1", "port": port2 }
    ]);
    std::fs::write(&proxy.config_path, config.to_string()).unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(20), || successor_pid(&proxy.log(), 0)
            .is_some()),
        "no hand-over:\n{}",
        proxy.log()
    );
    let new_pid = successor_pid(&proxy.log(), 0).unwrap();
    let _guard = Successor(new_pid);
    assert_ne!(new_pid, old_pid);
    // systemd hears RELOADING, then MAINPID + READY from the old main process.
    let reloading = recv_state(&sock, Duration::from_secs(5)).unwrap_or_default();
    assert!(reloading.contains("RELOADING=1"), "{reloading:?}");
    let handed = recv_state(&sock, Duration::from_secs(5)).unwrap_or_default();
    assert!(
        handed.contains(&format!("MAINPID={new_pid}")) && handed.contains("READY=1"),
        "{handed:?}"
    );
    let at_handover = hammer.ok();
    // Keep hammering through the hand-over and the old process's drain.
    assert!(wait_until(Duration::from_secs(10), || hammer.ok() > at_handover + 1000));
    std::thread::sleep(Duration::from_millis(1500));

    // The tunnel opened before the reload still works: it lives on in the old process.
    ws.send(Message::Text("across the reload".into())).unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Text("across the reload".into())
    );
    assert!(alive(old_pid), "the old process must keep its tunnel");

    let (ok, errors) = hammer.finish();
    assert!(
        errors.is_empty(),
        "{} failures out of {ok}: {:?}\n{}",
        errors.len(),
        &errors[..errors.len().min(10)],
        proxy.log()
    );
    assert!(ok > 1000, "only {ok} requests");

    // The new process serves the new configuration (second listener, three workers).
    assert_eq!(common::get(port2, "load.test", "/").status, 200);
    let log = proxy.log();
    assert!(log.contains("3 workers listening on 127.0.0.1:"), "{log}");
    assert!(log.contains("(inherited)"), "{log}");

    // Once the tunnel closes, the old process exits 0 by itself.
    ws.close(None).unwrap();
    let _ = ws.read();
    drop(ws);
    let status = proxy.wait_exit(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "old process did not finish: {status:?}\n{}",
        proxy.log()
    );
    assert!(alive(new_pid));
    assert_eq!(common::get(port, "load.test", "/").status, 200);

    // A listener removed by the next reload is closed; the others carry on.
    config["http"]["bind"] = json!(["127.0.0.1"]);
    std::fs::write(&proxy.config_path, config.to_string()).unwrap();
    // SAFETY: the successor, seen in the log.
    unsafe {
        libc::kill(new_pid as i32, libc::SIGHUP);
    }
    assert!(
        wait_until(Duration::from_secs(20), || successor_pid(&proxy.log(), 1)
            .is_some()),
        "{}",
        proxy.log()
    );
    let third = successor_pid(&proxy.log(), 1).unwrap();
    let _guard3 = Successor(third);
    assert!(wait_until(Duration::from_secs(15), || !alive(new_pid)));
    assert!(proxy
        .log()
        .contains(&format!("127.0.0.1:{port2} is no longer configured")));
    assert!(TcpStream::connect(("127.0.0.1", port2)).is_err());
    assert_eq!(common::get(port, "load.test", "/").status, 200);
    // SAFETY: as above.
    unsafe {
        libc::kill(third as i32, libc::SIGTERM);
    }
    assert!(wait_until(Duration::from_secs(15), || !alive(third)));
}

#[test]
fn broken_config_on_reload_is_rejected_and_the_old_process_keeps_serving() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("keep.test", "keep", &[backend.url()]);
    let mut proxy = Proxy::start(&redis, json!({}));
    let pid = proxy.pid();
    let good = std::fs::read_to_string(&proxy.config_path).unwrap();
    let hammer = Hammer::start(proxy.port, "keep.test", 1, 1);

    // Bad JSON, then a configuration that parses but is invalid.
    for (n, broken) in [
        "{ \"server\": ".to_string(),
        good.replace("\"workers\": 2", "\"workers\": \"many\""),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(&proxy.config_path, broken).unwrap();
        proxy.signal(libc::SIGHUP);
        assert!(
            wait_until(Duration::from_secs(20), || {
                proxy.log().matches("reload failed: ").count() > n
            }),
            "no verdict:\n{}",
            proxy.log()
        );
        assert!(!proxy.exited(), "{}", proxy.log());
        assert!(alive(pid));
    }
    let log = proxy.log();
    assert!(log.contains("configuration error"), "{log}");
    assert!(log.contains(&format!("pid {pid} keeps serving")), "{log}");
    assert!(successor_pid(&log, 0).is_none(), "{log}");
    let before = hammer.ok();
    assert!(wait_until(Duration::from_secs(5), || hammer.ok() > before + 100));
    let (ok, errors) = hammer.finish();
    assert!(errors.is_empty(), "{errors:?}");
    assert!(ok > 100);
    assert_eq!(common::get(proxy.port, "keep.test", "/").status, 200);

    // Fixed: the next reload goes through.
    std::fs::write(&proxy.config_path, good).unwrap();
    proxy.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(20), || successor_pid(&proxy.log(), 0)
            .is_some()),
        "{}",
        proxy.log()
    );
    let new_pid = successor_pid(&proxy.log(), 0).unwrap();
    let _guard = Successor(new_pid);
    assert!(proxy
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    assert_eq!(common::get(proxy.port, "keep.test", "/").status, 200);
    assert_eq!(ids(new_pid, "Uid").first(), Some(&0));
}

#[test]
fn the_admin_listener_is_handed_over_on_reload() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("adm.test", "adm", &[backend.url()]);
    let (mut proxy, admin) = common::admin::start_with_admin(&redis, json!({}), json!({}));
    let pid = proxy.pid();
    assert!(
        wait_until(Duration::from_secs(10), || admin.get("/status").status
            == 200),
        "{}",
        proxy.log()
    );
    let before = admin.get("/status");
    assert_eq!(before.json["pid"], json!(pid));
    proxy.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(20), || successor_pid(&proxy.log(), 0)
            .is_some()
            || proxy.log().contains("reload failed")),
        "{}",
        proxy.log()
    );
    let new_pid = successor_pid(&proxy.log(), 0)
        .unwrap_or_else(|| panic!("the reload failed:\n{}", proxy.log()));
    let _guard = Successor(new_pid);
    assert!(proxy
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    // The same port, now answered by the successor; routes edited through it work.
    assert!(wait_until(Duration::from_secs(10), || admin
        .get("/status")
        .status
        == 200));
    let after = admin.get("/status");
    assert_eq!(after.json["pid"], json!(new_pid));
    assert_eq!(
        admin.get("/frontends/adm.test").json,
        json!([backend.url()])
    );
}

#[test]
fn the_pid_file_names_the_serving_process_across_a_reload() {
    let redis = RedisServer::start();
    let dir = TempDir::new("ops-pidfile");
    let pid_path = dir.path().join("run/hipache.pid");
    std::fs::create_dir_all(pid_path.parent().unwrap()).unwrap();
    let port = free_port();
    let config = config_for(
        &redis.url(0),
        port,
        dir.path(),
        json!({ "server": { "accessLog": false, "pidFile": "run/hipache.pid" } }),
    );
    let mut proxy = Proxy::start_config(dir, port, &config).unwrap_or_else(|log| panic!("{log}"));
    let read = || {
        std::fs::read_to_string(&pid_path)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let pid = proxy.pid();
    assert!(
        wait_until(Duration::from_secs(5), || read() == pid.to_string()),
        "{:?}",
        read()
    );
    proxy.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(20), || successor_pid(&proxy.log(), 0)
            .is_some()
            || proxy.log().contains("reload failed")),
        "{}",
        proxy.log()
    );
    let new_pid = successor_pid(&proxy.log(), 0)
        .unwrap_or_else(|| panic!("the reload failed:\n{}", proxy.log()));
    let _guard = Successor(new_pid);
    assert_ne!(new_pid, pid);
    assert!(
        wait_until(Duration::from_secs(5), || read() == new_pid.to_string()),
        "{:?}",
        read()
    );
    assert!(proxy
        .wait_exit(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    // The old process left the successor's pid in place; `kill -USR1 "$(cat pidfile)"` reaches it.
    assert_eq!(read(), new_pid.to_string());
    assert!(alive(new_pid));
    // SAFETY: a plain signal to the successor the test saw.
    unsafe { libc::kill(new_pid as i32, libc::SIGTERM) };
    assert!(wait_until(Duration::from_secs(15), || !alive(new_pid)));
    assert!(!pid_path.exists(), "removed by the last process at exit");
}

#[test]
fn reload_picks_up_a_replaced_binary_and_chains() {
    // The binary is copied so that it can be replaced at its path (an upgrade).
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("up.test", "up", &[backend.url()]);
    let dir = TempDir::new("ops-upgrade");
    let exe = dir.path().join("hipache-tpc");
    std::fs::copy(BIN, &exe).unwrap();
    let port = free_port();
    let config = config_for(&redis.url(0), port, dir.path(), json!({}));
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let mut child = std::process::Command::new(&exe)
        .arg("-c")
        .arg(&config_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _first = Successor(child.id());
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let text = || log.lock().unwrap().clone();
    assert!(wait_until(Duration::from_secs(15), || text().contains(" ready: ")));
    // Replace the file at that path (new inode, as an install does), then reload twice.
    let tmp = dir.path().join("hipache-tpc.new");
    std::fs::copy(BIN, &tmp).unwrap();
    std::fs::rename(&tmp, &exe).unwrap();
    let mut pids = vec![child.id()];
    for round in 0..2 {
        let current = *pids.last().unwrap();
        // SAFETY: signals a process of this test.
        unsafe {
            libc::kill(current as i32, libc::SIGHUP);
        }
        assert!(
            wait_until(Duration::from_secs(20), || successor_pid(&text(), round)
                .is_some()),
            "{}",
            text()
        );
        let next = successor_pid(&text(), round).unwrap();
        pids.push(next);
        // The successor runs the file now at that path, not the deleted old one.
        let running = std::fs::read_link(format!("/proc/{next}/exe")).unwrap();
        assert_eq!(running, exe, "round {round}");
        assert_eq!(common::get(port, "up.test", "/").status, 200);
    }
    let _guards: Vec<Successor> = pids[1..].iter().map(|&p| Successor(p)).collect();
    assert!(child.wait().unwrap().success());
    let last = *pids.last().unwrap();
    // SAFETY: signals a process of this test.
    unsafe {
        libc::kill(last as i32, libc::SIGTERM);
    }
    assert!(wait_until(Duration::from_secs(15), || !alive(last)));
    assert!(text().contains("hipache-tpc stopped"));
}

// ------------------------------------------------------------------------------------------------
// Worker supervision
// ------------------------------------------------------------------------------------------------

/// Sends the fault-injection request; the worker that reads it panics, so there is no answer.
fn make_a_worker_panic(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: panic.fault-injection.invalid\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a panicking worker answered: {:?}", &buf[..n]);
}

#[test]
fn a_panicking_worker_is_replaced_while_the_others_keep_serving() {
    let redis = RedisServer::start();
    let backend = Backend::start("b");
    redis.set_frontend("sup.test", "sup", &[backend.url()]);
    let dir = TempDir::new("ops-panic");
    let port = free_port();
    let config = config_for(&redis.url(0), port, dir.path(), json!({}));
    let mut proxy =
        Proxy::start_config_env(dir, port, &config, &[("HIPACHE_TPC_FAULT_INJECTION", "1")])
            .unwrap_or_else(|log| panic!("{log}"));
    let pid = proxy.pid();
    let hammer = Hammer::start(port, "sup.test", 0, 2);
    assert!(wait_until(Duration::from_secs(5), || hammer.ok() > 50));
    // Three panics on two workers: some worker crashes twice, so a back-off shows.
    let started = Instant::now();
    for n in 1..=3 {
        make_a_worker_panic(port);
        assert!(
            wait_until(Duration::from_secs(15), || {
                proxy.log().matches("replacement is serving").count() >= n
            }),
            "worker not replaced after panic {n}:\n{}",
            proxy.log()
        );
        let before = hammer.ok();
        assert!(wait_until(Duration::from_secs(10), || hammer.ok() > before + 50));
    }
    let (ok, errors) = hammer.finish();
    let log = proxy.log();
    // The hammer's requests never meet the crashing worker mid-request (it only panics on the injected
    // request, which it reads alone), so none of them may fail.
    assert!(errors.is_empty(), "{errors:?}\n{log}");
    assert!(ok > 150);
    assert!(log.contains("panicked: panicked at"), "{log}");
    assert!(log.contains("fault injection: worker"), "{log}");
    assert!(log.contains("replacing it now"), "{log}");
    assert!(
        log.contains("replacing it in 1 s (2 crashes in a row)"),
        "{log}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(!proxy.exited());
    assert!(alive(pid));
    // The replacements use Redis and serve; shutdown still drains every worker.
    assert_eq!(common::get(port, "sup.test", "/").status, 200);
    let status = proxy.terminate(Duration::from_secs(15));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

#[test]
fn fault_injection_is_inert_without_its_environment_variable() {
    let redis = RedisServer::start();
    let proxy = Proxy::start(&redis, json!({}));
    // Not armed: the request is an ordinary unknown host.
    let r = common::get(proxy.port, "panic.fault-injection.invalid", "/");
    assert_eq!(r.status, 400);
    assert!(!proxy.log().contains("panicked"));
}

/// Runs `scripts/install.sh` with `args`: (exit code, stdout + stderr).
fn install_script(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install.sh"))
        .args(args)
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn install_script_stages_a_service_and_never_overwrites_the_configuration() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("install");
    let root = dir.path().join("root");
    let root_s = root.to_str().unwrap();
    // The test build `cargo test` made (fault injection armable): the script refuses it.
    let test_build = common::proxy::fault_injection_bin();
    let (code, text) =
        install_script(&["--root", root_s, "--binary", test_build.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("test build"), "{text}");
    assert!(!root.join("usr/local/bin/hipache-tpc").exists());

    // Any other file stands in for a release binary.
    let fake = dir.path().join("hipache-tpc");
    std::fs::write(&fake, b"#!/bin/sh\n").unwrap();
    let fake_s = fake.to_str().unwrap();
    let (code, text) = install_script(&["--root", root_s, "--binary", fake_s]);
    assert_eq!(code, 0, "{text}");
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}\n{text}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("usr/local/bin/hipache-tpc"), 0o755);
    assert_eq!(mode("etc/hipache-tpc/config.json"), 0o640);
    assert_eq!(mode("var/log/hipache"), 0o750);
    let unit =
        std::fs::read_to_string(root.join("etc/systemd/system/hipache-tpc.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecReload=",
        "LimitNOFILE=",
        "NoNewPrivileges=",
    ] {
        assert!(unit.contains(line), "the unit lacks {line}:\n{unit}");
    }
    let rotate = std::fs::read_to_string(root.join("etc/logrotate.d/hipache-tpc")).unwrap();
    assert!(rotate.contains("--signal=USR1"), "{rotate}");

    // The installed configuration is valid for the real binary (its log folder moved into the
    // staging root).
    let config = root.join("etc/hipache-tpc/config.json");
    let mut staged: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert_eq!(
        staged["server"]["accessLog"],
        json!("/var/log/hipache/access.log")
    );
    staged["server"]["accessLog"] = json!(root.join("var/log/hipache/access.log"));
    std::fs::write(&config, staged.to_string()).unwrap();
    let (code, _, err) = run_cli(&["--dry", "-c", config.to_str().unwrap()], None, &[]);
    assert_eq!(code, 0, "{err}");

    // Run again after an operator edited the configuration: it is kept, the binary replaced.
    std::fs::write(&config, b"{\"edited\": true}").unwrap();
    std::fs::write(&fake, b"#!/bin/sh\necho v2\n").unwrap();
    let (code, text) = install_script(&["--root", root_s, "--binary", fake_s]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("exists: kept"), "{text}");
    assert_eq!(std::fs::read(&config).unwrap(), b"{\"edited\": true}");
    assert_eq!(
        std::fs::read(root.join("usr/local/bin/hipache-tpc")).unwrap(),
        b"#!/bin/sh\necho v2\n"
    );
}
