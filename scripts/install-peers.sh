#!/usr/bin/env bash
# Installs the real peers the interop tests talk to (Kamailio, SIPp, tshark, PostgreSQL/PostGIS,
# baresip, iproute2, and chromium for the console's browser tests) from Debian's packages. Does
# nothing for what is already there; without root it only says what is missing, and the tests
# that need a missing peer are skipped with that reason.
set -uo pipefail
need=()
command -v kamailio >/dev/null || need+=(kamailio)
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || ls /usr/lib/*/kamailio/modules/tls.so >/dev/null 2>&1 || need+=(kamailio-tls-modules)
ls /usr/lib/*/kamailio/modules/lost.so >/dev/null 2>&1 || need+=(kamailio-utils-modules)
command -v sipp >/dev/null || need+=(sip-tester)
command -v tshark >/dev/null || need+=(tshark)
[ -d /usr/lib/postgresql/15/bin ] || need+=(postgresql)
ls /usr/share/postgresql/15/extension/postgis.control >/dev/null 2>&1 || need+=(postgresql-15-postgis-3)
command -v baresip >/dev/null || need+=(baresip)
command -v ip >/dev/null || need+=(iproute2)
[ -x /usr/bin/chromium ] || need+=(chromium)  # the console's browser tests (Playwright drives it)
if [ ${#need[@]} -eq 0 ]; then
    echo "peers: all present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "peers: missing ${need[*]} (not root: interop tests needing them will be skipped)"
    exit 0
fi
echo "peers: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${need[@]}" >/tmp/ng911-peers.log 2>&1 || {
    apt-get update -q >/dev/null 2>&1
    apt-get install -y -q --no-install-recommends "${need[@]}" >/tmp/ng911-peers.log 2>&1 || {
        echo "peers: apt-get failed, see /tmp/ng911-peers.log"; tail -5 /tmp/ng911-peers.log; exit 0; }
}
echo "peers: installed"
