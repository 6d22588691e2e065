#!/usr/bin/env bash
# tests/systemd/vm-systemd.sh -- run one command as root in the IPVS test VM of tests/kernel/vm.sh,
# but with systemd as PID 1: units, journald, sd_notify, watchdogs, sandboxing, apt/dpkg and
# maintainer scripts all work for real.
#
#   tests/systemd/vm-systemd.sh CMD [ARG...]    e.g.  tests/systemd/vm-systemd.sh tests/systemd/run.sh
#
# Everything (prerequisites, kernel, overlay root over the host's /, the cwd shared read-write, no
# NIC, exit status: CMD's, 124 timeout, 125 VM failure, every VM_* knob) is tests/kernel/vm.sh's;
# this only hands it tests/systemd/guest.sh as the guest's PID 1 (VM_GUEST), which boots systemd
# to basic.target and runs CMD in the unsandboxed unit vm-cmd.service. After CMD the VM powers off
# at once. What CMD installs (apt install ./x.deb) lands in the throw-away overlay; the packages it
# depends on must be installed on the host (the guest has no network).
# Defaults differ from vm.sh's: VM_MODULES is empty (a unit's own `modprobe ip_vs` loads IPVS)
# and VM_TIMEOUT is 1800 (the suite takes 10-15 min under emulation on a busy 2-core host). Booting to the command takes ~15 s under TCG emulation.
set -u
here=$(cd "$(dirname "$0")" && pwd)
[ -x /lib/systemd/systemd ] || { echo "vm-systemd.sh: no /lib/systemd/systemd on this host" >&2; exit 125; }
export VM_GUEST=$here/guest.sh VM_MODULES=${VM_MODULES-} VM_TIMEOUT=${VM_TIMEOUT:-1800}
exec "$here/../kernel/vm.sh" "$@"
