#!/usr/bin/env bash
# hipache-tpc benchmark runner: hipache-tpc vs nginx vs HAProxy, one worker each, pinned to the same
# core, wrk on the other core. See bench/README.md.
#
#   bench/run.sh                         full run (about 35 minutes with the defaults)
#   bench/run.sh --duration 3 --rounds 1 --passes nolog --scenarios small,close    quick check
#
# Every option can also be given as an environment variable (in brackets; flags win).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/run.sh [options]

  --duration S        seconds per measured run                          [DURATION=10]
  --warmup S          unmeasured wrk run before each measured run       [WARMUP=1]
  --rounds N          interleaved rounds (median over rounds)           [ROUNDS=3]
  --connections N     wrk connections                                   [CONNECTIONS=64]
  --scenarios LIST    comma list of: small,paced,16k,1m,up1m,close,vhosts,churn,unix,small-rr,small-sticky
                      (small-rr: small with frontend option balance=roundrobin over two backends;
                      small-sticky: sticky=cookie, the client sending its cookie)
                                                                        [SCENARIOS=all of them]
  --log-scenarios L   scenarios of the access-log pass                  [LOG_SCENARIOS=same]
  --targets LIST      comma list of: direct,floor,hipache-tpc,nginx,haproxy, and optionally
                      hipache-epoll (same binary, HIPACHE_TPC_IO=epoll) and hipache-alt
                      (another build, for A/B comparisons: HIPACHE_ALT_BIN=path)
                      (floor: the minimal relay of examples/floor_relay.rs, the cost floor
                      of any proxy: see bench/README.md)
                                                                        [TARGETS=direct,floor,hipache-tpc,nginx,haproxy]
  --passes LIST       nolog,log (access logs off / on in all proxies)   [PASSES=nolog,log]
  --no-log-pass       same as --passes nolog
  --idle-conns N      idle keep-alive connections for the RSS test, 0 = skip   [IDLE_CONNS=5000]
  --vhosts N          registered hosts of the vhosts scenario           [VHOSTS=10000]
  --churn-rate N      route changes per second of the churn scenario    [CHURN_RATE=100]
  --churn-hosts N     hosts requested (and rewritten) in the churn scenario    [CHURN_HOSTS=100]
  --paced-connections N, --paced-delay-ms N
                      paced scenario: each connection waits DELAY ms after every response,
                      about N*1000/DELAY req/s offered        [PACED_CONNECTIONS=100, PACED_DELAY_MS=5]
  --lru-size N, --lru-ttl S   hipache-tpc's server.lruCache     [LRU_SIZE=10000, LRU_TTL=1]
  --proxy-cpus LIST   cores of the proxies (taskset list: 0 or 0-3 or 0,2)  [PROXY_CPU=0]
  --client-cpus LIST  cores of wrk, the backend, redis and helpers      [CLIENT_CPU=1]
                      (--proxy-cpu and --client-cpu are the same options; the lists must not overlap)
  --workers N         workers of every proxy (hipache-tpc workers, nginx worker_processes,
                      HAProxy nbthread, floor relay threads); at most the proxy cores
                                                                        [WORKERS=1]
  --wrk-threads N     wrk threads (-t); at most the client cores          [WRK_THREADS=1]
  --restart WHEN      scenario: fresh proxies for every scenario; pass: once per pass
                                                                        [RESTART=scenario]
  --out DIR           results folder       [OUT=bench/results/<date>-<time>]
  --no-build          do not run cargo build --release (use HIPACHE_BIN or target/release)
  --no-install        never apt-get install; fail when a tool is missing
  -h, --help
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PROG=run.sh
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
ALL_SCENARIOS="small,paced,16k,1m,up1m,close,vhosts,churn,unix,small-rr,small-sticky"
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}
LOG_SCENARIOS=${LOG_SCENARIOS:-}
TARGETS=${TARGETS:-direct,floor,hipache-tpc,nginx,haproxy}
PASSES=${PASSES:-nolog,log}
IDLE_CONNS=${IDLE_CONNS:-5000}
VHOSTS=${VHOSTS:-10000}
CHURN_RATE=${CHURN_RATE:-100}
CHURN_HOSTS=${CHURN_HOSTS:-100}
PACED_CONNECTIONS=${PACED_CONNECTIONS:-100}
PACED_DELAY_MS=${PACED_DELAY_MS:-5}
LRU_SIZE=${LRU_SIZE:-10000}
LRU_TTL=${LRU_TTL:-1}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
WORKERS=${WORKERS:-1}
WRK_THREADS=${WRK_THREADS:-1}
RESTART=${RESTART:-scenario}
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
        --no-log-pass) PASSES=nolog; shift; continue ;;
    esac
    case "$opt" in
        --duration|--warmup|--rounds|--connections|--scenarios|--log-scenarios|--targets|--passes|\
        --idle-conns|--vhosts|--churn-rate|--churn-hosts|--paced-connections|--paced-delay-ms|\
        --lru-size|--lru-ttl|--proxy-cpu|--client-cpu|--proxy-cpus|--client-cpus|--workers|\
        --wrk-threads|--out|--restart) ;;
        *) echo "run.sh: unknown option $opt (see --help)" >&2; exit 2 ;;
    esac
    [ $# -ge 2 ] || { echo "run.sh: $opt needs a value (see --help)" >&2; exit 2; }
    val=$2
    case "$opt" in
        --duration) DURATION=$val ;;
        --warmup) WARMUP=$val ;;
        --rounds) ROUNDS=$val ;;
        --connections) CONNECTIONS=$val ;;
        --scenarios) SCENARIOS=$val ;;
        --log-scenarios) LOG_SCENARIOS=$val ;;
        --targets) TARGETS=$val ;;
        --passes) PASSES=$val ;;
        --idle-conns) IDLE_CONNS=$val ;;
        --vhosts) VHOSTS=$val ;;
        --churn-rate) CHURN_RATE=$val ;;
        --churn-hosts) CHURN_HOSTS=$val ;;
        --paced-connections) PACED_CONNECTIONS=$val ;;
        --paced-delay-ms) PACED_DELAY_MS=$val ;;
        --lru-size) LRU_SIZE=$val ;;
        --lru-ttl) LRU_TTL=$val ;;
        --proxy-cpu|--proxy-cpus) PROXY_CPU=$val ;;
        --client-cpu|--client-cpus) CLIENT_CPU=$val ;;
        --workers) WORKERS=$val ;;
        --wrk-threads) WRK_THREADS=$val ;;
        --out) OUT=$val ;;
        --restart) RESTART=$val ;;
        *) echo "run.sh: unknown option $opt (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
