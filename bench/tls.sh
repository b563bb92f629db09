#!/bin/sh
# bench/tls.sh: TLS on the SMTP server (src/tls, docs/tls.md) — full and
# resumed TLS handshakes per second over STARTTLS and over implicit TLS,
# accepted messages per second over STARTTLS next to the same load in
# plaintext, and what idle TLS sessions cost moat in memory.
#
# Starts its own moat (release build) on two free loopback ports — one
# smtpd service with STARTTLS (smtpd_tls_security_level = may) and one
# with implicit TLS (-o smtpd_tls_wrappermode=yes) — with an RSA-2048
# certificate the openssl command makes in the temp dir, drives it with
# moat-bench (handshake and send modes, --starttls, --tls, --resume),
# reads its memory from /proc, stops it by PID and removes the temp dir.
# Loopback only.  It prints figures and never judges them: exit 0 unless
# a step could not run at all.  About 30 s to a minute.
#
# Knobs (environment): BENCH_TLS_HANDSHAKES per handshake run [4000],
# BENCH_TLS_MESSAGES per send run [6000], BENCH_TLS_IDLE idle TLS
# sessions [1000], BENCH_SECONDS per-run limit [20], BENCH_SIZE [5120],
# BENCH_KEEP=1 keeps the temp dir, MOAT_BIN another moat binary.
#
# ulimit -n is not POSIX, but dash and bash both have it.
# shellcheck disable=SC3045
set -u

cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
. bench/lib.sh

MOAT=${MOAT_BIN:-$PWD/build/rel/moat}
BENCH=$PWD/build/rel/moat-bench
NHS=${BENCH_TLS_HANDSHAKES:-4000}
NMSG=${BENCH_TLS_MESSAGES:-6000}
NIDLE=${BENCH_TLS_IDLE:-1000}
SECS=${BENCH_SECONDS:-20}
SIZE=${BENCH_SIZE:-5120}
for b in "$MOAT" "$BENCH"; do
    if [ ! -x "$b" ]; then
        echo "bench: $b is missing; run make bench (or make $b)" >&2
        exit 1
    fi
done
if ! command -v openssl >/dev/null; then
    echo "bench: the openssl command is missing (scripts/deps.sh installs it)" >&2
    exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench-tls.XXXXXX") || exit 1
