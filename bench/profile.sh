#!/usr/bin/env bash
# Profiles hipache-tpc's hot path on the small keep-alive scenario (30-byte responses), with one
# worker pinned to the proxy core and the load generator, backend and redis on the other core.
#
#   bench/profile.sh                          all four parts below
#   bench/profile.sh --what perf,ops          some of them
#
# Parts (results in bench/results/profile-<date>-<time>/, summary in summary.txt):
#   perf       perf record (cpu-clock) during a measured wrk run of hipache-tpc (io_uring and
#              epoll) and nginx: CPU us/request split by DSO and by symbol; then DWARF call
#              graphs for hipache-tpc: self and inclusive reports.
#   ops        syscalls per request (strace -c -f) and io_uring operations per request
#              (tracepoint io_uring:io_uring_submit_req) during short wrk runs, divided by the
#              requests wrk completed, for hipache-tpc with io_uring, with epoll, and nginx.
#   callgrind  instructions per request (user space, deterministic) with valgrind's callgrind
#              for a fixed number of requests, hipache-tpc (epoll driver) and nginx, and the top
#              functions by inclusive and self cost.
#   cpu        CPU us/request from /proc for hipache-tpc and nginx in this same setup.
# --close switches the wrk runs (perf, ops, cpu) to a new connection per request.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/profile.sh [options]
  --what LIST         perf,ops,callgrind,cpu                [WHAT=perf,ops,callgrind,cpu]
  --duration S        wrk seconds for perf and cpu          [DURATION=10]
  --requests N        requests for callgrind (h2load)       [REQUESTS=20000]
  --ops-seconds S     wrk seconds for each ops measurement  [OPS_SECONDS=3]
  --connections N     client connections                    [CONNECTIONS=64]
  --log               access log on (default off)
  --close             perf, ops and cpu parts: a new connection per request (wrk -H 'Connection: close')
  --proxy-cpu N, --client-cpu N                             [PROXY_CPU=0, CLIENT_CPU=1]
  --out DIR           [OUT=bench/results/profile-<date>-<time>]
  --no-build, --no-install
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PROG=profile.sh
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"

WHAT=${WHAT:-perf,ops,callgrind,cpu}
DURATION=${DURATION:-10}
REQUESTS=${REQUESTS:-20000}
OPS_SECONDS=${OPS_SECONDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
LOG=${LOG:-0}
CLOSE=${CLOSE:-0}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-}
BUILD=${BUILD:-1}
INSTALL=${INSTALL:-1}
HIPACHE_BIN=${HIPACHE_BIN:-}

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --log) LOG=1; shift; continue ;;
        --close) CLOSE=1; shift; continue ;;
        --no-build) BUILD=0; shift; continue ;;
        --no-install) INSTALL=0; shift; continue ;;
    esac
    case "$1" in
        --what|--duration|--requests|--ops-seconds|--connections|--proxy-cpu|--client-cpu|--out) ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    [ $# -ge 2 ] || die "$1 needs a value (see --help)"
    case "$1" in
        --what) WHAT=$2 ;;
        --duration) DURATION=$2 ;;
        --requests) REQUESTS=$2 ;;
        --ops-seconds) OPS_SECONDS=$2 ;;
        --connections) CONNECTIONS=$2 ;;
        --proxy-cpu) PROXY_CPU=$2 ;;
        --client-cpu) CLIENT_CPU=$2 ;;
        --out) OUT=$2 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift 2
