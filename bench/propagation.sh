#!/usr/bin/env bash
# Route-change propagation (issue 8): with 10,000 registered vhosts under wrk load and 100 route
# changes per second, the time from each Redis write to the first request routed accordingly;
# errors, resets, and keep-alive connections / WebSocket tunnels closed. See bench/README.md.
#
#   bench/propagation.sh                                    notifications on and off, paced and full load
#   bench/propagation.sh --duration 10 --modes notify --loads paced      quick check
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/propagation.sh [options]

  --duration S        seconds of route changes per run                  [DURATION=30]
  --rate N            route changes per second                          [RATE=100]
  --modes LIST        notify (server.routeNotifications true, the default) and/or
                      poll (routeNotifications false: only lruCache.ttl bounds staleness)
                                                                        [MODES=notify,poll]
  --loads LIST        wrk load during the run: paced (each connection pauses after each
                      response: the proxy is not saturated), full (closed loop, as the vhosts
                      scenario of run.sh: the proxy's core is saturated), none
                                                                        [LOADS=paced,full]
  --connections N     wrk connections of the full load                  [CONNECTIONS=64]
  --paced-connections N, --paced-delay-ms N                             [100, 5]
  --vhosts N          registered hosts, requested at random by wrk      [VHOSTS=10000]
  --probe-hosts N     of those, hosts whose routes change               [PROBE_HOSTS=200]
  --ws-hosts N        WebSocket hosts whose routes change (1 change in 10)   [WS_HOSTS=4]
  --ws-tunnels N      WebSocket tunnels kept open through the run       [WS_TUNNELS=8]
  --ka-conns N        keep-alive connections kept open (a request every ~100 ms)   [KA_CONNS=32]
  --probe-conns N     probe connections polling the changed hosts       [PROBE_CONNS=4]
  --lru-ttl S, --tracked-ttl S   server.lruCache ttl and trackedTtl     [LRU_TTL=1, TRACKED_TTL=60]
  --workers N         hipache-tpc workers (all on the proxy core)       [WORKERS=1]
  --proxy-cpu N       core of the proxy                                 [PROXY_CPU=0]
  --client-cpu N      core of wrk, the probes, backends and redis       [CLIENT_CPU=1]
  --out DIR           results folder       [OUT=bench/results/propagation-<date>-<time>]
  --no-build, --no-install
  -h, --help
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PROG=propagation.sh
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
PROP="$HERE/lib/prop.py"
WS="$HERE/lib/ws.py"

DURATION=${DURATION:-30}
RATE=${RATE:-100}
MODES=${MODES:-notify,poll}
LOADS=${LOADS:-paced,full}
CONNECTIONS=${CONNECTIONS:-64}
PACED_CONNECTIONS=${PACED_CONNECTIONS:-100}
PACED_DELAY_MS=${PACED_DELAY_MS:-5}
VHOSTS=${VHOSTS:-10000}
PROBE_HOSTS=${PROBE_HOSTS:-200}
WS_HOSTS=${WS_HOSTS:-4}
WS_TUNNELS=${WS_TUNNELS:-8}
KA_CONNS=${KA_CONNS:-32}
PROBE_CONNS=${PROBE_CONNS:-4}
LRU_TTL=${LRU_TTL:-1}
TRACKED_TTL=${TRACKED_TTL:-60}
WORKERS=${WORKERS:-1}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-}
BUILD=${BUILD:-1}
INSTALL=${INSTALL:-1}
HIPACHE_BIN=${HIPACHE_BIN:-}

while [ $# -gt 0 ]; do
    opt=$1
    case "$opt" in
        -h|--help) usage; exit 0 ;;
        --no-build) BUILD=0; shift; continue ;;
        --no-install) INSTALL=0; shift; continue ;;
        --duration|--rate|--modes|--loads|--connections|--paced-connections|--paced-delay-ms|--vhosts|\
        --probe-hosts|--ws-hosts|--ws-tunnels|--ka-conns|--probe-conns|--lru-ttl|--tracked-ttl|--workers|\
        --proxy-cpu|--client-cpu|--out) ;;
        *) echo "propagation.sh: unknown option $opt (see --help)" >&2; exit 2 ;;
    esac
    [ $# -ge 2 ] || { echo "propagation.sh: $opt needs a value (see --help)" >&2; exit 2; }
    val=$2
    case "$opt" in
        --duration) DURATION=$val ;;
        --rate) RATE=$val ;;
        --modes) MODES=$val ;;
        --loads) LOADS=$val ;;
        --connections) CONNECTIONS=$val ;;
        --paced-connections) PACED_CONNECTIONS=$val ;;
        --paced-delay-ms) PACED_DELAY_MS=$val ;;
        --vhosts) VHOSTS=$val ;;
        --probe-hosts) PROBE_HOSTS=$val ;;
        --ws-hosts) WS_HOSTS=$val ;;
        --ws-tunnels) WS_TUNNELS=$val ;;
        --ka-conns) KA_CONNS=$val ;;
        --probe-conns) PROBE_CONNS=$val ;;
        --lru-ttl) LRU_TTL=$val ;;
        --tracked-ttl) TRACKED_TTL=$val ;;
        --workers) WORKERS=$val ;;
        --proxy-cpu) PROXY_CPU=$val ;;
        --client-cpu) CLIENT_CPU=$val ;;
        --out) OUT=$val ;;
    esac
    shift 2
