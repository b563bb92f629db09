#!/bin/sh
# bench/spf.sh: SPF evaluations per second and their latency for a
# cached include chain of depth 3 (docs/spf.md, docs/bench.md).
#
# Starts the test DNS server (tests/dns/world.conf, section "spf":
# bench1.spf.test includes bench2, which includes bench3, which lists the
# client's network), then runs `moat spf --bench`: one warm-up evaluation
# fills moat's resolver cache, then every evaluation starts with an empty
# session memo, as a new SMTP session would, and takes its answers from
# the cache.  At concurrency 1 and 100.  Loopback only; the DNS server is
# stopped by PID.  It prints figures and never judges them.
#
# Knobs (environment): BENCH_SPF_COUNT evaluations per row [100000],
# BENCH_KEEP=1 keeps the temp dir, MOAT_BIN another moat binary.
set -u

cd "$(dirname "$0")/.." || exit 1
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
MOAT=${MOAT_BIN:-$PWD/build/rel/moat}
COUNT=${BENCH_SPF_COUNT:-100000}
if [ ! -x "$MOAT" ]; then
    echo "bench: spf: $MOAT is missing; run make bench" >&2
    exit 1
fi

. bench/lib.sh

TMP=$(mktemp -d "${TMPDIR:-/tmp}/moat-bench-spf.XXXXXX") || exit 1
DNS_PID=
UNBOUND_PID=
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    stop_dns
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: spf: kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_dns "$TMP/dns" world || exit 1
mkdir -p "$TMP/conf"
printf '# moat SPF benchmark (bench/spf.sh); removed after the run\nmyhostname = bench.example.test\ndns_forwarders = 127.0.0.1@%s\n' \
    "$DNS_PORT" >"$TMP/conf/main.cf"
echo "127.0.0.1:2525 inet n - n - - smtpd" >"$TMP/conf/master.cf"

echo
echo "SPF evaluations, include chain of depth 3, answers from moat's resolver cache (bench/spf.sh)"
failed=0
for c in 1 100; do
    echo "bench: $(date +%T) spf c=$c    moat spf --bench $COUNT --concurrency $c" >&2
    if ! "$MOAT" spf -c "$TMP/conf" --ip 127.0.70.5 --sender bench@bench1.spf.test --helo client.bench.test \
        --bench "$COUNT" --concurrency "$c" >"$TMP/spf$c.out" 2>&1; then
        echo "bench: spf: the run at concurrency $c failed:" >&2
        cat "$TMP/spf$c.out" >&2
        failed=1
        continue
    fi
    grep '^spf bench: ' "$TMP/spf$c.out"
done
exit $failed
