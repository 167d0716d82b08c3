#!/usr/bin/env bash
# Redis Sentinel failovers under load (issue 17): a master, a replica and three sentinels, hipache-tpc on
# redis+sentinel://, wrk on a cached host throughout; N failovers (SIGKILL of the master, or graceful
# SENTINEL FAILOVER). Reports requests failed (target 0) and the time from each promotion to the first
# request served for a route written to the new master (p50, max). See bench/README.md.
#
#   bench/failover.sh                         10 SIGKILLed masters, then 10 graceful failovers
#   bench/failover.sh --failovers 3 --modes kill     quick check
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: bench/failover.sh [options]

  --failovers N       failovers per mode                                [FAILOVERS=10]
  --modes LIST        kill (SIGKILL of the master) and/or graceful (SENTINEL FAILOVER)
                                                                        [MODES=kill,graceful]
  --workers N         hipache-tpc workers                               [WORKERS=1]
  --connections N     wrk connections on the cached host                [CONNECTIONS=32]
  --proxy-cpu N       core of the proxy                                 [PROXY_CPU=0]
  --client-cpu N      core of wrk, the backend, redis and the sentinels [CLIENT_CPU=1]
  --out DIR           results folder       [OUT=bench/results/failover-<date>-<time>]
  --no-build, --no-install
  -h, --help
USAGE
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PROG=failover.sh
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"

FAILOVERS=${FAILOVERS:-10}
MODES=${MODES:-kill,graceful}
WORKERS=${WORKERS:-1}
CONNECTIONS=${CONNECTIONS:-32}
PROXY_CPU=${PROXY_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-}
BUILD=${BUILD:-1}
INSTALL=${INSTALL:-1}
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --no-build) BUILD=0; shift; continue ;;
        --no-install) INSTALL=0; shift; continue ;;
        --failovers|--modes|--workers|--connections|--proxy-cpu|--client-cpu|--out) ;;
        *) echo "failover.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    [ $# -ge 2 ] || { echo "failover.sh: $1 needs a value (see --help)" >&2; exit 2; }
    case "$1" in
        --failovers) FAILOVERS=$2 ;;
        --modes) MODES=$2 ;;
        --workers) WORKERS=$2 ;;
        --connections) CONNECTIONS=$2 ;;
        --proxy-cpu) PROXY_CPU=$2 ;;
        --client-cpu) CLIENT_CPU=$2 ;;
        --out) OUT=$2 ;;
    esac
    shift 2
done
for n in FAILOVERS WORKERS CONNECTIONS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a whole number of at least 1, got '${!n}'"
done
for m in ${MODES//,/ }; do in_list "$m" "kill,graceful" || die "unknown mode '$m' (kill, graceful)"; done
check_cpu_lists "$PROXY_CPU" "$CLIENT_CPU" "$WORKERS" 1

ensure_tools "$INSTALL" nginx wrk redis-server redis-cli curl taskset python3
build_hipache "$BUILD"
[ -n "$OUT" ] || OUT="$HERE/results/failover-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
raise_nofile $((4 * CONNECTIONS + 1000))

read -r P_BACK_A P_BACK_B < <(python3 "$PY" freeports 2)
start_backend "$CLIENT_CPU" "$P_BACK_A" "$P_BACK_B" "$OUT"

{
    echo "## hipache-tpc Sentinel failovers, $(date '+%Y-%m-%d %H:%M %Z')"
    echo
    echo "hipache-tpc $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $WORKERS worker(s) on core $PROXY_CPU;"
    echo "wrk ($CONNECTIONS connections, keep-alive, a cached host), nginx backend, redis master + replica + 3"
    echo "sentinels (down-after 1 s) on core $CLIENT_CPU. Load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "| mode | failovers | requests | failed requests | promotion → new route served, p50 ms | max ms |"
    echo "|---|---:|---:|---:|---:|---:|"
} >"$OUT/summary.md"
for m in ${MODES//,/ }; do
    say "mode $m: $FAILOVERS failovers"
    python3 "$HERE/lib/failover.py" --out "$OUT" --hipache-bin "$HIPACHE_BIN" \
        --backend "http://127.0.0.1:$P_BACK_A" --failovers "$FAILOVERS" --mode "$m" \
        --workers "$WORKERS" --connections "$CONNECTIONS" --proxy-cpu "$PROXY_CPU" \
        --client-cpu "$CLIENT_CPU" >>"$OUT/summary.md" || die "mode $m failed; see $OUT/logs"
done
cat "$OUT/summary.md"
say "rows: $OUT/failover.jsonl; summary: $OUT/summary.md"
