#!/usr/bin/env bash
# tests/kernel/vm.sh -- run one command as root inside a throw-away qemu VM whose kernel has IPVS.
#
#   tests/kernel/vm.sh CMD [ARG...]      e.g.  tests/kernel/vm.sh tests/kernel/run.sh
#                                               tests/kernel/vm.sh ipvsadm -Ln
#
# Why: lvsd drives the kernel's IPVS table, and most hosts (containers, CI runners) have no IPVS
# and cannot load modules. This boots Debian's stock kernel (linux-image-amd64: ip_vs, every
# scheduler, ip_vs_pe_sip, veth, netns) in about 3 seconds and runs CMD in it.
#
# What CMD sees: the host's / read-only (virtio-9p) under an overlay with a tmpfs upper layer, so
# the host's binaries, python and packages are all there and anything may be written (writes
# vanish at the end); the current directory shared READ-WRITE at the same path (reports, caches
# land on the host); the caller's environment and cwd; fresh /proc /sys /dev /run; lo up; ip_vs
# loaded; hostname "vm"; no network device at all (make veth pairs in namespaces); stdin /dev/null.
# CMD is exec'd directly (no shell: use `vm.sh sh -c '...'` for pipelines). Its stdout and stderr
# come back separately.
#
# Exit status: CMD's; 124 if VM_TIMEOUT expired (the VM is killed); 125 if the VM itself failed
# (the tail of the guest console is printed). qemu is always killed, also when this script is
# interrupted (SIGINT/SIGTERM/SIGHUP) or SIGKILLed (parent-death signal); temp dirs are removed.
#
# Acceleration: KVM when the CPU shows vmx/svm and /dev/kvm is usable; otherwise TCG emulation
# (e.g. hosts whose /dev/kvm is PVM, which cannot run a stock kernel). Under TCG Python starts
# ~15x slower than on the host: keep kernel tests few and meaty, and export
# PYTEST_DISABLE_PLUGIN_AUTOLOAD=1.
#
# Environment knobs:
#   VM_TIMEOUT  seconds before the VM is killed (default 600)
#   VM_MEM      guest memory, qemu syntax (default 1G, at least 256M; the tmpfs overlay gets half)
#   VM_CPUS     virtual CPUs (default 2; use 1 on a busy machine)
#   VM_ACCEL    kvm | tcg (default: auto)
#   VM_KERNEL   path of the kernel image (default: the newest /boot/vmlinuz-* with IPVS and 9p)
#   VM_MODULES  modules loaded before CMD starts (default "ip_vs"; others autoload on use)
#   VM_APT      extra Debian packages to install on the host first (the guest has no network)
#   VM_RW=0     do not share the cwd read-write (it is then only seen through the read-only /)
#   VM_DEBUG=1  print the kernel console and the accelerator used
#   VM_CACHE    where the uncompressed kernel is cached (default /tmp/lvsd-vm-cache)
#   VM_GUEST    a script the guest's PID 1 runs instead of the built-in one (tests/systemd/guest.sh
#               boots systemd with it); it finds the command, env and cwd in /.vmrun as that one does
#
# Prerequisites (installed idempotently with apt-get, as root or through sudo; `apt-get update`
# runs first only when something is missing): qemu-system-x86 linux-image-amd64 ipvsadm keepalived
# kmod busybox-static iproute2 procps xz-utils (ipvsadm and keepalived are reference peers for the
# tests; the guest only has what the host has).
set -u

PKGS="qemu-system-x86 linux-image-amd64 ipvsadm keepalived kmod busybox-static iproute2 procps xz-utils bird2 nftables"
PATH=$PATH:/usr/sbin:/sbin

die() { echo "vm.sh: $*" >&2; exit 125; }
[ $# -gt 0 ] || die "usage: $0 CMD [ARG...]"
VM_TIMEOUT=${VM_TIMEOUT:-600}
VM_MEM=${VM_MEM:-1G}
VM_CPUS=${VM_CPUS:-2}
VM_MODULES=${VM_MODULES-ip_vs}
VM_DEBUG=${VM_DEBUG:-0}
VM_CACHE=${VM_CACHE:-/tmp/lvsd-vm-cache}
case $VM_TIMEOUT in ''|*[!0-9]*) die "VM_TIMEOUT must be a number of seconds, got '$VM_TIMEOUT'";; esac

