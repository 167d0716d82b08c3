//! A private redis-server for one test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until, TempDir};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
    password: Option<String>,
    /// More `redis-server` arguments (TLS, unix socket, ACL users); the plain port stays open for the
    /// test's own commands.
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(None)
    }

    /// Starts a server requiring `password` (if any).
    pub fn start_with(password: Option<&str>) -> RedisServer {
        Self::start_on(free_port(), password)
    }

    /// Starts on a given port (e.g. one a proxy is already configured for).
    pub fn start_on(port: u16, password: Option<&str>) -> RedisServer {
        let mut server = RedisServer {
            port,
            child: None,
            dir: TempDir::new("redis"),
            password: password.map(str::to_string),
            extra: Vec::new(),
        };
        server.spawn();
        server
    }

    /// Starts with more `redis-server` arguments (e.g. `--tls-port`, `--unixsocket`, `--user`).
    pub fn start_args(extra: &[String]) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            child: None,
            dir: TempDir::new("redis"),
            password: None,
            extra: extra.to_vec(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pw) = &self.password {
            cmd.arg("--requirepass").arg(pw);
        }
        let child = cmd
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let url = self.url(0);
        assert!(
            wait_until(Duration::from_secs(10), || redis::Client::open(
                url.as_str()
            )
            .and_then(|c| c.get_connection())
            .is_ok()),
            "redis-server did not start on port {}",
            self.port
        );
    }

    /// `redis://[:pw@]127.0.0.1:port/db`
    pub fn url(&self, db: i64) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/{db}", self.port),
            None => format!("redis://127.0.0.1:{}/{db}", self.port),
        }
    }

    pub fn conn(&self, db: i64) -> redis::Connection {
        redis::Client::open(self.url(db).as_str())
            .and_then(|c| c.get_connection())
            .expect("connect to test redis")
    }

    /// Runs one command on database 0 and returns its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        self.cmd_db(0, args)
    }

    pub fn cmd_db<T: redis::FromRedisValue>(&self, db: i64, args: &[&str]) -> T {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.conn(db))
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// `RPUSH frontend:<host> <identifier> <backends...>` (after deleting the key).
    pub fn set_frontend(&self, host: &str, identifier: &str, backends: &[String]) {
        let key = format!("frontend:{host}");
        let _: () = self.cmd(&["DEL", &key]);
        let mut args = vec!["RPUSH", key.as_str(), identifier];
        args.extend(backends.iter().map(String::as_str));
        let _: i64 = self.cmd(&args);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after `kill`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
