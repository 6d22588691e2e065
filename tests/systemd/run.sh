#!/bin/sh
# tests/systemd/run.sh -- the systemd suite, run INSIDE the systemd VM in one boot:
#     tests/systemd/vm-systemd.sh tests/systemd/run.sh [PYTEST ARGS...]
# Installs the package (LVSD_DEB, default build/deb/lvsd_*.deb, from tests/systemd/build-deb.sh)
# with apt, drives lvsd.service through systemctl/lvsctl/journalctl and purges it again
# (tests/systemd/test_systemd_unit.py), with ${PYTHON:-python3}. Exit status: pytest's.
set -eu
cd "$(dirname "$0")/../.."
[ -d /run/systemd/system ] || { echo "run.sh: systemd is not PID 1: run me through tests/systemd/vm-systemd.sh" >&2; exit 1; }
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 LVSD_SYSTEMD_VM=1
exec "${PYTHON:-python3}" -m pytest tests/systemd -p no:cacheprovider -rs --durations=0 "$@"