done
for n in DURATION REQUESTS OPS_SECONDS CONNECTIONS PROXY_CPU CLIENT_CPU; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number, got '${!n}'"
done
for w in ${WHAT//,/ }; do in_list "$w" "perf,ops,callgrind,cpu" || die "unknown part '$w'"; done
[ "$PROXY_CPU" != "$CLIENT_CPU" ] || die "the proxy core and the client core must differ"
WRK_EXTRA=(--timeout 5s)
[ "$CLOSE" = 1 ] && WRK_EXTRA+=(-H "Connection: close")

need=(nginx wrk h2load redis-server redis-cli curl taskset python3)
in_list perf "$WHAT" && need+=(perf)
in_list ops "$WHAT" && need+=(strace perf)
in_list callgrind "$WHAT" && need+=(valgrind)
ensure_tools "$INSTALL" "${need[@]}"
build_hipache "$BUILD"
if in_list perf "$WHAT" || in_list ops "$WHAT"; then
    perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1 ||
        die "perf record does not work here (perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid)); run as root or drop perf/ops from --what"
fi

[ -n "$OUT" ] || OUT="$HERE/results/profile-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/logs" "$OUT/conf"
OUT=$(cd "$OUT" && pwd)
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
note() { echo "$*" | tee -a "$SUMMARY"; }
raise_nofile $((4 * CONNECTIONS + 1000))

read -r P_REDIS P_BACK_A P_BACK_B P_HIP P_HIP_EPOLL P_NGINX < <(python3 "$PY" freeports 6)
start_redis "$CLIENT_CPU" "$P_REDIS" "$OUT"
start_backend "$CLIENT_CPU" "$P_BACK_A" "$P_BACK_B" "$OUT"
python3 "$PY" redis-setup --port "$P_REDIS" --backend "http://127.0.0.1:$P_BACK_A" --host 127.0.0.1

alog() { if [ "$LOG" = 1 ]; then echo "$OUT/logs/access-$1.log"; else echo false; fi; }

# start_target NAME [WRAPPER...]: hipache-tpc, hipache-epoll or nginx on the proxy core.
start_target() {
    local t=$1
    shift
    case "$t" in
        hipache-tpc)
            write_hipache_conf "$OUT/conf/$t.json" "$P_HIP" "$P_REDIS" "$(alog "$t")" 10000 1
            start_proc "$t" "$PROXY_CPU" "$OUT/logs/$t.log" env RUST_LOG=warn "$@" \
                "$HIPACHE_BIN" -c "$OUT/conf/$t.json"
            PORT=$P_HIP ;;
        hipache-epoll)
            write_hipache_conf "$OUT/conf/$t.json" "$P_HIP_EPOLL" "$P_REDIS" "$(alog "$t")" 10000 1
            start_proc "$t" "$PROXY_CPU" "$OUT/logs/$t.log" env RUST_LOG=warn HIPACHE_TPC_IO=epoll "$@" \
                "$HIPACHE_BIN" -c "$OUT/conf/$t.json"
            PORT=$P_HIP_EPOLL ;;
        nginx)
            local a=off main="master_process on;"
            [ "$LOG" = 1 ] && a="$OUT/logs/access-nginx.log"
            # Under valgrind: a single process (no master), so that the one traced process serves.
            [ $# -gt 0 ] && main="master_process off;"
            write_nginx_proxy_conf "$OUT/nginx-proxy" "$P_NGINX" "$P_BACK_A" "$a" \
                "$OUT/logs/nginx-error.log" "$main"
            start_proc nginx "$PROXY_CPU" "$OUT/logs/nginx.log" "$@" \
                nginx -p "$OUT/nginx-proxy/" -e "$OUT/logs/nginx-error.log" -c "$OUT/nginx-proxy/nginx.conf"
            PORT=$P_NGINX ;;
    esac
    # Valgrind starts slowly: allow it, through wait_http's 10 s, three times.
    local i
    for i in 1 2 3; do
        if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/30"; then break; fi
        check_alive "$t" "$OUT/logs/$t.log"
        sleep 3
    done
    wait_http "$t" "$OUT/logs/$t.log" "http://127.0.0.1:$PORT/30"
}
wrk_count() {  # wrk_count PORT: a wrk run of OPS_SECONDS, prints the number of requests completed
    local out
    out=$(taskset -c "$CLIENT_CPU" wrk "${WRK_EXTRA[@]}" -t1 -c "$CONNECTIONS" -d "${OPS_SECONDS}s" \
        "http://127.0.0.1:$1/30" 2>&1) || die "wrk failed: $out"
    echo "$out" | sed -n 's/^ *\([0-9]*\) requests in .*/\1/p'
}
serving() { python3 -c "import sys; sys.path.insert(0, '$HERE/lib'); import bench; print(bench.serving_pid($1))"; }
h2() {  # h2 PORT N: N requests with h2load over HTTP/1.1, prints the number that succeeded
    local out
    out=$(taskset -c "$CLIENT_CPU" h2load --h1 -n "$2" -c "$CONNECTIONS" -t 1 "http://127.0.0.1:$1/30" 2>&1) ||
        die "h2load failed: $out"
    echo "$out" | sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p'
}

