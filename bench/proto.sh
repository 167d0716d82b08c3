#!/usr/bin/env bash
# hipache-tpc vs nginx over TLS, HTTP/2 and WebSocket: one worker each, pinned to the same core,
# the load generators on the other core. See bench/README.md.
#
#   bench/proto.sh                                  everything (about 12 minutes with the defaults)
#   bench/proto.sh --duration 3 --rounds 1 --scenarios tls,h2     quick check
#   bench/proto.sh --scenarios tls-redis,tls-files --targets hipache-tpc,nginx
#                                                   certificates from Redis vs files, 1,000 SNI names
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/proto.sh [options]

  --duration S        seconds per measured run                          [DURATION=10]
  --warmup S          unmeasured run before each measured run           [WARMUP=1]
  --rounds N          interleaved rounds (median over rounds)           [ROUNDS=3]
  --connections N     wrk connections of the TLS scenarios              [CONNECTIONS=64]
  --scenarios LIST    comma list of: tls,tls-close,tls-mixed,tls-redis,tls-files,h2,h2c,ws-64,ws-1k,
                      ws-16k                                            [SCENARIOS=all of them]
                      tls-redis, tls-files: a new connection per request, SNI rotating over
                      --sni-names names, each with its own certificate: from Redis (tls:<name>,
                      hipache-tpc only) or from files (certificatesDir; nginx: a server block each)
  --targets LIST      comma list of: hipache-tpc,hipache-alt,nginx,floor (floor: the minimal
                      relay of examples/floor_relay.rs, ws-* scenarios only; hipache-alt: another
                      build, for A/B comparisons: HIPACHE_ALT_BIN=path; not in tls-redis/-files)
                                                                        [TARGETS=hipache-tpc,nginx,floor]
  --mixed-connections N   tls-mixed: keep-alive connections, each pausing --mixed-pause ms after
                      every response                                    [MIXED_CONNECTIONS=32]
  --mixed-pause MS                                                      [MIXED_PAUSE=10]
  --mixed-handshakes N    tls-mixed: connections making a handshake per request (closed loop)
                                                                        [MIXED_HANDSHAKES=16]
  --h2-clients N, --h2-streams N   h2load -c and -m                     [H2_CLIENTS=16, H2_STREAMS=10]
  --ws-tunnels N      concurrent WebSocket tunnels                      [WS_TUNNELS=64]
  --ws-window N       messages in flight per tunnel                     [WS_WINDOW=1]
  --ws-backends N     echo server processes (on the client core)        [WS_BACKENDS=2]
  --ws-clients N      load client processes (on the client core)        [WS_CLIENTS=1]
  --sni-names N       names (and certificates) of tls-redis, tls-files  [SNI_NAMES=1000]
  --sni-clients N     threads of their load client (examples/sni_rotate.rs) [SNI_CLIENTS=16]
  --key-type ec|rsa   certificate key: ECDSA P-256 or RSA 2048          [KEY_TYPE=ec]
                      (tls-redis and tls-files always use ECDSA P-256 leaves)
  --proxy-cpu N       core of the proxies                               [PROXY_CPU=0]
  --client-cpu N      core of the load generators, backends and redis   [CLIENT_CPU=1]
  --out DIR           results folder       [OUT=bench/results/proto-<date>-<time>]
  --no-build          do not run cargo build --release (use HIPACHE_BIN or target/release)
  --no-install        never apt-get install; fail when a tool is missing
  -h, --help
