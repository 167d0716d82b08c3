#!/usr/bin/env bash
# Quickstart, no Redis needed: build hipache-tpc, start a demo backend on 127.0.0.1:8081, and run
# `hipache-tpc -c config/quickstart.json` in the foreground on 127.0.0.1:8080. Routes come from
# config/routes.json (the file driver): `localhost` and `127.0.0.1` go to the demo backend. Edit that file
# while the proxy runs; changes apply within a second.
#
#   scripts/quickstart.sh          then, in another terminal:  curl -i http://localhost:8080/
#
# Ctrl-C stops the proxy and the demo backend.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }

need cargo || { echo "quickstart: a Rust toolchain is needed (https://rustup.rs)" >&2; exit 1; }
need python3 || { echo "quickstart: python3 is needed for the demo backend" >&2; exit 1; }

# Refuse ports that are taken: the demo would otherwise serve whatever else listens there.
port_taken() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
}
backend_port=8081   # config/routes.json sends localhost there
for port in "$backend_port" 8080; do
    if port_taken "$port"; then
        echo "quickstart: port $port on 127.0.0.1 is already taken by another program; stop it first (see: ss -ltnp 'sport = :$port')" >&2
        exit 1
    fi
done

echo "quickstart: building (cargo build --release)"
cargo build --release --quiet

work=$(mktemp -d /tmp/hipache-tpc-quickstart.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

mkdir -p "$work/www"
echo "Hello from the demo backend behind hipache-tpc" >"$work/www/index.html"
python3 -m http.server "$backend_port" --bind 127.0.0.1 --directory "$work/www" >"$work/backend.log" 2>&1 &
pids+=($!)
# Wait until the demo backend listens (and make sure it is the one that does).
for _ in $(seq 50); do
    port_taken "$backend_port" && break
    kill -0 "${pids[0]}" 2>/dev/null || { echo "quickstart: the demo backend did not start:" >&2; cat "$work/backend.log" >&2; exit 1; }
    sleep 0.1
done

./target/release/hipache-tpc -c config/quickstart.json --dry >/dev/null
echo "quickstart: routes from config/routes.json: localhost -> http://127.0.0.1:8081 (edit it live)"
echo "quickstart: try   curl -i http://localhost:8080/   (access log: config/access.log)"
./target/release/hipache-tpc -c config/quickstart.json &
proxy=$!
pids+=($proxy)
wait "$proxy"
