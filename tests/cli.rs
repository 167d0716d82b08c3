//! The command line, configuration errors, shipped configuration files, and stopping (SIGTERM).

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::client::Conn;
use common::proxy::run_cli;
use common::{Backend, Proxy, RedisServer, TempDir};
use serde_json::json;

fn write_config(dir: &TempDir, text: &str) -> String {
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().to_string()
}

#[test]
fn version_and_help() {
    let (code, out, _) = run_cli(&["--version"], None, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("hipache-tpc {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run_cli(&["--help"], None, &[]);
    assert_eq!(code, 0);
    for flag in ["--config", "-c", "--dry", "-d", "--version"] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
}

#[test]
fn configuration_errors_name_the_file_and_key() {
    let dir = TempDir::new("cli");
    let missing = dir.path().join("nope.json");
    let (code, _, err) = run_cli(&["-c", missing.to_str().unwrap()], None, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("nope.json") && err.contains("cannot read"),
        "{err}"
    );

    let cases = [
        ("{ \"server\": { ", "invalid JSON at line 1"),
        (
            r#"{"server": {"workers": "many", "accessLog": false}}"#,
            "key `server.workers`",
        ),
        (
            r#"{"server": {"accessLog": false, "tcpTimeout": -1}}"#,
            "key `server.tcpTimeout`",
        ),
        (
            r#"{"server": {"accessLog": false}, "http": {"port": 0}}"#,
            "key `http.port`",
        ),
        (
            r#"{"server": {"accessLog": false}, "http": {"bind": [{"address": 5}]}}"#,
            "key `http.bind[0].address`",
        ),
        (
            r#"{"server": {"accessLog": false}, "driver": "mysql://x"}"#,
            "key `driver`",
        ),
        (
            r#"{"server": {"accessLog": "/nonexistent-dir/sub/access.log"}}"#,
            "key `server.accessLog`",
        ),
        (
            r#"{"server": {"accessLog": false, "lruCache": 5}}"#,
            "key `server.lruCache`",
        ),
        ("[1, 2]", "top level must be a JSON object"),
    ];
    for (text, want) in cases {
        let path = write_config(&dir, text);
        let (code, out, err) = run_cli(&["-c", &path, "--dry"], None, &[]);
        assert_eq!(code, 1, "{text} should fail: {out}{err}");
        assert!(err.contains(want), "{text}: expected {want:?} in:\n{err}");
        assert!(err.contains("config.json"), "names the file: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn unusable_bind_address_is_a_clear_error() {
    let dir = TempDir::new("cli");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let path = write_config(
        &dir,
        &format!(
            r#"{{"server": {{"accessLog": false, "workers": 2}}, "http": {{"port": {port}, "bind": ["127.0.0.1"]}}}}"#
        ),
    );
    let (code, _, err) = run_cli(&["-c", &path], None, &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("127.0.0.1:{port} is already in use")),
        "{err}"
    );
    // The same port held by a SO_REUSEPORT socket of another process is refused too.
    drop(taken);
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other.set_reuse_port(true).unwrap();
    other
        .bind(
            &format!("127.0.0.1:{port}")
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    other.listen(16).unwrap();
    let (code, _, err) = run_cli(&["-c", &path], None, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("already in use"), "{err}");
    // An address that is not ours.
    let path = write_config(
        &dir,
        r#"{"server": {"accessLog": false}, "http": {"port": 8080, "bind": ["192.0.2.1"]}}"#,
    );
    let (code, _, err) = run_cli(&["-c", &path], None, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("192.0.2.1:8080"), "{err}");
}

#[test]
fn dry_run_prints_the_effective_configuration_censored() {
    let dir = TempDir::new("cli");
    let path = write_config(
        &dir,
        r#"{"server": {"accessLog": false, "workers": 3, "colour": "blue"}, "http": {"port": 9000}, "driver": "redis://:hunter2@10.0.0.5:6380/2#pfx"}"#,
    );
    let (code, out, err) = run_cli(&["-d", "-c", &path], None, &[]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("--dry prints JSON");
    assert_eq!(v["server"]["workers"], 3);
    assert_eq!(v["http"]["bind"][0], "0.0.0.0:9000");
    assert_eq!(v["driver"]["prefix"], "pfx");
    assert!(
        !out.contains("hunter2") && !err.contains("hunter2"),
        "password leaked"
    );
    assert!(out.contains(":***@10.0.0.5:6380/2"), "{out}");
    assert!(
        err.contains("unknown configuration key `server.colour`"),
        "{err}"
    );
}

#[test]
fn default_path_and_settings_flavor() {
    let dir = TempDir::new("cli");
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/config.json"),
        r#"{"server": {"accessLog": false, "workers": 1}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config/config_staging.json"),
        r#"{"server": {"accessLog": false, "workers": 4}}"#,
    )
    .unwrap();
    let (code, out, _) = run_cli(&["--dry"], Some(dir.path()), &[]);
    assert_eq!(code, 0);
    assert!(out.contains("\"workers\": 1"), "{out}");
    let (code, out, _) = run_cli(
        &["--dry"],
        Some(dir.path()),
        &[("SETTINGS_FLAVOR", "staging")],
    );
    assert_eq!(code, 0);
    assert!(out.contains("\"workers\": 4"), "{out}");
}

#[test]
fn the_quickstart_configurations_start_and_serve_as_root_too() {
    // The README's quickstarts run `hipache-tpc -c config/quickstart.json` (or config.json) from the
    // repository, often as root on a fresh machine: the proxy must start there, access log and all
    // (a switch to www-data, which cannot write into a root-owned folder, refused to start once). A copy
    // in a root-owned temporary folder, on a free port, stands in for the repository.
    let root = env!("CARGO_MANIFEST_DIR");
    let backend = Backend::start("demo");
    for name in ["quickstart.json", "config.json"] {
        let dir = TempDir::new("quickstart");
        let mut config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{root}/config/{name}")).unwrap(),
        )
        .unwrap();
        let port = common::free_port();
        config["http"]["port"] = json!(port);
        // Routes from a file in the folder (the Redis quickstart's driver replaced: no Redis here).
        std::fs::write(
            dir.path().join("routes.json"),
            json!({ "localhost": ["demo", backend.url()] }).to_string(),
        )
        .unwrap();
        config["driver"] = json!("file:routes.json");
        let proxy = Proxy::start_config(dir, port, &config)
            .unwrap_or_else(|log| panic!("{name} did not start:\n{log}"));
        assert_eq!(common::get(port, "localhost", "/").status, 200, "{name}");
        // The access log is written by the workers (buffered): it exists from the start.
        assert!(
            proxy.dir.path().join("access.log").exists(),
            "{name}: no access log"
        );
    }
}

#[test]
fn shipped_configuration_files_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    // quickstart.json uses the file driver: --dry also validates config/routes.json.
    for name in [
        "config/config.json",
        "config/config_test.json",
        "config/quickstart.json",
    ] {
        let path = format!("{root}/{name}");
        let (code, _, err) = run_cli(&["--dry", "-c", &path], None, &[]);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(!err.contains("unknown configuration key"), "{name}: {err}");
    }
    // The annotated example documents every key: all of them must be known.
    let mut example: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/config/config.example.json")).unwrap(),
    )
    .unwrap();
    example["server"]["accessLog"] = json!(false);
    example["server"]["staticDir"] = json!(null);
    // Every key of the full example (https included) is known to the loader.
    let parsed = hipache_tpc::config::Config::from_json_text(
        std::path::Path::new("/tmp/example.json"),
        &example.to_string(),
    )
    .unwrap();
    assert!(
        !parsed
            .warnings
            .iter()
            .any(|w| w.contains("unknown configuration key")),
        "{:?}",
        parsed.warnings
    );
    assert_eq!(parsed.https.as_ref().map(|h| h.listeners.len()), Some(1));
    // The example's certificate files do not exist here: --dry runs without the https section.
    example["https"] = json!(null);
    let dir = TempDir::new("cli");
    let path = write_config(&dir, &example.to_string());
    let (code, _, err) = run_cli(&["--dry", "-c", &path], None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("unknown configuration key"), "{err}");
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_zero() {
    let redis = RedisServer::start();
    let backend = Backend::start("slow");
    redis.set_frontend("s.test", "s", &[backend.url()]);
    let mut proxy = Proxy::start(&redis, json!({ "server": { "drainTimeout": 10 } }));
    let port = proxy.port;
    let slow = std::thread::spawn(move || Conn::open(port).get("s.test", "/slow/1500"));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let status = proxy
        .terminate(Duration::from_secs(10))
        .expect("proxy exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "the request in flight completed");
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "waited for the request in flight"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "no longer listening"
    );
}

#[test]
fn configuration_mistakes_get_precise_messages_word_for_word() {
    let dir = TempDir::new("cli-typos");
    // Typos next to an error that stops the start: the warnings are printed all the same.
    let path = write_config(
        &dir,
        r#"{"server": {"accessLog": false, "workres": 2, "deadBackendTTl": 5, "maxSockets": 0},
            "drivr": "redis://127.0.0.1:6379", "http": {"prot": 8080}}"#,
    );
    let (code, _, err) = run_cli(&["-c", &path, "--dry"], None, &[]);
    assert_eq!(code, 1, "{err}");
    for line in [
        format!("{path}: unknown configuration key `server.workres` is ignored; did you mean `server.workers`?"),
        format!("{path}: unknown configuration key `server.deadBackendTTl` is ignored; did you mean `server.deadBackendTTL`?"),
        format!("{path}: unknown configuration key `drivr` is ignored; did you mean `driver`?"),
        format!("{path}: unknown configuration key `http.prot` is ignored; did you mean `http.port`?"),
        format!("hipache-tpc: configuration error: {path}: key `server.maxSockets`: must be at least 1"),
    ] {
        assert!(err.contains(&line), "missing {line:?} in:\n{err}");
    }
    // A key far from every known one gets no guess; a top-level server key points to `server`.
    let path = write_config(
        &dir,
        r#"{"server": {"accessLog": false}, "colour": 1, "workers": 2}"#,
    );
    let (code, _, err) = run_cli(&["-c", &path, "--dry"], None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("unknown configuration key `colour` is ignored\n"),
        "{err}"
    );
    assert!(
        err.contains(
            "unknown configuration key `workers` is ignored; did you mean `server.workers`?"
        ),
        "{err}"
    );
    // The legacy `redis` object, `db` read as `database`.
    let path = write_config(
        &dir,
        r#"{"server": {"accessLog": false}, "redis": {"host": "10.0.0.9", "port": 6380, "db": 3}}"#,
    );
    let (code, out, err) = run_cli(&["-c", &path, "--dry"], None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!(
            "{path}: `redis.db` is read as `redis.database`; please rename it"
        )),
        "{err}"
    );
    let effective: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        effective["driver"]["read"],
        json!("redis://10.0.0.9:6380/3")
    );
    // Errors name the key the user wrote: a legacy `server.address`, a `redis.port`.
    for (text, want) in [
        (
            r#"{"server": {"accessLog": false, "port": 8080, "address": ["no-such-host.invalid"]}}"#,
            "key `server.address`",
        ),
        (
            r#"{"server": {"accessLog": false}, "redis": {"port": "x"}}"#,
            "key `redis.port`",
        ),
        (
            r#"{"server": {"accessLog": false}, "redis": {"db": "x"}}"#,
            "key `redis.db`",
        ),
    ] {
        let path = write_config(&dir, text);
        let (code, _, err) = run_cli(&["-c", &path, "--dry"], None, &[]);
        assert_eq!(code, 1, "{text}: {err}");
        assert!(err.contains(want), "{text}: wanted {want}:\n{err}");
    }
}