EOF
}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
PROG=proto.sh
# shellcheck source=bench/lib/common.sh
. "$HERE/lib/common.sh"
WS="$HERE/lib/ws.py"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
ALL_SCENARIOS="tls,tls-close,tls-mixed,tls-redis,tls-files,h2,h2c,ws-64,ws-1k,ws-16k"
SCENARIOS=${SCENARIOS:-$ALL_SCENARIOS}
TARGETS=${TARGETS:-hipache-tpc,nginx,floor}
H2_CLIENTS=${H2_CLIENTS:-16}
H2_STREAMS=${H2_STREAMS:-10}
WS_TUNNELS=${WS_TUNNELS:-64}
WS_WINDOW=${WS_WINDOW:-1}
WS_BACKENDS=${WS_BACKENDS:-2}
WS_CLIENTS=${WS_CLIENTS:-1}
SNI_NAMES=${SNI_NAMES:-1000}
SNI_CLIENTS=${SNI_CLIENTS:-16}
SNI_PATTERN=s%d.sni.test
MIXED_CONNECTIONS=${MIXED_CONNECTIONS:-32}
MIXED_PAUSE=${MIXED_PAUSE:-10}
MIXED_HANDSHAKES=${MIXED_HANDSHAKES:-16}
KEY_TYPE=${KEY_TYPE:-ec}
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
        --duration|--warmup|--rounds|--connections|--scenarios|--targets|--h2-clients|--h2-streams|\
        --ws-tunnels|--ws-window|--ws-backends|--ws-clients|--sni-names|--sni-clients|--key-type|\
        --proxy-cpu|--client-cpu|--out|--mixed-connections|--mixed-pause|--mixed-handshakes) ;;
        *) echo "proto.sh: unknown option $opt (see --help)" >&2; exit 2 ;;
    esac
    [ $# -ge 2 ] || { echo "proto.sh: $opt needs a value (see --help)" >&2; exit 2; }
    val=$2
    case "$opt" in
        --duration) DURATION=$val ;;
        --warmup) WARMUP=$val ;;
        --rounds) ROUNDS=$val ;;
        --connections) CONNECTIONS=$val ;;
        --scenarios) SCENARIOS=$val ;;
        --targets) TARGETS=$val ;;
        --h2-clients) H2_CLIENTS=$val ;;
        --h2-streams) H2_STREAMS=$val ;;
        --ws-tunnels) WS_TUNNELS=$val ;;
        --ws-window) WS_WINDOW=$val ;;
        --ws-backends) WS_BACKENDS=$val ;;
        --ws-clients) WS_CLIENTS=$val ;;
        --sni-names) SNI_NAMES=$val ;;
        --sni-clients) SNI_CLIENTS=$val ;;
        --key-type) KEY_TYPE=$val ;;
        --proxy-cpu) PROXY_CPU=$val ;;
        --client-cpu) CLIENT_CPU=$val ;;
        --out) OUT=$val ;;
        --mixed-connections) MIXED_CONNECTIONS=$val ;;
        --mixed-pause) MIXED_PAUSE=$val ;;
        --mixed-handshakes) MIXED_HANDSHAKES=$val ;;
    esac
    shift 2
done

for n in DURATION WARMUP ROUNDS CONNECTIONS H2_CLIENTS H2_STREAMS WS_TUNNELS WS_WINDOW WS_BACKENDS \
         WS_CLIENTS SNI_NAMES SNI_CLIENTS PROXY_CPU CLIENT_CPU MIXED_CONNECTIONS MIXED_PAUSE \
         MIXED_HANDSHAKES; do
    [[ ${!n} =~ ^[0-9]+$ ]] || die "$n must be a whole number, got '${!n}'"
done
[ "$DURATION" -ge 1 ] && [ "$ROUNDS" -ge 1 ] && [ "$CONNECTIONS" -ge 1 ] || die "duration, rounds and connections must be at least 1"
[ "$WS_TUNNELS" -ge 1 ] && [ "$WS_WINDOW" -ge 1 ] && [ "$WS_BACKENDS" -ge 1 ] && [ "$WS_CLIENTS" -ge 1 ] ||
    die "the WebSocket counts must be at least 1"
[ "$SNI_NAMES" -ge 1 ] && [ "$SNI_NAMES" -le 100000 ] && [ "$SNI_CLIENTS" -ge 1 ] ||
    die "--sni-names must be 1 to 100000 and --sni-clients at least 1"
