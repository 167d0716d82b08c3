#!/usr/bin/env python3
"""Helpers for bench/run.sh (standard library only).

Subcommands:
  freeports N                 print N distinct free TCP ports on 127.0.0.1
  redis-setup ...             register the bench frontends in Redis (raw RESP, pipelined)
  run-one ...                 one measured wrk run: CPU/RSS of the proxy before/after, wrk output
                              parsed, optional route-churn helper, one JSON row appended
  churn ...                   the route-churn helper (rewrites frontend:<host> lists at a fixed rate)
  idle-rss ...                RSS per idle keep-alive client connection of one proxy
  summarize RUNS.jsonl        markdown tables (medians over rounds) from the raw rows
  machine                     machine description as JSON
"""

import argparse
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# --------------------------------------------------------------------------------------------
# /proc helpers


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read().decode()
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2 :].split()
    return rest  # rest[0] is field 3 (state)


def children(pid):
    """Direct and indirect children of pid (scan of /proc, no CONFIG_PROC_CHILDREN needed)."""
    parent_of = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            parent_of[int(name)] = int(_stat_fields(name)[1])
        except (OSError, ValueError, IndexError):
            continue
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent_of.items() if pp == p]
        out.extend(kids)
        frontier.extend(kids)
    return out


def proc_tree(pid):
    return [pid] + children(pid)


def cpu_seconds(pids):
    """utime+stime of each process (all its threads, as /proc/<pid>/stat reports them)."""
    total = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # fields 14 and 15: utime, stime
    return total / CLK_TCK


def status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def serving_pid(pid):
    """The process that serves requests: nginx's worker (the master's child), else pid itself."""
    kids = children(pid)
    return kids[0] if len(kids) == 1 else pid


def count_lines(path):
    if not path or not os.path.exists(path):
        return None
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            n += b.count(b"\n")
    return n


def count_problem_lines(path):
    """Lines of a proxy's own log that report a problem (warn/error/crit/alert/emerg)."""
    if not path or not os.path.exists(path):
        return 0
    rx = re.compile(rb"warn|error|crit|alert|emerg|panic", re.I)
    with open(path, "rb") as f:
        return sum(1 for line in f if rx.search(line))


def free_ports(n):
    """n distinct ports that nothing listens on, below the ephemeral range (so that the bench's
    own outgoing connections can never have taken them between this check and the bind)."""
    import random
    lo_eph = 32768
    try:
        lo_eph = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    lo, hi = 20000, max(20100, min(lo_eph, 32768))
    candidates = list(range(lo, hi))
    random.shuffle(candidates)
    out = []
    for port in candidates:
        ok = True
        for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")):
            s = socket.socket(fam, socket.SOCK_STREAM)
            try:
                s.bind((addr, port))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            out.append(port)
            if len(out) == n:
                return out
    raise SystemExit("no free ports found")


# --------------------------------------------------------------------------------------------
# Redis (raw RESP, enough for the bench)