#[test]
fn relative_paths_fall_back_to_the_working_directory_with_a_warning() {
    let conf_dir = TempDir::new("cli-rel-conf");
    let cwd = TempDir::new("cli-rel-cwd");
    std::fs::create_dir_all(cwd.path().join("errors")).unwrap();
    std::fs::create_dir_all(conf_dir.path().join("pages")).unwrap();
    std::fs::create_dir_all(cwd.path().join("pages")).unwrap();
    let path = write_config(
        &conf_dir,
        r#"{"server": {"accessLog": false, "staticDir": "errors"}, "healthcheck": {"enabled": false}}"#,
    );
    let (code, out, err) = run_cli(&["-c", &path, "--dry"], Some(cwd.path()), &[]);
    assert_eq!(code, 0, "{err}");
    let used = cwd.path().join("errors");
    assert!(
        err.contains(&format!(
            "relative path \"errors\": nothing at {} (beside the configuration file), so {} (in the working directory, as Hipache resolved it) is used",
            conf_dir.path().join("errors").display(),
            used.display()
        )),
        "{err}"
    );
    let effective: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        effective["server"]["staticDir"],
        json!(used.to_string_lossy())
    );
    // Present beside the configuration file: that one, silently.
    let path = write_config(
        &conf_dir,
        r#"{"server": {"accessLog": false, "staticDir": "pages"}}"#,
    );
    let (code, out, err) = run_cli(&["-c", &path, "--dry"], Some(cwd.path()), &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("relative path"), "{err}");
    let effective: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        effective["server"]["staticDir"],
        json!(conf_dir.path().join("pages").to_string_lossy())
    );
}

