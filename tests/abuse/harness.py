"""The abuse suite's lab: a real lvsd process (memory backend) checking many real TCP servers on
loopback, one "target" server the test kills, and hostile clients.

Every server but the target is one listener on 0.0.0.0:PORT answering for all of 127.0.0.0/8
(server k is 127.10.k/250.k%250+1), in its own process; the target is a listener of its own,
killed and restarted. Its ``notify_down``/``notify_up`` hooks stamp the time lvsd decided into a
file: detection time = that stamp - the kill. Also used by tests/bench/scrape_flood.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

ACCEPTOR = r"""
import asyncio, socket, sys
async def main():
    async def serve(r, w):
        w.close()
    s = await asyncio.start_server(serve, sys.argv[1], int(sys.argv[2]), backlog=4096, reuse_address=True)
    print("listening", flush=True)
    await s.serve_forever()
asyncio.run(main())
"""

SCRAPER = r"""
import socket, sys, time
host, port, stop = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
n = 0
while time.monotonic() < stop:
    try:
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        while s.recv(1 << 20):
            pass
        s.close()
        n += 1
    except OSError:
        time.sleep(0.01)
print(n, flush=True)
"""


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def start_listener(host: str, port: int) -> subprocess.Popen[str]:
    p = subprocess.Popen([PY, "-c", ACCEPTOR, host, str(port)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "listening"
    return p


def server_addr(k: int) -> str:
    return f"127.10.{k // 250}.{k % 250 + 1}"


class Lab:
    """lvsd with ``n`` checked servers plus the target; ``extra`` is appended to its config."""

    TARGET = "127.9.0.1"

    def __init__(self, tmp: Path, n: int, *, per_service: int = 100, extra: str = "",
                 bulk_interval: str = "5s", target_check: str = 'interval = "0.2s", timeout = "0.2s", fall = 3, rise = 1') -> None:
        self.tmp = tmp
        self.n = n
        self.farm_port = free_port()
        self.target_port = free_port()
        self.metrics_port = free_port()
        self.sock = str(tmp / "lvsd.sock")
        self.down = tmp / "down"
        self.up = tmp / "up"
        self.procs: list[subprocess.Popen[str]] = []
        lines = [
            "[daemon]", 'log_level = "info"', 'hook_timeout = "5s"',
            "[api]", f'socket = "{self.sock}"',
            "[metrics]", f'listen = "127.0.0.1:{self.metrics_port}"',
            "[[service]]", 'name = "target"', 'vip = "10.255.0.1:80"',
            "  [[service.server]]", f'  address = "{self.TARGET}"', f"  port = {self.target_port}", '  forward = "nat"',
            f'  check = {{ type = "tcp", {target_check} }}',
            f'  notify_down = ["/bin/sh", "-c", "date +%s.%N >> {self.down}"]',
            f'  notify_up = ["/bin/sh", "-c", "date +%s.%N >> {self.up}"]',
        ]
        for s in range((n + per_service - 1) // per_service):
            lines += ["[[service]]", f'name = "s{s}"', f'vip = "10.0.{s // 250}.{s % 250 + 1}:80"']
            for k in range(s * per_service, min(n, (s + 1) * per_service)):
                lines += ["  [[service.server]]", f'  address = "{server_addr(k)}"', f"  port = {self.farm_port}",
                          '  forward = "nat"',
                          f'  check = {{ type = "tcp", interval = "{bulk_interval}", timeout = "2s", rise = 1, fall = 2 }}']
        self.cfg = tmp / "lvsd.toml"
        self.cfg.write_text("\n".join(lines) + "\n" + extra)
        self.log = open(tmp / "lvsd.log", "w")  # noqa: SIM115  # closed in stop()
        self.lvsd: subprocess.Popen[str] | None = None
        self.target: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 120) -> None:
        self.procs.append(start_listener("0.0.0.0", self.farm_port))
        self.target = start_listener(self.TARGET, self.target_port)
        self.lvsd = subprocess.Popen([PY, "-m", "lvsd.daemon.main", "-f", str(self.cfg), "--backend", "memory"],
                                     stderr=self.log, text=True, cwd=ROOT)
        self.wait_for(lambda: bool(self.decisions("UP")), timeout, "the target never came up")

    def alive(self) -> bool:
        return self.lvsd is not None and self.lvsd.poll() is None

    def wait_for(self, cond, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not cond():
            if not self.alive():
                raise AssertionError(f"lvsd died: {self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout:g}s")
            time.sleep(0.01)
        return time.monotonic()

    def log_text(self) -> str:
        self.log.flush()
        return (self.tmp / "lvsd.log").read_text(errors="replace")

    @staticmethod
    def _stamps(path: Path) -> list[float]:
        try:
            return [float(x) for x in path.read_text().split()]
        except (OSError, ValueError):
            return []

    def log_times(self, mark: str) -> list[float]:
        """Wall times of lvsd's log lines containing ``mark``."""
        import calendar

        out = []
        for line in self.log_text().splitlines():
            if mark in line:
                stamp = line.split(" ", 1)[0]  # 2026-01-01T00:00:00.000Z
                secs = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
                out.append(secs + int(stamp[20:23]) / 1000)
        return out

    def decisions(self, state: str) -> list[float]:
        """Wall times of lvsd's log lines deciding the target ``state`` (UP/DOWN)."""
        return self.log_times(f"target {self.TARGET}:{self.target_port} {state}")

    def kill_target(self, bound: float) -> float:
        """Kill the target; seconds until lvsd decided it is down (its log line; asserted within
        ``bound``, and its notify_down hook ran)."""
        before = len(self.decisions("DOWN"))
        assert self.target is not None
        t0 = time.time()
        self.target.kill()
        self.target.wait()
        self.wait_for(lambda: len(self.decisions("DOWN")) > before, bound, "the dead target was not marked down")
        return self.decisions("DOWN")[-1] - t0

    def revive_target(self, bound: float = 60) -> None:
        before = len(self.decisions("UP"))
        self.target = start_listener(self.TARGET, self.target_port)
        self.wait_for(lambda: len(self.decisions("UP")) > before, bound, "the target did not come back up")

    def scrapers(self, k: int, seconds: float) -> list[subprocess.Popen[str]]:
        ps = [subprocess.Popen([PY, "-c", SCRAPER, "127.0.0.1", str(self.metrics_port), str(seconds)],
                               stdout=subprocess.PIPE, text=True) for _ in range(k)]
        self.procs += ps
        return ps

    def wait_all_up(self, timeout: float = 300) -> None:
        """Until /status counts every server (the n and the target) up: the start-up's burst of
        transitions and reconciles is over."""
        import json

        def all_up() -> bool:
            try:
                body = self.get("/status").split(b"\r\n\r\n", 1)[1]
                if json.loads(body)["health"]["up"] == self.n + 1:
                    return True
            except (OSError, ValueError, KeyError, IndexError):
                pass
            time.sleep(0.5)  # /status counts every server: do not poll it in a loop
            return False

        self.wait_for(all_up, timeout, "not every server came up")

    def get(self, path: str, timeout: float = 30) -> bytes:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(timeout)
        s.connect(self.sock)
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        out = b""
        while b := s.recv(1 << 16):
            out += b
        s.close()
        return out

    def stop(self) -> int | None:
        rc = None
        if self.lvsd is not None and self.lvsd.poll() is None:
            self.lvsd.send_signal(signal.SIGTERM)
            try:
                rc = self.lvsd.wait(30)
            except subprocess.TimeoutExpired:
                self.lvsd.kill()
                self.lvsd.wait()
        for p in [*self.procs, self.target]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        self.log.close()
        return rc


@contextlib.contextmanager
def lab(tmp: Path, n: int, **kw) -> Iterator[Lab]:  # type: ignore[no-untyped-def]
    x = Lab(tmp, n, **kw)
    try:
        x.start()
        yield x
    finally:
        x.stop()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
