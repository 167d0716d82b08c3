#!/usr/bin/env python3
"""WebSocket helpers for the bench (standard library only, asyncio protocols, no parsing per byte).

Subcommands:
  echo-server --port P [--procs N] [--name NAME]
        A WebSocket echo server (RFC 6455, enough for the bench): N processes sharing the port with
        SO_REUSEPORT. Every data frame is sent back unmasked with the same opcode; ping gets pong;
        close is answered and the connection closed. A plain HTTP GET without Upgrade gets
        `200 <NAME>` (keep-alive), so the same server can be a route target for HTTP probes.
  load --port P [--host H] --tunnels N --size BYTES --duration S [--warmup S] [--window W] [--procs K]
        N tunnels (split over K processes) each keep W messages of BYTES in flight and count the
        echoes. Prints one JSON object: messages, seconds, messages/s, MB/s (payload, one way),
        tunnels closed early, errors.

The load client masks every frame with one fixed key chosen at start (the proxies only copy bytes,
so this changes nothing for them and saves the client's CPU), and counts echoes by length: the
server's frames for a fixed payload size have a fixed length, so no frame parsing is needed on the
hot path. The first echo of every tunnel is checked byte for byte.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --------------------------------------------------------------------------------------------
# Frames


def frame_header(opcode, n, mask_key=None):
    b0 = 0x80 | opcode
    m = 0x80 if mask_key is not None else 0
    if n < 126:
        h = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        h = struct.pack("!BBH", b0, m | 126, n)
    else:
        h = struct.pack("!BBQ", b0, m | 127, n)
    return h + (mask_key or b"")


def xor_mask(data, key):
    if not data:
        return data
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


# --------------------------------------------------------------------------------------------
# Echo server


class EchoServer(asyncio.Protocol):
    name = b"ws"

    def connection_made(self, transport):
        self.t = transport
        self.buf = bytearray()
        self.ws = False
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        self.buf += data
        if not self.ws:
            self._http()
        if self.ws:
            self._frames()

    def _http(self):
        while not self.ws:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            lines = head.split("\r\n")
            hdr = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                hdr[k.strip().lower()] = v.strip()
            if "websocket" in hdr.get("upgrade", "").lower():
                key = hdr.get("sec-websocket-key", "").encode()
                acc = base64.b64encode(hashlib.sha1(key + GUID).digest())
                self.t.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
                self.ws = True
            else:
                body = self.name + b"\n"
                self.t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Backend: " +
                             self.name + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    def _frames(self):
        buf = self.buf
        out = []
        pos = 0
        n_buf = len(buf)
        while True:
            if n_buf - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            p = pos + 2
            if n == 126:
                if n_buf - p < 2:
                    break
                n = struct.unpack_from("!H", buf, p)[0]
                p += 2
            elif n == 127:
                if n_buf - p < 8:
                    break
                n = struct.unpack_from("!Q", buf, p)[0]
                p += 8
            key = None
            if b1 & 0x80:
                if n_buf - p < 4:
                    break
                key = bytes(buf[p : p + 4])
                p += 4
            if n_buf - p < n:
                break
            payload = bytes(buf[p : p + n])
            if key is not None and key != b"\0\0\0\0":
                payload = xor_mask(payload, key)
            pos = p + n
            op = b0 & 0x0F
            if op == 8:  # close: answer and close
                out.append(frame_header(8, len(payload)) + payload)
                self.t.write(b"".join(out))
                self.t.close()
                self.buf = bytearray()
                return
            if op == 9:  # ping -> pong
                op = 10
            elif op == 10:
                continue
            out.append(frame_header(b0 & 0x0F if op != 10 else 10, n) + payload)
        if pos:
            del buf[:pos]
        if out:
            self.t.write(b"".join(out))


def cmd_echo_server(a):
    EchoServer.name = a.name.encode()
    # Several processes on one port: SO_REUSEPORT spreads the connections.
    socks = []
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", a.port))
    s.listen(4096)
    socks.append(s)
    kids = []
    for _ in range(a.procs - 1):
        pid = os.fork()
        if pid == 0:
            kids = None
            break
        kids.append(pid)

    def stop(*_):
        for k in kids or []:
            try:
                os.kill(k, signal.SIGTERM)
            except OSError:
                pass
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(loop.create_server(EchoServer, sock=s))
    sys.stderr.write(f"ws echo server {a.name} on 127.0.0.1:{a.port}, pid {os.getpid()}\n")
    loop.run_forever()


# --------------------------------------------------------------------------------------------
# Load client


class Tunnel(asyncio.Protocol):
    def __init__(self, owner, host, frame, echo_len, expect, window):
        self.o, self.host, self.frame, self.echo_len = owner, host, frame, echo_len
        self.expect, self.window = expect, window
        self.upgraded = False
        self.hbuf = b""
        self.rx = 0          # bytes of echoes received
        self.first = b""     # first echo, checked
        self.done = asyncio.get_event_loop().create_future()
        self.closed = False

    def connection_made(self, t):
        self.t = t
        t.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest())
        t.write((f"GET /ws HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def data_received(self, data):
        if not self.upgraded:
            self.hbuf += data
            end = self.hbuf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.hbuf[:end], self.hbuf[end + 4 :]
            if not head.startswith(b"HTTP/1.1 101") or self.accept not in head:
                self.o.errors.append(f"bad upgrade answer: {head[:60]!r}")
                self.t.close()
                return
            self.upgraded = True
            if not self.done.done():
                self.done.set_result(True)
            self.t.write(self.frame * self.window)
            if not data:
                return
        if len(self.first) < self.echo_len:
            self.first += data[: self.echo_len - len(self.first)]
            if len(self.first) == self.echo_len and self.first != self.expect:
                self.o.errors.append("echo differs from the message sent")
        before = self.rx // self.echo_len
        self.rx += len(data)
        got = self.rx // self.echo_len - before
        if got:
            self.o.count += got
            if self.o.running:
                self.t.write(self.frame * got)

    def connection_lost(self, exc):
        self.closed = True
        if not self.done.done():
            self.done.set_result(False)
        if self.o.running:
            self.o.lost += 1


class Load:
    def __init__(self):
        self.count = 0
        self.lost = 0
        self.errors = []
        self.running = True


async def run_load(a, tunnels, t_start):
    loop = asyncio.get_running_loop()
    payload = os.urandom(a.size)
    mkey = os.urandom(4)
    frame = frame_header(2, a.size, mkey) + xor_mask(payload, mkey)
    expect = frame_header(2, a.size) + payload
    o = Load()
    ts = []
    for _ in range(tunnels):
        _, p = await loop.create_connection(
            lambda: Tunnel(o, a.host, frame, len(expect), expect, a.window), "127.0.0.1", a.port)
        ts.append(p)
    ok = await asyncio.gather(*(p.done for p in ts))
    if not all(ok):
        o.errors.append(f"{ok.count(False)} tunnels failed to open")
    # Every client process measures the same wall-clock interval as the parent, which reads the
    # proxy's CPU time at its bounds.
    await asyncio.sleep(max(0.0, t_start - time.time()))
    c0, t0 = o.count, time.monotonic()
    rx0 = [p.rx for p in ts]
    await asyncio.sleep(max(0.0, t_start + a.duration - time.time()))
    c1, t1 = o.count, time.monotonic()
    # Tunnels that received nothing during the whole measured interval.
    stalled = sum(1 for p, r0 in zip(ts, rx0) if p.rx == r0 and not p.closed)
    o.running = False
    lost = o.lost
    for p in ts:
        p.t.close()
    await asyncio.sleep(0.05)
    return {"messages": c1 - c0, "seconds": t1 - t0, "lost": lost, "errors": o.errors,
            "tunnels": tunnels, "stalled": stalled}


def _load_proc(a, tunnels, wfd, t_start):
    res = asyncio.run(run_load(a, tunnels, t_start))
    os.write(wfd, (json.dumps(res) + "\n").encode())
    os._exit(0)


def _clients_cpu(pids):
    import bench
    return bench.cpu_seconds(pids)


def cmd_load(a):
    per = [a.tunnels // a.procs + (1 if i < a.tunnels % a.procs else 0) for i in range(a.procs)]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench  # /proc helpers
    proxy = bench.proc_tree(a.proxy_pid) if a.proxy_pid else []
    backend = bench.proc_tree(a.backend_pid) if a.backend_pid else []
    # Connections are opened during the first second, then the warm-up, then the measured interval.
    t_start = time.time() + 1.0 + a.warmup
    r, w = os.pipe()
    pids = []
    for n in per:
        if n == 0:
            continue
        pid = os.fork()
        if pid == 0:
            os.close(r)
            _load_proc(a, n, w, t_start)
        pids.append(pid)
    os.close(w)
    time.sleep(max(0.0, t_start - time.time()))
    p0, b0, w0 = bench.cpu_seconds(proxy), bench.cpu_seconds(backend), _clients_cpu(pids)
    time.sleep(max(0.0, t_start + a.duration - time.time()))
    p1, b1, w1 = bench.cpu_seconds(proxy), bench.cpu_seconds(backend), _clients_cpu(pids)
    data = b""
    with os.fdopen(r, "rb") as f:
        data = f.read()
    for p in pids:
        os.waitpid(p, 0)
    parts = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    if len(parts) != len(pids):
        raise SystemExit(f"ws load: {len(pids) - len(parts)} client process(es) failed")
    msgs = sum(p["messages"] for p in parts)
    secs = max(p["seconds"] for p in parts)
    errors = [e for p in parts for e in p["errors"]]
    out = {
        "messages": msgs,
        "seconds": round(secs, 3),
        "msgs_per_s": round(msgs / secs, 1),
        "mb_per_s": round(msgs * a.size / secs / 1e6, 2),
        "size": a.size,
        "tunnels": a.tunnels,
        "window": a.window,
        "tunnels_lost": sum(p["lost"] for p in parts),
        "tunnels_stalled": sum(p["stalled"] for p in parts),
        "errors": errors[:5],
        "error_count": len(errors),
        "proxy_cpu_s": round(p1 - p0, 3) if proxy else None,
        "backend_cpu_s": round(b1 - b0, 3) if backend else None,
        "client_cpu_s": round(w1 - w0, 3),
    }
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("echo-server")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--name", default="ws")
    p = sub.add_parser("load")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="ws.bench.test")
    p.add_argument("--tunnels", type=int, default=64)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--window", type=int, default=1)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--warmup", type=float, default=1)
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--proxy-pid", type=int, default=0, help="CPU time read over the interval")
    p.add_argument("--backend-pid", type=int, default=0)
    a = ap.parse_args()
    if a.cmd == "echo-server":
        cmd_echo_server(a)
    else:
        cmd_load(a)


if __name__ == "__main__":
    main()
