//! The real hipache-tpc binary, started with a generated configuration.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{free_port, wait_until, RedisServer, TempDir};

pub const BIN: &str = env!("CARGO_BIN_EXE_hipache-tpc");

/// The test build (`examples/fault_injection.rs`), which `cargo test` builds beside the tests: the
/// same program with fault injection armable. Used when a test sets `HIPACHE_TPC_FAULT_INJECTION`.
pub fn fault_injection_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>/examples/hipache-tpc-fault-injection
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join("hipache-tpc-fault-injection"))
        .expect("the test runs from target/<profile>/deps");
    assert!(
        bin.is_file(),
        "{} is missing: it is built by a full `cargo test --release` (or `cargo build --release --examples`)",
        bin.display()
    );
    bin
}

pub struct Proxy {
    pub port: u16,
    pub dir: TempDir,
    pub config_path: PathBuf,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

/// `{"server": {...}, "http": {...}, "driver": ...}` for a test, with `extra` merged in (objects merge
/// key by key; other values replace).
pub fn config_for(redis_url: &str, port: u16, dir: &std::path::Path, extra: Value) -> Value {
    let mut base = json!({
        "server": {
            "accessLog": dir.join("access.log").to_string_lossy(),
            "workers": 2,
            "deadBackendTTL": 30,
            "tcpTimeout": 30,
            "retryOnError": 3
        },
        "http": { "port": port, "bind": ["127.0.0.1"] },
        "driver": redis_url,
        // The tests run as root; the privilege drop has its own tests (operations.rs). Keeping root here
        // lets tests rotate the access log inside a temporary folder only root may write to.
        "user": "root"
    });
    merge(&mut base, extra);
    base
}

pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}

impl Proxy {
    /// Starts a proxy routed by `redis`, with `extra` configuration merged in.
    pub fn start(redis: &RedisServer, extra: Value) -> Proxy {
        Self::start_url(&redis.url(0), extra)
    }

    pub fn start_url(redis_url: &str, extra: Value) -> Proxy {
        let dir = TempDir::new("proxy");
        let port = free_port();
        let config = config_for(redis_url, port, dir.path(), extra);
        Self::start_config(dir, port, &config)
            .unwrap_or_else(|log| panic!("proxy did not start:\n{log}"))
    }

    /// Starts with a complete configuration; `Err(log)` if it exits or never becomes ready.
    pub fn start_config(dir: TempDir, port: u16, config: &Value) -> Result<Proxy, String> {
        Self::start_config_env(dir, port, config, &[])
    }

    /// As [`Proxy::start_config`], with extra environment variables.
    pub fn start_config_env(
        dir: TempDir,
        port: u16,
        config: &Value,
        env: &[(&str, &str)],
    ) -> Result<Proxy, String> {
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(config).unwrap()).unwrap();
        let bin: PathBuf = if env.iter().any(|(k, _)| *k == "HIPACHE_TPC_FAULT_INJECTION") {
            fault_injection_bin()
        } else {
            PathBuf::from(BIN)
        };
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info,hipache_tpc=debug")
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .envs(
                std::env::var("TEST_PROXY_IO")
                    .ok()
                    .map(|v| ("HIPACHE_TPC_IO", v)),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hipache-tpc");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let mut proxy = Proxy {
            port,
            dir,
            config_path,
            child: Some(child),
            log,
        };
        let ready = wait_until(Duration::from_secs(15), || {
            proxy.log().contains(" ready: ") || proxy.exited()
        });
        if !ready || proxy.exited() {
            std::thread::sleep(Duration::from_millis(100));
            return Err(proxy.log());
        }
        Ok(proxy)
    }

    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Everything the proxy logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Waits until the access log has at least `n` lines (it is flushed every 200 ms).
    pub fn access_log_lines(&self, n: usize) -> Vec<String> {
        wait_until(Duration::from_secs(5), || {
            self.access_log().lines().count() >= n
        });
        self.access_log().lines().map(str::to_string).collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// A field of /proc/<pid>/status in kB (e.g. "VmRSS", "VmHWM").
    pub fn proc_status_kb(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Waits for the process to exit by itself (at most `wait`).
    pub fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(wait, || {
            status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// SIGTERM and wait for the exit status (at most `wait`).
    pub fn terminate(&mut self, wait: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let mut status = None;
        wait_until(wait, || {
            status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the binary with `args` to completion: (exit code, stdout, stderr).
pub fn run_cli(
    args: &[&str],
    cwd: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run hipache-tpc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Convenience: a fresh port for configs built by hand.
pub fn port() -> u16 {
    free_port()
}

/// Waits (at most 10 s) until `workers` workers of `proxy` log that route-change notifications are on.
pub fn wait_for_notifications(proxy: &Proxy, workers: usize) {
    assert!(
        wait_until(Duration::from_secs(10), || proxy
            .log()
            .matches("route-change notifications on")
            .count()
            >= workers),
        "notifications never came on:\n{}",
        proxy.log()
    );
}
