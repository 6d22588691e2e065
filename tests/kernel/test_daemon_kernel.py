"""lvsd on the real kernel (run in the VM): start, reload, refused reload, repair of ipvsadm edits,
restart under continuous NAT traffic with zero failed requests, on_stop = remove.

One test, one daemon life cycle (two processes), checked with ipvsadm as the oracle. Topology,
all inside the VM: client ns ``lvc`` 10.61.0.2 -> director (root ns) 10.61.0.1, VIP 10.61.0.100 on
lo -> real servers in ns ``lvr1`` 10.62.0.11 and ``lvr2`` 10.63.0.12 (NAT, default route back
through the director). Synchronisation is on sd_notify messages (READY=1 after start and after
every reload) read from a real datagram socket, and on ipvsadm's view of the kernel.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from netns import Lab

pytestmark = pytest.mark.kernel

VIP = "10.61.0.100"
RS = {"lvr1": ("10.62.0.11", "10.62.0.1", "dlvr1"), "lvr2": ("10.63.0.12", "10.63.0.1", "dlvr2")}
DEADLINE = 60.0  # bounded waits; the VM runs Python ~10x slower than the host

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 80)); s.listen(512)
reply = b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(sys.argv[2]), sys.argv[2].encode())
print("listening", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.settimeout(2); c.recv(1024); c.sendall(reply)
    except OSError:
        pass
    c.close()
"""

CLIENT = r"""
import socket, sys, time, os
vip, stop_file = sys.argv[1], sys.argv[2]
ok = fail = 0
seen = set()
errors = []
seen_first = False
while not os.path.exists(stop_file):
    try:
        c = socket.create_connection((vip, 80), timeout=3)
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            b = c.recv(1024)
            if not b:
                break
            data += b
        c.close()
        if b" 200 " in data:
            ok += 1; seen.add(data.rsplit(b"\n", 1)[-1].decode())
        else:
            fail += 1; errors.append(repr(data[:40]))
    except OSError as e:
        fail += 1; errors.append(str(e))
    if ok == 1 and not seen_first:
        seen_first = True
        print("first", flush=True)
    time.sleep(0.02)
print(f"ok={ok} fail={fail} seen={','.join(sorted(seen))} errors={errors[:5]}", flush=True)
"""


