#!/bin/sh
# tests/kernel/run.sh -- the whole kernel suite, run INSIDE the VM in one boot:
#     tests/kernel/vm.sh tests/kernel/run.sh [PYTEST ARGS...]
# With test paths among the arguments (tests/kernel/test_netlink.py, tests/contract/test_batch.py
# ...), only those run: tests/kernel/vm.sh tests/kernel/run.sh tests/kernel/test_netlink.py
# Loads every IPVS scheduler and the SIP persistence engine first (the contract tests use them
# all; autoloading them one by one mid-test costs more under emulation), then runs the backend
# contract against the real kernel (LVSD_TEST_BACKEND=netlink) and tests/kernel with
# ${PYTHON:-python3} (e.g. PYTHON=.venv/bin/python). Exit status: pytest's.
set -eu
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
[ -e /proc/net/ip_vs ] || modprobe ip_vs 2>/dev/null || true
[ -e /proc/net/ip_vs ] || { echo "run.sh: no IPVS in kernel $(uname -r): run me through tests/kernel/vm.sh" >&2; exit 1; }
modprobe -a ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_dh ip_vs_sh \
  ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_mh ip_vs_pe_sip
modprobe -q ip_vs_twos 2>/dev/null || true  # only in kernels >= 6.2
# LVSD_KERNEL_REQUIRED: kernel tests fail instead of skipping if IPVS or root is missing
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 LVSD_TEST_BACKEND=netlink LVSD_KERNEL_REQUIRED=1
paths=0
for a in "$@"; do
  case $a in -*) ;; *) [ -e "${a%%::*}" ] && paths=1 ;; esac
done
if [ "$paths" = 1 ]; then
  exec "$PY" -m pytest "$@" -p no:cacheprovider --durations=10
fi
[ -d tests/contract ] && set -- tests/contract "$@" || echo "run.sh: no tests/contract yet" >&2
exec "$PY" -m pytest "$@" tests/kernel -p no:cacheprovider --durations=10