for s in ${SCENARIOS//,/ }; do
    in_list "$s" "$ALL_SCENARIOS" || die "unknown scenario '$s' (known: $ALL_SCENARIOS)"
done
for t in ${TARGETS//,/ }; do
    in_list "$t" "hipache-tpc,hipache-alt,nginx,floor" || die "unknown target '$t' (hipache-tpc, hipache-alt, nginx, floor)"
done
in_list "$KEY_TYPE" "ec,rsa" || die "--key-type must be ec or rsa"
SNI=0
{ in_list tls-redis "$SCENARIOS" || in_list tls-files "$SCENARIOS"; } && SNI=1
ncpu=$(nproc --all 2>/dev/null || getconf _NPROCESSORS_ONLN)
[ "$PROXY_CPU" -lt "$ncpu" ] && [ "$CLIENT_CPU" -lt "$ncpu" ] || die "cores $PROXY_CPU and $CLIENT_CPU do not both exist (this machine has $ncpu)"
[ "$PROXY_CPU" != "$CLIENT_CPU" ] || die "the proxy core and the client core must differ"

need=(nginx wrk redis-server redis-cli curl taskset python3 openssl)
in_list h2 "$SCENARIOS" || in_list h2c "$SCENARIOS" && need+=(h2load)
ensure_tools "$INSTALL" "${need[@]}"
nginx -V 2>&1 | grep -q -- --with-http_v2_module || die "this nginx has no HTTP/2 module"
wrk_ssl=1
ldd "$(command -v wrk)" 2>/dev/null | grep -q libssl || wrk_ssl=0
[ "$wrk_ssl" = 1 ] || ! { in_list tls "$SCENARIOS" || in_list tls-close "$SCENARIOS" || in_list tls-mixed "$SCENARIOS"; } ||
    die "this wrk is built without OpenSSL (no https): install Debian's wrk"
in_list hipache-tpc "$TARGETS" && build_hipache "$BUILD"
if in_list hipache-alt "$TARGETS"; then
    [ -n "${HIPACHE_ALT_BIN:-}" ] && [ -x "$HIPACHE_ALT_BIN" ] ||
        die "target hipache-alt needs HIPACHE_ALT_BIN=<path to another hipache-tpc binary>"
fi
in_list floor "$TARGETS" && build_floor "$BUILD"
[ "$SNI" = 1 ] && build_sni_client "$BUILD"
[ -n "${HIPACHE_BIN:-}" ] || HIPACHE_BIN="$ROOT/target/release/hipache-tpc"

[ -n "$OUT" ] || OUT="$HERE/results/proto-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT/logs" "$OUT/conf" "$OUT/tls"
OUT=$(cd "$OUT" && pwd)
RUNS="$OUT/runs.jsonl"
: >"$RUNS"
raise_nofile $((4 * CONNECTIONS + 4 * WS_TUNNELS + 1000))

read -r P_REDIS P_BACK_A P_BACK_B P_WS P_H_HTTP P_H_TLS P_N_HTTP P_N_TLS P_N_H2C P_N_CHECK P_FLOOR P_N_SNI \
    P_A_HTTP P_A_TLS < <(python3 "$PY" freeports 14)

python3 "$PY" machine >"$OUT/machine.json"
load=$(cut -d' ' -f1-3 /proc/loadavg)
say "results in $OUT (load average now: $load)"
awk -v l="${load%% *}" 'BEGIN { exit !(l > 0.5) }' &&
    say "WARNING: the machine is busy (load $load); figures will be noisy. Re-run on a quiet machine."

# ---------------------------------------------------------------------------------------------
# Certificate: one self-signed certificate for both proxies.
KEY="$OUT/tls/key.pem"
CERT="$OUT/tls/cert.pem"
if [ "$KEY_TYPE" = ec ]; then
    keyopt=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
else
    keyopt=(-newkey rsa:2048)
fi
openssl req -x509 "${keyopt[@]}" -nodes -keyout "$KEY" -out "$CERT" -days 30 -subj "/CN=bench.test" \
    -addext "subjectAltName=DNS:localhost,DNS:bench.test,DNS:ws.bench.test,IP:127.0.0.1" >"$OUT/logs/openssl.log" 2>&1 ||
    die "openssl could not make the certificate; see $OUT/logs/openssl.log"
chmod 600 "$KEY"
# tls-redis, tls-files: a private CA and one leaf per name (the certificatesDir layout).
SNI_DIR="$OUT/tls/sni"
if [ "$SNI" = 1 ]; then
    "$SNI_BIN" gen --names "$SNI_NAMES" --pattern "$SNI_PATTERN" --dir "$SNI_DIR" ||
        die "sni_rotate could not make the certificates"
fi

# ---------------------------------------------------------------------------------------------
# Redis, the HTTP backend and the WebSocket echo servers, all on the client core.
start_redis "$CLIENT_CPU" "$P_REDIS" "$OUT"
start_backend "$CLIENT_CPU" "$P_BACK_A" "$P_BACK_B" "$OUT"
assert_port_free "$P_WS"
start_proc ws-echo "$CLIENT_CPU" "$OUT/logs/ws-echo.log" \
    python3 "$WS" echo-server --port "$P_WS" --procs "$WS_BACKENDS" --name ws1
wait_http ws-echo "$OUT/logs/ws-echo.log" "http://127.0.0.1:$P_WS/"
sni_setup=()
# Every name routed (frontend:<name>), and its certificate in tls:<name> (planb's hash).
[ "$SNI" = 1 ] && sni_setup=(--vhosts "$SNI_NAMES" --vhost-pattern "$SNI_PATTERN" --tls-dir "$SNI_DIR/certs")
python3 "$PY" redis-setup --port "$P_REDIS" --backend "http://127.0.0.1:$P_BACK_A" --host 127.0.0.1 \
    --host localhost "${sni_setup[@]}"
redis-cli -p "$P_REDIS" del frontend:ws.bench.test >/dev/null
redis-cli -p "$P_REDIS" rpush frontend:ws.bench.test ws "http://127.0.0.1:$P_WS" >/dev/null

# ---------------------------------------------------------------------------------------------
# Proxies.
write_hipache_proto_conf() {     # write_hipache_proto_conf NAME HTTP_PORT TLS_PORT BINARY EXTRA_HTTPS_KEYS
    local t=$1 p_http=$2 p_tls=$3 bin=$4 extra=${5:-}
    local conf="$OUT/conf/$t.json"
    cat >"$conf" <<EOF
{
    "server": {
        "workers": 1,
        "accessLog": false,
        "maxSockets": 1024,
        "tcpTimeout": 300,
        "http2": true,
        "lruCache": { "size": 10000, "ttl": 1 }
    },
    "http": { "port": $p_http, "bind": ["127.0.0.1"] },
    "https": { "port": $p_tls, "bind": ["127.0.0.1"], "key": "$KEY", "cert": "$CERT"$extra },
    "driver": "redis://127.0.0.1:$P_REDIS"
}
EOF
    "$bin" --dry -c "$conf" >"$conf.dry" 2>&1 ||
        die "$t rejects its configuration: $(cat "$conf.dry")"
}

write_nginx_proto_conf() {
    local d="$OUT/nginx-proxy" user=""
    mkdir -p "$d"
    [ "$(id -u)" = 0 ] && user="user root;"
    cat >"$d/nginx.conf" <<EOF
# Proxy: one nginx worker; TLS (h1 and h2 by ALPN), h2c with prior knowledge, and WebSocket.
$user
worker_processes 1;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $OUT/logs/nginx-error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $MAXCONN; }
http {
    access_log off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    http2_max_concurrent_streams 128;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    log_format resumecheck '\$ssl_session_reused \$ssl_protocol \$ssl_cipher \$ssl_curves';
    upstream backend {
        server 127.0.0.1:$P_BACK_A;
        keepalive 1024;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    upstream ws {
        server 127.0.0.1:$P_WS;
    }
    map \$http_upgrade \$connection_upgrade {
        default upgrade;
        '' close;
    }
    server {
        listen 127.0.0.1:$P_N_TLS ssl http2 default_server backlog=4096;
        listen 127.0.0.1:$P_N_H2C http2 default_server backlog=4096;
        server_name _;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Protocol \$scheme;
            proxy_set_header X-Forwarded-Port \$server_port;
            proxy_buffer_size 16k;
            proxy_buffers 4 64k;
            proxy_busy_buffers_size 64k;
            proxy_max_temp_file_size 0;
        }
    }
    server {
        # WebSocket: tunnels to the echo servers, 64 KiB buffers (hipache-tpc relays through 64 KiB).
        listen 127.0.0.1:$P_N_HTTP default_server backlog=4096;
        server_name _;
        location / {
            proxy_pass http://ws;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection \$connection_upgrade;
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_buffer_size 64k;
            proxy_buffers 4 64k;
            proxy_busy_buffers_size 64k;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
        }
    }
    include $d/sni-servers.conf;
    server {
        # Not measured: used once at start-up to see whether wrk resumes TLS sessions.
        listen 127.0.0.1:$P_N_CHECK ssl;
        server_name _;
        access_log $OUT/logs/nginx-tls-check.log resumecheck;
        location / { return 200 "ok\n"; }
    }
}
EOF
    # tls-files: one server block per name, each with its certificate, on its own listener.
    : >"$d/sni-servers.conf"
    if [ "$SNI" = 1 ]; then
        echo "server_names_hash_max_size $((4 * SNI_NAMES + 512)); server_names_hash_bucket_size 64;" >>"$d/sni-servers.conf"
        local i n opts
        for ((i = 0; i < SNI_NAMES; i++)); do
            n=${SNI_PATTERN//%d/$i}
            # Listen options may be given once per address: on the first block.
            opts=""
            [ "$i" = 0 ] && opts=" default_server backlog=4096"
            cat >>"$d/sni-servers.conf" <<EOF
server {
    listen 127.0.0.1:$P_N_SNI ssl$opts;
    server_name $n;
    ssl_certificate $SNI_DIR/certs/$n.crt;
    ssl_certificate_key $SNI_DIR/certs/$n.key;
    location / {
        proxy_pass http://backend;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host \$host;
        proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto \$scheme;
    }
}
EOF
        done
    fi
    nginx -t -q -p "$d/" -e "$OUT/logs/nginx-error.log" -c "$d/nginx.conf" ||
        die "nginx rejects $d/nginx.conf"
}

declare -A PLOG=([hipache-tpc]="$OUT/logs/hipache-tpc.log" [hipache-alt]="$OUT/logs/hipache-alt.log"
                 [nginx]="$OUT/logs/nginx-error.log"
                 [floor]="$OUT/logs/floor.log")
start_proxies() {         # start_proxies [SCENARIO]: tls-files gives hipache-tpc its certificate files
    local t conf=hipache-tpc
    [ "${1:-}" = tls-files ] && conf=hipache-tpc-files
    for t in ${TARGETS//,/ }; do
        case "$t" in
            hipache-tpc)
                assert_port_free "$P_H_HTTP"; assert_port_free "$P_H_TLS"
                start_proc hipache-tpc "$PROXY_CPU" "${PLOG[$t]}" env RUST_LOG=warn \
                    "$HIPACHE_BIN" -c "$OUT/conf/$conf.json"
                wait_http "$t" "${PLOG[$t]}" "http://127.0.0.1:$P_H_HTTP/30" 127.0.0.1
                ;;
            hipache-alt)
                assert_port_free "$P_A_HTTP"; assert_port_free "$P_A_TLS"
                start_proc hipache-alt "$PROXY_CPU" "${PLOG[$t]}" env RUST_LOG=warn \
                    "$HIPACHE_ALT_BIN" -c "$OUT/conf/hipache-alt.json"
                wait_http "$t" "${PLOG[$t]}" "http://127.0.0.1:$P_A_HTTP/30" 127.0.0.1
                ;;
            nginx)
                local p
                for p in "$P_N_HTTP" "$P_N_TLS" "$P_N_H2C" "$P_N_CHECK"; do assert_port_free "$p"; done
                [ "$SNI" = 1 ] && assert_port_free "$P_N_SNI"
                start_proc nginx "$PROXY_CPU" "$OUT/logs/nginx-stderr.log" \
                    nginx -p "$OUT/nginx-proxy/" -e "$OUT/logs/nginx-error.log" -c "$OUT/nginx-proxy/nginx.conf"
                wait_http "$t" "${PLOG[$t]}" "http://127.0.0.1:$P_N_HTTP/"
                ;;
            floor)
                # Relays every connection to the echo servers, bytes as they come: the tunnel floor.
                assert_port_free "$P_FLOOR"
                start_proc floor "$PROXY_CPU" "${PLOG[$t]}" "$FLOOR_BIN" "127.0.0.1:$P_FLOOR" "127.0.0.1:$P_WS"
                wait_http "$t" "${PLOG[$t]}" "http://127.0.0.1:$P_FLOOR/"
                ;;
        esac
    done
}
stop_proxies() {
    local t
    for t in ${TARGETS//,/ }; do stop_proc "$t"; done
}

write_nginx_proto_conf
if in_list hipache-tpc "$TARGETS"; then
    # The usual configuration (also tls-redis's: certificates from Redis are on with the Redis
    # driver), and tls-files': the same names from certificate files, Redis certificates off.
    write_hipache_proto_conf hipache-tpc "$P_H_HTTP" "$P_H_TLS" "$HIPACHE_BIN" ""
    [ "$SNI" = 1 ] && write_hipache_proto_conf hipache-tpc-files "$P_H_HTTP" "$P_H_TLS" "$HIPACHE_BIN" \
        ", \"certificatesDir\": \"$SNI_DIR/certs\", \"redisCertificates\": false"
fi
in_list hipache-alt "$TARGETS" && write_hipache_proto_conf hipache-alt "$P_A_HTTP" "$P_A_TLS" "$HIPACHE_ALT_BIN" ""

# ---------------------------------------------------------------------------------------------
# What the clients negotiate: protocol, cipher, group, ALPN; and whether wrk resumes sessions.
tls_checks() {
    local t port out f="$OUT/tls/negotiated.txt"
    : >"$f"
    for t in ${TARGETS//,/ }; do
        [ "$t" = floor ] && continue
        port=$(port_of "$t" tls)
        out=$(sleep 0.5 | openssl s_client -connect "127.0.0.1:$port" -servername localhost -alpn h2,http/1.1 \
                  2>&1 | tr -d "\0" || true)
        {
            echo "== $t (openssl s_client, ALPN h2,http/1.1)"
            grep -E '^(New|Protocol|Cipher|Server Temp Key|ALPN|Peer signature type|Negotiated TLS1.3 group)' <<<"$out" | sort -u || true
            # Does the server resume a session? (s_client saves one, then offers it.)
            sleep 0.5 | openssl s_client -connect "127.0.0.1:$port" -servername localhost -sess_out "$OUT/tls/sess-$t" \
                >/dev/null 2>&1 || true
            echo "== $t: second connection offering the saved session: $(openssl s_client -connect \
                "127.0.0.1:$port" -servername localhost -sess_in "$OUT/tls/sess-$t" </dev/null 2>&1 |
                tr -d '\0' | grep -E -m1 '^(Reused|New),' || echo '?')"
            echo "== $t (curl --http2): $(curl -sk --http2 -o /dev/null -w '%{http_version} %{http_code}' \
                  "https://localhost:$port/30" || true)"
            echo "== $t (curl --http2-prior-knowledge, h2c): $(curl -s --http2-prior-knowledge -o /dev/null \
                  -w '%{http_version} %{http_code}' \
                  "http://localhost:$(port_of "$t" h2c)/30" || true)"
        } >>"$f"
    done
    # wrk and session resumption: 200 requests, each on a new connection, against nginx's check
    # listener, which logs $ssl_session_reused ("r" = resumed, "." = full handshake).
    if in_list nginx "$TARGETS"; then
        : >"$OUT/logs/nginx-tls-check.log"
        taskset -c "$CLIENT_CPU" wrk -t1 -c1 -d1s -H "Connection: close" "https://localhost:$P_N_CHECK/" \
            >/dev/null 2>&1 || true
        sleep 0.3
        local total reused
        total=$(wc -l <"$OUT/logs/nginx-tls-check.log")
        reused=$(grep -c '^r ' "$OUT/logs/nginx-tls-check.log" || true)
        echo "== wrk -H 'Connection: close': $reused of $total handshakes resumed a session ($(awk '{print $2, $3, $4}' "$OUT/logs/nginx-tls-check.log" | sort | uniq -c | sort -rn | head -1 | sed 's/^ *//'))" >>"$f"
    fi
    cat "$f" >&2
}

# ---------------------------------------------------------------------------------------------
# Scenarios.
port_of() {              # port_of TARGET SCENARIO
    case "$1:$2" in
        hipache-tpc:tls*|hipache-tpc:h2) echo "$P_H_TLS" ;;
        nginx:tls-files) echo "$P_N_SNI" ;;
        hipache-tpc:*) echo "$P_H_HTTP" ;;
        hipache-alt:tls*|hipache-alt:h2) echo "$P_A_TLS" ;;
        hipache-alt:*) echo "$P_A_HTTP" ;;
        nginx:tls*|nginx:h2) echo "$P_N_TLS" ;;
        nginx:h2c) echo "$P_N_H2C" ;;
        nginx:ws-*) echo "$P_N_HTTP" ;;
        floor:ws-*) echo "$P_FLOOR" ;;
    esac
}
ws_size() { case "$1" in ws-64) echo 64 ;; ws-1k) echo 1024 ;; ws-16k) echo 16384 ;; esac; }
beside_args() {          # beside_args SCENARIO TARGET DURATION: JSON list, or nothing
    local port
    port=$(port_of "$2" "$1")
    case "$1" in
        tls-mixed) printf '["-t1", "-c", "%s", "-d", "%ss", "--timeout", "5s", "--latency", "-H", "Connection: close", "https://localhost:%s/30"]' \
                       "$MIXED_HANDSHAKES" "$3" "$port" ;;
    esac
}
tool_of() { case "$1" in tls-redis|tls-files) echo sni ;; tls*) echo wrk ;; h2*) echo h2load ;; ws-*) echo ws ;; esac; }
# Which target runs a scenario: the floor relay speaks no TLS and no HTTP/2 (tunnels only); nginx
# has no certificates from Redis.
runs() {                 # runs TARGET SCENARIO
    case "$1:$2" in
        floor:ws-*) return 0 ;;
        floor:*|nginx:tls-redis|hipache-alt:tls-redis|hipache-alt:tls-files) return 1 ;;
    esac
}