def sh(*args: str, check: bool = True) -> str:
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if check and r.returncode:
        raise AssertionError(f"{' '.join(args)}: rc {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def ipvsadm_table() -> str:
    """ipvsadm -Sn, sorted (rule order is the kernel's hash order, not meaningful)."""
    return "\n".join(sorted(sh("ipvsadm", "-Sn").splitlines()))


def lines(*rules: str) -> str:
    return "\n".join(sorted(rules))


@pytest.fixture
def topology(tmp_path: Path):
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        pytest.skip("needs root and kernel IPVS (run inside the VM: tests/kernel/vm.sh)")
    for tool in ("ip", "ipvsadm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing")
    sh("ipvsadm", "-C")
    with Lab() as lab:
        lab.sysctl("net.ipv4.ip_forward", "1")
        if os.path.exists("/proc/sys/net/ipv4/vs/conntrack"):
            lab.sysctl("net.ipv4.vs.conntrack", "0")
        lab.routed_netns("lvc", "dlvc", "10.61.0.1/24", "10.61.0.2/24")
        lab.addr("lo", f"{VIP}/32")
        (tmp_path / "server.py").write_text(SERVER)
        (tmp_path / "client.py").write_text(CLIENT)
        for ns, (addr, gw, veth) in RS.items():
            lab.routed_netns(ns, veth, f"{gw}/24", f"{addr}/24")
            p = lab.popen(sys.executable, str(tmp_path / "server.py"), addr, ns, ns=ns, stdout=subprocess.PIPE, text=True)
            assert p.stdout is not None and p.stdout.readline().strip() == "listening"
        try:
            yield tmp_path
        finally:
            sh("ipvsadm", "-C", check=False)


# Services using the other attributes, so that a kernel that reports a value differently from
# how it was set would show up as a plan that is never empty (or a repair at every resync).
VARIETY = """
[[service]]
name = "mark"
fwmark = 5
scheduler = "sh"
sched_flags = ["sh-port", "sh-fallback"]
persistence = {{ timeout = 600, netmask = "255.255.255.0" }}
check = []
  [[service.server]]
  address = "10.62.0.11"
  forward = "dr"
  thresholds = {{ upper = 100, lower = 10 }}
  [[service.server]]
  address = "10.63.0.12"
  forward = "tun"
  tunnel = {{ type = "gue", port = 6080, csum = "remcsum" }}

[[service]]
name = "sip"
vip = "{vip}:5060"
protocol = "udp"
scheduler = "wlc"
one_packet = true
persistence = {{ timeout = 30, engine = "sip" }}
check = []
  [[service.server]]
  address = "10.62.0.11"

[[service]]
name = "v6"
vip = "[2001:db8:61::100]:80"
scheduler = "mh"
sched_flags = ["mh-port"]
check = []
  [[service.server]]
  address = "2001:db8:62::11"
  forward = "nat"
  weight = 0
  [[service.server]]
  address = "10.63.0.12"
  forward = "tun"
"""

CONFIG = """
[daemon]
on_stop = "{on_stop}"
resync = "1s"
state_file = "{dir}/state/managed.json"

[api]
socket = "{dir}/lvsd.sock"

[defaults]
forward = "nat"
check = {{ type = "tcp", interval = "500ms", timeout = "400ms", rise = 1, fall = 2 }}

[[service]]
name = "web"
vip = "{vip}:80"
scheduler = "rr"
  [[service.server]]
  address = "10.62.0.11"
  weight = {w1}
  [[service.server]]
  address = "10.63.0.12"
  weight = 1
{extra}
{variety}
"""

EXTRA_SERVICE = """
[[service]]
name = "alt"
vip = "{vip}:81"
scheduler = "wlc"
  [[service.server]]
  address = "10.62.0.11"
  port = 80
"""


class Lvsd:
    """An lvsd process with a notify socket we read READY/RELOADING/STOPPING from."""

    def __init__(self, tmp: Path, config: Path) -> None:
        self.tmp = tmp
        self.config = config
        self.nsock_path = tmp / f"notify-{time.monotonic_ns()}.sock"
        self.nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.nsock.bind(str(self.nsock_path))
        self.log = open(tmp / "lvsd.log", "a")
        env = dict(os.environ, NOTIFY_SOCKET=str(self.nsock_path), PYTHONPATH=os.getcwd())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lvsd.daemon.main", "-f", str(config)],
            stdout=self.log,
            stderr=self.log,
            env=env,
        )

    def wait_for(self, pred, what: str) -> str:
        deadline = time.monotonic() + DEADLINE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what} from lvsd within {DEADLINE}s; log:\n{self.logtext()}")
            self.nsock.settimeout(left)
            try:
                msg = self.nsock.recv(4096).decode()
            except TimeoutError:
                continue
            if pred(msg):
                return msg
            if self.proc.poll() is not None:
                raise AssertionError(f"lvsd exited {self.proc.returncode}; log:\n{self.logtext()}")

    def ready(self) -> str:
        return self.wait_for(lambda m: "READY=1" in m.split("\n"), "READY=1")

    def reload(self) -> str:
        """SIGHUP; the STATUS sent with the READY=1 that ends the reload."""
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for(lambda m: "RELOADING=1" in m, "RELOADING=1")
        return self.ready()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.wait_for(lambda m: "STOPPING=1" in m, "STOPPING=1")
        rc = self.proc.wait(DEADLINE)
        self.nsock.close()
        return rc

    def logtext(self) -> str:
        self.log.flush()
        return (self.tmp / "lvsd.log").read_text()


def managed_table() -> str:
    """ipvsadm -Sn without the VARIETY services (checked through --plan instead)."""
    keep = [ln for ln in ipvsadm_table().splitlines() if ":5060" not in ln and "-f 5" not in ln and "[" not in ln]
    return "\n".join(keep)