#[test]
fn a_silent_new_connection_is_closed_after_tcp_timeout() {
    let redis = RedisServer::start();
    // tcpTimeout 1 s, headerTimeout 10 s: a connection that sends nothing is closed after 1 s, as
    // Hipache closed it after tcpTimeout.
    let proxy = Proxy::start(&redis, json!({ "server": { "tcpTimeout": 1 } }));
    for _ in 0..2 {
        let mut conn = Conn::open(proxy.port);
        let start = Instant::now();
        assert!(
            conn.is_closed_within(Duration::from_secs(4)),
            "still open after 4 s"
        );
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(3),
            "closed after {took:?}"
        );
    }
}

#[test]
fn the_quickstart_refuses_a_taken_backend_port() {
    // Something else on 8081 (this listener, or whoever already holds it): the quickstart must not
    // start and serve that program's answers as its demo. It refuses before building anything.
    let _held = TcpListener::bind("127.0.0.1:8081");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/quickstart.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .output()
        .expect("run the quickstart");
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{err}");
    assert!(
        err.contains(
            "quickstart: port 8081 on 127.0.0.1 is already taken by another program; stop it first"
        ),
        "{err}"
    );
    assert!(!stdout.contains("building"), "{stdout}");
}

#[test]
fn pid_file_flag_writes_the_pid_and_dry_checks_its_folder() {
    let dir = TempDir::new("cli-pid");
    let port = common::free_port();
    let path = write_config(
        &dir,
        &format!(
            r#"{{"server": {{"accessLog": false}}, "http": {{"port": {port}, "bind": ["127.0.0.1"]}}}}"#
        ),
    );
    let (code, out, err) = run_cli(
        &[
            "-c",
            &path,
            "--dry",
            "--pid-file",
            "/nonexistent-hipache/p.pid",
        ],
        None,
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("hipache-tpc: the pid file /nonexistent-hipache/p.pid: its folder /nonexistent-hipache does not exist (key `server.pidFile` or --pid-file)"),
        "{err}"
    );
    let pid = dir.path().join("p.pid");
    let (code, out, err) = run_cli(
        &["-c", &path, "--dry", "--pid-file", pid.to_str().unwrap()],
        None,
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let effective: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(effective["server"]["pidFile"], json!(pid.to_string_lossy()));
}
