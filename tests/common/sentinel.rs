//! A Redis Sentinel group for one test: a master, a replica and three sentinels (`redis-server
//! --sentinel`), all real processes on loopback, fast to fail over (1 s down-after).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_until, RedisServer, TempDir};

pub const MASTER: &str = "mymaster";

pub struct SentinelGroup {
    pub servers: Vec<RedisServer>,
    pub sentinel_ports: Vec<u16>,
    sentinels: Vec<Child>,
    _dir: TempDir,
}

impl SentinelGroup {
    pub fn start() -> SentinelGroup {
        let master = RedisServer::start();
        let replica = RedisServer::start_args(&[
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port.to_string(),
        ]);
        assert!(
            wait_until(Duration::from_secs(10), || {
                let info: String = replica.cmd(&["INFO", "replication"]);
                info.contains("master_link_status:up")
            }),
            "the replica never synchronised"
        );
        let dir = TempDir::new("sentinel");
        let mut sentinels = Vec::new();
        let mut ports = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {MASTER} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER} 1000\nsentinel failover-timeout {MASTER} 5000\n\
                     sentinel parallel-syncs {MASTER} 1\n",
                    dir.path().display(),
                    master.port
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel");
            sentinels.push(child);
            ports.push(port);
        }
        let group = SentinelGroup {
            servers: vec![master, replica],
            sentinel_ports: ports,
            sentinels,
            _dir: dir,
        };
        // Every sentinel knows the master, the replica and the other sentinels.
        assert!(
            wait_until(Duration::from_secs(15), || group.sentinel_ports.iter().all(
                |p| {
                    let info = sentinel_cmd(*p, &["SENTINEL", "MASTER", MASTER]);
                    info.contains("num-slaves\n1") && info.contains("num-other-sentinels\n2")
                }
            )),
            "the sentinels never agreed on the group"
        );
        group
    }

    /// `redis+sentinel://127.0.0.1:a,127.0.0.1:b,127.0.0.1:c/mymaster`
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER}", hosts.join(","))
    }

    /// The port of the server the sentinels call master now.
    pub fn master_port(&self) -> u16 {
        let out = sentinel_cmd(
            self.sentinel_ports[0],
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER],
        );
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The server the sentinels call master now.
    pub fn master(&self) -> &RedisServer {
        let port = self.master_port();
        self.servers
            .iter()
            .find(|s| s.port == port)
            .expect("the master is one of ours")
    }

    pub fn server_mut(&mut self, port: u16) -> &mut RedisServer {
        self.servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("a server of ours")
    }
}

/// Runs a command on a sentinel with redis-cli (the redis crate's sync client does not speak to
/// sentinels the way we need here); its output, one reply element per line.
pub fn sentinel_cmd(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).to_string()
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for c in &mut self.sentinels {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
