# Shared by bench/run.sh and bench/profile.sh (sourced, not run). Expects HERE (bench/), ROOT (the
# repository), PROG (the script's name for messages) and `set -euo pipefail`.

PY="$HERE/lib/bench.py"

die() { echo "$PROG: $*" >&2; exit 1; }
say() { echo "$PROG: $*" >&2; }
in_list() { case ",$2," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------------------------------------
# Tools: install what is missing (as root, with apt-get), or say what to install.
# ensure_tools INSTALL(0|1) COMMAND...
ensure_tools() {
    local install=$1 c pkgs created_policy rc
    shift
    local -A pkg=([nginx]=nginx [haproxy]=haproxy [wrk]=wrk [redis-server]=redis-server
                  [redis-cli]=redis-tools [curl]=curl [taskset]=util-linux [python3]=python3
                  [h2load]=nghttp2-client [perf]=linux-perf [strace]=strace [valgrind]=valgrind)
    export PATH="$PATH:/usr/sbin:/sbin"
    local missing=()
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || missing+=("${pkg[$c]:-$c}")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    if [ "$install" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing missing packages with apt-get: $pkgs"
        # Keep the packages' own services (nginx on :80, redis on :6379, haproxy) from being
        # started by the installation: the bench starts private instances and must leave no
        # daemon behind. policy-rc.d is removed again if we created it.
        created_policy=0
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            created_policy=1
        fi
        rc=0
        # shellcheck disable=SC2086
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs; } || rc=$?
        [ "$created_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
        [ "$rc" = 0 ] || die "apt-get install $pkgs failed"
    else
        die "missing tools; install them with: sudo apt-get install $pkgs"
    fi
    for c in "$@"; do command -v "$c" >/dev/null 2>&1 || die "$c is still missing after installing $pkgs"; done
}

# build_hipache BUILD(0|1): sets HIPACHE_BIN (keeps it when already set).
build_hipache() {
    if [ -z "${HIPACHE_BIN:-}" ]; then
        HIPACHE_BIN="$ROOT/target/release/hipache-tpc"
        if [ "$1" = 1 ]; then
            command -v cargo >/dev/null 2>&1 || die "cargo is missing: install a Rust toolchain (https://rustup.rs), or pass --no-build with HIPACHE_BIN=..."
            say "building the proxy: cargo build --release"
            (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
        fi
    fi
    [ -x "$HIPACHE_BIN" ] || die "no hipache-tpc binary at $HIPACHE_BIN (build it, or set HIPACHE_BIN)"
}

# build_floor BUILD(0|1): sets FLOOR_BIN, the minimal relay that measures the cost floor of a proxy
# (examples/floor_relay.rs; keeps FLOOR_BIN when already set).
build_floor() {
    if [ -z "${FLOOR_BIN:-}" ]; then
        FLOOR_BIN="$ROOT/target/release/examples/floor_relay"
        if [ "$1" = 1 ]; then
            say "building the floor relay: cargo build --release --example floor_relay"
            (cd "$ROOT" && cargo build --release --quiet --example floor_relay) ||
                die "cargo build --release --example floor_relay failed"
        fi
    fi
    [ -x "$FLOOR_BIN" ] || die "no floor relay at $FLOOR_BIN (build it with cargo build --release --example floor_relay, or set FLOOR_BIN)"
}

# build_sni_client BUILD(0|1): sets SNI_BIN, the load client that rotates SNI names over new TLS
# connections (examples/sni_rotate.rs; keeps SNI_BIN when already set).
build_sni_client() {
    if [ -z "${SNI_BIN:-}" ]; then
        SNI_BIN="$ROOT/target/release/examples/sni_rotate"
        if [ "$1" = 1 ]; then
            say "building the SNI load client: cargo build --release --example sni_rotate"
            (cd "$ROOT" && cargo build --release --quiet --example sni_rotate) ||
                die "cargo build --release --example sni_rotate failed"
        fi
    fi
    [ -x "$SNI_BIN" ] || die "no SNI load client at $SNI_BIN (build it with cargo build --release --example sni_rotate, or set SNI_BIN)"
}

# check_cpu_lists PROXY_LIST CLIENT_LIST WORKERS WRK_THREADS: the two taskset lists exist on this
# machine, do not overlap, and hold at least WORKERS and WRK_THREADS cores.
expand_cpus() {      # expand_cpus LIST: one core number per line (taskset's 0-3,5 form)
    local part a b
    for part in ${1//,/ }; do
        [[ $part =~ ^([0-9]+)(-([0-9]+))?$ ]] || die "bad core list '$1' (examples: 0, 0-3, 0,2)"
        a=${BASH_REMATCH[1]} b=${BASH_REMATCH[3]:-${BASH_REMATCH[1]}}
        [ "$a" -le "$b" ] || die "bad core range '$part' in '$1'"
        seq "$a" "$b"
    done
}
check_cpu_lists() {
    local ncpu c n_proxy n_client l
    ncpu=$(nproc --all 2>/dev/null || getconf _NPROCESSORS_ONLN)
    # Checked here, not in expand_cpus, whose die would only end a command substitution.
    for l in "$1" "$2"; do
        [[ $l =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] || die "bad core list '$l' (examples: 0, 0-3, 0,2)"
        for c in ${l//,/ }; do
            [ "${c%-*}" -le "${c#*-}" ] || die "bad core range '$c' in '$l'"
            [ "${c#*-}" -lt "$ncpu" ] || die "core ${c#*-} does not exist (this machine has $ncpu: 0-$((ncpu - 1)))"
        done
    done
    [ -z "$(comm -12 <(expand_cpus "$1" | sort -u) <(expand_cpus "$2" | sort -u))" ] ||
        die "the proxy cores ($1) and the client cores ($2) must not overlap"
    n_proxy=$(expand_cpus "$1" | sort -u | wc -l)
    n_client=$(expand_cpus "$2" | sort -u | wc -l)
    [ "$3" -ge 1 ] && [ "$3" -le "$n_proxy" ] ||
        die "--workers $3 needs as many proxy cores (--proxy-cpus $1 has $n_proxy)"
    [ "$4" -ge 1 ] && [ "$4" -le "$n_client" ] ||
        die "--wrk-threads $4 needs as many client cores (--client-cpus $2 has $n_client)"
}

# ---------------------------------------------------------------------------------------------
# Processes: every process started goes into PID; the EXIT trap stops them all.
declare -A PID=()    # name -> pid of every process this script started and that may still run
stop_proc() {        # stop_proc NAME: SIGTERM, wait up to 5 s, then SIGKILL
    local name=$1 pid=${PID[$1]:-}
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name (pid $pid) did not stop on SIGTERM; sending SIGKILL"
            # nginx's worker is a child of its master: kill the children too.
            pkill -KILL -P "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    unset "PID[$name]"
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local name
    for name in "${!PID[@]}"; do stop_proc "$name"; done
    exit "$rc"
}
trap cleanup EXIT
# A command that fails under `set -e` says where, instead of ending the script silently.
set -E
trap 'echo "$PROG: failed (exit $?) at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND" >&2' ERR
trap 'say "interrupted"; exit 130' INT TERM

start_proc() {       # start_proc NAME CPU LOGFILE CMD...: start pinned, in the background
    local name=$1 cpu=$2 log=$3
    shift 3
    taskset -c "$cpu" "$@" >>"$log" 2>&1 &
    PID[$name]=$!
}
check_alive() {      # check_alive NAME LOGFILE
    kill -0 "${PID[$1]}" 2>/dev/null && return 0
    echo "$PROG: $1 exited; the end of its log ($2):" >&2
    tail -n 20 "$2" >&2 || true
    unset "PID[$1]"
    exit 1
}
wait_http() {        # wait_http NAME LOGFILE URL [HOST]: until a 200 answer, at most 10 s
    local name=$1 log=$2 url=$3 host=${4:-}
    local args=(-s -o /dev/null -w '%{http_code}' --max-time 2)
    [ -n "$host" ] && args+=(-H "Host: $host")
    for _ in $(seq 100); do
        check_alive "$name" "$log"
        [ "$(curl "${args[@]}" "$url" 2>/dev/null || true)" = 200 ] && return 0
        sleep 0.1
    done
    die "$name does not answer 200 on $url${host:+ (Host: $host)} within 10 s; see $log"
}
assert_port_free() { # a port chosen free may have been taken since: check right before use
    python3 - "$1" <<'EOF' || die "port $1 is taken; run again"
import socket, sys
# SO_REUSEADDR: connections of an earlier pass in TIME_WAIT do not count, a listener does.
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.close()
EOF
}

# raise_nofile NEEDED: raise the open-file limit; sets NOFILE and MAXCONN (for nginx and HAProxy).
raise_nofile() {
    if [ "$(id -u)" = 0 ]; then ulimit -Hn 1048576 2>/dev/null || true; fi
    ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
    NOFILE=$(ulimit -Sn)
    [ "$NOFILE" = unlimited ] && NOFILE=1048576
    [ "$NOFILE" -ge "$1" ] ||
        die "only $NOFILE file descriptors allowed (ulimit -n), $1 needed; lower --idle-conns or raise the limit"
    [ "$NOFILE" -gt 65536 ] && NOFILE=65536
    MAXCONN=$(((NOFILE - 200) / 2))
}

# ---------------------------------------------------------------------------------------------
# Redis and the backend, both on the client core.

# start_redis CPU PORT DIR
start_redis() {
    local cpu=$1 port=$2 dir=$3
    assert_port_free "$port"
    start_proc redis "$cpu" "$dir/logs/redis.log" \
        redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$dir" \
        --protected-mode no --daemonize no
    for _ in $(seq 50); do
        check_alive redis "$dir/logs/redis.log"
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "redis-server does not answer; see $dir/logs/redis.log"
}

# start_backend CPU PORT_A PORT_B DIR: one nginx worker serving /30 (30 bytes), /16k, /1m on
# both ports.
start_backend() {
    local cpu=$1 pa=$2 pb=$3 dir=$4 user=""
    mkdir -p "$dir/www" "$dir/backend" "$dir/logs"
    printf 'hipache-tpc bench: 30 bytes..\n' >"$dir/www/30"
    [ "$(stat -c %s "$dir/www/30")" = 30 ] || die "the 30-byte body is not 30 bytes"
    head -c 16384 /dev/zero | tr '\0' 'x' >"$dir/www/16k"
    head -c 1048576 /dev/zero | tr '\0' 'y' >"$dir/www/1m"
    printf 'hipache-tpc bench: uploaded.\n' >"$dir/www/upload"   # (served only to GET)
    chmod -R a+rX "$dir/www"
    [ "$(id -u)" = 0 ] && user="user root;"
    cat >"$dir/backend/nginx.conf" <<EOF
# Backend: one nginx worker serving fixed bodies, on the client core.
$user
worker_processes 1;
daemon off;
master_process on;
pid $dir/backend/nginx.pid;
error_log $dir/logs/backend-error.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $MAXCONN; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    open_file_cache max=16 inactive=3600s;
    open_file_cache_valid 3600s;
    server {
        listen 127.0.0.1:$pa default_server backlog=4096;
        listen 127.0.0.1:$pb default_server backlog=4096;
        # The same bodies on a unix socket, for the unix scenario (unix: backends).
        listen unix:$dir/backend/http.sock default_server backlog=4096;
        server_name _;
        root $dir/www;
        # The up1m scenario: the whole request body is read (into memory, through the mirror
        # module's request_body) before a 200 with a short body (static files refuse POST with 405,
        # turned into the answer here).
        location = /upload {
            client_max_body_size 2m;
            client_body_buffer_size 2m;
            mirror /_mirror;
            mirror_request_body on;
            error_page 405 =200 @uploaded;
        }
        location @uploaded {
            return 200 "hipache-tpc bench: uploaded.\n";
        }
        location = /_mirror {
            internal;
            return 204;
        }
    }
}
EOF
    assert_port_free "$pa"
    assert_port_free "$pb"
    nginx -t -q -p "$dir/backend/" -e "$dir/logs/backend-error.log" -c "$dir/backend/nginx.conf" ||
        die "the backend's nginx configuration is rejected ($dir/backend/nginx.conf)"
    start_proc backend "$cpu" "$dir/logs/backend-stderr.log" \
        nginx -p "$dir/backend/" -e "$dir/logs/backend-error.log" -c "$dir/backend/nginx.conf"
    wait_http backend "$dir/logs/backend-stderr.log" "http://127.0.0.1:$pa/30"
    wait_http backend "$dir/logs/backend-stderr.log" "http://127.0.0.1:$pb/30"
}

# write_nginx_proxy_conf DIR PORT BACKEND_PORT ACCESS_LOG(off or a path) ERROR_LOG [MAIN_DIRECTIVES]
# One nginx worker as a reverse proxy with upstream keep-alive and the same forwarded headers as
# hipache-tpc. The access log, when on, is buffered like hipache-tpc's (32 KiB or 200 ms).
write_nginx_proxy_conf() {
    local d=$1 port=$2 bport=$3 alog="access_log off;" elog=$5 main=${6:-} user=""
    mkdir -p "$d"
    [ "$4" = off ] || alog="access_log $4 combined buffer=32k flush=200ms;"
    [ "$(id -u)" = 0 ] && user="user root;"
    local unix_upstream="127.0.0.1:$bport"
    [ -n "${BENCH_UNIX_SOCK:-}" ] && unix_upstream="unix:$BENCH_UNIX_SOCK"
    cat >"$d/nginx.conf" <<EOF
# Proxy: ${WORKERS:-1} nginx worker(s), upstream keep-alive, the same forwarded headers as hipache-tpc.
$user
worker_processes ${WORKERS:-1};
daemon off;
$main
pid $d/nginx.pid;
error_log $elog warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $MAXCONN; }
http {
    $alog
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    upstream backend {
        server 127.0.0.1:$bport;
        keepalive 1024;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    # The unix scenario: Host unix.bench.test goes to the backend's unix socket (BENCH_UNIX_SOCK).
    upstream backend_unix {
        server $unix_upstream;
        keepalive 1024;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    map \$http_host \$bench_upstream {
        default backend;
        unix.bench.test backend_unix;
    }
    server {
        # Catch-all: every Host (vhosts and churn scenarios included) goes to the one upstream.
        listen 127.0.0.1:$port default_server backlog=4096;
        server_name _;
        location / {
            proxy_pass http://\$bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Protocol \$scheme;
            proxy_set_header X-Forwarded-Port \$server_port;
            proxy_buffer_size 16k;
            proxy_buffers 4 64k;
            proxy_busy_buffers_size 64k;
            proxy_max_temp_file_size 0;
            # up1m: uploads of 1 MiB are read into memory (nginx's default request buffering), not
            # into temporary files.
            client_max_body_size 2m;
            client_body_buffer_size 1m;
        }
    }
}
EOF
    nginx -t -q -p "$d/" -e "$elog" -c "$d/nginx.conf" || die "nginx rejects $d/nginx.conf"
}

# write_hipache_conf FILE PORT REDIS_PORT ACCESS_LOG(false or a path) LRU_SIZE LRU_TTL
# ("user": "root": the runner runs as root and writes logs into the results folder; without it the proxy
# would switch to www-data, which cannot write there, and refuse to start.)
write_hipache_conf() {
    local alog=false
    [ "$4" = false ] || alog="\"$4\""
    cat >"$1" <<EOF
{
    "server": {
        "workers": ${WORKERS:-1},
        "accessLog": $alog,
        "maxSockets": 1024,
        "tcpTimeout": 300,
        "lruCache": { "size": $5, "ttl": $6 }
    },
    "http": { "port": $2, "bind": ["127.0.0.1"] },
    "driver": "redis://127.0.0.1:$3",
    "user": "root"
}
EOF
    "$HIPACHE_BIN" --dry -c "$1" >"$1.dry" 2>&1 || die "hipache-tpc rejects $1: $(cat "$1.dry")"
}
