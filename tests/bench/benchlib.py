"""Helpers shared by the benchmarks in tests/bench/: an lvsd process started up to READY=1,
a process tree's CPU and RSS from /proc, and the control API over its unix socket.

Not a test module (no test_ prefix); the benchmark scripts import it from their own directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def proc_tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc: check workers, hooks)."""
    out = [root]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in out:
                out.append(int(d))
    return out


def proc_cpu(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (gone ones count 0)."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tck
        except (OSError, IndexError):
            pass
    return total


def rss_mb(pids: list[int]) -> float:
    """Sum of VmRSS of these processes, in MB (MiB)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total / 1024


class Lvsd:
    """An ``lvsd -f PATH`` process started with a NOTIFY_SOCKET of our own, so the time to
    READY=1 is measured the way systemd sees it (process start, Python start-up included)."""

    def __init__(self, path: str, tmp: str, *, kernel: bool = False, stderr: Any = subprocess.DEVNULL,
                 netns: str | None = None, python: str = sys.executable) -> None:
        self.nsock = os.path.join(tmp, f"notify-{os.getpid()}-{time.monotonic_ns()}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.nsock)
        cmd = [python, "-m", "lvsd.daemon.main", "-f", path]
        if not kernel:
            cmd += ["--backend", "memory"]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        env = dict(os.environ, NOTIFY_SOCKET=self.nsock, PYTHONPATH=ROOT)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, stderr=stderr, stdin=subprocess.DEVNULL)
        self.ready: float | None = None

    @property
    def pid(self) -> int:
        """The daemon's pid (under ``ip netns exec`` it execs, keeping the pid)."""
        return self.proc.pid

    def wait_ready(self, timeout: float = 600.0) -> float:
        """Seconds from process start to READY=1."""
        self.sock.settimeout(timeout)
        while self.ready is None:
            if b"READY=1" in self.sock.recv(4096):
                self.ready = time.perf_counter() - self.t0
        return self.ready

    def rss_mb(self) -> float:
        """RSS of the daemon and its children (check workers, if any)."""
        return rss_mb(proc_tree(self.pid))

    def cpu(self) -> float:
        """CPU seconds of the daemon and its children so far."""
        return proc_cpu(proc_tree(self.pid))

    def stop(self) -> None:
        """SIGTERM, then wait (SIGKILL after a minute)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sock.close()
        try:
            os.unlink(self.nsock)
        except OSError:
            pass

    def __enter__(self) -> Lvsd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def api(sock: str, method: str, url: str, timeout: float = 300.0) -> tuple[float, int, bytes]:
    """One request to the control socket: (seconds, status, body)."""
    from lvsd.cli.lvsctl import request

    t0 = time.perf_counter()
    status, body = request(sock, method, url, timeout=timeout)
    return time.perf_counter() - t0, status, body