LOG_SCENARIOS=${LOG_SCENARIOS:-$SCENARIOS}

# ---------------------------------------------------------------------------------------------
# Validate the parameters.
for n in DURATION WARMUP ROUNDS CONNECTIONS IDLE_CONNS VHOSTS CHURN_RATE CHURN_HOSTS \
         PACED_CONNECTIONS PACED_DELAY_MS LRU_SIZE WORKERS WRK_THREADS; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number, got '${!n}'"
done
[[ $LRU_TTL =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "LRU_TTL must be a number, got '$LRU_TTL'"
[ "$DURATION" -ge 1 ] && [ "$ROUNDS" -ge 1 ] && [ "$CONNECTIONS" -ge 1 ] || die "duration, rounds and connections must be at least 1"
[ "$CHURN_HOSTS" -ge 1 ] && [ "$VHOSTS" -ge 1 ] || die "vhosts and churn-hosts must be at least 1"
for s in ${SCENARIOS//,/ } ${LOG_SCENARIOS//,/ }; do
    in_list "$s" "$ALL_SCENARIOS" || die "unknown scenario '$s' (known: $ALL_SCENARIOS)"
done
for t in ${TARGETS//,/ }; do
    in_list "$t" "direct,floor,hipache-tpc,hipache-epoll,hipache-alt,nginx,haproxy" || die "unknown target '$t'"
done
in_list "$RESTART" "scenario,pass" || die "--restart must be scenario or pass"
for p in ${PASSES//,/ }; do
    in_list "$p" "nolog,log" || die "unknown pass '$p' (nolog, log)"
done
ncpu=$(nproc --all 2>/dev/null || getconf _NPROCESSORS_ONLN)
check_cpu_lists "$PROXY_CPU" "$CLIENT_CPU" "$WORKERS" "$WRK_THREADS"

# ---------------------------------------------------------------------------------------------
# Tools (installed with apt-get when missing and run as root), build, results folder.
need=(nginx wrk redis-server redis-cli curl taskset python3)
in_list haproxy "$TARGETS" && need+=(haproxy)
ensure_tools "$INSTALL" "${need[@]}"
if in_list hipache-tpc "$TARGETS" || in_list hipache-epoll "$TARGETS"; then
    build_hipache "$BUILD"
fi
in_list floor "$TARGETS" && build_floor "$BUILD"
if in_list hipache-alt "$TARGETS"; then
    [ -n "${HIPACHE_ALT_BIN:-}" ] && [ -x "$HIPACHE_ALT_BIN" ] ||
        die "target hipache-alt needs HIPACHE_ALT_BIN=<path to another hipache-tpc binary>"
    [ -n "${HIPACHE_BIN:-}" ] || HIPACHE_BIN=$HIPACHE_ALT_BIN   # for configuration checks
fi

[ -n "$OUT" ] || OUT="$HERE/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RUNS="$OUT/runs.jsonl"
: >"$RUNS"
mkdir -p "$OUT/logs" "$OUT/conf"

# File descriptors: 5,000 idle connections and HAProxy's maxconn need more than the usual 1024.
raise_nofile $((IDLE_CONNS + 2 * CONNECTIONS + 1000))

read -r P_REDIS P_BACK_A P_BACK_B P_HIPACHE P_HIPACHE_EPOLL P_HIPACHE_ALT P_NGINX P_HAPROXY P_FLOOR < <(python3 "$PY" freeports 9)

python3 "$PY" machine >"$OUT/machine.json"
load=$(cut -d' ' -f1-3 /proc/loadavg)
say "results in $OUT (load average now: $load)"
awk -v l="${load%% *}" 'BEGIN { exit !(l > 0.5) }' &&
    say "WARNING: the machine is busy (load $load); figures will be noisy. Re-run on a quiet machine."

# ---------------------------------------------------------------------------------------------
# Redis and the backend (both on the client core).
start_redis "$CLIENT_CPU" "$P_REDIS" "$OUT"
start_backend "$CLIENT_CPU" "$P_BACK_A" "$P_BACK_B" "$OUT"
BACKEND_A="http://127.0.0.1:$P_BACK_A"
BACKEND_B="http://127.0.0.1:$P_BACK_B"
# The unix scenario: the same backend on a unix socket, behind Host unix.bench.test.
BENCH_UNIX_SOCK="$OUT/backend/http.sock"
export BENCH_UNIX_SOCK

say "registering frontends in Redis: 127.0.0.1, $VHOSTS vhosts, $CHURN_HOSTS churn hosts"
python3 "$PY" redis-setup --port "$P_REDIS" --backend "$BACKEND_A" --host 127.0.0.1 \
    --vhosts "$VHOSTS" --churn-hosts "$CHURN_HOSTS"
redis-cli -p "$P_REDIS" del frontend:unix.bench.test >/dev/null
redis-cli -p "$P_REDIS" rpush frontend:unix.bench.test unix "unix:$BENCH_UNIX_SOCK" >/dev/null
# Per-frontend options (README "Per-frontend options"): two frontends over both backends, set before
# any run. Other targets route every Host to backend A, so for them these are the small scenario.
redis_opts() { redis-cli -p "$P_REDIS" "$@" >/dev/null; }
for h in rr.opts.test sticky.opts.test; do
    redis_opts del "frontend:$h"
    redis_opts rpush "frontend:$h" "$h" "$BACKEND_A" "$BACKEND_B"
done
redis_opts hset frontend-options:rr.opts.test balance roundrobin
redis_opts hset frontend-options:sticky.opts.test sticky cookie
# The cookie of backend A: the first 12 hex digits of FNV-1a 64 of its URL.
STICKY_A=$(python3 -c 'import sys
h = 0xcbf29ce484222325
for b in sys.argv[1].encode(): h = ((h ^ b) * 0x100000001b3) % (1 << 64)
print(f"{h:016x}"[:12])' "$BACKEND_A")

# ---------------------------------------------------------------------------------------------
# Proxies (each on the proxy core, one worker).
declare -A PORT=([direct]=$P_BACK_A [hipache-tpc]=$P_HIPACHE [hipache-epoll]=$P_HIPACHE_EPOLL
                 [hipache-alt]=$P_HIPACHE_ALT
                 [nginx]=$P_NGINX [haproxy]=$P_HAPROXY [floor]=$P_FLOOR)
declare -A PLOG=()   # target -> the proxy's own log (errors/warnings)
declare -A ALOG=()   # target -> access log (log pass)

write_haproxy_conf() {   # write_haproxy_conf PASS
    local pass=$1 glog="" dlog="no log"
    if [ "$pass" = log ]; then
        # HAProxy cannot write a file itself: it logs to stdout, which is redirected to the file.
        glog="log stdout format raw local0"
        dlog="log global
    option httplog"
    fi
    cat >"$OUT/conf/haproxy-$pass.cfg" <<EOF
# Proxy: HAProxy with one thread, backend connection reuse, the same forwarded headers as hipache-tpc.
global
    nbthread $WORKERS
    maxconn $MAXCONN
    $glog
defaults
    mode http
    $dlog
    option http-keep-alive
    http-reuse always
    option forwardfor
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    timeout http-request 10s
frontend fe
    # Catch-all: every Host goes to the one backend.
    bind 127.0.0.1:$P_HAPROXY
    maxconn $MAXCONN
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Protocol http
    http-request set-header X-Forwarded-Port %[dst_port]
    # The unix scenario: Host unix.bench.test goes to the backend's unix socket.
    use_backend be_unix if { hdr(host) -i unix.bench.test }
    default_backend be
backend be
    server s1 127.0.0.1:$P_BACK_A
backend be_unix
    server s1 $BENCH_UNIX_SOCK
EOF
}

start_proxies() {        # start_proxies PASS
    local pass=$1 t log alog
    for t in ${TARGETS//,/ }; do
        [ "$t" = direct ] && continue
        assert_port_free "${PORT[$t]}"
        ALOG[$t]=""
        [ "$pass" = log ] && ALOG[$t]="$OUT/logs/access-$t.log"
        case "$t" in
            hipache-tpc|hipache-epoll|hipache-alt)
                write_hipache_conf "$OUT/conf/$t-$pass.json" "${PORT[$t]}" "$P_REDIS" \
                    "${ALOG[$t]:-false}" "$LRU_SIZE" "$LRU_TTL"
                log="$OUT/logs/$t-$pass.log"
                PLOG[$t]=$log
                if [ "$t" = hipache-epoll ]; then
                    start_proc "$t" "$PROXY_CPU" "$log" env HIPACHE_TPC_IO=epoll RUST_LOG=warn \
                        "$HIPACHE_BIN" -c "$OUT/conf/$t-$pass.json"
                elif [ "$t" = hipache-alt ]; then
                    start_proc "$t" "$PROXY_CPU" "$log" env RUST_LOG=warn \
                        "$HIPACHE_ALT_BIN" -c "$OUT/conf/$t-$pass.json"
                else
                    start_proc "$t" "$PROXY_CPU" "$log" env RUST_LOG=warn \
                        "$HIPACHE_BIN" -c "$OUT/conf/$t-$pass.json"
                fi
                ;;
            floor)
                # No routing, no log: the same socket operations as a proxy and nothing else.
                log="$OUT/logs/floor.log"
                PLOG[$t]=$log
                start_proc floor "$PROXY_CPU" "$log" "$FLOOR_BIN" "127.0.0.1:$P_FLOOR" "127.0.0.1:$P_BACK_A" "$WORKERS"
                ;;
            nginx)
                log="$OUT/logs/nginx-error.log"
                PLOG[$t]=$log
                alog=off
                [ "$pass" = log ] && alog="${ALOG[$t]}"
                write_nginx_proxy_conf "$OUT/nginx-proxy" "$P_NGINX" "$P_BACK_A" "$alog" "$log" \
                    "master_process on;"
                start_proc nginx "$PROXY_CPU" "$OUT/logs/nginx-stderr.log" \
                    nginx -p "$OUT/nginx-proxy/" -e "$log" -c "$OUT/nginx-proxy/nginx.conf"
                ;;
            haproxy)
                write_haproxy_conf "$pass"
                log="$OUT/logs/haproxy-$pass.log"
                PLOG[$t]=$log
                haproxy -c -q -f "$OUT/conf/haproxy-$pass.cfg" >>"$log" 2>&1 ||
                    die "haproxy rejects $OUT/conf/haproxy-$pass.cfg; see $log"
                # -db: foreground, one process. stdout (the access log when on) goes to a file
                # on local disk; stderr (HAProxy's own messages) to another.
                if [ "$pass" = log ]; then
                    taskset -c "$PROXY_CPU" haproxy -db -f "$OUT/conf/haproxy-$pass.cfg" \
                        >>"${ALOG[$t]}" 2>>"$log" &
                else
                    taskset -c "$PROXY_CPU" haproxy -db -f "$OUT/conf/haproxy-$pass.cfg" \
                        >/dev/null 2>>"$log" &
                fi
                PID[haproxy]=$!
                ;;
        esac
        wait_http "$t" "${PLOG[$t]}" "http://127.0.0.1:${PORT[$t]}/30"
        wait_http "$t" "${PLOG[$t]}" "http://127.0.0.1:${PORT[$t]}/30" "v0.vhost.test"
        wait_http "$t" "${PLOG[$t]}" "http://127.0.0.1:${PORT[$t]}/30" "c0.churn.test"
        say "$t ($pass) listening on 127.0.0.1:${PORT[$t]}, pid ${PID[$t]}"
    done
}

stop_proxies() {
    local t
    for t in ${TARGETS//,/ }; do [ "$t" = direct ] || stop_proc "$t"; done
}

# ---------------------------------------------------------------------------------------------
# Scenarios.
wrk_args() {             # wrk_args SCENARIO TARGET DURATION: prints one argument per line
    local s=$1 t=$2 d=$3 url="http://127.0.0.1:${PORT[$2]}"
    local c=$CONNECTIONS
    [ "$s" = paced ] && c=$PACED_CONNECTIONS
    printf '%s\n' "-t$WRK_THREADS" -c "$c" -d "${d}s" --timeout 5s --latency
    case "$s" in
        small) printf '%s\n' "$url/30" ;;
        small-rr) printf '%s\n' -H "Host: rr.opts.test" "$url/30" ;;
        small-sticky) printf '%s\n' -H "Host: sticky.opts.test" -H "Cookie: hipache_tpc_backend=$STICKY_A" "$url/30" ;;
        paced) printf '%s\n' -s "$HERE/lua/paced.lua" "$url/30" -- "$PACED_DELAY_MS" ;;
        16k) printf '%s\n' "$url/16k" ;;
        1m) printf '%s\n' "$url/1m" ;;
        # 1 MiB uploads (POST), answered with 30 bytes once the backend has read the whole body.
        up1m) printf '%s\n' -s "$HERE/lua/upload.lua" "$url/upload" -- 1048576 ;;
        close) printf '%s\n' -H "Connection: close" "$url/30" ;;
        vhosts) printf '%s\n' -s "$HERE/lua/random_host.lua" "$url/30" -- "$VHOSTS" "v%d.vhost.test" /30 ;;
        churn) printf '%s\n' -s "$HERE/lua/random_host.lua" "$url/30" -- "$CHURN_HOSTS" "c%d.churn.test" /30 ;;
        # Same requests as small, to a backend on a unix socket (direct and floor still use TCP).
        unix) printf '%s\n' -H "Host: unix.bench.test" "$url/30" ;;
    esac
}

