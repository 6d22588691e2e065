"""``lvsctl drain`` on the real kernel (run in the VM): a live client connection through a NAT VIP
finishes cleanly while its server drains, new connections go elsewhere, and the server leaves the
table only once IPVS counts no connection to it; ``enable`` brings it back.

Topology, all inside the VM: client ns ``drc`` 10.77.71.2 -> director (root ns) 10.77.71.1, VIP
10.77.71.100 on lo -> real servers in ns ``drs1`` 10.77.72.11 and ``drs2`` 10.77.73.12 (NAT,
default route back through the director). lvsd runs as its own process; ipvsadm is the oracle.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from netns import HttpClient, Lab, http_get, sh, wait_until

from lvsd.cli import lvsctl

pytestmark = pytest.mark.kernel

VIP = "10.77.71.100"
RS = {"drs1": ("10.77.72.11", "10.77.72.1/24", "ddrs1"), "drs2": ("10.77.73.12", "10.77.73.1/24", "ddrs2")}
DEADLINE = 90.0  # bounded waits; the VM runs Python ~10x slower than the host

CONFIG = """
[daemon]
resync = "1s"
state_file = "{dir}/state/managed.json"
[api]
socket = "{dir}/lvsd.sock"
[[service]]
name = "web"
vip = "{vip}:80"
scheduler = "rr"
forward = "nat"
check = []
  [[service.server]]
  address = "10.77.72.11"
  [[service.server]]
  address = "10.77.73.12"
"""


def weights() -> dict[str, int]:
    """The VIP's real servers in the kernel and their weights (ipvsadm -Ln; none before lvsd adds it)."""
    out: dict[str, int] = {}
    for line in sh("ipvsadm", "-Ln", "-t", f"{VIP}:80", check=False).splitlines():
        parts = line.split()
        if parts and parts[0] == "->" and parts[1][0].isdigit():
            out[parts[1].rsplit(":", 1)[0]] = int(parts[3])
    return out


def ctl(sock: Path, *args: str) -> int:
    return lvsctl.main(["-s", str(sock), *args])


def services(sock: Path) -> dict[str, dict]:
    code, body = lvsctl.request(str(sock), "GET", "/services")
    assert code == 200
    return {s["address"]: s for s in json.loads(body)["services"][0]["servers"]}


@pytest.fixture
def director(tmp_path: Path):
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        pytest.skip("needs root and kernel IPVS (run inside the VM: tests/kernel/vm.sh)")
    if shutil.which("ipvsadm") is None:
        pytest.skip("ipvsadm missing")
    sh("ipvsadm", "-C")
    with Lab() as lab:
        lab.sysctl("net.ipv4.ip_forward", "1")
        if os.path.exists("/proc/sys/net/ipv4/vs/conntrack"):
            lab.sysctl("net.ipv4.vs.conntrack", "0")
        lab.routed_netns("drc", "ddrc", "10.77.71.1/24", "10.77.71.2/24")
        lab.addr("lo", f"{VIP}/32")
        for ns, (addr, gw, dev) in RS.items():
            lab.routed_netns(ns, dev, gw, f"{addr}/24")
            lab.http_server(ns, addr, 80)
        d = Director(lab, tmp_path)
        try:
            d.start()
            wait_until(lambda: weights() == {"10.77.72.11": 1, "10.77.73.12": 1}, DEADLINE, "lvsd's table")
            yield d
        except BaseException:
            print((tmp_path / "lvsd.log").read_text()[-4000:])
            raise
        finally:
            assert d.proc is not None and d.proc.poll() is None, "lvsd died"
            sh("ipvsadm", "-C", check=False)


