#!/usr/bin/env python3
"""Soak helper for bench/soak.sh: a backend, mixed client traffic, route churn in Redis, and RSS sampling
of the proxy, with a verdict on memory growth. Standard library only (raw sockets, asyncio).

    soak.py --proxy-port P --proxy-pid PID --redis-port R --duration S --interval S

Traffic, all through the proxy on 127.0.0.1:P, all of it bounded in time (--duration):
  - keep-alive clients: sequential GETs on long-lived connections
  - new-connection clients: one GET per connection (Connection: close)
  - uploads: POSTs of 256 KiB
  - WebSockets: raw upgrade, echo round trips on the tunnel, held a few seconds, closed; repeated
  - route churn: frontends created, changed and deleted in Redis all the time, and requested
Every --interval seconds a line: elapsed, RSS and high-water mark of the proxy (from /proc), requests,
errors. At the end a verdict: FLAT (exit 0) or GROWING (exit 1).
"""

import argparse
import asyncio
import base64
import hashlib
import os
import random
import statistics
import sys
import time

BACKEND_BODY = b"soak ok\n"
UPLOAD = os.urandom(256 * 1024)


class Stats:
    def __init__(self):
        self.requests = 0
        self.errors = 0
        self.ws_rounds = 0
        self.churn = 0
        self.last_error = ""

    def fail(self, what):
        self.errors += 1
        self.last_error = what


# ------------------------------------------------------------------------------------------------
# Backend: HTTP/1.1 keep-alive with Content-Length bodies, and raw echo after a WebSocket upgrade.
# ------------------------------------------------------------------------------------------------

async def backend_conn(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            if length:
                await reader.readexactly(length)
            if headers.get("upgrade", "").lower() == "websocket":
                key = headers.get("sec-websocket-key", "")
                accept = base64.b64encode(hashlib.sha1(
                    (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
                writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
                await writer.drain()
                while True:  # opaque echo: the proxy does not look inside a tunnel
                    data = await reader.read(65536)
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BACKEND_BODY), BACKEND_BODY))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError,
            asyncio.CancelledError):
        pass
    finally:
        writer.close()


# ------------------------------------------------------------------------------------------------
# Clients
# ------------------------------------------------------------------------------------------------

async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v.strip())
        elif k == b"connection" and v.strip().lower() == b"close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def keep_alive_client(port, host, stats, deadline):
    reader = writer = None
    while time.monotonic() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /keep HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
            status, close = await asyncio.wait_for(read_response(reader), 10)
            stats.requests += 1
            if status != 200:
                stats.fail("keep-alive status %d" % status)
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            stats.fail("keep-alive: %r" % e)
            if writer:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)
    if writer:
        writer.close()


async def one_shot(port, host, stats, method=b"GET", body=b""):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        req = b"%s /one HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, host)
        if body:
            req += b"Content-Length: %d\r\n" % len(body)
        writer.write(req + b"\r\n" + body)
        status, _ = await asyncio.wait_for(read_response(reader), 10)
        writer.close()
        stats.requests += 1
        return status
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
        stats.fail("%s: %r" % (method.decode(), e))
        return 0


async def new_connection_client(port, host, stats, deadline):
    while time.monotonic() < deadline:
        status = await one_shot(port, host, stats)
        if status and status != 200:
            stats.fail("new connection status %d" % status)


async def upload_client(port, host, stats, deadline):
    while time.monotonic() < deadline:
        status = await one_shot(port, host, stats, b"POST", UPLOAD)
        if status and status != 200:
            stats.fail("upload status %d" % status)
        await asyncio.sleep(0.02)


async def websocket_client(port, host, stats, deadline):
    while time.monotonic() < deadline:
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                          % (host.decode(), key)).encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                stats.fail("websocket refused: %r" % head[:40])
                continue
            hold_until = time.monotonic() + random.uniform(1, 4)
            while time.monotonic() < min(hold_until, deadline):
                payload = os.urandom(random.randint(16, 8192))
                writer.write(payload)
                echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
                if echoed != payload:
                    stats.fail("websocket echo corrupted")
                    break
                stats.ws_rounds += 1
                await asyncio.sleep(0.05)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
            stats.fail("websocket: %r" % e)
            await asyncio.sleep(0.1)
        finally:
            if writer:
                writer.close()


# ------------------------------------------------------------------------------------------------
# Redis (raw RESP): route churn
# ------------------------------------------------------------------------------------------------

def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


async def redis_reply(reader):
    line = await reader.readline()
    kind = line[:1]
    if kind == b"$":
        n = int(line[1:])
        if n >= 0:
            await reader.readexactly(n + 2)
    elif kind == b"*":
        for _ in range(max(0, int(line[1:]))):
            await redis_reply(reader)
    elif kind == b"-":
        raise RuntimeError(line.decode().strip())


async def redis_cmd(conn, *args):
    reader, writer = conn
    writer.write(resp(*args))
    await redis_reply(reader)