run_pass() {             # run_pass PASS SCENARIOS
    local pass=$1 scenarios=$2 s r i t n
    local -a targets=(${TARGETS//,/ }) order args
    n=${#targets[@]}
    say "=== pass '$pass': access logs $([ "$pass" = log ] && echo on || echo off) in all proxies"
    [ "$RESTART" = pass ] && start_proxies "$pass"
    for s in ${scenarios//,/ }; do
        # Fresh proxies for every scenario (by default), so that what one scenario leaves behind
        # (memory, pools, leaks) does not change the figures of the next one.
        [ "$RESTART" = scenario ] && start_proxies "$pass"
        for r in $(seq "$ROUNDS"); do
            # Rotate the order every round so that slow drifts of the machine spread evenly.
            order=()
            for i in $(seq 0 $((n - 1))); do order+=("${targets[$(((i + r - 1) % n))]}"); done
            for t in "${order[@]}"; do
                if [ "$WARMUP" -gt 0 ]; then
                    mapfile -t args < <(wrk_args "$s" "$t" "$WARMUP")
                    taskset -c "$CLIENT_CPU" wrk "${args[@]}" >/dev/null 2>&1 ||
                        die "wrk warm-up failed for $t/$s: taskset -c $CLIENT_CPU wrk ${args[*]}"
                fi
                mapfile -t args < <(wrk_args "$s" "$t" "$DURATION")
                local extra=()
                if [ "$s" = churn ]; then
                    extra=(--churn-rate "$CHURN_RATE" --churn-hosts "$CHURN_HOSTS"
                           --backend-a "$BACKEND_A" --backend-b "$BACKEND_B")
                fi
                local c=$CONNECTIONS
                [ "$s" = paced ] && c=$PACED_CONNECTIONS
                python3 "$PY" run-one --out "$RUNS" --pass-name "$pass" --scenario "$s" \
                    --target "$t" --round "$r" --connections "$c" --duration "$DURATION" \
                    --proxy-pid "${PID[$t]:-0}" --proxy-log "${PLOG[$t]:-}" \
                    --access-log "${ALOG[$t]:-}" \
                    --backend-pid "${PID[backend]}" --redis-pid "${PID[redis]}" \
                    --redis-port "$P_REDIS" --client-cpu "$CLIENT_CPU" "${extra[@]}" \
                    -- "${args[@]}" || die "measured run failed: $t/$s round $r"
                [ "$t" = direct ] || check_alive "$t" "${PLOG[$t]}"
            done
        done
        [ "$RESTART" = scenario ] && stop_proxies
    done
    if [ "$pass" = nolog ] && [ "$IDLE_CONNS" -gt 0 ]; then
        [ "$RESTART" = scenario ] && start_proxies "$pass"
        for t in "${targets[@]}"; do
            # The floor relay holds a backend connection per client connection by design.
            [ "$t" = direct ] || [ "$t" = floor ] && continue
            taskset -c "$CLIENT_CPU" python3 "$PY" idle-rss --out "$RUNS" --pass-name "$pass" \
                --target "$t" --pid "${PID[$t]}" --port "${PORT[$t]}" --conns "$IDLE_CONNS" ||
                die "idle-connection test failed for $t"
        done
    fi
    stop_proxies
}

say "targets: $TARGETS; proxies on cores $PROXY_CPU ($WORKERS worker(s) each); wrk ($WRK_THREADS thread(s)), backend, redis on cores $CLIENT_CPU"
say "$ROUNDS round(s) x ${DURATION}s (+${WARMUP}s warm-up), $CONNECTIONS connections"
for pass in ${PASSES//,/ }; do
    if [ "$pass" = log ]; then run_pass log "$LOG_SCENARIOS"; else run_pass nolog "$SCENARIOS"; fi
done

# ---------------------------------------------------------------------------------------------
# Summary.
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "## hipache-tpc bench, $(date '+%Y-%m-%d %H:%M %Z')"
    echo
    python3 - "$OUT/machine.json" "$load_end" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{m['cpu']}, {m['cpus']} cores at {m['mhz']} MHz ({m.get('virtualization', '?')}), "
      f"{m['memory_gib']} GiB, {m['os']}, "
      f"kernel {m['kernel']}; {m['nginx']}; {m['haproxy'].split(' - ')[0]}; {m['wrk'].split(' Copyright')[0]}; "
      f"redis {m['redis'].split()[2]}; hipache-tpc {m['hipache_tpc_commit']}. "
      f"Load average at start {m['loadavg_at_start']}, at end {sys.argv[2]}.")
EOF
    echo
    echo "Proxies pinned to cores $PROXY_CPU ($WORKERS worker(s) each); wrk ($WRK_THREADS thread(s)), backend nginx and"
    echo "redis on cores $CLIENT_CPU. CPU µs/req = the proxy's utime+stime (/proc, all threads and"
    echo "processes) during the run / requests completed. RSS = the serving process at the end of the run."
    echo
    python3 "$PY" summarize "$RUNS"
} >"$OUT/summary.md"
[ "$(dirname "$OUT")" = "$HERE/results" ] && ln -sfn "$(basename "$OUT")" "$HERE/results/latest"
cat "$OUT/summary.md"
say "raw rows: $RUNS; summary: $OUT/summary.md"