say "results in $OUT (load average now: $(cut -d' ' -f1-3 /proc/loadavg))"
note "hipache-tpc profile, $(date '+%Y-%m-%d %H:%M %Z'), commit $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
note "access log: $([ "$LOG" = 1 ] && echo on || echo off); $CONNECTIONS connections; $([ "$CLOSE" = 1 ] && echo "new connection per request (perf, cpu);") load average $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------------
if in_list cpu "$WHAT"; then
    note ""
    note "== CPU us/request from /proc (wrk ${DURATION}s, small keep-alive) =="
    for t in hipache-tpc nginx; do
        start_target "$t"
        taskset -c "$CLIENT_CPU" wrk "${WRK_EXTRA[@]}" -t1 -c "$CONNECTIONS" -d 2s "http://127.0.0.1:$PORT/30" >/dev/null
        python3 "$PY" run-one --out "$OUT/cpu.jsonl" --pass-name profile --scenario small \
            --target "$t" --round 1 --connections "$CONNECTIONS" --duration "$DURATION" \
            --proxy-pid "${PID[$t]}" --backend-pid "${PID[backend]}" --redis-pid "${PID[redis]}" \
            --redis-port "$P_REDIS" --client-cpu "$CLIENT_CPU" -- \
            "${WRK_EXTRA[@]}" -t1 -c "$CONNECTIONS" -d "${DURATION}s" --latency "http://127.0.0.1:$PORT/30" 2>&1 | tee -a "$SUMMARY"
        stop_proc "$t"
    done
fi

