#!/usr/bin/env bash
# Memory soak: starts a private redis-server and hipache-tpc (release build) on loopback, runs mixed
# traffic through it for a while (keep-alive, new connections, 256 KiB uploads, WebSocket tunnels,
# route churn in Redis; see bench/soak.py), prints the proxy's RSS at intervals and a verdict on growth.
#
#   bench/soak.sh [DURATION_SECONDS [INTERVAL_SECONDS]]      (default 300 and 10)
#
# Environment: SOAK_WORKERS (proxy workers, default 2), SOAK_KEEP_ALIVE / SOAK_NEW / SOAK_UPLOADS /
# SOAK_WEBSOCKETS (client counts), SOAK_BIN (the binary to soak instead of a fresh release build), SOAK_TOLERANCE_PCT / SOAK_TOLERANCE_MB (allowed growth between the
# second quarter of the run and the last; default 5 % or 4 MB, whichever is larger), SOAK_KEEP=1 keeps the
# work folder (logs, config). Exit status 0 when RSS stayed flat and the proxy survived, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-300}
interval=${2:-10}
need() { command -v "$1" >/dev/null 2>&1 || { echo "soak: $1 is needed" >&2; exit 1; }; }
need redis-server
need python3

# SOAK_BIN soaks another build (e.g. an older commit's, to compare); by default the current tree's.
if [ -n "${SOAK_BIN:-}" ]; then
    bin=$SOAK_BIN
else
    cargo build --release --quiet
    bin=target/release/hipache-tpc
fi
work=$(mktemp -d /tmp/hipache-soak.XXXXXX)
# Three ports nothing listens on (asked from the kernel, then released).
read -r redis_port proxy_port backend_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${SOAK_KEEP:-0}" = 1 ]; then echo "soak: work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
    >"$work/redis.log" 2>&1 &
pids+=($!)
cat >"$work/config.json" <<JSON
{
    "server": {
        "accessLog": "$work/access.log",
        "workers": ${SOAK_WORKERS:-2},
        "lruCache": { "size": 1000, "ttl": 1 },
        "drainTimeout": 5
    },
    "http": { "port": $proxy_port, "bind": ["127.0.0.1"] },
    "driver": "redis://127.0.0.1:$redis_port",
    "user": "root"
}
JSON
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
RUST_LOG=warn "$bin" -c "$work/config.json" 2>"$work/proxy.log" &
proxy_pid=$!
pids+=("$proxy_pid")
for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break
    sleep 0.1
done
echo "soak: hipache-tpc pid $proxy_pid on 127.0.0.1:$proxy_port, redis on $redis_port, ${duration}s, sample every ${interval}s"
status=0
python3 bench/soak.py --proxy-port "$proxy_port" --proxy-pid "$proxy_pid" --redis-port "$redis_port" \
    --backend-port "$backend_port" --duration "$duration" --interval "$interval" \
    --keep-alive "${SOAK_KEEP_ALIVE:-8}" --new-connections "${SOAK_NEW:-4}" \
    --uploads "${SOAK_UPLOADS:-2}" --websockets "${SOAK_WEBSOCKETS:-16}" \
    --tolerance-pct "${SOAK_TOLERANCE_PCT:-5}" --tolerance-mb "${SOAK_TOLERANCE_MB:-4}" || status=$?
if ! kill -0 "$proxy_pid" 2>/dev/null; then
    echo "soak: the proxy died; its log:" >&2
    tail -20 "$work/proxy.log" >&2
    status=1
fi
echo "soak: access log lines: $(wc -l <"$work/access.log" 2>/dev/null || echo 0)"
exit $status
