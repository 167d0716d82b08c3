#!/usr/bin/env python3
"""Route-change propagation measurement for bench/propagation.sh (standard library only).

Subcommands:
  setup ...   puts the changed hosts in their initial state (raw RESP, pipelined)
  run ...     while wrk (started here) loads the proxy, makes RATE route changes per second and
              measures, for each, the time from the Redis write to the first probe response that
              shows the new route; keeps keep-alive connections and WebSocket tunnels open and counts
              any that close; prints one JSON object.

Changed hosts ("probe hosts", v<i> among the registered vhosts) cycle through five states, each
reached with one MULTI/EXEC (one atomic write), so that the new route can be recognised in the
first response that uses it:

    S0  [p<i>v<n>, B1, B2]  dead {1}   answers b1
    --dead-->      dead {0}            answers b2   (a mark moves: B2 revived, B1 marked dead)
    --remove-->    [..v<n+1>, B2]      answers b2   (B1 removed, dead set cleared)
    --replace-->   [..v<n+2>, B3]      answers b3   (B2 replaced by B3)
    --add-->       [..v<n+3>, B3, B1]  answers b3 or b1 (B1 added)
    --rewrite-->   S0 with v<n+4>      answers b1   (list rewritten)

B1, B2, B3 answer with their name in the body. Every frontend change also bumps the identifier
(element 0 of the list), which the proxy reports in `X-Debug-Vhost` when the request carries
`X-Debug` (server.debug): a response is "routed accordingly" when its identifier is the new one and
its backend is one of the new list's live backends. For the dead-mark change (which does not touch
the list) the backend alone tells (b1 before, b2 after).

WebSocket hosts w<j> ([w<j>v<n>, WS1]) alternate between adding and removing a second echo server
WS2; WS1, which the tunnels use, is never removed, so no tunnel may close.

Propagation is measured from just before the write is sent to Redis to the arrival of the first
probe response routed accordingly: an upper bound, which includes up to one probe round trip
(reported as probe RTT).
"""

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (Redis, parse_wrk)
from ws import frame_header, xor_mask  # noqa: E402


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(q / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


# --------------------------------------------------------------------------------------------
# Route states


class Host:
    def __init__(self, i, name, kind):
        self.i, self.name, self.kind = i, name, kind
        self.ver = 0
        self.st = 0
        self.pending = None      # the change being waited for
        self.ok_since = 0.0      # responses to requests sent after this must match the state
        self.accept = None       # (identifier or None, set of bodies) of the current state

    def ident(self):
        return f"{'p' if self.kind == 'p' else 'w'}{self.i}v{self.ver}"


def initial_cmds(h, a):
    if h.kind == "p":
        h.accept = (h.ident(), {b"b1"})
        return [("DEL", f"frontend:{h.name}"), ("DEL", f"dead:{h.name}"),
                ("RPUSH", f"frontend:{h.name}", h.ident(), a.b1, a.b2),
                ("SADD", f"dead:{h.name}", 1)]
    h.accept = (h.ident(), {b"ws1"})
    return [("DEL", f"frontend:{h.name}"), ("DEL", f"dead:{h.name}"),
            ("RPUSH", f"frontend:{h.name}", h.ident(), a.ws1)]


def next_change(h, a):
    """(type, commands, accept) for the host's next transition; advances its state."""
    f, d = f"frontend:{h.name}", f"dead:{h.name}"
    if h.kind == "w":
        h.ver += 1
        if h.st == 0:
            cmds, acc, kind = [("RPUSH", f, a.ws2), ("LSET", f, 0, h.ident())], {b"ws1", b"ws2"}, "add"
        else:
            cmds, acc, kind = [("LREM", f, 1, a.ws2), ("LSET", f, 0, h.ident())], {b"ws1"}, "remove"
        h.st = 1 - h.st
        return kind, cmds, (h.ident(), acc)
    st = h.st
    h.st = (st + 1) % 5
    if st == 0:
        return "dead", [("SREM", d, 1), ("SADD", d, 0)], (h.ident(), {b"b2"})
    h.ver += 1
    if st == 1:
        return "remove", [("LREM", f, 1, a.b1), ("LSET", f, 0, h.ident()), ("DEL", d)], \
            (h.ident(), {b"b2"})
    if st == 2:
        return "replace", [("LSET", f, 1, a.b3), ("LSET", f, 0, h.ident())], (h.ident(), {b"b3"})
    if st == 3:
        return "add", [("RPUSH", f, a.b1), ("LSET", f, 0, h.ident())], (h.ident(), {b"b3", b"b1"})
    return "rewrite", [("DEL", f), ("RPUSH", f, h.ident(), a.b1, a.b2), ("SADD", d, 1)], \
        (h.ident(), {b"b1"})


def make_hosts(a):
    hosts = [Host(i, a.vhost_pattern % i, "p") for i in range(a.probe_hosts)]
    hosts += [Host(j, a.ws_pattern % j, "w") for j in range(a.ws_hosts)]
    return hosts


def cmd_setup(a):
    r = bench.Redis(a.redis_port)
    cmds = []
    for h in make_hosts(a):
        cmds += initial_cmds(h, a)
    r.pipeline(cmds)


# --------------------------------------------------------------------------------------------
# HTTP over asyncio streams


async def http_get(reader, writer, host, debug=True):
    req = (f"GET /p HTTP/1.1\r\nHost: {host}\r\n" + ("X-Debug: 1\r\n" if debug else "") +
           "\r\n").encode()
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    m = re.search(rb"(?i)\r\nx-debug-vhost:\s*([^\r]*)", head)
    ident = m.group(1).decode() if m else None
    return status, ident, body.strip()


class Stats:
    def __init__(self):
        self.prop = []           # (type, ms, ack_ms)
        self.rtt = []            # probe round trips, ms
        self.changes = 0
        self.skipped = 0
        self.timed_out = 0
        self.probe_errors = 0
        self.probe_error_samples = []
        self.wrong = 0           # new identifier, backend not in the new list
        self.stale_after_seen = 0
        self.ka_requests = 0
        self.ka_errors = 0
        self.ka_closed = 0
        self.ws_messages = 0
        self.ws_closed = 0
        self.ws_errors = 0
        self.probe_closed = 0

    def err(self, what):
        self.probe_errors += 1
        if len(self.probe_error_samples) < 5:
            self.probe_error_samples.append(what)


def check_response(h, st, sent_at, now, status, ident, body):
    """Classify a response for host h. Returns True if it shows the pending change."""
    if status != 200:
        st.err(f"{h.name}: status {status}")
        return False
    p = h.pending
    if p is not None:
        want_id, bodies = p["accept"]
        if ident == want_id and body in bodies:
            return True
        if ident == want_id and body not in bodies:
            st.wrong += 1
        return False
    if sent_at > h.ok_since and h.accept is not None:
        want_id, bodies = h.accept
        if ident != want_id or body not in bodies:
            st.stale_after_seen += 1
    return False


async def probe_worker(a, st, hosts, pending, wake, stop):
    reader, writer = await asyncio.open_connection("127.0.0.1", a.proxy_port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    k = random.randrange(1000)
    while not stop.is_set():
        if not pending:
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), 0.05)
            except asyncio.TimeoutError:
                pass
            continue
        k += 1
        keys = list(pending)
        h = pending[keys[k % len(keys)]]
        t0 = time.perf_counter()
        try:
            status, ident, body = await http_get(reader, writer, h.name)
        except (OSError, asyncio.IncompleteReadError) as e:
            st.probe_closed += 1
            st.err(f"probe connection: {e!r}")
            reader, writer = await asyncio.open_connection("127.0.0.1", a.proxy_port)
            continue
        t1 = time.perf_counter()
        st.rtt.append((t1 - t0) * 1e3)
        p = h.pending
        if check_response(h, st, t0, t1, status, ident, body) and h.pending is p:
            st.prop.append((p["type"], (t1 - p["t_send"]) * 1e3, (p["t_ack"] - p["t_send"]) * 1e3))
            h.pending = None
            h.accept = p["accept"]
            h.ok_since = t1
            pending.pop(h.name, None)
    writer.close()