MOAT_PID=
BG_PID=
failed=0
cleanup() {
    stop_pid "$BG_PID"
    stop_pid "$MOAT_PID"
    [ "${BENCH_KEEP:-0}" = 1 ] && echo "bench: kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

need_fd=$((NIDLE + 1000))
cur=$(ulimit -n)
if [ "$cur" != unlimited ] && [ "$cur" -lt "$need_fd" ]; then
    ulimit -n "$need_fd" 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
fi

# --- the certificate: made here, removed with $TMP, never a real host's ---
mkdir -p "$TMP/conf" "$TMP/queue" "$TMP/data" "$TMP/mail"
if ! openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/conf/key.pem" -out "$TMP/conf/cert.pem" \
    -days 2 -subj "/CN=bench.example.test" -addext "subjectAltName=DNS:bench.example.test" \
    >"$TMP/openssl.out" 2>&1; then
    echo "bench: openssl could not make a test certificate:" >&2
    sed 's/^/    /' "$TMP/openssl.out" >&2
    exit 1
fi
cat "$TMP/conf/key.pem" "$TMP/conf/cert.pem" >"$TMP/conf/chain.pem"
chmod 600 "$TMP/conf/key.pem" "$TMP/conf/chain.pem"

# --- the daemon -------------------------------------------------------------
SPORT=$(free_port) || { echo "bench: no free port" >&2; exit 1; }
TPORT=$(free_port) || { echo "bench: no free port" >&2; exit 1; }
cat >"$TMP/conf/main.cf" <<EOF
# moat TLS benchmark instance (bench/tls.sh); removed after the run
myhostname = bench.example.test
mydestination = example.test
mynetworks = 127.0.0.1/32
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
# The load is 100 connections from one address at a time.
smtpd_client_connection_count_limit = 0
queue_directory = $TMP/queue
data_directory = $TMP/data
mail_spool_directory = $TMP/mail/
maillog_file = $TMP/maillog
smtpd_tls_security_level = may
smtpd_tls_chain_files = $TMP/conf/chain.pem
smtpd_tls_received_header = yes
EOF
cat >"$TMP/conf/master.cf" <<EOF
127.0.0.1:$SPORT inet n - n - - smtpd
127.0.0.1:$TPORT inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
EOF

"$MOAT" serve -c "$TMP/conf" >"$TMP/moat.out" 2>&1 &
MOAT_PID=$!
up=0
i=0
while [ $i -lt 100 ] && kill -0 "$MOAT_PID" 2>/dev/null; do
    if "$BENCH" handshake --tls -p "$TPORT" -n 1 -c 1 -T 3 -t 2 -q >/dev/null 2>&1 &&
        "$BENCH" handshake --starttls -p "$SPORT" -n 1 -c 1 -T 3 -t 2 -q >/dev/null 2>&1; then
        up=1
        break
    fi
    sleep 0.1
    i=$((i + 1))
done
if [ "$up" != 1 ]; then
    echo "bench: moat did not answer STARTTLS on 127.0.0.1:$SPORT and TLS on 127.0.0.1:$TPORT" >&2
    tail -20 "$TMP/moat.out" "$TMP/maillog" 2>/dev/null >&2
    exit 1
fi
sleep 0.5

# The value of key $2 in run $1's RESULT line.
kv() {
    sed -n 's/^RESULT //p' "$TMP/$1.out" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

# run NAME ARGS...: one moat-bench run, its output in $TMP/NAME.out, moat's
# CPU ticks over it in $TMP/NAME.ticks.
run() {
    name=$1
    shift
    printf 'bench: %s %-14s moat-bench %s\n' "$(date +%T)" "$name" "$*" >&2
    t0=$(cpu_ticks "$MOAT_PID")
    "$BENCH" "$@" --kv -T "$SECS" >"$TMP/$name.out" 2>&1
    rc=$?
    t1=$(cpu_ticks "$MOAT_PID")
    echo $((t1 - t0)) >"$TMP/$name.ticks"
    if [ $rc -ge 2 ] || ! grep -q '^RESULT ' "$TMP/$name.out"; then
        echo "bench: $name did not run (exit $rc):" >&2
        sed 's/^/    /' "$TMP/$name.out" >&2
        failed=1
    fi
}


# --- memory: idle TLS sessions on the fresh daemon ---------------------------
rss_start=$(rss_kb "$MOAT_PID")
rss_idle=
echo "bench: $(date +%T) idle-tls       moat-bench idle --starttls -n $NIDLE -c 100" >&2
: >"$TMP/idle.out"
"$BENCH" idle --starttls -p "$SPORT" -b 127.0.0.9 -n "$NIDLE" -c 100 --hold 3 -T 40 --kv \
    >"$TMP/idle.out" 2>&1 &
BG_PID=$!
if wait_idle "$BG_PID" "$TMP/idle.out" 300; then
    sleep 1
    rss_idle=$(rss_kb "$MOAT_PID")
fi
wait "$BG_PID"
BG_PID=
idle_open=$(sed -n 's/^idle: \([0-9]*\) of.*/\1/p' "$TMP/idle.out")

# --- handshakes --------------------------------------------------------------
H="-n $NHS -c 100"
run hs_starttls handshake --starttls -p "$SPORT" -b 127.0.0.10 $H
run hs_starttls_r handshake --starttls --resume -p "$SPORT" -b 127.0.0.11 $H
run hs_tls handshake --tls -p "$TPORT" -b 127.0.0.12 $H
run hs_tls_r handshake --tls --resume -p "$TPORT" -b 127.0.0.13 $H

# --- messages: plaintext, STARTTLS (full), STARTTLS (resumed) ----------------
M="-n $NMSG -c 100 -s $SIZE -r bench@example.test"
run warmup send -p "$SPORT" -b 127.0.0.14 -n 200 -c 10 -s "$SIZE" -r bench@example.test
settle "$TMP/queue"
run send_plain send -p "$SPORT" -b 127.0.0.15 $M
settle "$TMP/queue"
run send_starttls send --starttls -p "$SPORT" -b 127.0.0.16 $M
settle "$TMP/queue"
run send_starttls_r send --starttls --resume -p "$SPORT" -b 127.0.0.17 $M
settle "$TMP/queue"
rss_after=$(rss_kb "$MOAT_PID")
hwm=$(awk '$1 == "VmHWM:" { print $2 }' /proc/"$MOAT_PID"/status 2>/dev/null)

stop_pid "$MOAT_PID"
MOAT_PID=

# --- the table ----------------------------------------------------------------
row() {   # NAME LABEL
    if ! grep -q '^RESULT ' "$TMP/$1.out" 2>/dev/null; then
        printf '%-40s %s\n' "$2" "did not run"
        return
    fi
    el=$(kv "$1" elapsed_s)
    scpu=$(awk -v t="$(cat "$TMP/$1.ticks" 2>/dev/null)" -v hz="$HZ" -v e="$el" \
        'BEGIN { if (e > 0 && t != "") printf "%.0f%%", 100 * t / hz / e; else printf "-" }')
    p50=$(kv "$1" hs_p50_ms)
    p99=$(kv "$1" hs_p99_ms)
    [ -n "$(kv "$1" txn_p50_ms)" ] && [ "$(kv "$1" tls)" = "" ] && p50=$(kv "$1" txn_p50_ms)
    [ -n "$(kv "$1" txn_p99_ms)" ] && [ "$(kv "$1" tls)" = "" ] && p99=$(kv "$1" txn_p99_ms)
    full=$(kv "$1" tls_full)
    res=$(kv "$1" tls_resumed)
    printf '%-40s %9s/s %8s %8s %13s %11s %6s %5s\n' "$2" "$(kv "$1" rate)" "${p50:--}" "${p99:--}" \
        "$(kv "$1" ok)/$(kv "$1" count)" "${full:--}/${res:--}" \
        "$(($(kv "$1" reply_errors) + $(kv "$1" other_errors)))" "$scpu"
}

echo
echo "TLS on the SMTP server: RSA-2048 certificate, TLSv1.3, concurrency 100 (bench/tls.sh)"
printf '%-40s %11s %8s %8s %13s %11s %6s %5s\n' "" "rate" "p50 ms" "p99 ms" "ok/total" "full/resumed" \
    "errors" "moat"
row hs_starttls "handshakes, STARTTLS, full"
row hs_starttls_r "handshakes, STARTTLS, resumed"
row hs_tls "handshakes, implicit TLS, full"
row hs_tls_r "handshakes, implicit TLS, resumed"
row send_plain "messages ${SIZE} B, plaintext"
row send_starttls "messages ${SIZE} B, STARTTLS, full"
row send_starttls_r "messages ${SIZE} B, STARTTLS, resumed"
echo "(handshake rows: p50/p99 of the handshake alone; message rows: of the TLS handshake, or of"
echo " MAIL..250 in plaintext; \"resumed\" runs offer each of the 100 slots its previous session, so"
echo " their first 100 handshakes are full ones; moat = its CPU in % of one core)"
echo
printf 'moat memory: RSS %s at start, %s with %s idle STARTTLS sessions' "$(mb "$rss_start")" \
    "$(mb "${rss_idle:-0}")" "${idle_open:-0}"
if [ -n "$rss_idle" ] && [ "${idle_open:-0}" -gt 0 ]; then
    awk -v a="$rss_start" -v b="$rss_idle" -v n="$idle_open" \
        'BEGIN { printf " (%.1f KB each)", (b - a) / n }'
fi
printf ', %s after the runs (peak %s)\n' "$(mb "${rss_after:-0}")" "$(mb "${hwm:-0}")"
exit $failed
