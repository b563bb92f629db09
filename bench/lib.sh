# bench/lib.sh: what bench/run.sh and bench/dns.sh share (sourced, not run).
# Needs PY (a python3) for free_port and start_dns, and the repository root
# as the current directory.
# shellcheck shell=sh

stop_pid() {
    # $1: a PID this script started (or its helper did).  SIGTERM, then
    # SIGKILL after 10 s.
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || return 0
    i=0
    while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}

free_port() {
    "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

mb() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f MB", k / 1024 }'; }

# Sum a field of /proc/PID/status or smaps_rollup (kB) over a process and
# its children, in case the daemon forks helpers (Postfix's master: every
# daemon of the instance).
mem_kb() {
    field=$1 file=$2 pid=$3
    pids="$pid $(cat /proc/"$pid"/task/*/children 2>/dev/null)"
    total=0
    for p in $pids; do
        v=$(awk -v f="$field:" '$1 == f { print $2; exit }' /proc/"$p"/"$file" 2>/dev/null)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}
rss_kb() { mem_kb VmRSS status "$1"; }
pss_kb() { mem_kb Pss smaps_rollup "$1"; }

# CPU ticks of a process, its live children and the children it has
# reaped (cutime + cstime): for a server that forks (Postfix).
tree_ticks() {
    [ -n "$1" ] || { echo 0; return; }
    t=$(awk '{ print $14 + $15 + $16 + $17 }' /proc/"$1"/stat 2>/dev/null)
    t=${t:-0}
    kids=$(cat /proc/"$1"/task/*/children 2>/dev/null)
    for p in $kids; do
        c=$(awk '{ print $14 + $15 }' /proc/"$p"/stat 2>/dev/null)
        t=$((t + ${c:-0}))
    done
    echo "$t"
}

# CPU time (user + system, all threads) of a process so far, in clock ticks.
cpu_ticks() {
    [ -n "$1" ] && awk '{ print $14 + $15 }' /proc/"$1"/stat 2>/dev/null || echo 0
}
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

# start_dns DIR DATASET...: the test DNS server (bench/dnsworld.py) in DIR.
# Sets DNS_PID (the helper; stop_dns stops it), DNS_PORT and UNBOUND_PID.
# Returns 1, with the helper's output on stderr, when it did not start.
start_dns() {
    dir=$1
    shift
    mkdir -p "$dir"
    "$PY" "$PWD/bench/dnsworld.py" "$dir" "$@" >"$dir/helper.out" 2>&1 &
    DNS_PID=$!
    i=0
    while [ $i -lt 150 ] && [ ! -s "$dir/ready" ] && kill -0 "$DNS_PID" 2>/dev/null; do
        sleep 0.1
        i=$((i + 1))
    done
    if [ ! -s "$dir/ready" ]; then
        echo "bench: the test DNS server did not start:" >&2
        sed 's/^/    /' "$dir/helper.out" >&2
        return 1
    fi
    read -r DNS_PORT UNBOUND_PID <"$dir/ready"
}

stop_dns() {
    stop_pid "$DNS_PID"
    DNS_PID=
    # The helper stops unbound itself; this only catches a helper that died.
    if [ -n "${UNBOUND_PID:-}" ] && kill -0 "$UNBOUND_PID" 2>/dev/null &&
        grep -q unbound /proc/"$UNBOUND_PID"/cmdline 2>/dev/null; then
        stop_pid "$UNBOUND_PID"
    fi
    UNBOUND_PID=
}

# Wall-clock seconds with nanoseconds, for elapsed times.
now_s() { date +%s.%N; }

# Wait until a moat-bench idle run (background PID $1, report file $2)
# holds its connections (it prints "idle: "), at most $3 tenths of a
# second.  Status 0 when it does.
wait_idle() {
    _i=0
    while [ $_i -lt "$3" ] && ! grep -q '^idle: ' "$2" && kill -0 "$1" 2>/dev/null; do
        sleep 0.1
        _i=$((_i + 1))
    done
    grep -q '^idle: ' "$2"
}
# elapsed T0 T1 [DECIMALS]: T1 - T0 in seconds, 2 decimals unless told
# (0: whole seconds, rounded down, for comparisons in sh).
elapsed() {
    awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN {
        if (d == 0) printf "%d\n", b - a; else printf "%.*f\n", d, b - a }'
}

# settle QUEUE_DIR: until the daemon has moved on what the last run queued
# (nothing left in incoming/ or active/; at most 10 s).
settle() {
    i=0
    while [ $i -lt 100 ]; do
        n=$(find "$1/incoming" "$1/active" -type f 2>/dev/null | wc -l)
        [ "$n" -eq 0 ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    echo "bench: $n messages still queued after 10 s; going on" >&2
}

# wait_smtp PORT PID [TENTHS]: is an SMTP server answering on
# 127.0.0.1:PORT?  Waits up to TENTHS tenths of a second (default 100);
# PID must stay alive meanwhile.  Needs $BENCH (moat-bench).
wait_smtp() {
    i=0
    while [ $i -lt "${3:-100}" ]; do
        if ! kill -0 "$2" 2>/dev/null; then
            return 1
        fi
        if "$BENCH" idle -p "$1" -n 1 --hold 0 -T 3 -t 2 -q >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