async def resp_reply(reader):
    line = (await reader.readline())[:-2]
    kind, rest = line[:1], line[1:]
    if kind == b"-":
        return RuntimeError(rest.decode())
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else (await reader.readexactly(n + 2))[:-2]
    if kind == b"*":
        n = int(rest)
        return [await resp_reply(reader) for _ in range(max(n, 0))]
    return rest


async def writer_task(a, st, hosts, pending, wake, stop):
    reader, writer = await asyncio.open_connection("127.0.0.1", a.redis_port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    phosts = [h for h in hosts if h.kind == "p"]
    whosts = [h for h in hosts if h.kind == "w"]
    pi = wi = 0
    t0 = time.perf_counter()
    k = 0
    while not stop.is_set():
        # Every tenth change goes to a WebSocket host (when there are some).
        if whosts and k % 10 == 5:
            cand = whosts
            idx = wi
            wi += 1
        else:
            cand = phosts
            idx = pi
            pi += 1
        h = cand[idx % len(cand)]
        if h.pending is not None:
            st.skipped += 1
        else:
            kind, cmds, accept = next_change(h, a)
            payload = bench.resp_encode("MULTI") + b"".join(bench.resp_encode(*c) for c in cmds) + \
                bench.resp_encode("EXEC")
            t_send = time.perf_counter()
            h.pending = {"type": kind, "accept": accept, "t_send": t_send, "t_ack": t_send}
            pending[h.name] = h
            writer.write(payload)
            # +OK, +QUEUED for each command, then EXEC's array of replies.
            for _ in range(len(cmds) + 2):
                rep = await resp_reply(reader)
                if isinstance(rep, Exception):
                    raise SystemExit(f"redis refused a change of {h.name}: {rep}")
            h.pending["t_ack"] = time.perf_counter()
            st.changes += 1
            wake.set()
        # Changes that were never seen.
        now = time.perf_counter()
        for name, ph in list(pending.items()):
            if now - ph.pending["t_send"] > a.timeout:
                st.timed_out += 1
                ph.accept = ph.pending["accept"]
                ph.ok_since = now
                ph.pending = None
                pending.pop(name, None)
        k += 1
        delay = t0 + k / a.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    st.seconds = time.perf_counter() - t0
    writer.close()


async def keepalive_worker(a, st, hosts, stop):
    """A keep-alive client connection making a request every `ka_interval` to a changed host."""
    phosts = [h for h in hosts if h.kind == "p"]
    reader, writer = await asyncio.open_connection("127.0.0.1", a.proxy_port)
    while not stop.is_set():
        await asyncio.sleep(a.ka_interval * random.uniform(0.5, 1.5))
        h = random.choice(phosts)
        t0 = time.perf_counter()
        try:
            status, ident, body = await http_get(reader, writer, h.name)
        except (OSError, asyncio.IncompleteReadError):
            st.ka_closed += 1
            reader, writer = await asyncio.open_connection("127.0.0.1", a.proxy_port)
            continue
        st.ka_requests += 1
        if status != 200:
            st.ka_errors += 1
        elif h.pending is None and t0 > h.ok_since and h.accept is not None:
            want_id, bodies = h.accept
            if ident != want_id or body not in bodies:
                st.stale_after_seen += 1
    writer.close()


async def ws_tunnel(a, st, host, stop):
    reader, writer = await asyncio.open_connection("127.0.0.1", a.proxy_port)
    writer.write((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  ).encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        st.ws_errors += 1
        return
    key = os.urandom(4)
    payload = b"propagation bench tunnel ping..."
    frame = frame_header(1, len(payload), key) + xor_mask(payload, key)
    echo = frame_header(1, len(payload)) + payload
    while not stop.is_set():
        await asyncio.sleep(a.ws_interval * random.uniform(0.5, 1.5))
        try:
            writer.write(frame)
            got = await asyncio.wait_for(reader.readexactly(len(echo)), 5)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            st.ws_closed += 1
            return
        if got != echo:
            st.ws_errors += 1
        st.ws_messages += 1
    writer.close()


def scrape(port):
    if not port:
        return {}
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
        s.close()
    except OSError as e:
        return {"error": repr(e)}
    out = {}
    for line in data.decode(errors="replace").split("\r\n\r\n", 1)[-1].splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, val = line.rpartition(" ")
        try:
            out[name] = float(val)
        except ValueError:
            pass
    return out


def lag_summary(m0, m1):
    """The invalidation-lag histogram over the run (difference of two scrapes)."""
    pre = "hipache_invalidation_lag_seconds"
    d = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1 if k.startswith(pre)}
    n = d.get(pre + "_count", 0)
    if not n:
        return {"count": 0}
    buckets = sorted(((float(re.search(r'le="([^"]+)"', k).group(1).replace("+Inf", "inf")), v)
                      for k, v in d.items() if k.startswith(pre + "_bucket")))

    def q(p):
        for le, c in buckets:
            if c >= p * n:
                return le
        return None

    return {"count": int(n), "mean_ms": round(d.get(pre + "_sum", 0) / n * 1e3, 3),
            "p50_le_ms": q(0.5) * 1e3 if q(0.5) is not None else None,
            "p99_le_ms": q(0.99) * 1e3 if q(0.99) is not None else None,
            "max_le_ms": q(1.0) * 1e3 if q(1.0) is not None else None,
            "buckets": {str(le): int(c) for le, c in buckets}}


async def run(a):
    hosts = make_hosts(a)
    r = bench.Redis(a.redis_port)
    cmds = []
    for h in hosts:
        cmds += initial_cmds(h, a)
    r.pipeline(cmds)
    await asyncio.sleep(1.5)      # let the proxy's caches forget the previous states
    st = Stats()
    stop = asyncio.Event()
    wake = asyncio.Event()
    pending = {}
    m0 = scrape(a.admin_port)

    wrk = None
    if a.wrk_args:
        wrk = await asyncio.create_subprocess_exec(
            "taskset", "-c", a.client_cpu, "wrk", *a.wrk_args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        await asyncio.sleep(1.0)   # wrk's connections are up
    whosts = [h for h in hosts if h.kind == "w"]
    tasks = [asyncio.create_task(keepalive_worker(a, st, hosts, stop)) for _ in range(a.ka_conns)]
    tasks += [asyncio.create_task(ws_tunnel(a, st, whosts[i % len(whosts)].name, stop))
              for i in range(a.ws_tunnels if whosts else 0)]
    tasks += [asyncio.create_task(probe_worker(a, st, hosts, pending, wake, stop))
              for _ in range(a.probe_conns)]
    await asyncio.sleep(0.5)
    wt = asyncio.create_task(writer_task(a, st, hosts, pending, wake, stop))
    await asyncio.sleep(a.duration)
    stop.set()
    await wt
    await asyncio.sleep(0.2)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    m1 = scrape(a.admin_port)
    w = None
    if wrk:
        out, _ = await wrk.communicate()
        try:
            w = bench.parse_wrk(out.decode())
        except ValueError as e:
            w = {"error": str(e)[:300]}

    ms = [x[1] for x in st.prop]
    by_type = {}
    for kind in sorted({x[0] for x in st.prop}):
        xs = [x[1] for x in st.prop if x[0] == kind]
        by_type[kind] = {"n": len(xs), "p50_ms": round(pct(xs, 50), 3), "p99_ms": round(pct(xs, 99), 3),
                         "max_ms": round(max(xs), 3)}
    res = {
        "label": a.label,
        "changes": st.changes,
        "rate": round(st.changes / st.seconds, 1),
        "seen": len(ms),
        "not_seen_within_s": a.timeout,
        "not_seen": st.timed_out,
        "skipped_still_pending": st.skipped,
        "pending_at_end": len(pending),
        "prop_p50_ms": round(pct(ms, 50), 3) if ms else None,
        "prop_p90_ms": round(pct(ms, 90), 3) if ms else None,
        "prop_p99_ms": round(pct(ms, 99), 3) if ms else None,
        "prop_max_ms": round(max(ms), 3) if ms else None,
        "prop_mean_ms": round(statistics.mean(ms), 3) if ms else None,
        "redis_ack_p50_ms": round(pct([x[2] for x in st.prop], 50), 3) if ms else None,
        "by_type": by_type,
        "probe_rtt_p50_ms": round(pct(st.rtt, 50), 3) if st.rtt else None,
        "probe_rtt_p99_ms": round(pct(st.rtt, 99), 3) if st.rtt else None,
        "probe_requests": len(st.rtt),
        "probe_errors": st.probe_errors,
        "probe_error_samples": st.probe_error_samples,
        "probe_connections_closed": st.probe_closed,
        "wrong_backend": st.wrong,
        "stale_after_seen": st.stale_after_seen,
        "keepalive_conns": a.ka_conns,
        "keepalive_requests": st.ka_requests,
        "keepalive_errors": st.ka_errors,
        "keepalive_closed": st.ka_closed,
        "ws_tunnels": a.ws_tunnels if whosts else 0,
        "ws_messages": st.ws_messages,
        "ws_closed": st.ws_closed,
        "ws_errors": st.ws_errors,
        "wrk": w,
        "invalidation_lag": lag_summary(m0, m1) if a.admin_port else None,
        "metrics_delta": {k: m1.get(k, 0) - m0.get(k, 0) for k in m1
                          if k.split("{")[0] in ("hipache_cache_invalidations_total",
                                                 "hipache_cache_evictions_total",
                                                 "hipache_route_cache_misses_total",
                                                 "hipache_route_cache_hits_total",
                                                 "hipache_route_lookups_uncached_total",
                                                 "hipache_dead_marks_total",
                                                 "hipache_backend_errors_total")},
        "notifications_up": m1.get("hipache_route_notifications_up"),
    }
    print(json.dumps(res))


def cmd_summarize(a):
    rows = [json.loads(line) for line in open(a.runs) if line.strip()]
    out = ["| notifications | wrk load | changes (per s) | seen | not seen in 3 s | propagation p50 ms | "
           "p90 ms | p99 ms | max ms | probe RTT p50 / p99 ms | wrk req/s | wrk errors (non-2xx + socket) | "
           "probe errors | stale after seen | keep-alive closed (of) | WebSocket closed (of) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    # seen + not seen + still pending at the end = changes
    for r in rows:
        w = r.get("wrk") or {}
        werr = f"{w.get('non2xx', 0)} + {w.get('errors', 0) - w.get('non2xx', 0)}" if "errors" in w else "–"
        out.append(
            f"| {'on' if r['routeNotifications'] else 'off'} | {r['load']} | {r['changes']} ({r['rate']:.0f}) | "
            f"{r['seen']} | {r['not_seen']} | {r['prop_p50_ms']} | {r['prop_p90_ms']} | {r['prop_p99_ms']} | "
            f"{r['prop_max_ms']} | {r['probe_rtt_p50_ms']} / {r['probe_rtt_p99_ms']} | "
            f"{w.get('rps', 0):,.0f} | {werr} | {r['probe_errors'] + r['probe_connections_closed']} | "
            f"{r['stale_after_seen']} | {r['keepalive_closed']} ({r['keepalive_conns']}) | "
            f"{r['ws_closed'] + r['ws_errors']} ({r['ws_tunnels']}) |")
    out.append("")
    out.append("By change type (p50 / p99 / max ms):\n")
    types = ["dead", "remove", "replace", "add", "rewrite"]
    out.append("| notifications | wrk load | " + " | ".join(types) + " |")
    out.append("|---|---|" + "---:|" * len(types))
    for r in rows:
        cells = []
        for t in types:
            b = r["by_type"].get(t)
            cells.append(f"{b['p50_ms']} / {b['p99_ms']} / {b['max_ms']} (n={b['n']})" if b else "–")
        out.append(f"| {'on' if r['routeNotifications'] else 'off'} | {r['load']} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("`hipache_invalidation_lag_seconds` over each run (admin /metrics; the proxy's own probe key, "
               "written every second; bucket bounds):\n")
    out.append("| notifications | wrk load | samples | mean ms | p50 ≤ ms | p99 ≤ ms | max ≤ ms | "
               "cache invalidations | cache evictions |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lag = r.get("invalidation_lag") or {}
        md = r.get("metrics_delta") or {}
        out.append(f"| {'on' if r['routeNotifications'] else 'off'} | {r['load']} | {lag.get('count', 0)} | "
                   f"{lag.get('mean_ms', '–')} | {lag.get('p50_le_ms', '–')} | {lag.get('p99_le_ms', '–')} | "
                   f"{lag.get('max_le_ms', '–')} | "
                   f"{md.get('hipache_cache_invalidations_total', 0):.0f} | "
                   f"{md.get('hipache_cache_evictions_total', 0):.0f} |")
    print("\n".join(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("setup", "run"):
        p = sub.add_parser(name)
        p.add_argument("--redis-port", type=int, required=True)
        p.add_argument("--probe-hosts", type=int, default=200)
        p.add_argument("--ws-hosts", type=int, default=4)
        p.add_argument("--vhost-pattern", default="v%d.vhost.test")
        p.add_argument("--ws-pattern", default="w%d.ws.test")
        p.add_argument("--b1", required=True)
        p.add_argument("--b2", required=True)
        p.add_argument("--b3", required=True)
        p.add_argument("--ws1", required=True)
        p.add_argument("--ws2", required=True)
        if name == "run":
            p.add_argument("--proxy-port", type=int, required=True)
            p.add_argument("--admin-port", type=int, default=0)
            p.add_argument("--rate", type=float, default=100)
            p.add_argument("--duration", type=float, default=30)
            p.add_argument("--timeout", type=float, default=3.0)
            p.add_argument("--probe-conns", type=int, default=4)
            p.add_argument("--ka-conns", type=int, default=32)
            p.add_argument("--ka-interval", type=float, default=0.1)
            p.add_argument("--ws-tunnels", type=int, default=8)
            p.add_argument("--ws-interval", type=float, default=0.1)
            p.add_argument("--client-cpu", default="1")
            p.add_argument("--label", default="")
            p.add_argument("wrk_args", nargs=argparse.REMAINDER)
    p = sub.add_parser("summarize")
    p.add_argument("runs")
    a = ap.parse_args()
    if a.cmd == "summarize":
        cmd_summarize(a)
    elif a.cmd == "setup":
        cmd_setup(a)
    else:
        if a.wrk_args and a.wrk_args[0] == "--":
            a.wrk_args = a.wrk_args[1:]
        asyncio.run(run(a))


if __name__ == "__main__":
    main()