# ---------------------------------------------------------------------------------------------
if in_list perf "$WHAT"; then
    note ""
    note "== perf record (cpu-clock, no call graph) during a measured run: where each target's CPU/request goes =="
    for t in hipache-tpc hipache-epoll nginx; do
        start_target "$t"
        taskset -c "$CLIENT_CPU" wrk "${WRK_EXTRA[@]}" -t1 -c "$CONNECTIONS" -d 2s "http://127.0.0.1:$PORT/30" >/dev/null
        sp=$(serving "${PID[$t]}")
        taskset -c "$CLIENT_CPU" perf record -q -e cpu-clock -F 999 -p "$sp" -o "$OUT/perf-$t-flat.data" \
            >"$OUT/logs/perf-$t-flat.log" 2>&1 &
        PID[perf]=$!
        sleep 0.5
        python3 "$PY" run-one --out "$OUT/perf-cpu.jsonl" --pass-name perf --scenario small \
            --target "$t" --round 1 --connections "$CONNECTIONS" --duration "$DURATION" \
            --proxy-pid "${PID[$t]}" --backend-pid "${PID[backend]}" --redis-pid "${PID[redis]}" \
            --redis-port "$P_REDIS" --client-cpu "$CLIENT_CPU" -- \
            "${WRK_EXTRA[@]}" -t1 -c "$CONNECTIONS" -d "${DURATION}s" --latency "http://127.0.0.1:$PORT/30" 2>&1 | tee -a "$SUMMARY"
        kill -INT "${PID[perf]}" 2>/dev/null || true
        wait "${PID[perf]}" 2>/dev/null || true
        unset "PID[perf]"
        stop_proc "$t"
        cpu=$(tail -n 1 "$OUT/perf-cpu.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cpu_us_per_req"])')
        perf report -i "$OUT/perf-$t-flat.data" --sort dso --stdio 2>/dev/null >"$OUT/perf-$t-dso.txt"
        perf report -i "$OUT/perf-$t-flat.data" --sort symbol --stdio --percent-limit 0.4 2>/dev/null \
            >"$OUT/perf-$t-symbols.txt"
        note "-- $t: $cpu CPU us/request (perf running), split by DSO (us/request):"
        grep -E '^ +[0-9.]+%' "$OUT/perf-$t-dso.txt" | awk -v c="$cpu" 'NR <= 6 { p = $1; sub("%", "", p);
            printf "   %-24s %6.2f%%  %6.2f us\n", $2, p, p * c / 100 }' | tee -a "$SUMMARY"
        note "   top symbols (self, us/request):"
        grep -E '^ +[0-9.]+%' "$OUT/perf-$t-symbols.txt" | awk -v c="$cpu" 'NR <= 25 { p = $1; sub("%", "", p);
            $1 = ""; printf "   %6.2f%%  %5.2f us %s\n", p, p * c / 100, $0 }' | sed -E 's/ +- +- *$//' | cut -c1-150 | tee -a "$SUMMARY"
    done

    note ""
    note "== perf record (cpu-clock, DWARF call graphs), hipache-tpc, wrk ${DURATION}s =="
    start_target hipache-tpc
    taskset -c "$CLIENT_CPU" wrk "${WRK_EXTRA[@]}" -t1 -c "$CONNECTIONS" -d 2s "http://127.0.0.1:$PORT/30" >/dev/null
    taskset -c "$CLIENT_CPU" wrk "${WRK_EXTRA[@]}" -t1 -c "$CONNECTIONS" -d "$((DURATION + 2))s" "http://127.0.0.1:$PORT/30" \
        >"$OUT/perf-wrk.txt" 2>&1 &
    PID[wrk]=$!
    sleep 1
    taskset -c "$CLIENT_CPU" perf record -q -e cpu-clock -F 1999 --call-graph dwarf,16384 \
        -p "${PID[hipache-tpc]}" -o "$OUT/perf.data" -- sleep "$DURATION" >"$OUT/logs/perf.log" 2>&1 ||
        die "perf record failed; see $OUT/logs/perf.log"
    wait "${PID[wrk]}" || true
    unset "PID[wrk]"
    stop_proc hipache-tpc
    grep -E 'Requests/sec' "$OUT/perf-wrk.txt" | tee -a "$SUMMARY"
    say "perf report (this takes a while)"
    perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio --percent-limit 0.3 \
        -g none 2>/dev/null >"$OUT/perf-self.txt"
    perf report -i "$OUT/perf.data" --children --sort symbol --stdio --percent-limit 0.5 \
        -g none 2>/dev/null >"$OUT/perf-inclusive.txt"
    perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null >"$OUT/perf-dso.txt"
    perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio --percent-limit 1.5 \
        -g caller,0.5,callee,function,percent --max-stack 24 2>/dev/null >"$OUT/perf-callers.txt"
    note "-- by DSO (self):"
    grep -E '^ +[0-9]' "$OUT/perf-dso.txt" | awk 'NR <= 8' | sed -E 's/ +- +- *$//' | tee -a "$SUMMARY"
    note "-- top symbols (self):"
    grep -E '^ +[0-9]' "$OUT/perf-self.txt" | awk 'NR <= 40' | sed -E 's/ +- +- *$//' | tee -a "$SUMMARY"
    note "-- kernel entry points and hipache-tpc functions (inclusive):"
    grep -E '^ +[0-9]' "$OUT/perf-inclusive.txt" | sed -E 's/ +- +- *$//' |
        grep -E '\[k\] (io_send|io_recv|io_poll_add|io_cqring_wait|io_handle_tw_list|io_submit_sqes|__do_sys_io_uring_enter|tcp_v4_rcv|__tcp_transmit_skb)$|hipache_tpc::' |
        grep -v '(inlined)' | awk 'NR <= 40' | cut -c1-170 | tee -a "$SUMMARY"
fi

