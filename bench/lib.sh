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