def resp_encode(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


class Redis:
    def __init__(self, port, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError("redis error: " + rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"unexpected redis reply {line!r}")

    def pipeline(self, cmds, batch=1000):
        out = []
        for i in range(0, len(cmds), batch):
            part = cmds[i : i + batch]
            self.sock.sendall(b"".join(resp_encode(*c) for c in part))
            out.extend(self.reply() for _ in part)
        return out

    def call(self, *args):
        return self.pipeline([args])[0]


def cmd_redis_setup(a):
    r = Redis(a.port)
    cmds = []
    for host in a.host:
        cmds += [("DEL", f"frontend:{host}"), ("RPUSH", f"frontend:{host}", "bench", a.backend)]
    for i in range(a.vhosts):
        h = a.vhost_pattern % i
        cmds += [("DEL", f"frontend:{h}"), ("RPUSH", f"frontend:{h}", f"vhost{i}", a.backend)]
    for i in range(a.churn_hosts):
        h = a.churn_pattern % i
        cmds += [
            ("DEL", f"frontend:{h}"),
            ("DEL", f"dead:{h}"),
            ("RPUSH", f"frontend:{h}", f"churn{i}", a.backend),
        ]
    if a.tls_dir:
        # planb's schema: tls:<name> with the PEM certificate chain and key.
        for i in range(a.vhosts):
            h = a.vhost_pattern % i
            with open(os.path.join(a.tls_dir, h + ".crt")) as c, open(os.path.join(a.tls_dir, h + ".key")) as k:
                cmds += [("DEL", f"tls:{h}"), ("HSET", f"tls:{h}", "certificate", c.read(), "key", k.read())]
    r.pipeline(cmds)
    n = r.call("DBSIZE")
    print(f"redis: {n} keys", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Route churn helper


def cmd_churn(a):
    """Rewrites frontend:<host> lists at `rate` changes per second, cycling over the hosts.

    Every host cycles through three states with atomic single commands, so a reader always sees
    a list with at least one valid backend:
        [id, A]  --LSET 1 B-->  [id, B]  --RPUSH A-->  [id, B, A]  --LREM 1 B-->  [id, A]
    """
    r = Redis(a.port)
    hosts = [a.churn_pattern % i for i in range(a.churn_hosts)]
    state = [0] * len(hosts)
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    t0 = time.monotonic()
    k = 0
    while not stop:
        i = k % len(hosts)
        key = f"frontend:{hosts[i]}"
        s = state[i]
        if s == 0:
            r.call("LSET", key, 1, a.backend_b)
        elif s == 1:
            r.call("RPUSH", key, a.backend_a)
        else:
            r.call("LREM", key, 1, a.backend_b)
        state[i] = (s + 1) % 3
        k += 1
        delay = t0 + k / a.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - t0
    # Put every host back to [id, A].
    cmds = []
    for i, h in enumerate(hosts):
        cmds += [("DEL", f"frontend:{h}"), ("RPUSH", f"frontend:{h}", f"churn{i}", a.backend_a)]
    r.pipeline(cmds)
    json.dump({"changes": k, "seconds": round(elapsed, 3), "rate": round(k / elapsed, 1)}, sys.stdout)
    sys.stdout.write("\n")


# --------------------------------------------------------------------------------------------
# wrk


def _to_us(value, unit):
    v = float(value)
    return v * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}[unit]


def parse_wrk(text):
    out = {}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    if not m:
        raise ValueError("cannot find the request count in wrk's output:\n" + text)
    out["requests"] = int(m.group(1))
    out["wrk_seconds"] = _to_us(m.group(2), m.group(3)) / 1e6
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else out["requests"] / out["wrk_seconds"]
    for pct in ("50", "75", "90", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % pct, text, re.M)
        out[f"p{pct}_us"] = round(_to_us(m.group(1), m.group(2)), 1) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errs = [int(x) for x in m.groups()] if m else [0, 0, 0, 0]
    out["err_connect"], out["err_read"], out["err_write"], out["err_timeout"] = errs
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    out["errors"] = sum(errs) + out["non2xx"]
    return out


def parse_h2load(text):
    out = {}
    m = re.search(r"finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req/s", text)
    if not m:
        raise ValueError("cannot find the result line in h2load's output:\n" + text)
    out["wrk_seconds"] = _to_us(m.group(1), m.group(2)) / 1e6
    out["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    total, started, done, ok, failed, errored, timeout = (int(x) for x in m.groups())
    out["requests"] = done
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    out["non2xx"] = int(m.group(3)) + int(m.group(4)) if m else 0
    out["err_connect"], out["err_read"], out["err_write"], out["err_timeout"] = 0, errored, 0, timeout
    out["errors"] = failed + errored + timeout + out["non2xx"] + (total - done)
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", text)
    if m:
        out["max_us"] = round(_to_us(m.group(3), m.group(4)), 1)
        out["mean_us"] = round(_to_us(m.group(5), m.group(6)), 1)
    m = re.search(r"Application protocol: (\S+)", text)
    out["protocol"] = m.group(1) if m else None
    for pct in ("50", "75", "90", "99"):
        out[f"p{pct}_us"] = None
    return out


def parse_ws(text):
    r = json.loads(text.strip().splitlines()[-1])
    return {
        "requests": r["messages"], "rps": r["msgs_per_s"], "wrk_seconds": r["seconds"],
        "mb_per_s": r["mb_per_s"], "msg_size": r["size"], "tunnels": r["tunnels"],
        "window": r["window"], "tunnels_lost": r["tunnels_lost"],
        "tunnels_stalled": r.get("tunnels_stalled", 0),
        "errors": r["error_count"] + r["tunnels_lost"], "error_samples": r["errors"],
        "ws_proxy_cpu_s": r["proxy_cpu_s"], "ws_backend_cpu_s": r["backend_cpu_s"],
        "ws_client_cpu_s": r["client_cpu_s"],
        "p50_us": None, "p99_us": None, "non2xx": 0,
    }


def parse_sni(text):
    r = json.loads(text.strip().splitlines()[-1])
    return {
        "requests": r["requests"], "rps": r["rps"], "wrk_seconds": r["seconds"],
        "p50_us": r["p50_us"], "p99_us": r["p99_us"], "sni_names": r["names"],
        "sni_threads": r["threads"], "non2xx": 0,
        "errors": r["error_count"], "error_samples": r["errors"],
    }


def _h2load_calibrate(args, duration, client_cpu):
    """`-n AUTO`: an unmeasured h2load run of 20,000 requests (the warm-up) gives the rate; the
    measured run then gets rate x duration requests. (h2load 1.52's -D mode reports 0 requests.)"""
    if "AUTO" not in args:
        return args
    i = args.index("AUTO")
    warm = args[:i] + ["20000"] + args[i + 1 :]
    p = subprocess.run(["taskset", "-c", client_cpu, "h2load"] + warm,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout)
        raise SystemExit(f"h2load warm-up failed (exit {p.returncode})")
    rps = parse_h2load(p.stdout)["rps"]
    return args[:i] + [str(max(1000, int(rps * duration)))] + args[i + 1 :]


def cmd_run_one(a):
    # Ctrl-C reaches wrk and every daemon of the terminal's process group: wrk then stops early and
    # the figures of this run are meaningless. Note it, and write no row.
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    signal.signal(signal.SIGTERM, lambda *_: interrupted.append(True))
    proxy_tree = proc_tree(a.proxy_pid) if a.proxy_pid else []
    serve = serving_pid(a.proxy_pid) if a.proxy_pid else None
    backend_tree = proc_tree(a.backend_pid)
    redis_tree = [a.redis_pid]

    churn = None
    if a.churn_rate > 0:
        churn = subprocess.Popen(
            ["taskset", "-c", a.client_cpu, sys.executable, os.path.abspath(__file__), "churn",
             "--port", str(a.redis_port), "--rate", str(a.churn_rate),
             "--churn-hosts", str(a.churn_hosts), "--churn-pattern", a.churn_pattern,
             "--backend-a", a.backend_a, "--backend-b", a.backend_b],
            stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)  # let it start changing routes before the run

    if a.access_log:
        open(a.access_log, "ab").close()
        os.truncate(a.access_log, 0)
    problems0 = count_problem_lines(a.proxy_log)

    c0 = time.monotonic()
    p0, b0, r0 = cpu_seconds(proxy_tree), cpu_seconds(backend_tree), cpu_seconds(redis_tree)
    if a.tool == "h2load":
        a.wrk_args = _h2load_calibrate(a.wrk_args, a.duration, a.client_cpu)
        p0, b0, r0 = cpu_seconds(proxy_tree), cpu_seconds(backend_tree), cpu_seconds(redis_tree)
        c0 = time.monotonic()
    # sni: the load client's path comes first among its arguments.
    cmd = {"wrk": ["wrk"], "h2load": ["h2load"], "sni": [],
           "ws": [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "ws.py"),
                  "load", "--proxy-pid", str(a.proxy_pid), "--backend-pid", str(a.backend_pid)],
           }[a.tool]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # A second wrk beside the measured one (e.g. a handshake per request beside keep-alive traffic):
    # started first, same duration, its figures kept in the row under "beside".
    beside = None
    if a.beside_json:
        beside = subprocess.Popen(["taskset", "-c", a.client_cpu, "wrk"] + json.loads(a.beside_json),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wrk = subprocess.run(["taskset", "-c", a.client_cpu] + cmd + a.wrk_args,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    beside_out = beside.communicate()[0] if beside else None
    p1, b1, r1 = cpu_seconds(proxy_tree), cpu_seconds(backend_tree), cpu_seconds(redis_tree)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c1 = time.monotonic()

    churn_stats = None
    if churn:
        churn.send_signal(signal.SIGTERM)
        out, _ = churn.communicate(timeout=30)
        try:
            churn_stats = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            churn_stats = {"error": out[-500:]}

    if interrupted:
        raise SystemExit(130)
    if wrk.returncode != 0:
        sys.stderr.write(wrk.stdout)
        raise SystemExit(f"{a.tool} failed (exit {wrk.returncode})")
    w = {"wrk": parse_wrk, "h2load": parse_h2load, "ws": parse_ws, "sni": parse_sni}[a.tool](wrk.stdout)
    n = max(w["requests"], 1)
    beside_row = None
    if beside:
        if beside.returncode != 0:
            sys.stderr.write(beside_out)
            raise SystemExit(f"the wrk beside the measured one failed (exit {beside.returncode})")
        bw = parse_wrk(beside_out)
        beside_row = {k: bw[k] for k in ("requests", "rps", "p50_us", "p99_us", "errors")}
        beside_row["wrk_cmd"] = "wrk " + " ".join(json.loads(a.beside_json))
        # CPU per request counts both loads' requests.
        n = max(w["requests"] + bw["requests"], 1)
    if a.tool == "ws":
        # The client measured its own interval (after opening the tunnels and a warm-up) and read
        # the proxy's and the backend's CPU time at its bounds.
        p0, p1 = 0.0, w["ws_proxy_cpu_s"] or 0.0
        b0, b1 = 0.0, w["ws_backend_cpu_s"] or 0.0
        c0, c1 = 0.0, w["wrk_seconds"]

    log_lines = None
    if a.access_log:
        time.sleep(0.5)  # buffered loggers flush every 200 ms
        log_lines = count_lines(a.access_log)
        os.truncate(a.access_log, 0)

    row = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pass": a.pass_name,
        "scenario": a.scenario,
        "target": a.target,
        "round": a.round,
        "connections": a.connections,
        "duration_s": a.duration,
        **w,
        "wall_s": round(c1 - c0, 3),
        "proxy_cpu_s": round(p1 - p0, 3) if a.proxy_pid else None,
        "cpu_us_per_req": round((p1 - p0) * 1e6 / n, 2) if a.proxy_pid else None,
        "proxy_core_util": round((p1 - p0) / (c1 - c0), 3) if a.proxy_pid else None,
        "rss_kb": status_kb(serve, "VmRSS") if serve else None,
        "hwm_kb": status_kb(serve, "VmHWM") if serve else None,
        "rss_tree_kb": sum(status_kb(p, "VmRSS") for p in proxy_tree) if proxy_tree else None,
        "backend_cpu_us_per_req": round((b1 - b0) * 1e6 / n, 2),
        "redis_cpu_us_per_req": round((r1 - r0) * 1e6 / n, 2),
        "wrk_cpu_us_per_req": round(
            ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) * 1e6 / n, 2),
        "access_log_lines": log_lines,
        "proxy_log_problems": count_problem_lines(a.proxy_log) - problems0,
        "churn": churn_stats,
        "beside": beside_row,
        "tool": a.tool,
        "wrk_cmd": a.tool + " " + " ".join(a.wrk_args),
    }
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    cpu = f"{row['cpu_us_per_req']:7.2f} us/req" if a.proxy_pid else "      - (no proxy)"
    extra = f" churn={churn_stats.get('changes')}" if churn_stats else ""
    print(f"  {a.pass_name:8} {a.scenario:7} r{a.round} {a.target:13} {w['rps']:10.0f} req/s "
          f"p50 {w['p50_us'] or 0:8.0f}us p99 {w['p99_us'] or 0:8.0f}us  {cpu}  "
          f"errors {w['errors']}{extra}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Idle keep-alive connections


def cmd_idle_rss(a):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.conns + 100
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
    serve = serving_pid(a.pid)
    req = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}\r\n\r\n".encode()
    # Warm-up: a first batch that is closed again, so that lazily built per-worker state (pools,
    # allocator arenas) is not charged to the connections measured.
    warm = _open_idle(a.port, req, min(200, a.conns))
    for s in warm:
        s.close()
    time.sleep(1.0)
    before = status_kb(serve, "VmRSS")
    socks = _open_idle(a.port, req, a.conns)
    time.sleep(1.0)
    during = status_kb(serve, "VmRSS")
    # Check that the connections are still open (the proxy did not drop them).
    alive = 0
    for s in socks:
        try:
            s.setblocking(False)
            data = s.recv(1)
            alive += 0 if data == b"" else 1
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    time.sleep(1.0)
    after = status_kb(serve, "VmRSS")
    row = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pass": a.pass_name,
        "scenario": "idle",
        "target": a.target,
        "conns": a.conns,
        "alive": alive,
        "rss_before_kb": before,
        "rss_with_conns_kb": during,
        "rss_after_close_kb": after,
        "kib_per_conn": round((during - before) / a.conns, 2),
    }
    with open(a.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"  idle {a.target:13} {a.conns} conns ({alive} still open): RSS {before} -> {during} KiB, "
          f"{row['kib_per_conn']:.2f} KiB/conn, {after} KiB after close", file=sys.stderr)


def _open_idle(port, req, n):
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("idle-rss: the proxy closed a connection after one request")
            buf += chunk
            if b"\r\n\r\n" in buf:
                head, body = buf.split(b"\r\n\r\n", 1)
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if not head.startswith(b"HTTP/1.1 200"):
                    raise SystemExit(f"idle-rss: unexpected answer {head[:80]!r}")
                if m and len(body) >= int(m.group(1)):
                    break
        socks.append(s)
    return socks


# --------------------------------------------------------------------------------------------
# Summary


TARGET_ORDER = ["direct", "floor", "hipache-tpc", "hipache-alt", "hipache-epoll", "nginx", "haproxy"]
SCENARIO_ORDER = ["small", "small-rr", "small-sticky", "paced", "16k", "1m", "up1m", "close", "vhosts",
                  "churn", "tls", "tls-close", "tls-mixed", "tls-redis", "tls-files", "h2", "h2c", "ws-64",
                  "ws-1k", "ws-16k"]


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _fmt(v, digits=0, unit=""):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}{unit}"


