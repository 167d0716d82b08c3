#!/usr/bin/env bash
# Quickstart: build hipache-tpc, make sure a Redis answers on 127.0.0.1:6379 (starting a private
# redis-server for this session when none does), start a demo backend on 127.0.0.1:8081, register it for
# `localhost` with redis-cli, and run `hipache-tpc -c config/config.json` in the foreground on port 8080.
#
#   scripts/quickstart.sh          then, in another terminal:  curl -i http://localhost:8080/
#
# Ctrl-C stops the proxy and whatever this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

if ! need redis-server || ! need redis-cli; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        echo "quickstart: installing redis-server (apt-get)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    else
        echo "quickstart: redis-server and redis-cli are needed: sudo apt-get install redis-server" >&2
        exit 1
    fi
fi
need python3 || { echo "quickstart: python3 is needed for the demo backend" >&2; exit 1; }

echo "quickstart: building (cargo build --release)"
cargo build --release --quiet

work=$(mktemp -d /tmp/hipache-tpc-quickstart.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "quickstart: using the Redis already running on 127.0.0.1:6379"
else
    echo "quickstart: starting a private redis-server on 127.0.0.1:6379 (data in $work)"
    redis-server --bind 127.0.0.1 --port 6379 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

mkdir -p "$work/www"
echo "Hello from the demo backend behind hipache-tpc" >"$work/www/index.html"
python3 -m http.server 8081 --bind 127.0.0.1 --directory "$work/www" >"$work/backend.log" 2>&1 &
pids+=($!)

# Hipache's schema: element 0 is an identifier, then backend URLs.
for host in localhost 127.0.0.1; do
    redis-cli -p 6379 del "frontend:$host" >/dev/null
    redis-cli -p 6379 rpush "frontend:$host" demo http://127.0.0.1:8081 >/dev/null
done
echo "quickstart: registered frontend:localhost -> http://127.0.0.1:8081"
echo "quickstart: try   curl -i http://localhost:8080/   (access log: config/access.log)"
./target/release/hipache-tpc -c config/config.json &
proxy=$!
pids+=($proxy)
wait "$proxy"