# ---------------------------------------------------------------------------------------------
if in_list ops "$WHAT"; then
    note ""
    note "== syscalls and io_uring operations per request (wrk ${OPS_SECONDS}s, requests counted by wrk) =="
    for t in hipache-tpc hipache-epoll nginx; do
        start_target "$t"
        taskset -c "$CLIENT_CPU" wrk "${WRK_EXTRA[@]}" -t1 -c "$CONNECTIONS" -d 1s "http://127.0.0.1:$PORT/30" >/dev/null
        sp=$(serving "${PID[$t]}")
        # io_uring operations submitted (all threads of the serving process).
        taskset -c "$CLIENT_CPU" perf record -q -e io_uring:io_uring_submit_req -p "$sp" \
            -o "$OUT/uring-$t.data" >"$OUT/logs/uring-$t.log" 2>&1 &
        PID[perf]=$!
        sleep 1
        n=$(wrk_count "$PORT")
        sleep 0.5
        kill -INT "${PID[perf]}" 2>/dev/null || true
        wait "${PID[perf]}" 2>/dev/null || true
        unset "PID[perf]"
        # Syscalls (strace slows the proxy down; the counts, not the time, are what matter).
        taskset -c "$CLIENT_CPU" strace -c -f -q -p "$sp" -o "$OUT/strace-$t.txt" &
        PID[strace]=$!
        sleep 1
        n2=$(wrk_count "$PORT")
        sleep 0.5
        kill -INT "${PID[strace]}" 2>/dev/null || true
        wait "${PID[strace]}" 2>/dev/null || true
        unset "PID[strace]"
        stop_proc "$t"
        note "-- $t: io_uring operations per request ($n requests):"
        perf script -i "$OUT/uring-$t.data" -F trace 2>/dev/null |
            sed -n 's/.*opcode \([A-Z_0-9]*\),.*/\1/p' | sort | uniq -c | sort -rn |
            awk -v n="$n" '{ printf "   %-16s %8.3f\n", $2, $1 / n; t += $1 } END { printf "   %-16s %8.3f\n", "total", t / n }' |
            tee -a "$SUMMARY"
        note "-- $t: syscalls per request ($n2 requests, strace -c -f):"
        awk -v n="$n2" '$1 ~ /^[0-9.]+$/ && NF >= 5 { calls = $4; name = $NF; if (name == "total") next;
              printf "   %-20s %8.3f\n", name, calls / n; t += calls }
              END { printf "   %-20s %8.3f\n", "total", t / n }' "$OUT/strace-$t.txt" |
            sort -k2 -rn | tee -a "$SUMMARY"
    done
fi

# ---------------------------------------------------------------------------------------------
if in_list callgrind "$WHAT"; then
    note ""
    note "== callgrind: user-space instructions per request, $REQUESTS requests =="
    for t in hipache-epoll nginx; do
        start_target "$t" valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind-$t.%p" \
            --instr-atstart=no --dump-instr=no
        h2 "$PORT" 1000 >/dev/null
        sp=$(serving "${PID[$t]}")
        callgrind_control -z "$sp" >/dev/null 2>&1
        callgrind_control -i on "$sp" >/dev/null 2>&1
        n=$(h2 "$PORT" "$REQUESTS")
        callgrind_control -i off "$sp" >/dev/null 2>&1
        callgrind_control -d "$sp" >/dev/null 2>&1
        stop_proc "$t"
        f="$OUT/callgrind-$t.$sp.1"     # the dump made by callgrind_control -d
        [ -s "$f" ] || die "no callgrind dump $f"
        callgrind_annotate --inclusive=yes "$f" 2>/dev/null >"$OUT/callgrind-$t-inclusive.txt" || true
        callgrind_annotate "$f" 2>/dev/null >"$OUT/callgrind-$t-self.txt" || true
        ir=$(sed -n 's/^\([0-9,]*\) (100.0%) *PROGRAM TOTALS.*/\1/p' "$OUT/callgrind-$t-self.txt" | tr -d ,)
        [ -n "$ir" ] || ir=$(grep -m1 'PROGRAM TOTALS' "$OUT/callgrind-$t-self.txt" | awk '{print $1}' | tr -d ,)
        note "-- $t: $ir instructions for $n requests = $(awk -v i="$ir" -v n="$n" 'BEGIN { printf "%.0f", i / n }') per request"
        note "   top functions by self cost:"
        grep -E '^ *[0-9,]+ \(' "$OUT/callgrind-$t-self.txt" | grep -v 'PROGRAM TOTALS' | awk 'NR <= 25' |
            cut -c1-200 | tee -a "$SUMMARY"
    done
fi

say "done: $SUMMARY"
