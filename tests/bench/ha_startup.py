#!/usr/bin/env python3
"""Daemon start-up and RSS by HA mode (run by hand, as root): static and vrrp.

    python3 tests/bench/ha_startup.py [--repeat N]                 # host
    tests/kernel/vm.sh python3 tests/bench/ha_startup.py           # VM (emulated)

Starts `lvsd -f CONF --backend memory` inside a scratch network namespace holding a veth pair
with an IPv4 address, waits for READY=1 on a notify socket, reads VmRSS and the CPU time used,
stops it; then checks in a separate process whether the HA part imports pyroute2 in that mode.
Static mode must not pay for pyroute2 (issue 10); vrrp mode does, once. Prints the best wall and
CPU time of --repeat runs (CPU time moves less with the machine's load) and the RSS of the run
with the best wall time. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
NS = "lvsdbench"

CONF = {
    "static": """
[ha]
mode = "static"
role = "master"
""",
    "vrrp": """
[ha]
mode = "vrrp"
interface = "b0"
vrid = 99
priority = 100
advert_interval = "1s"
vips = ["10.99.0.100/24"]
""",
}


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def setup() -> None:
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    sh("ip", "netns", "add", NS)
    sh("ip", "-n", NS, "link", "set", "lo", "up")
    sh("ip", "-n", NS, "link", "add", "b0", "type", "veth", "peer", "name", "b1")
    sh("ip", "-n", NS, "addr", "add", "10.99.0.1/24", "dev", "b0")
    sh("ip", "-n", NS, "link", "set", "b0", "up")
    sh("ip", "-n", NS, "link", "set", "b1", "up")


def run_once(mode: str, tmp: str) -> tuple[float, float, float]:
    """(seconds to READY=1, RSS MB, CPU seconds used by then) of one daemon start in ``mode``."""
    path = os.path.join(tmp, f"{mode}.toml")
    with open(path, "w") as f:
        f.write(CONF[mode])
    nsock = os.path.join(tmp, "notify.sock")
    if os.path.exists(nsock):
        os.unlink(nsock)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(nsock)
    s.settimeout(300)
    cmd = ["ip", "netns", "exec", NS, sys.executable, "-m", "lvsd.daemon.main", "-f", path, "--backend", "memory"]
    env = dict(os.environ, NOTIFY_SOCKET=nsock, PYTHONPATH=ROOT)
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)  # cwd: this tree's lvsd
    try:
        while b"READY=1" not in s.recv(4096):
            pass
        ready = time.perf_counter() - t0
        pid = daemon_pid(p.pid)
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    finally:
        p.terminate()
        p.wait(60)
        s.close()
    return ready, rss, cpu


def daemon_pid(pid: int) -> int:
    """The python process: ``ip netns exec`` execs it, so it is the same pid (checked anyway)."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"lvsd.daemon.main" in f.read(), "ip netns exec did not exec the daemon"
    return pid


def imports_pyroute2(mode: str, tmp: str) -> bool:
    """Whether starting the daemon's HA part for ``mode`` imports pyroute2 (checked in-process)."""
    code = (
        "import sys, asyncio\n"
        "from lvsd.config.load import load_config\n"
        "from lvsd.daemon.ha import HAManager\n"
        "from lvsd.ipvs.memory import MemoryBackend\n"
        f"cfg = load_config({os.path.join(tmp, mode + '.toml')!r})\n"
        "async def go():\n"
        "    m = HAManager(cfg, MemoryBackend(), lambda r: None, sysctl_dir='/nonexistent')\n"
        "    await m.start()\n"
        "    await m.stop('keep')\n"
        "asyncio.run(go())\n"
        "print(any(n == 'pyroute2' or n.startswith('pyroute2.') for n in sys.modules))\n"
    )
    out = subprocess.run(
        ["ip", "netns", "exec", NS, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        cwd=ROOT,
        check=True,
    ).stdout
    return out.strip().endswith("True")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    setup()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode in ("static", "vrrp"):
                runs = [run_once(mode, tmp) for _ in range(a.repeat)]
                best = min(runs)
                times = ", ".join(f"{r[0]:.3f}" for r in runs)
                print(
                    f"{mode:6s}: start to READY=1 best {best[0]:.3f} s (runs: {times}); "
                    f"CPU to READY=1 best {min(r[2] for r in runs):.2f} s; "
                    f"RSS {best[1]:.1f} MB; imports pyroute2: {imports_pyroute2(mode, tmp)}"
                )
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