def plan(cfg: Path) -> list[str]:
    """`lvsd --plan`: the ops that would bring the kernel to the config (empty = it already is)."""
    r = subprocess.run(
        [sys.executable, "-m", "lvsd.daemon.main", "--plan", str(cfg)],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        env=dict(os.environ, PYTHONPATH=os.getcwd()),
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def wait_table(expected: str, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        got = managed_table()
        if got == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: kernel table\n{got}\n!= expected\n{expected}")
        time.sleep(0.2)  # polling the kernel: there is no event for "ipvsadm shows X"


def test_daemon_on_the_real_kernel(topology: Path) -> None:
    tmp = topology
    cfg = tmp / "lvsd.toml"

    def write(on_stop: str = "keep", w1: int = 2, extra: str = "", raw: str | None = None) -> None:
        text = raw if raw is not None else CONFIG.format(
            on_stop=on_stop, dir=tmp, vip=VIP, w1=w1, extra=extra.format(vip=VIP), variety=VARIETY.format(vip=VIP)
        )
        (tmp / "new.toml").write_text(textwrap.dedent(text))
        os.replace(tmp / "new.toml", cfg)

    # an unmanaged service lvsd must never touch
    sh("ipvsadm", "-A", "-t", f"{VIP}:8080", "-s", "sh")
    sh("ipvsadm", "-a", "-t", f"{VIP}:8080", "-r", "10.62.0.11:80", "-m", "-w", "7")
    other = [f"-A -t {VIP}:8080 -s sh", f"-a -t {VIP}:8080 -r 10.62.0.11:80 -m -w 7"]

    write()
    base = [f"-A -t {VIP}:80 -s rr", f"-a -t {VIP}:80 -r 10.62.0.11:80 -m -w 2", f"-a -t {VIP}:80 -r 10.63.0.12:80 -m -w 1"]

    # 1. start: servers join as their first check passes; the unmanaged service is left alone
    d = Lvsd(tmp, cfg)
    d.ready()
    wait_table(lines(*base, *other), "start")
    # every attribute reads back as it was set: nothing left to do, nothing to repair
    assert plan(cfg) == []
    assert sh("ipvsadm", "-Ln", "-f", "5").count("->") == 3  # header + 2 servers

    # 2. edit + SIGHUP: weight change and a new service, unchanged server untouched
    write(w1=5, extra=EXTRA_SERVICE)
    d.reload()
    v2 = [
        f"-A -t {VIP}:80 -s rr",
        f"-a -t {VIP}:80 -r 10.62.0.11:80 -m -w 5",
        f"-a -t {VIP}:80 -r 10.63.0.12:80 -m -w 1",
        f"-A -t {VIP}:81 -s wlc",
        f"-a -t {VIP}:81 -r 10.62.0.11:80 -m -w 1",
    ]
    wait_table(lines(*v2, *other), "reload")

    # 3. a broken config + SIGHUP: refused, nothing changes, STATUS says why
    write(raw=cfg.read_text().replace("weight = 5", "weight = -5"))
    status = d.reload()
    assert "reload failed" in status and "weight" in status, status
    assert managed_table() == lines(*v2, *other)
    assert "service[web].server[0].weight" in d.logtext()

    # 4. tampering with ipvsadm is repaired by the periodic resync (unmanaged edits are kept)
    write(w1=5, extra=EXTRA_SERVICE)
    d.reload()
    assert "repairing" not in d.logtext()  # several resyncs so far, none found a difference
    sh("ipvsadm", "-e", "-t", f"{VIP}:80", "-r", "10.62.0.11:80", "-m", "-w", "9")
    sh("ipvsadm", "-d", "-t", f"{VIP}:80", "-r", "10.63.0.12:80")
    sh("ipvsadm", "-E", "-t", f"{VIP}:81", "-s", "rr")
    sh("ipvsadm", "-e", "-t", f"{VIP}:8080", "-r", "10.62.0.11:80", "-m", "-w", "8")
    other[1] = f"-a -t {VIP}:8080 -r 10.62.0.11:80 -m -w 8"
    wait_table(lines(*v2, *other), "resync repair")
    assert "repairing" in d.logtext()

    # 5. restart under continuous traffic through the NAT VIP: zero failed requests
    stop_file = tmp / "client.stop"
    client = subprocess.Popen(
        ["ip", "netns", "exec", "lvc", sys.executable, str(tmp / "client.py"), VIP, str(stop_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None and client.stdout.readline().strip() == "first"
    assert d.stop() == 0
    assert managed_table() == lines(*v2, *other)  # on_stop = keep: the table stays
    d = Lvsd(tmp, cfg)
    d.ready()
    time.sleep(1.0)  # traffic keeps flowing after the new daemon took over
    assert managed_table() == lines(*v2, *other)
    stop_file.write_text("")
    out, _ = client.communicate(timeout=DEADLINE)
    last = out.strip().splitlines()[-1].split(" errors=")[0]
    result = dict(kv.split("=", 1) for kv in last.split())
    print(f"restart under traffic: {last}")
    assert result.get("fail") == "0", out
    assert int(result["ok"]) >= 10, out
    assert result["seen"] == "lvr1,lvr2", out  # both real servers served requests
    restart_log = d.logtext().split("starting:")[-1]
    assert not [ln for ln in restart_log.splitlines() if " add-" in ln or " edit-" in ln or " delete-" in ln], restart_log

    # 5b. a service removed from the file while lvsd is stopped goes at the next start (it is in
    # daemon.state_file); the unmanaged one, never recorded, stays
    assert d.stop() == 0
    write(w1=5)
    d = Lvsd(tmp, cfg)
    d.ready()
    wait_table(lines(*v2[:3], *other), "start after removing a service while stopped")
    assert "removing 1 services the config no longer names (managed before): tcp" in d.logtext()

    # 6. on_stop = remove: the managed services go, the unmanaged one stays
    write(on_stop="remove", w1=5, extra=EXTRA_SERVICE)
    d.reload()
    assert d.stop() == 0
    assert ipvsadm_table() == lines(*other)  # the VARIETY services went too