# --- 1. prerequisites -------------------------------------------------------------------------
installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
missing=
for p in $PKGS ${VM_APT:-}; do installed "$p" || missing+=" $p"; done
if [ -n "$missing" ]; then
  echo "vm.sh: installing$missing" >&2
  sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  log=$(mktemp /tmp/lvsd-vm-apt.XXXXXX) || die "mktemp failed"
  # policy-rc.d-less hosts would start keepalived's service: RUNLEVEL=1 keeps invoke-rc.d quiet.
  if ! { $sudo apt-get update -q &&
         $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q \
           --no-install-recommends -o DPkg::Lock::Timeout=600 $missing; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2; rm -f "$log"; die "apt-get install failed:$missing"
  fi
  rm -f "$log"
fi

kernel=${VM_KERNEL:-}
if [ -z "$kernel" ]; then
  for k in $(ls /boot/vmlinuz-* 2>/dev/null | sort -V); do
    m=/lib/modules/${k#/boot/vmlinuz-}/kernel
    [ -d "$m/net/netfilter/ipvs" ] && [ -d "$m/fs/9p" ] && kernel=$k
  done
fi
[ -n "$kernel" ] || die "no kernel with IPVS and 9p modules in /boot (install linux-image-amd64, or set VM_KERNEL)"
[ -e "$kernel" ] || die "no such kernel image: $kernel"
[ -r "$kernel" ] || die "cannot read $kernel (Debian installs kernels readable by root only: run as root)"
kver=${kernel##*/vmlinuz-}
[ -d "/lib/modules/$kver" ] || die "no /lib/modules/$kver for $kernel"

# Boot the uncompressed ELF vmlinux through its PVH entry: it skips the in-guest decompression,
# which costs seconds under TCG. Extracted once from the bzImage's xz payload, then cached.
boot=$VM_CACHE/vmlinux-$kver
if [ ! -s "$boot" ]; then
  mkdir -p "$VM_CACHE"
  off=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$kernel" | head -n1 | cut -d: -f1)
  if [ -n "$off" ]; then
    tail -c +$((off + 1)) "$kernel" | xz -dc 2>/dev/null >"$boot.$$"
    if [ "$(head -c4 "$boot.$$")" = $'\x7fELF' ]; then mv -f "$boot.$$" "$boot"; else rm -f "$boot.$$"; fi
  fi
fi
[ -s "$boot" ] || boot=$kernel  # not xz-packed: let the kernel decompress itself

accel=${VM_ACCEL:-}
if [ -z "$accel" ]; then
  accel=tcg
  if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then accel=kvm; fi
fi
case $accel in kvm|tcg) ;; *) die "VM_ACCEL must be kvm or tcg, got '$accel'";; esac

# --- 2. the run directory, shared with the guest as /.vmrun -----------------------------------
for d in /tmp/lvsd-vm.*/; do  # left behind by runs that were SIGKILLed
  [ -f "$d/owner" ] && ! kill -0 "$(cat "$d/owner")" 2>/dev/null && rm -rf "$d"
done
run=$(mktemp -d /tmp/lvsd-vm.XXXXXX) || die "mktemp failed"
echo $$ >"$run/owner"
qpid= relays=
cleanup() {
  if [ -n "$qpid" ]; then kill -TERM "$qpid" 2>/dev/null; wait "$qpid" 2>/dev/null; fi
  for p in $relays; do kill "$p" 2>/dev/null; done
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

printf '%s\0' "$@" >"$run/args"
printf '%s' "$PWD" >"$run/cwd"
# pyenv shims run several shell scripts per call (seconds under TCG): in the guest's PATH the
# shims directory is replaced by the active version's bin directory.
gpath=$PATH
if command -v pyenv >/dev/null 2>&1 && [[ ":$PATH:" == *"/shims:"* ]]; then
  proot=$(pyenv root 2>/dev/null) pver=$(pyenv prefix 2>/dev/null) pver=${pver%%:*}
  if [[ -n $proot && $pver == "$proot"/versions/* ]]; then
    gpath=":$PATH:"; gpath=${gpath//:$proot\/shims:/:$pver\/bin:}; gpath=${gpath:1:-1}
  fi
fi
env -0 -u PWD -u OLDPWD -u SHLVL -u _ PATH="$gpath" >"$run/env"
[ "${VM_RW:-1}" != 0 ] && [ "$PWD" != / ] && touch "$run/rw"
[ "$accel" = tcg ] && touch "$run/noaslr"  # re-translation is cheaper with a stable layout

# The guest's PID 1 after switch_root: runs CMD, relays its output, records its status.
cat >"$run/guest.sh" <<'GUEST'
set +u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
R=/.vmrun rc=125 out=/dev/null err=/dev/null
mapfile -d '' ENVV <$R/env
mapfile -d '' ARGV <$R/args
read -r cwd <$R/cwd
for p in /sys/class/virtio-ports/*; do
  n=; read -r n <"$p/name" 2>/dev/null
  case $n in lvsd.out) out=/dev/${p##*/};; lvsd.err) err=/dev/${p##*/};; esac
done
cd "$cwd" 2>/dev/null || cd /
# CMD writes to FIFOs, relayed by cat: a virtio port takes at most 32K per write, and not every
# program retries short writes.
mkfifo /run/.out /run/.err
cat /run/.out >"$out" & o=$!
cat /run/.err >"$err" & e=$!
env -i "${ENVV[@]}" "${ARGV[@]}" </dev/null >/run/.out 2>/run/.err
rc=$?
# A background child of CMD may still hold the pipes: give it 3 s, then power off regardless.
for _ in $(seq 30); do kill -0 $o $e 2>/dev/null || break; sleep 0.1; done
echo $rc >$R/rc
sync
busybox reboot -f
echo b >/proc/sysrq-trigger
GUEST
if [ -n "${VM_GUEST:-}" ]; then cp "$VM_GUEST" "$run/guest.sh" || die "cannot read VM_GUEST=$VM_GUEST"; fi

# --- 3. initramfs: static busybox, the modules to mount the host, and $VM_MODULES ----------------
i=$run/initramfs
mkdir -p "$i/bin" "$i/m" "$i/dev" "$i/proc" "$i/lower" "$i/rw" "$i/newroot"
cp "$(command -v busybox)" "$i/bin/busybox" || die "no busybox (busybox-static)"
for a in sh cat mount mkdir insmod ip switch_root reboot echo; do ln -s busybox "$i/bin/$a"; done
for m in virtio_pci virtio_console 9pnet_virtio 9p overlay $VM_MODULES; do
  modprobe -S "$kver" --show-depends "$m" || die "kernel $kver has no module $m"
done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' >"$run/kos"
while read -r ko; do
  base=${ko##*/}
  case $ko in
    *.xz) xz -dc "$ko" >"$i/m/${base%.xz}"; base=${base%.xz};;
    *.zst) zstd -qdc "$ko" >"$i/m/${base%.zst}"; base=${base%.zst};;
    *) cp "$ko" "$i/m/";;
  esac
  echo "/m/$base"
done <"$run/kos" >"$i/modules"
cat >"$i/init" <<'INIT'
#!/bin/sh
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
fail() { echo "vm.sh initramfs: $*"; reboot -f; }
for m in $(cat /modules); do insmod $m || fail "insmod $m"; done
o=trans=virtio,version=9p2000.L,msize=512000 N=/newroot
mount -t 9p -o $o,ro,cache=loose host /lower || fail "mount host /"
mount -t tmpfs -o mode=755 tmpfs /rw && mkdir /rw/u /rw/w
mount -t overlay -o lowerdir=/lower,upperdir=/rw/u,workdir=/rw/w overlay $N || fail "overlay"
mkdir -p $N/.vmrun && mount -t 9p -o $o,cache=none vmrun $N/.vmrun || fail "mount run dir"
mount -t proc proc $N/proc
mount -t sysfs sys $N/sys
mount -t tmpfs -o mode=755 tmpfs $N/run
mount -t cgroup2 cgroup2 $N/sys/fs/cgroup 2>/dev/null
mount --move /dev $N/dev
mkdir -p $N/dev/pts $N/dev/shm $N/run/lock $N/run/netns
ln -s /proc/self/fd $N/dev/fd; ln -s fd/0 $N/dev/stdin; ln -s fd/1 $N/dev/stdout; ln -s fd/2 $N/dev/stderr
mount -t devpts devpts $N/dev/pts
mount -t tmpfs tmpfs $N/dev/shm
if [ -e $N/.vmrun/rw ]; then
  c=$N$(cat $N/.vmrun/cwd)
  mkdir -p "$c" && mount -t 9p -o $o,cache=mmap cwd "$c" || fail "mount cwd"
fi
echo vm >$N/proc/sys/kernel/hostname
ip link set lo up
[ -e $N/.vmrun/noaslr ] && echo 0 >$N/proc/sys/kernel/randomize_va_space
exec switch_root $N /bin/bash /.vmrun/guest.sh
INIT
chmod +x "$i/init"
(cd "$i" && find . | busybox cpio -o -H newc -R 0:0 2>/dev/null) >"$run/initrd" || die "cpio failed"

# --- 4. boot ----------------------------------------------------------------------------------
qesc() { printf %s "${1//,/,,}"; }  # commas in qemu option values are doubled
quiet=quiet; [ "$VM_DEBUG" = 1 ] && quiet=
args=(-nodefaults -no-user-config -display none -nic none -no-reboot -M q35
  -m "$VM_MEM" -smp "$VM_CPUS" -kernel "$boot" -initrd "$run/initrd" -serial "file:$run/console.log"
  -append "console=ttyS0 panic=-1 rdinit=/init $quiet i8042.noaux i8042.nokbd cryptomgr.notests"
  -fsdev local,id=host,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=host,mount_tag=host
  -fsdev "local,id=vmrun,path=$(qesc "$run"),security_model=none"
  -device virtio-9p-pci,fsdev=vmrun,mount_tag=vmrun
  -device virtio-serial-pci
  -chardev "pipe,id=out,path=$(qesc "$run/out")" -device virtserialport,chardev=out,name=lvsd.out
  -chardev "pipe,id=err,path=$(qesc "$run/err")" -device virtserialport,chardev=err,name=lvsd.err)
if [ "$accel" = kvm ]; then args+=(-accel kvm -cpu host); else args+=(-accel tcg,thread=multi -cpu max); fi
[ -e "$run/rw" ] && args+=(-fsdev "local,id=cwd,path=$(qesc "$PWD"),security_model=none,multidevs=remap"
  -device virtio-9p-pci,fsdev=cwd,mount_tag=cwd)

mkfifo "$run/out.in" "$run/out.out" "$run/err.in" "$run/err.out" || die "mkfifo failed"
cat "$run/out.out" & relays=$!
cat "$run/err.out" >&2 & relays+=" $!"
# setpriv: if this script is SIGKILLed, `timeout` gets SIGTERM and passes it on to qemu.
setpriv --pdeathsig TERM timeout -k 5 "$VM_TIMEOUT" qemu-system-x86_64 "${args[@]}" \
  </dev/null 2>"$run/qemu.log" &
qpid=$!
wait "$qpid"; qrc=$?; qpid=
# If qemu died before opening its pipes, the relays still wait for a writer: give them one.
for f in out err; do : 9<>"$run/$f.out"; done
for p in $relays; do wait "$p"; done; relays=

if [ "$VM_DEBUG" = 1 ]; then
  echo "vm.sh: accel=$accel kernel=$kver boot=$boot" >&2
  cat "$run/console.log" >&2
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  echo "vm.sh: timed out after ${VM_TIMEOUT}s: $*" >&2
  exit 124
fi
if [ ! -s "$run/rc" ]; then
  echo "vm.sh: VM failed (qemu exit $qrc, accel=$accel, kernel $kver); console and qemu log:" >&2
  tail -n 40 "$run/console.log" "$run/qemu.log" >&2
  exit 125
fi
exit "$(cat "$run/rc")"