load_args() {            # load_args SCENARIO TARGET DURATION: one argument per line
    local s=$1 t=$2 d=$3 port
    port=$(port_of "$t" "$s")
    case "$s" in
        tls) printf '%s\n' -t1 -c "$CONNECTIONS" -d "${d}s" --timeout 5s --latency "https://localhost:$port/30" ;;
        tls-close) printf '%s\n' -t1 -c "$CONNECTIONS" -d "${d}s" --timeout 5s --latency \
                       -H "Connection: close" "https://localhost:$port/30" ;;
        # The measured load: paced keep-alive requests (the same rate for every target); the
        # handshake load beside it comes from beside_args.
        tls-mixed) printf '%s\n' -t1 -c "$MIXED_CONNECTIONS" -d "${d}s" --timeout 5s --latency \
                       -s "$HERE/lua/paced.lua" "https://localhost:$port/30" -- "$MIXED_PAUSE" ;;
        h2) printf '%s\n' -n AUTO -c "$H2_CLIENTS" -m "$H2_STREAMS" -t 1 "https://localhost:$port/30" ;;
        h2c) printf '%s\n' -n AUTO -c "$H2_CLIENTS" -m "$H2_STREAMS" -t 1 "http://localhost:$port/30" ;;
        tls-redis|tls-files) printf '%s\n' "$SNI_BIN" load --port "$port" --names "$SNI_NAMES" \
                                 --pattern "$SNI_PATTERN" --threads "$SNI_CLIENTS" --duration "$d" --path /30 ;;
        ws-*) printf '%s\n' --port "$port" --host ws.bench.test --tunnels "$WS_TUNNELS" \
                  --size "$(ws_size "$s")" --window "$WS_WINDOW" --procs "$WS_CLIENTS" \
                  --duration "$d" --warmup "$WARMUP" ;;
    esac
}