def _order(key, order):
    return (order.index(key) if key in order else len(order), key)


def _medians(sel, fields):
    targets = sorted({r["target"] for r in sel}, key=lambda t: _order(t, TARGET_ORDER))
    med = {}
    for t in targets:
        tr = [r for r in sel if r["target"] == t]
        med[t] = {f: _median([fn(r) for r in tr]) for f, fn in fields.items()}
        med[t]["err"] = max(r["errors"] for r in tr)
    return targets, med


def _ratio(m, ng, key):
    return (m[key] / ng[key]) if ng and ng.get(key) and m.get(key) else None


def _h2_table(sel):
    targets, med = _medians(sel, {
        "rps": lambda r: r["rps"], "mean": lambda r: r.get("mean_us"),
        "max": lambda r: r.get("max_us"), "cpu": lambda r: r["cpu_us_per_req"],
        "rss": lambda r: r["rss_kb"], "util": lambda r: r["proxy_core_util"],
        "n": lambda r: r["requests"]})
    out = ["| target | req/s | mean µs | max µs | proxy CPU µs/req | proxy core use | RSS MiB | "
           "CPU/req vs nginx | req/s vs nginx | errors (max) | requests/run |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ng = med.get("nginx")
    for t in targets:
        m = med[t]
        out.append(f"| {t} | {_fmt(m['rps'])} | {_fmt(m['mean'])} | {_fmt(m['max'])} | "
                   f"{_fmt(m['cpu'], 2)} | {_fmt(m['util'] * 100 if m['util'] else None, 0, ' %')} | "
                   f"{_fmt(m['rss'] / 1024 if m['rss'] else None, 1)} | "
                   f"{_fmt(_ratio(m, ng, 'cpu'), 2, '×')} | {_fmt(_ratio(m, ng, 'rps'), 2, '×')} | "
                   f"{m['err']} | {_fmt(m['n'])} |")
    return out


def _ws_table(sel):
    targets, med = _medians(sel, {
        "rps": lambda r: r["rps"], "mbps": lambda r: r["mb_per_s"],
        "cpu": lambda r: r["cpu_us_per_req"], "rss": lambda r: r["rss_kb"],
        "util": lambda r: r["proxy_core_util"],
        "c1": lambda r: ((r["ws_backend_cpu_s"] or 0) + (r["ws_client_cpu_s"] or 0)) / r["wrk_seconds"],
        "lost": lambda r: r["tunnels_lost"], "stalled": lambda r: r.get("tunnels_stalled", 0)})
    out = ["| target | messages/s | MB/s (payload, each way) | proxy CPU µs/message | proxy core use | "
           "echo servers + client core use | RSS MiB | CPU/msg vs nginx | CPU/msg vs floor | "
           "msgs/s vs nginx | tunnels closed | tunnels stalled | errors (max) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ng, fl = med.get("nginx"), med.get("floor")
    for t in targets:
        m = med[t]
        out.append(f"| {t} | {_fmt(m['rps'])} | {_fmt(m['mbps'], 1)} | {_fmt(m['cpu'], 2)} | "
                   f"{_fmt(m['util'] * 100 if m['util'] else None, 0, ' %')} | "
                   f"{_fmt(m['c1'] * 100, 0, ' %')} | "
                   f"{_fmt(m['rss'] / 1024 if m['rss'] else None, 1)} | "
                   f"{_fmt(_ratio(m, ng, 'cpu'), 2, '×')} | {_fmt(_ratio(m, fl, 'cpu'), 2, '×')} | "
                   f"{_fmt(_ratio(m, ng, 'rps'), 2, '×')} | {_fmt(m['lost'])} | {_fmt(m['stalled'])} | {m['err']} |")
    return out


def _sni_table(sel):
    targets, med = _medians(sel, {
        "rps": lambda r: r["rps"], "p50": lambda r: r["p50_us"], "p99": lambda r: r["p99_us"],
        "cpu": lambda r: r["cpu_us_per_req"], "util": lambda r: r["proxy_core_util"],
        "rss": lambda r: r["rss_kb"], "redis": lambda r: r["redis_cpu_us_per_req"],
        "n": lambda r: r["requests"]})
    out = ["| target | handshakes (= requests)/s | p50 µs | p99 µs | proxy CPU µs/handshake | "
           "proxy core use | redis CPU µs/handshake | RSS MiB | CPU vs nginx | errors (max) | "
           "requests/run |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ng = med.get("nginx")
    for t in targets:
        m = med[t]
        out.append(f"| {t} | {_fmt(m['rps'])} | {_fmt(m['p50'])} | {_fmt(m['p99'])} | "
                   f"{_fmt(m['cpu'], 1)} | {_fmt(m['util'] * 100 if m['util'] else None, 0, ' %')} | "
                   f"{_fmt(m['redis'], 2)} | {_fmt(m['rss'] / 1024 if m['rss'] else None, 1)} | "
                   f"{_fmt(_ratio(m, ng, 'cpu'), 2, '×')} | {m['err']} | {_fmt(m['n'])} |")
    return out


def _mixed_table(sel):
    """Keep-alive requests measured beside a second load (handshakes): the keep-alive latency."""
    targets, med = _medians(sel, {
        "rps": lambda r: r["rps"], "p50": lambda r: r["p50_us"], "p99": lambda r: r["p99_us"],
        "brps": lambda r: r["beside"]["rps"], "bp99": lambda r: r["beside"]["p99_us"],
        "cpu": lambda r: r["cpu_us_per_req"], "rss": lambda r: r["rss_kb"]})
    out = ["| target | keep-alive req/s | keep-alive p50 µs | **keep-alive p99 µs** | handshake req/s | "
           "handshake-request p99 µs | proxy CPU µs/req (both) | keep-alive p99 vs nginx | "
           "CPU/req vs nginx | errors (max) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ng = med.get("nginx")
    for t in targets:
        m = med[t]
        m["err"] = max(r["errors"] + r["beside"]["errors"] for r in sel if r["target"] == t)
        out.append(f"| {t} | {_fmt(m['rps'])} | {_fmt(m['p50'])} | {_fmt(m['p99'])} | {_fmt(m['brps'])} | "
                   f"{_fmt(m['bp99'])} | {_fmt(m['cpu'], 2)} | {_fmt(_ratio(m, ng, 'p99'), 2, '×')} | "
                   f"{_fmt(_ratio(m, ng, 'cpu'), 2, '×')} | {m['err']} |")
    return out


def cmd_summarize(a):
    rows = [json.loads(line) for line in open(a.runs) if line.strip()]
    runs = [r for r in rows if r.get("scenario") != "idle"]
    idle = [r for r in rows if r.get("scenario") == "idle"]
    out = []
    passes = []
    for r in runs:
        if r["pass"] not in passes:
            passes.append(r["pass"])
    for p in passes:
        title = {"nolog": "access logs off", "log": "access logs on",
                 "proto": "TLS, HTTP/2 and WebSocket (access logs off)"}.get(p, p)
        out.append(f"### {title}\n")
        scen = sorted({r["scenario"] for r in runs if r["pass"] == p},
                      key=lambda s: _order(s, SCENARIO_ORDER))
        for s in scen:
            sel = [r for r in runs if r["pass"] == p and r["scenario"] == s]
            rounds = len({r["round"] for r in sel})
            conns = sel[0]["connections"]
            tool = sel[0].get("tool", "wrk")
            if tool == "ws":
                out.append(f"**{s}** ({rounds} round(s) × {sel[0]['duration_s']} s, "
                           f"{sel[0]['tunnels']} tunnels, {sel[0]['msg_size']}-byte messages, "
                           f"{sel[0]['window']} in flight per tunnel; medians over rounds)\n")
                out.extend(_ws_table(sel))
                out.append("")
                continue
            if tool == "sni":
                out.append(f"**{s}** ({rounds} round(s) × {sel[0]['duration_s']} s, a new TLS "
                           f"connection per request, SNI rotating over {sel[0]['sni_names']} names, "
                           f"{sel[0]['sni_threads']} client threads; medians over rounds)\n")
                out.extend(_sni_table(sel))
                out.append("")
                if s == "tls-files":
                    # One figure: hipache-tpc's CPU per handshake with certificates from Redis, as
                    # a multiple of the same names from files (same run).
                    cpu = {sc: _median([r["cpu_us_per_req"] for r in runs if r["pass"] == p
                                        and r["scenario"] == sc and r["target"] == "hipache-tpc"])
                           for sc in ("tls-redis", "tls-files")}
                    # proto.sh interleaves their rounds: round r of each ran side by side.
                    by_round = {}
                    for r in runs:
                        if r["pass"] == p and r["target"] == "hipache-tpc" and r["cpu_us_per_req"] \
                                and r["scenario"] in ("tls-redis", "tls-files"):
                            by_round.setdefault(r["round"], {})[r["scenario"]] = r["cpu_us_per_req"]
                    paired = _median([v["tls-redis"] / v["tls-files"] for v in by_round.values()
                                      if len(v) == 2])
                    if cpu["tls-redis"] and cpu["tls-files"]:
                        out.append(f"hipache-tpc CPU per handshake, certificates from Redis vs files: "
                                   f"{cpu['tls-redis']:.1f} / {cpu['tls-files']:.1f} µs = "
                                   f"{cpu['tls-redis'] / cpu['tls-files']:.2f}× (median of the "
                                   f"per-round ratios: {_fmt(paired, 2, '×')})\n")
                continue
            if sel[0].get("beside"):
                out.append(f"**{s}** ({rounds} round(s) × {sel[0]['duration_s']} s; keep-alive "
                           f"`{sel[0]['wrk_cmd']}` beside `{sel[0]['beside']['wrk_cmd']}`; "
                           f"medians over rounds)\n")
                out.extend(_mixed_table(sel))
                out.append("")
                continue
            if tool == "h2load":
                out.append(f"**{s}** ({rounds} round(s) of ≈{sel[0]['duration_s']} s, "
                           f"`{sel[0]['wrk_cmd']}`; medians over rounds)\n")
                out.extend(_h2_table(sel))
                out.append("")
                continue
            out.append(f"**{s}** ({rounds} round(s) × {sel[0]['duration_s']} s, "
                       f"{conns} connections; medians over rounds)\n")
            out.append("| target | req/s | p50 µs | p99 µs | proxy CPU µs/req | RSS MiB | "
                       "CPU/req vs nginx | CPU/req vs floor | req/s vs nginx | errors (max) | "
                       "log lines/req |")
            out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            targets = sorted({r["target"] for r in sel}, key=lambda t: _order(t, TARGET_ORDER))
            med = {}
            for t in targets:
                tr = [r for r in sel if r["target"] == t]
                med[t] = {
                    "rps": _median([r["rps"] for r in tr]),
                    "p50": _median([r["p50_us"] for r in tr]),
                    "p99": _median([r["p99_us"] for r in tr]),
                    "cpu": _median([r["cpu_us_per_req"] for r in tr]),
                    "rss": _median([r["rss_kb"] for r in tr]),
                    "err": max(r["errors"] for r in tr),
                    "loglines": _median([
                        r["access_log_lines"] / r["requests"] if r.get("access_log_lines") is not None
                        and r["requests"] else None for r in tr]),
                }
            ng, fl = med.get("nginx"), med.get("floor")
            for t in targets:
                m = med[t]
                cpu_ratio = (m["cpu"] / ng["cpu"]) if ng and ng["cpu"] and m["cpu"] else None
                floor_ratio = _ratio(m, fl, "cpu")
                rps_ratio = (m["rps"] / ng["rps"]) if ng and ng["rps"] else None
                out.append(
                    f"| {t} | {_fmt(m['rps'])} | {_fmt(m['p50'])} | {_fmt(m['p99'])} | "
                    f"{_fmt(m['cpu'], 2)} | {_fmt(m['rss'] / 1024 if m['rss'] else None, 1)} | "
                    f"{_fmt(cpu_ratio, 2, '×')} | {_fmt(floor_ratio, 2, '×')} | "
                    f"{_fmt(rps_ratio, 2, '×')} | {m['err']} | "
                    f"{_fmt(m['loglines'], 2)} |")
            if s == "churn":
                ch = [r["churn"] for r in sel if r.get("churn") and "rate" in r["churn"]]
                if ch:
                    out.append(f"\nroute changes per second during the runs: median "
                               f"{_median([c['rate'] for c in ch]):.0f} "
                               f"({sum(c['changes'] for c in ch)} changes in all)")
            if s in ("vhosts", "churn"):
                hp = [r for r in sel if r["target"].startswith("hipache")]
                rc = _median([r["redis_cpu_us_per_req"] for r in hp])
                if rc is not None:
                    out.append(f"\nredis-server CPU µs/req during hipache-tpc's runs (not included "
                               f"above): {rc:.2f}")
            out.append("")
    if idle:
        out.append("### idle keep-alive client connections\n")
        out.append("| target | connections | still open | RSS before MiB | RSS with them MiB | "
                   "KiB per connection | RSS after closing them MiB |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for r in sorted(idle, key=lambda r: _order(r["target"], TARGET_ORDER)):
            out.append(f"| {r['target']} | {r['conns']} | {r['alive']} | "
                       f"{r['rss_before_kb'] / 1024:.1f} | {r['rss_with_conns_kb'] / 1024:.1f} | "
                       f"{r['kib_per_conn']:.2f} | {r['rss_after_close_kb'] / 1024:.1f} |")
        out.append("")
    print("\n".join(out))


# --------------------------------------------------------------------------------------------
# Machine description


def _version(cmd):
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=10)
        return p.stdout.strip().splitlines()[0] if p.stdout.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return "not found"


def cmd_machine(a):
    model, mhz, cache = "", "", ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k == "model name" and not model:
                model = v
            elif k == "cpu MHz" and not mhz:
                mhz = v
            elif k == "cache size" and not cache:
                cache = v
    mem_kb = status_kb_file("/proc/meminfo", "MemTotal")
    osname = ""
    if os.path.exists("/etc/os-release"):
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip().strip('"')
    load = open("/proc/loadavg").read().split()[:3]
    virt = ""
    try:
        lscpu = subprocess.run(["lscpu"], stdout=subprocess.PIPE, text=True, timeout=10).stdout
        m = re.search(r"Hypervisor vendor:\s*(\S+)", lscpu)
        virt = f"{m.group(1)} virtual machine" if m else "no hypervisor reported"
    except (OSError, subprocess.SubprocessError):
        pass
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": model,
        "cpus": os.cpu_count(),
        "mhz": mhz,
        "cache": cache,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "virtualization": virt,
        "os": osname,
        "kernel": os.uname().release,
        "loadavg_at_start": " ".join(load),
        "nginx": _version(["nginx", "-v"]),
        "haproxy": _version(["haproxy", "-v"]),
        "wrk": _version(["wrk", "-v"]),
        "redis": _version(["redis-server", "--version"]),
        "rustc": _version(["rustc", "--version"]),
        "hipache_tpc_commit": _version(["git", "rev-parse", "--short", "HEAD"]),
    }
    print(json.dumps(info, indent=1))


def status_kb_file(path, key):
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("freeports")
    p.add_argument("n", type=int)

    p = sub.add_parser("redis-setup")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--host", action="append", default=[])
    p.add_argument("--vhosts", type=int, default=0)
    p.add_argument("--vhost-pattern", default="v%d.vhost.test")
    p.add_argument("--churn-hosts", type=int, default=0)
    p.add_argument("--churn-pattern", default="c%d.churn.test")
    p.add_argument("--tls-dir", default="",
                   help="also store <dir>/<vhost>.crt and .key as tls:<vhost> (planb's hash)")

    p = sub.add_parser("churn")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--churn-hosts", type=int, default=100)
    p.add_argument("--churn-pattern", default="c%d.churn.test")
    p.add_argument("--backend-a", required=True)
    p.add_argument("--backend-b", required=True)

    p = sub.add_parser("run-one")
    p.add_argument("--out", required=True)
    p.add_argument("--pass-name", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--proxy-pid", type=int, default=0)
    p.add_argument("--proxy-log", default="")
    p.add_argument("--access-log", default="")
    p.add_argument("--backend-pid", type=int, required=True)
    p.add_argument("--redis-pid", type=int, required=True)
    p.add_argument("--redis-port", type=int, required=True)
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--churn-rate", type=float, default=0)
    p.add_argument("--churn-hosts", type=int, default=100)
    p.add_argument("--churn-pattern", default="c%d.churn.test")
    p.add_argument("--backend-a", default="")
    p.add_argument("--backend-b", default="")
    p.add_argument("--tool", choices=["wrk", "h2load", "ws", "sni"], default="wrk",
                   help="load generator; its arguments follow --")
    p.add_argument("--beside-json", default="",
                   help="JSON list of the arguments of a second wrk run at the same time")
    p.add_argument("wrk_args", nargs=argparse.REMAINDER)

    p = sub.add_parser("idle-rss")
    p.add_argument("--out", required=True)
    p.add_argument("--pass-name", default="nolog")
    p.add_argument("--target", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--conns", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--path", default="/30")

    p = sub.add_parser("summarize")
    p.add_argument("runs")

    sub.add_parser("machine")

    a = ap.parse_args()
    if a.cmd == "freeports":
        print(" ".join(str(p) for p in free_ports(a.n)))
    elif a.cmd == "redis-setup":
        cmd_redis_setup(a)
    elif a.cmd == "churn":
        cmd_churn(a)
    elif a.cmd == "run-one":
        if a.wrk_args and a.wrk_args[0] == "--":
            a.wrk_args = a.wrk_args[1:]
        cmd_run_one(a)
    elif a.cmd == "idle-rss":
        cmd_idle_rss(a)
    elif a.cmd == "summarize":
        cmd_summarize(a)
    elif a.cmd == "machine":
        cmd_machine(a)


if __name__ == "__main__":
    main()
