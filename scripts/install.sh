#!/usr/bin/env bash
# Installs hipache-tpc as a systemd service. Idempotent: run it again after `cargo build --release` to
# upgrade the binary (then `systemctl reload hipache-tpc` for a zero-downtime switch), it never
# overwrites an existing configuration.
#
#   scripts/install.sh [--dry-run] [--binary PATH] [--config PATH] [--user NAME] [--root DIR] [--no-enable]
#
#   --dry-run     print what would be done, change nothing
#   --binary      the binary to install (default: target/release/hipache-tpc)
#   --config      configuration installed as /etc/hipache-tpc/config.json when none exists yet
#                 (default: config/systemd/config.json: port 80 on all addresses, Redis on localhost)
#   --user        the account the proxy switches to (default www-data; must match "user" in the config);
#                 created as a system user if missing
#   --root        install under DIR instead of / (packaging, tests): no user creation, no systemctl
#   --no-enable   install the unit without enabling it
#
# What it does:
#   /usr/local/bin/hipache-tpc                   the binary (written beside, then renamed: a running
#                                                process keeps its old file, a reload picks the new one)
#   /etc/hipache-tpc/config.json                 root:USER 0640 (the user reads it again on reload)
#   /var/log/hipache/                            USER:USER 0750 (the access log is reopened as USER)
#   /etc/systemd/system/hipache-tpc.service      then daemon-reload and enable
#   /etc/logrotate.d/hipache-tpc                 daily rotation, SIGUSR1 to reopen
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=0
binary=target/release/hipache-tpc
config=config/systemd/config.json
user=www-data
root=
enable=1
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --binary) binary=$2; shift ;;
        --config) config=$2; shift ;;
        --user) user=$2; shift ;;
        --root) root=${2%/}; shift ;;
        --no-enable) enable=0 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "install: $*"; }
run() {
    if [ "$dry_run" = 1 ]; then
        echo "  would run: $*"
    else
        "$@"
    fi
}

[ -f "$binary" ] || { echo "install: $binary not found: run cargo build --release first" >&2; exit 1; }
[ -f "$config" ] || { echo "install: $config not found" >&2; exit 1; }
# The test build (target/release/examples/hipache-tpc-fault-injection, made by `cargo test`) carries
# this marker; the real binary never does.
if grep -aq HIPACHE-TPC-TEST-BUILD-ARMS-FAULT-INJECTION "$binary"; then
    echo "install: $binary is a test build (fault injection can be armed): install target/release/hipache-tpc from cargo build --release" >&2
    exit 1
fi
if [ "$dry_run" = 0 ] && [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    echo "install: run as root (or with --dry-run, or --root DIR)" >&2
    exit 1
fi

# The account.
if [ -z "$root" ]; then
    if id -u "$user" >/dev/null 2>&1; then
        say "user $user exists"
    else
        say "creating system user $user"
        run useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$user"
    fi
fi
owner=$user
group=$user
if [ -z "$root" ] && id -u "$user" >/dev/null 2>&1; then
    group=$(id -gn "$user")
elif [ -n "$root" ]; then
    # A staging root: ownership is left to the package or the test.
    owner=$(id -un); group=$(id -gn)
fi

# The binary, atomically.
bin_dir=$root/usr/local/bin
run install -d -m 0755 "$bin_dir"
if [ -f "$bin_dir/hipache-tpc" ] && cmp -s "$binary" "$bin_dir/hipache-tpc"; then
    say "$bin_dir/hipache-tpc is up to date"
else
    say "installing $binary as $bin_dir/hipache-tpc"
    run install -m 0755 "$binary" "$bin_dir/.hipache-tpc.new"
    run mv -f "$bin_dir/.hipache-tpc.new" "$bin_dir/hipache-tpc"
fi

# The configuration (never overwritten).
etc=$root/etc/hipache-tpc
run install -d -m 0750 -o root -g "$group" "$etc" 2>/dev/null || run install -d -m 0750 "$etc"
if [ -f "$etc/config.json" ]; then
    say "$etc/config.json exists: kept"
else
    say "installing $config as $etc/config.json"
    run install -m 0640 -o root -g "$group" "$config" "$etc/config.json" 2>/dev/null \
        || run install -m 0640 "$config" "$etc/config.json"
fi

# The log folder: writable by the user, who reopens (recreates) the access log after rotation.
logs=$root/var/log/hipache
run install -d -m 0750 -o "$owner" -g "$group" "$logs" 2>/dev/null || run install -d -m 0750 "$logs"

# Log rotation.
rotate=$root/etc/logrotate.d
run install -d -m 0755 "$rotate"
rotate_text="/var/log/hipache/*.log {
    daily
    rotate 14
    compress
    delaycompress
    missingok
    notifempty
    create 0640 $owner $group
    sharedscripts
    postrotate
        systemctl kill --kill-whom=all --signal=USR1 hipache-tpc.service >/dev/null 2>&1 || true
    endscript
}"
if [ -f "$rotate/hipache-tpc" ] && [ "$(cat "$rotate/hipache-tpc")" = "$rotate_text" ]; then
    say "$rotate/hipache-tpc is up to date"
elif [ "$dry_run" = 1 ]; then
    echo "  would write $rotate/hipache-tpc"
else
    say "writing $rotate/hipache-tpc"
    printf '%s\n' "$rotate_text" > "$rotate/hipache-tpc"
fi

# The unit.
units=$root/etc/systemd/system
run install -d -m 0755 "$units"
if [ -f "$units/hipache-tpc.service" ] && cmp -s config/systemd/hipache-tpc.service "$units/hipache-tpc.service"; then
    say "$units/hipache-tpc.service is up to date"
else
    say "installing $units/hipache-tpc.service"
    run install -m 0644 config/systemd/hipache-tpc.service "$units/hipache-tpc.service"
fi
docs=$root/usr/local/share/doc/hipache-tpc
run install -d -m 0755 "$docs"
run install -m 0644 README.md "$docs/README.md"

if [ -n "$root" ]; then
    say "staged under $root (no systemctl)"
elif [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ]; then
    say "systemd is not running here: the unit is installed but not enabled"
else
    run systemctl daemon-reload
    if [ "$enable" = 1 ]; then
        run systemctl enable hipache-tpc.service
        say "enabled; start with: systemctl start hipache-tpc (reload: systemctl reload hipache-tpc)"
    fi
fi
say "done"
