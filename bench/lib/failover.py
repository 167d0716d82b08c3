#!/usr/bin/env python3
"""Redis Sentinel failovers under load (bench/failover.sh; see bench/README.md).

Owns the Sentinel group (a master, a replica, three sentinels: real redis-server processes on loopback),
starts hipache-tpc on it, keeps wrk on a cached host for the whole run, and does N failovers, each
either graceful (SENTINEL FAILOVER) or a SIGKILL of the master (restarted afterwards; the sentinels make
it a replica). For each: the time from the promotion (the sentinels name the new master) to the first
request served for a frontend written to the new master right after it. At the end: requests and
failures of the load, and p50/max of those times, as one JSON line and a markdown table.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (free_ports, parse_wrk)

MASTER = "mymaster"


def cli(port, *args):
    p = subprocess.run(["redis-cli", "-p", str(port), *args], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True, timeout=10)
    return p.stdout


def wait(cond, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.01)
    raise SystemExit(f"failover.py: timed out waiting for {what}")


class Group:
    def __init__(self, out, ports, cpu):
        self.out, self.cpu = out, cpu
        self.ports = ports[:2]
        self.sentinels = ports[2:5]
        self.procs = {}
        self.start_server(self.ports[0])
        self.start_server(self.ports[1], replica_of=self.ports[0])
        wait(lambda: "master_link_status:up" in cli(self.ports[1], "INFO", "replication"), 15,
             "the replica to synchronise")
        for i, p in enumerate(self.sentinels):
            conf = os.path.join(out, f"sentinel-{i}.conf")
            with open(conf, "w") as f:
                f.write(f"port {p}\nbind 127.0.0.1\ndir {out}\n"
                        f"sentinel monitor {MASTER} 127.0.0.1 {self.ports[0]} 2\n"
                        f"sentinel down-after-milliseconds {MASTER} 1000\n"
                        f"sentinel failover-timeout {MASTER} 5000\n")
            self.procs[p] = self.spawn(["redis-server", conf, "--sentinel"], f"sentinel-{i}")
        wait(lambda: all("num-other-sentinels\n2" in cli(p, "SENTINEL", "MASTER", MASTER)
                         for p in self.sentinels), 20, "the sentinels to agree")

    def spawn(self, cmd, name):
        log = open(os.path.join(self.out, "logs", f"{name}.log"), "a")
        return subprocess.Popen(["taskset", "-c", self.cpu] + cmd, stdout=log, stderr=log)

    def start_server(self, port, replica_of=None):
        # A folder of its own: a replica's full sync leaves dump.rdb there, which a restarted server
        # (or the next mode's group) would otherwise load.
        data = os.path.join(self.out, "redis", f"{os.getpid()}-{port}")
        os.makedirs(data, exist_ok=True)
        cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", data]
        if replica_of:
            cmd += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.procs[port] = self.spawn(cmd, f"redis-{port}")
        wait(lambda: cli(port, "PING").strip() == "PONG", 10, f"redis on {port}")

    def master(self):
        out = cli(self.sentinels[0], "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER).split()
        return int(out[1]) if len(out) == 2 else 0

    def url(self):
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinels) + f"/{MASTER}"

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def status(port, host):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/30", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--hipache-bin", required=True)
    ap.add_argument("--backend", required=True)
    ap.add_argument("--failovers", type=int, default=10)
    ap.add_argument("--mode", choices=["graceful", "kill"], default="kill")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--proxy-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    a = ap.parse_args()
    os.makedirs(os.path.join(a.out, "logs"), exist_ok=True)
    ports = bench.free_ports(6)
    group = Group(a.out, ports, a.client_cpu)
    proxy = wrk = None
    try:
        m = group.master()
        cli(m, "DEL", "frontend:cached.bench.test")
        cli(m, "RPUSH", "frontend:cached.bench.test", "cached", a.backend)
        conf = os.path.join(a.out, "hipache-failover.json")
        with open(conf, "w") as f:
            json.dump({"server": {"workers": a.workers, "accessLog": False, "tcpTimeout": 300},
                       "http": {"port": ports[5], "bind": ["127.0.0.1"]},
                       "driver": group.url(), "user": "root"}, f)
        plog = open(os.path.join(a.out, "logs", "hipache-tpc.log"), "a")
        proxy = subprocess.Popen(["taskset", "-c", a.proxy_cpu, a.hipache_bin, "-c", conf],
                                 stdout=plog, stderr=plog, env={**os.environ, "RUST_LOG": "info"})
        wait(lambda: status(ports[5], "cached.bench.test") == 200, 15, "hipache-tpc to serve")
        duration = 60 + a.failovers * 15
        wrk = subprocess.Popen(["taskset", "-c", a.client_cpu, "wrk", "-t1", f"-c{a.connections}",
                                f"-d{duration}s", "--timeout", "5s",
                                f"http://127.0.0.1:{ports[5]}/30", "-H", "Host: cached.bench.test"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        took = []
        for i in range(a.failovers):
            old = group.master()
            if a.mode == "graceful":
                cli(group.sentinels[0], "SENTINEL", "FAILOVER", MASTER)
            else:
                group.procs[old].kill()
                group.procs[old].wait()
            wait(lambda: group.master() not in (0, old), 30, "the promotion")
            promoted = time.time()
            new = group.master()
            host = f"fo{i}.bench.test"
            cli(new, "DEL", f"frontend:{host}")
            cli(new, "RPUSH", f"frontend:{host}", "fo", a.backend)
            wait(lambda: status(ports[5], host) == 200, 30, f"{host} to be served")
            took.append(time.time() - promoted)
            print(f"failover {i + 1}: {old} -> {new}, the new master's route served "
                  f"{took[-1] * 1000:.0f} ms after the promotion", file=sys.stderr)
            if a.mode == "kill":
                group.start_server(old)
            # Settle: the old master replicates from the new one before the next round.
            wait(lambda: "master_link_status:up" in cli(old, "INFO", "replication"), 30,
                 "the old master to rejoin as a replica")
            time.sleep(1)
        wrk.send_signal(signal.SIGINT)
        text = wrk.communicate(timeout=30)[0]
        with open(os.path.join(a.out, "logs", f"wrk-{a.mode}.txt"), "w") as f:
            f.write(text)
        w = bench.parse_wrk(text)
        row = {"mode": a.mode, "failovers": a.failovers, "requests": w["requests"],
               "errors": w["errors"], "p50_ms": round(statistics.median(took) * 1000, 1),
               "max_ms": round(max(took) * 1000, 1), "took_ms": [round(t * 1000, 1) for t in took]}
        with open(os.path.join(a.out, "failover.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"| {a.mode} | {a.failovers} | {w['requests']:,} | {w['errors']} | "
              f"{row['p50_ms']:.0f} | {row['max_ms']:.0f} |")
    finally:
        for p in (wrk, proxy):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        group.stop()


if __name__ == "__main__":
    main()
