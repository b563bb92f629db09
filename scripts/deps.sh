#!/bin/sh
# Installs the Debian packages moat needs to build, run, test and bench.
# Idempotent: when every package is present it does nothing (no apt-get call).
# Usage: scripts/deps.sh [build|test]   (default: test, the superset)
set -eu

BUILD_PKGS="gcc make pkg-config libevent-dev libssl-dev libcrypt-dev liblmdb-dev libpcre2-dev libunbound-dev libhiredis-dev libpsl-dev libvectorscan-dev openssl"
# postfix: smtp-sink/smtp-source and a reference Postfix for the queue
# tests and benches; installed as "No configuration", never the system
# MTA, never started (see below).  postfix-lmdb/-pcre: its table types.
# redis-server/-tools: the state store's shared backend, which the tests
# start on a loopback port of their own (the system service never starts).
# postgrey: a real policy server for check_policy_service; the tests start
# it on a loopback port with a private database (its service never starts).
# dovecot-core: a real SASL server for AUTH (smtpd_sasl_type = dovecot);
# the tests start a private instance with a passwd-file userdb (the
# system service never starts).  libnet-ssleay-perl/libio-socket-ssl-perl:
# swaks --tls.  clamav-daemon: a real clamd for content_scanner; the tests
# start a private instance with a tiny signature file of their own (never
# the virus database; freshclam and the system service never run).
TEST_PKGS="clang libclang-rt-14-dev python3 python3-pytest python3-aiosmtpd python3-yaml swaks pflogsumm unbound
postfix postfix-lmdb postfix-pcre
redis-server redis-tools
postgrey
dovecot-core
libnet-ssleay-perl libio-socket-ssl-perl
clamav-daemon"

want="$BUILD_PKGS"
[ "${1:-test}" = "build" ] || want="$want $TEST_PKGS"

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "deps.sh: installing:$missing" >&2
if [ "$(id -u)" != 0 ]; then
    echo "deps.sh: not root; install these packages yourself:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Packages such as unbound ship a system service: keep apt from starting
# it (tests run their own instance on a loopback port).  Only when no
# policy is in place already; removed again on exit.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# Postfix must not become this machine's MTA: answer its debconf
# question before apt asks it (no main.cf is written, no service set up).
case " $missing " in
*" postfix "*)
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    ;;
esac
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 $missing >/dev/null
