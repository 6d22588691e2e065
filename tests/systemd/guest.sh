#!/bin/bash
# tests/systemd/guest.sh -- the guest side of tests/systemd/vm-systemd.sh: tests/kernel/vm.sh runs
# it as PID 1 (VM_GUEST) in its throw-away overlay root, and it turns the VM into a systemd boot:
#
#   guest.sh            (PID 1) prepare the overlay for systemd, then exec systemd; the unit
#                       vm-cmd.service (reached after basic.target) runs `guest.sh cmd`
#   guest.sh cmd        run the caller's command (argv, env and cwd from /.vmrun, as vm.sh's own
#                       guest does), relay its stdout/stderr to the lvsd.out/lvsd.err ports, write
#                       its status to /.vmrun/rc, power off at once
#   guest.sh emergency  the boot failed (emergency/rescue mode): print the failed units and the
#                       journal's warnings on the caller's stderr, status 125, power off
#
# Only the overlay changes (tmpfs upper layer): the host's files are never touched.
R=/.vmrun
SELF=$R/guest.sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

port() {  # port NAME: the /dev node of the virtio serial port called NAME
  local p n
  for p in /sys/class/virtio-ports/*; do
    n=; read -r n <"$p/name" 2>/dev/null
    [ "$n" = "$1" ] && { echo "/dev/${p##*/}"; return; }
  done
  echo /dev/null
}

halt_now() {
  sync
  systemctl poweroff --force --force 2>/dev/null
  echo o >/proc/sysrq-trigger
}

run_cmd() {
  local rc=125 cwd o e out err
  mapfile -d '' ENVV <$R/env
  mapfile -d '' ARGV <$R/args
  read -r cwd <$R/cwd
  out=$(port lvsd.out) err=$(port lvsd.err)
  cd "$cwd" 2>/dev/null || cd /
  # FIFOs relayed by cat: a virtio port takes 32K a write, and not every program retries
  mkfifo /run/.vm-out /run/.vm-err
  cat /run/.vm-out >"$out" & o=$!
  cat /run/.vm-err >"$err" & e=$!
  # the command must not see this unit's own systemd variables (it would notify as vm-cmd)
  env -i "${ENVV[@]}" "${ARGV[@]}" </dev/null >/run/.vm-out 2>/run/.vm-err
  rc=$?
  for _ in $(seq 30); do kill -0 $o $e 2>/dev/null || break; sleep 0.1; done
  echo $rc >$R/rc
  halt_now
}

report_emergency() {
  { echo "vm-systemd: the boot entered $1 mode; failed units and warnings:"
    systemctl --failed --no-pager --no-legend
    journalctl -b -p warning --no-pager -o short-monotonic | tail -n 40
  } >"$(port lvsd.err)" 2>&1
  echo 125 >$R/rc
  halt_now
}

boot_systemd() {
  local S=/etc/systemd/system u w mask
  echo vm >/etc/hostname
  echo '# vm-systemd: nothing to mount' >/etc/fstab
  # a container's marker files would make systemd run in container mode, and a container image's
  # policy-rc.d (exit 101) would forbid the maintainer scripts to start or restart units
  rm -f /.dockerenv /run/.containerenv /usr/sbin/policy-rc.d
  # no ConditionNeedsUpdate= jobs (ldconfig, hwdb, journal catalog) on a root that is new each boot
  touch /etc/.updated /var/.updated
  # tmpfiles' boot-time cleanup of /tmp would walk the host's /tmp over 9p and hide it
  mkdir -p /etc/tmpfiles.d && echo 'd /tmp 1777 root root -' >/etc/tmpfiles.d/tmp.conf
  # what waits for a tty, a NIC, a clock or a timer, and the host's own services, is not booted
  mask="getty.target getty@.service serial-getty@.service console-getty.service autovt@.service
    systemd-timesyncd.service systemd-networkd-wait-online.service networking.service
    NetworkManager-wait-online.service ifupdown-wait-online.service systemd-pstore.service
    systemd-firstboot.service systemd-machine-id-commit.service systemd-repart.service
    systemd-pcrphase.service systemd-pcrphase-sysinit.service systemd-ask-password-wall.path
    systemd-ask-password-console.path plymouth-start.service apparmor.service timers.target
    cron.service anacron.service e2scrub_reap.service systemd-udevd.service
    systemd-udev-trigger.service systemd-udev-settle.service systemd-udevd-control.socket
    systemd-udevd-kernel.socket systemd-hwdb-update.service"
  for w in $S/*.wants/*; do
    case ${w##*/} in *.service | *.timer) mask+=" ${w##*/}" ;; esac
  done
  for u in $mask; do rm -f "$S/$u"; ln -s /dev/null "$S/$u"; done
  mkdir -p /etc/systemd/system.conf.d
  printf '[Manager]\nShowStatus=no\nDefaultTimeoutStartSec=90s\nDefaultTimeoutStopSec=30s\n' \
    >/etc/systemd/system.conf.d/vm-systemd.conf
  cat >$S/vm-cmd.target <<EOF
[Unit]
Description=vm-systemd: basic.target, then the command
Wants=basic.target vm-cmd.service
After=basic.target
AllowIsolate=yes
EOF
  cat >$S/vm-cmd.service <<EOF
[Unit]
Description=vm-systemd: the command
After=basic.target
[Service]
Type=exec
ExecStart=/bin/bash $SELF cmd
StandardInput=null
StandardOutput=journal
TimeoutStartSec=infinity
KillMode=process
EOF
  for u in emergency rescue; do
    mkdir -p $S/$u.service.d
    printf '[Service]\nType=exec\nExecStartPre=\nExecStart=\nExecStart=/bin/bash %s emergency %s\nStandardInput=null\n' \
      "$SELF" $u >$S/$u.service.d/vm-systemd.conf
  done
  exec /lib/systemd/systemd --unit=vm-cmd.target
}

case ${1-} in
  cmd) run_cmd ;;
  emergency) report_emergency "${2-}" ;;
  *) [ $$ = 1 ] && boot_systemd
     echo "guest.sh: cannot boot systemd" >"$(port lvsd.err)"; echo 125 >$R/rc; halt_now ;;
esac