async def route_churn(redis_port, proxy_port, backend_url, stats, deadline):
    conn = await asyncio.open_connection("127.0.0.1", redis_port)
    n = 0
    while time.monotonic() < deadline:
        n += 1
        host = "churn-%d.soak" % (n % 5000)
        key = "frontend:" + host
        await redis_cmd(conn, "DEL", key)
        await redis_cmd(conn, "RPUSH", key, host, backend_url)
        status = await one_shot(proxy_port, host.encode(), stats)
        if status not in (0, 200, 400):
            stats.fail("churn status %d" % status)
        if n % 3 == 0:
            await redis_cmd(conn, "DEL", key)
        stats.churn += 1
        await asyncio.sleep(0.005)
    conn[1].close()


# ------------------------------------------------------------------------------------------------
# RSS
# ------------------------------------------------------------------------------------------------

def proc_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def sampler(pid, interval, stats, deadline, samples, start):
    print("%8s %10s %10s %10s %9s %8s %7s" % ("elapsed", "rss_mb", "hwm_mb", "requests", "ws_rounds",
                                              "churn", "errors"), flush=True)
    while True:
        rss = proc_kb(pid, "VmRSS")
        hwm = proc_kb(pid, "VmHWM")
        if rss is None:
            print("soak: the proxy (pid %d) is gone" % pid, flush=True)
            return False
        elapsed = time.monotonic() - start
        samples.append((elapsed, rss))
        print("%7.0fs %10.1f %10.1f %10d %9d %8d %7d" % (elapsed, rss / 1024, (hwm or 0) / 1024,
                                                        stats.requests, stats.ws_rounds, stats.churn,
                                                        stats.errors), flush=True)
        if time.monotonic() >= deadline:
            return True
        await asyncio.sleep(min(interval, max(0.1, deadline - time.monotonic())))


def verdict(samples, tolerance_pct, tolerance_mb):
    """Compares the median RSS of the second quarter of the run (after warm-up) with the last quarter."""
    if len(samples) < 8:
        return True, "too few samples for a verdict (run longer or sample more often)"
    q = len(samples) // 4
    early = statistics.median(r for _, r in samples[q:2 * q])
    late = statistics.median(r for _, r in samples[-q:])
    growth_kb = late - early
    pct = 100.0 * growth_kb / early if early else 0.0
    span_h = max(1e-9, (samples[-1][0] - samples[q][0]) / 3600)
    flat = growth_kb <= max(early * tolerance_pct / 100, tolerance_mb * 1024)
    text = ("RSS after warm-up %.1f MB, at the end %.1f MB: %+.1f MB (%+.1f%%, about %+.1f MB/hour) -> %s"
            % (early / 1024, late / 1024, growth_kb / 1024, pct, growth_kb / 1024 / span_h,
               "FLAT" if flat else "GROWING"))
    return flat, text


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxy-port", type=int, required=True)
    ap.add_argument("--proxy-pid", type=int, required=True)
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--backend-port", type=int, required=True)
    ap.add_argument("--duration", type=float, default=300)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--keep-alive", type=int, default=8)
    ap.add_argument("--new-connections", type=int, default=4)
    ap.add_argument("--uploads", type=int, default=2)
    ap.add_argument("--websockets", type=int, default=16)
    ap.add_argument("--tolerance-pct", type=float, default=5.0)
    ap.add_argument("--tolerance-mb", type=float, default=4.0)
    args = ap.parse_args()

    server = await asyncio.start_server(backend_conn, "127.0.0.1", args.backend_port)
    backend_url = "http://127.0.0.1:%d" % args.backend_port
    conn = await asyncio.open_connection("127.0.0.1", args.redis_port)
    for host in ("soak.test", "ws.soak.test"):
        await redis_cmd(conn, "DEL", "frontend:" + host)
        await redis_cmd(conn, "RPUSH", "frontend:" + host, host, backend_url)
    conn[1].close()

    stats = Stats()
    start = time.monotonic()
    deadline = start + args.duration
    p = args.proxy_port
    tasks = []
    tasks += [keep_alive_client(p, b"soak.test", stats, deadline) for _ in range(args.keep_alive)]
    tasks += [new_connection_client(p, b"soak.test", stats, deadline) for _ in range(args.new_connections)]
    tasks += [upload_client(p, b"soak.test", stats, deadline) for _ in range(args.uploads)]
    tasks += [websocket_client(p, b"ws.soak.test", stats, deadline) for _ in range(args.websockets)]
    tasks.append(route_churn(args.redis_port, p, backend_url, stats, deadline))
    samples = []
    load = asyncio.gather(*tasks)
    alive = await sampler(args.proxy_pid, args.interval, stats, deadline, samples, start)
    await asyncio.wait_for(load, 30)
    server.close()
    print("soak: %d requests, %d WebSocket round trips, %d route changes, %d errors%s"
          % (stats.requests, stats.ws_rounds, stats.churn, stats.errors,
             (" (last: %s)" % stats.last_error) if stats.errors else ""))
    flat, text = verdict(samples, args.tolerance_pct, args.tolerance_mb)
    print("soak: verdict: " + text)
    return 0 if (alive and flat) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