done

for n in DURATION RATE CONNECTIONS PACED_CONNECTIONS PACED_DELAY_MS VHOSTS PROBE_HOSTS WS_HOSTS \
         WS_TUNNELS KA_CONNS PROBE_CONNS WORKERS PROXY_CPU CLIENT_CPU; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number, got '${!n}'"
done
for n in LRU_TTL TRACKED_TTL; do
    [[ ${!n} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$n must be a number, got '${!n}'"
done
[ "$DURATION" -ge 1 ] && [ "$RATE" -ge 1 ] && [ "$PROBE_HOSTS" -ge 1 ] && [ "$PROBE_CONNS" -ge 1 ] &&
    [ "$WORKERS" -ge 1 ] || die "duration, rate, probe-hosts, probe-conns and workers must be at least 1"
[ "$PROBE_HOSTS" -le "$VHOSTS" ] || die "--probe-hosts ($PROBE_HOSTS) must not exceed --vhosts ($VHOSTS)"
[ "$WS_TUNNELS" = 0 ] || [ "$WS_HOSTS" -ge 1 ] || die "WebSocket tunnels need --ws-hosts >= 1"
for m in ${MODES//,/ }; do in_list "$m" "notify,poll" || die "unknown mode '$m' (notify, poll)"; done
for l in ${LOADS//,/ }; do in_list "$l" "paced,full,none" || die "unknown load '$l' (paced, full, none)"; done
ncpu=$(nproc --all 2>/dev/null || getconf _NPROCESSORS_ONLN)
[ "$PROXY_CPU" -lt "$ncpu" ] && [ "$CLIENT_CPU" -lt "$ncpu" ] || die "cores $PROXY_CPU and $CLIENT_CPU do not both exist (this machine has $ncpu)"
[ "$PROXY_CPU" != "$CLIENT_CPU" ] || die "the proxy core and the client core must differ"

ensure_tools "$INSTALL" nginx wrk redis-server redis-cli curl taskset python3
build_hipache "$BUILD"
redis_major=$(redis-server --version | sed -n 's/.*v=\([0-9]*\).*/\1/p')
[ "${redis_major:-0}" -ge 6 ] || say "WARNING: redis-server $redis_major has no client tracking: route notifications cannot work"

[ -n "$OUT" ] || OUT="$HERE/results/propagation-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/logs" "$OUT/conf"
OUT=$(cd "$OUT" && pwd)
RUNS="$OUT/runs.jsonl"
: >"$RUNS"
raise_nofile $((2 * (CONNECTIONS + PACED_CONNECTIONS + KA_CONNS + WS_TUNNELS) + 1000))

read -r P_REDIS P_BACK_A P_BACK_B P_B1 P_B2 P_B3 P_WS1 P_WS2 P_PROXY P_ADMIN < <(python3 "$PY" freeports 10)
python3 "$PY" machine >"$OUT/machine.json"
load=$(cut -d' ' -f1-3 /proc/loadavg)
say "results in $OUT (load average now: $load)"
awk -v l="${load%% *}" 'BEGIN { exit !(l > 0.5) }' &&
    say "WARNING: the machine is busy (load $load); figures will be noisy. Re-run on a quiet machine."

# ---------------------------------------------------------------------------------------------
# Backends (client core): the static backend of the vhosts; three backends that say who they are
# (b1, b2, b3); two WebSocket echo servers (ws1, ws2).
start_redis "$CLIENT_CPU" "$P_REDIS" "$OUT"
start_backend "$CLIENT_CPU" "$P_BACK_A" "$P_BACK_B" "$OUT"
mkdir -p "$OUT/idback"
user=""
[ "$(id -u)" = 0 ] && user="user root;"
{
    echo "# Three backends that name themselves in the body and in X-Backend."
    echo "$user"
    echo "worker_processes 1; daemon off; master_process on; pid $OUT/idback/nginx.pid;"
    echo "error_log $OUT/logs/idback-error.log warn; worker_rlimit_nofile $NOFILE;"
    echo "events { worker_connections $MAXCONN; }"
    echo "http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;"
    for b in 1 2 3; do
        p=$(eval echo "\$P_B$b")
        echo "  server { listen 127.0.0.1:$p backlog=4096; location / { add_header X-Backend b$b; return 200 \"b$b\\n\"; } }"
    done
    echo "}"
} >"$OUT/idback/nginx.conf"
for p in "$P_B1" "$P_B2" "$P_B3"; do assert_port_free "$p"; done
nginx -t -q -p "$OUT/idback/" -e "$OUT/logs/idback-error.log" -c "$OUT/idback/nginx.conf" ||
    die "nginx rejects $OUT/idback/nginx.conf"
start_proc idback "$CLIENT_CPU" "$OUT/logs/idback-stderr.log" \
    nginx -p "$OUT/idback/" -e "$OUT/logs/idback-error.log" -c "$OUT/idback/nginx.conf"
for p in "$P_B1" "$P_B2" "$P_B3"; do wait_http idback "$OUT/logs/idback-stderr.log" "http://127.0.0.1:$p/"; done
for w in 1 2; do
    p=$(eval echo "\$P_WS$w")
    assert_port_free "$p"
    start_proc "ws$w" "$CLIENT_CPU" "$OUT/logs/ws$w.log" python3 "$WS" echo-server --port "$p" --name "ws$w"
    wait_http "ws$w" "$OUT/logs/ws$w.log" "http://127.0.0.1:$p/"
done

say "registering $VHOSTS vhosts ($PROBE_HOSTS of them change) and $WS_HOSTS WebSocket hosts"
python3 "$PY" redis-setup --port "$P_REDIS" --backend "http://127.0.0.1:$P_BACK_A" --host 127.0.0.1 \
    --vhosts "$VHOSTS"
ROUTE_ARGS=(--redis-port "$P_REDIS" --probe-hosts "$PROBE_HOSTS" --ws-hosts "$WS_HOSTS"
            --b1 "http://127.0.0.1:$P_B1" --b2 "http://127.0.0.1:$P_B2" --b3 "http://127.0.0.1:$P_B3"
            --ws1 "http://127.0.0.1:$P_WS1" --ws2 "http://127.0.0.1:$P_WS2")
python3 "$PROP" setup "${ROUTE_ARGS[@]}"

# ---------------------------------------------------------------------------------------------
write_conf() {           # write_conf FILE NOTIFICATIONS(true|false)
    cat >"$1" <<EOF
{
    "server": {
        "workers": $WORKERS,
        "accessLog": false,
        "maxSockets": 1024,
        "tcpTimeout": 300,
        "debug": true,
        "routeNotifications": $2,
        "lruCache": { "size": 10000, "ttl": $LRU_TTL, "trackedTtl": $TRACKED_TTL }
    },
    "http": { "port": $P_PROXY, "bind": ["127.0.0.1"] },
    "admin": { "address": "127.0.0.1", "port": $P_ADMIN },
    "driver": "redis://127.0.0.1:$P_REDIS"
}
EOF
    "$HIPACHE_BIN" --dry -c "$1" >"$1.dry" 2>&1 || die "hipache-tpc rejects $1: $(cat "$1.dry")"
}

wrk_args() {             # wrk_args LOAD SECONDS
    local url="http://127.0.0.1:$P_PROXY/30"
    case "$1" in
        full) printf '%s\n' -t1 -c "$CONNECTIONS" -d "${2}s" --timeout 5s --latency \
                  -s "$HERE/lua/random_host.lua" "$url" -- "$VHOSTS" "v%d.vhost.test" /30 ;;
        paced) printf '%s\n' -t1 -c "$PACED_CONNECTIONS" -d "${2}s" --timeout 5s --latency \
                   -s "$HERE/lua/random_host_paced.lua" "$url" -- "$VHOSTS" "v%d.vhost.test" /30 \
                   "$PACED_DELAY_MS" ;;
        none) ;;
    esac
}

say "$RATE route changes/s for ${DURATION}s per run; modes: $MODES; loads: $LOADS"
for mode in ${MODES//,/ }; do
    notif=true
    [ "$mode" = poll ] && notif=false
    for ld in ${LOADS//,/ }; do
        conf="$OUT/conf/hipache-tpc-$mode.json"
        write_conf "$conf" "$notif"
        log="$OUT/logs/hipache-tpc-$mode-$ld.log"
        assert_port_free "$P_PROXY"
        assert_port_free "$P_ADMIN"
        start_proc hipache-tpc "$PROXY_CPU" "$log" env RUST_LOG=warn "$HIPACHE_BIN" -c "$conf"
        wait_http hipache-tpc "$log" "http://127.0.0.1:$P_PROXY/30" 127.0.0.1
        wait_http hipache-tpc "$log" "http://127.0.0.1:$P_ADMIN/metrics"
        if [ "$notif" = true ]; then
            # Notifications are on once every worker reports them up.
            for _ in $(seq 50); do
                up=$(curl -s "http://127.0.0.1:$P_ADMIN/metrics" | awk '$1 == "hipache_route_notifications_up" { print $2 }')
                [ "${up:-0}" = "$WORKERS" ] && break
                sleep 0.1
            done
            [ "${up:-0}" = "$WORKERS" ] || say "WARNING: hipache_route_notifications_up is '${up:-}' (want $WORKERS)"
        fi
        # A warm-up pass over the vhosts fills the route cache.
        [ "$ld" = none ] || taskset -c "$CLIENT_CPU" wrk -t1 -c 64 -d 2s -s "$HERE/lua/random_host.lua" \
            "http://127.0.0.1:$P_PROXY/30" -- "$VHOSTS" "v%d.vhost.test" /30 >/dev/null 2>&1 ||
            die "wrk warm-up failed"
        mapfile -t wargs < <(wrk_args "$ld" $((DURATION + 2)))
        say "run: notifications $notif, load $ld"
        taskset -c "$CLIENT_CPU" python3 "$PROP" run "${ROUTE_ARGS[@]}" --proxy-port "$P_PROXY" \
            --admin-port "$P_ADMIN" --rate "$RATE" --duration "$DURATION" --probe-conns "$PROBE_CONNS" \
            --ka-conns "$KA_CONNS" --ws-tunnels "$WS_TUNNELS" --client-cpu "$CLIENT_CPU" \
            --label "$mode/$ld" -- "${wargs[@]}" >"$OUT/run-$mode-$ld.json" ||
            die "the propagation run failed ($mode/$ld)"
        check_alive hipache-tpc "$log"
        python3 - "$OUT/run-$mode-$ld.json" "$mode" "$ld" "$notif" "$RUNS" "$log" <<'EOF'
import json, re, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
r.update({"mode": sys.argv[2], "load": sys.argv[3], "routeNotifications": sys.argv[4] == "true"})
r["proxy_log_problems"] = sum(1 for l in open(sys.argv[6], errors="replace")
                              if re.search(r"warn|error|panic", l, re.I))
open(sys.argv[5], "a").write(json.dumps(r) + "\n")
w = r.get("wrk") or {}
print(f"  {r['label']:12} changes {r['changes']} ({r['rate']}/s), seen {r['seen']}, not seen {r['not_seen']}; "
      f"propagation p50 {r['prop_p50_ms']} p99 {r['prop_p99_ms']} max {r['prop_max_ms']} ms "
      f"(probe RTT p50 {r['probe_rtt_p50_ms']} ms); wrk {w.get('rps', 0):.0f} req/s errors {w.get('errors')}; "
      f"probe errors {r['probe_errors']}, stale {r['stale_after_seen']}, keep-alive closed {r['keepalive_closed']}, "
      f"ws closed {r['ws_closed']}", file=sys.stderr)
EOF
        stop_proc hipache-tpc
        # Back to the initial routes for the next run.
        python3 "$PROP" setup "${ROUTE_ARGS[@]}"
    done
done

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "## hipache-tpc route-change propagation, $(date '+%Y-%m-%d %H:%M %Z')"
    echo
    python3 - "$OUT/machine.json" "$load_end" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{m['cpu']}, {m['cpus']} cores ({m.get('virtualization', '?')}), {m['os']}, kernel {m['kernel']}; "
      f"redis {m['redis'].split()[2]}; {m['wrk'].split(' Copyright')[0]}; hipache-tpc {m['hipache_tpc_commit']}. "
      f"Load average at start {m['loadavg_at_start']}, at end {sys.argv[2]}.")
EOF
    echo
    echo "hipache-tpc: $WORKERS worker(s) on core $PROXY_CPU, lruCache ttl $LRU_TTL s, trackedTtl $TRACKED_TTL s."
    echo "Core $CLIENT_CPU: wrk, redis, backends, the probe/writer. $VHOSTS vhosts, $PROBE_HOSTS + $WS_HOSTS"
    echo "of them changing, $RATE changes/s for ${DURATION} s per run; $KA_CONNS keep-alive connections and"
    echo "$WS_TUNNELS WebSocket tunnels open throughout."
    echo
    python3 "$PROP" summarize "$RUNS"
} >"$OUT/summary.md"
[ "$(dirname "$OUT")" = "$HERE/results" ] && ln -sfn "$(basename "$OUT")" "$HERE/results/latest-propagation"
cat "$OUT/summary.md"
say "raw rows: $RUNS; summary: $OUT/summary.md"