class Director:
    """lvsd as its own process, restartable; its control socket is ``sock``."""

    def __init__(self, lab: Lab, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.sock = tmp / "lvsd.sock"
        self.cfg = tmp / "lvsd.toml"
        self.cfg.write_text(textwrap.dedent(CONFIG.format(dir=tmp, vip=VIP)))
        self.log = open(tmp / "lvsd.log", "a")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        self.proc = self.lab.popen(
            sys.executable, "-m", "lvsd.daemon.main", "-f", str(self.cfg), stdout=self.log, stderr=self.log, env=env
        )
        wait_until(lambda: self.sock.exists(), DEADLINE, "the control socket")

    def restart(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)  # on_stop = "keep": the table stays as it is
        assert self.proc.wait(timeout=DEADLINE) == 0
        self.start()


def test_drain_lets_a_live_connection_finish_before_the_server_leaves(director: Director) -> None:
    sock = director.sock
    client = HttpClient("drc", VIP, 80, timeout=20)
    first = client.get()  # the keep-alive connection lands on one server: that one drains
    addr = RS[first][0]
    other = next(a for ns, (a, _, _) in RS.items() if ns != first)
    assert ctl(sock, "drain", "web", addr, "--reason", "kernel test") == 0
    wait_until(lambda: weights().get(addr) == 0, DEADLINE, "the drained server at weight 0")
    # new connections go to the other server only; the live one keeps being served
    fresh = {http_get("drc", VIP, 80, timeout=20).body for _ in range(6)}
    assert fresh == {next(ns for ns in RS if ns != first)}
    assert client.get() == first and client.get() == first
    row = services(sock)[addr]
    assert row["override"]["label"].startswith("draining (") and row["override"]["by"].startswith("uid 0")
    assert row["active_conns"] >= 1 and row["override"]["reason"] == "kernel test"
    assert weights() == {addr: 0, other: 1}, "a server with a live connection left the table"
    # the client is done: close with a reset (IPVS then forgets the entry after its CLOSE timeout,
    # 10 s, instead of TIME_WAIT's 2 minutes); the drain finishes and only then is the server gone
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    t0 = time.monotonic()
    client.close()
    wait_until(lambda: addr not in weights(), DEADLINE, "the drained server to leave the table")
    print(f"\ndrain finished {time.monotonic() - t0:.1f}s after the last connection closed")
    assert services(sock)[addr]["override"]["label"] == "drained"
    assert weights() == {other: 1}
    assert ctl(sock, "enable", "web", addr) == 0
    wait_until(lambda: weights() == {addr: 1, other: 1}, DEADLINE, "enable to bring the server back")
    assert "override" not in services(sock)[addr]



def test_overrides_last_across_restart_and_reload_on_the_kernel(director: Director) -> None:
    sock = director.sock
    assert ctl(sock, "disable", "web", "10.77.73.12", "--reason", "maintenance") == 0
    assert ctl(sock, "weight", "web", "10.77.72.11", "3") == 0
    wait_until(lambda: weights() == {"10.77.72.11": 3}, DEADLINE, "the overrides in the table")
    director.restart()
    # the new process plans with the overrides from its first pass: still out, still pinned

    def restored() -> bool:
        try:
            return services(sock)["10.77.73.12"].get("override") is not None
        except lvsctl.Unreachable:  # the socket is bound before the API serves
            return False

    wait_until(restored, DEADLINE, "overrides restored")
    assert weights() == {"10.77.72.11": 3}
    row = services(sock)["10.77.73.12"]["override"]
    assert (row["kind"], row["reason"], row["by"][:5]) == ("disable", "maintenance", "uid 0")
    # a reload that removes the disabled server drops its override; the pin stays
    director.cfg.write_text(director.cfg.read_text().replace('  [[service.server]]\n  address = "10.77.73.12"\n', ""))
    assert ctl(sock, "reload") == 0
    assert set(services(sock)) == {"10.77.72.11"} and services(sock)["10.77.72.11"]["override"]["kind"] == "weight"
    doc = json.loads((director.tmp / "state" / "overrides.json").read_text())
    assert [(r["addr"], r["kind"]) for r in doc["overrides"]] == [("10.77.72.11", "weight")]
    assert ctl(sock, "enable", "web") == 0
    wait_until(lambda: weights() == {"10.77.72.11": 1}, DEADLINE, "enable")