TARGET_LIST=(${TARGETS//,/ })
n=${#TARGET_LIST[@]}
say "targets: $TARGETS; proxies on core $PROXY_CPU; load generators, backends, redis on core $CLIENT_CPU"
say "$ROUNDS round(s) x ${DURATION}s (+${WARMUP}s warm-up)"
start_proxies
tls_checks
stop_proxies
sni_check() {            # sni_check SCENARIO: every name gets its own certificate, verified (and the
                         # certificate caches are filled)
    local t
    [ "$(tool_of "$1")" = sni ] || return 0
    for t in "${TARGET_LIST[@]}"; do
        runs "$t" "$1" || continue
        taskset -c "$CLIENT_CPU" "$SNI_BIN" check --port "$(port_of "$t" "$1")" --names "$SNI_NAMES" \
            --pattern "$SNI_PATTERN" --ca "$SNI_DIR/ca.pem" --path /30 ||
            die "$t/$1: a name did not get its certificate (see above)"
    done
}

measure_round() {        # measure_round SCENARIO ROUND: each target once, in a rotating order
    local s=$1 r=$2 i t tool order=()
    for i in $(seq 0 $((n - 1))); do order+=("${TARGET_LIST[$(((i + r - 1) % n))]}"); done
    for t in "${order[@]}"; do
        tool=$(tool_of "$s")
        runs "$t" "$s" || continue
        if { [ "$tool" = wrk ] || [ "$tool" = sni ]; } && [ "$WARMUP" -gt 0 ]; then
            mapfile -t args < <(load_args "$s" "$t" "$WARMUP")
            [ "$tool" = wrk ] && args=(wrk "${args[@]}")
            taskset -c "$CLIENT_CPU" "${args[@]}" >/dev/null 2>&1 ||
                die "warm-up failed for $t/$s: ${args[*]}"
            if [ "$s" = tls-mixed ]; then
                mapfile -t args < <(load_args tls-close "$t" "$WARMUP")
                taskset -c "$CLIENT_CPU" wrk "${args[@]}" >/dev/null 2>&1 ||
                    die "wrk warm-up failed for $t/$s: wrk ${args[*]}"
            fi
        fi
        # h2load: its calibration run is the warm-up; ws: the client warms up itself.
        mapfile -t args < <(load_args "$s" "$t" "$DURATION")
        python3 "$PY" run-one --out "$RUNS" --pass-name proto --scenario "$s" --tool "$tool" \
            --target "$t" --round "$r" --connections "$CONNECTIONS" --duration "$DURATION" \
            --proxy-pid "${PID[$t]}" --proxy-log "${PLOG[$t]}" \
            --backend-pid "$([ "$tool" = ws ] && echo "${PID[ws-echo]}" || echo "${PID[backend]}")" \
            --redis-pid "${PID[redis]}" --redis-port "$P_REDIS" --client-cpu "$CLIENT_CPU" \
            --beside-json "$(beside_args "$s" "$t" "$DURATION")" \
            -- "${args[@]}" || die "measured run failed: $t/$s round $r"
        check_alive "$t" "${PLOG[$t]}"
    done
}

for s in ${SCENARIOS//,/ }; do
    if [ "$s" = tls-redis ] || [ "$s" = tls-files ]; then
        if in_list tls-redis "$SCENARIOS" && in_list tls-files "$SCENARIOS"; then
            # Both: their rounds interleaved (Redis then files, files then Redis, ...), each with
            # freshly started proxies, so that the load of a shared machine weighs on both alike.
            [ "${sni_pair_done:-0}" = 1 ] && continue
            sni_pair_done=1
            for r in $(seq "$ROUNDS"); do
                pair=(tls-redis tls-files)
                [ $((r % 2)) = 0 ] && pair=(tls-files tls-redis)
                for sc in "${pair[@]}"; do
                    start_proxies "$sc"
                    sni_check "$sc"
                    measure_round "$sc" "$r"
                    stop_proxies
                done
            done
            continue
        fi
    fi
    start_proxies "$s"
    sni_check "$s"
    for r in $(seq "$ROUNDS"); do
        measure_round "$s" "$r"
    done
    stop_proxies
done

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "## hipache-tpc protocol bench (TLS, HTTP/2, WebSocket), $(date '+%Y-%m-%d %H:%M %Z')"
    echo
    python3 - "$OUT/machine.json" "$load_end" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{m['cpu']}, {m['cpus']} cores ({m.get('virtualization', '?')}), {m['os']}, kernel {m['kernel']}; "
      f"{m['nginx']}; {m['wrk'].split(' Copyright')[0]}; hipache-tpc {m['hipache_tpc_commit']}. "
      f"Load average at start {m['loadavg_at_start']}, at end {sys.argv[2]}.")
EOF
    echo
    echo "Proxies pinned to core $PROXY_CPU (one worker each); load generators, backend nginx,"
    echo "echo servers ($WS_BACKENDS processes) and redis on core $CLIENT_CPU. Certificate: $KEY_TYPE."
    if [ "$SNI" = 1 ]; then
        echo
        echo "tls-redis, tls-files: every request on a new connection (full TLS 1.3 handshake, no resumption),"
        echo "SNI rotating over $SNI_NAMES names, each with its own ECDSA P-256 certificate: from Redis"
        echo "(tls:<name>; nginx has no Redis certificates) or from files (hipache-tpc: certificatesDir,"
        echo "Redis certificates off; nginx: a server block per name). Load client: examples/sni_rotate.rs,"
        echo "$SNI_CLIENTS threads on core $CLIENT_CPU. \"proxy CPU µs/req\" is the proxy's CPU per handshake + request."
    fi
    echo
    echo '```'
    cat "$OUT/tls/negotiated.txt"
    echo '```'
    echo
    python3 "$PY" summarize "$RUNS"
} >"$OUT/summary.md"
[ "$(dirname "$OUT")" = "$HERE/results" ] && ln -sfn "$(basename "$OUT")" "$HERE/results/latest-proto"
cat "$OUT/summary.md"
say "raw rows: $RUNS; summary: $OUT/summary.md"
