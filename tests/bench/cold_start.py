#!/usr/bin/env python3
"""Cold-start benchmark (issue 16, run by hand): how long after READY every healthy server is in
the table, and how a killed server's detection time holds while every other check runs.

The real Daemon runs on the memory backend in this process against one listener process that
answers on every 127.1.x.y address (tests/bench/checks.py's); N servers in services of 10, one
TCP check each. It prints the time from READY to the last server in the table (target:
``timeout`` + 2 s at 10,000 servers with a 30 s interval), how many kernel batches that took, and
how many log lines at info the start wrote.

    python tests/bench/cold_start.py -n 10000 --interval 30 --timeout 3
    python tests/bench/cold_start.py -n 50000 --interval 30 --timeout 3
    python tests/bench/cold_start.py -n 10000 --interval 5 --kills 100   # + detection p99

``--kills K``: after the table is full, K servers (their own listeners) are closed, one every
50 ms while every other server keeps being checked, and each one's time from the kill to its
delete in the table is measured; printed as p50/p99 against ``interval x fall + timeout + 50 ms``. ``detect_kills``
is the function tests/bench/scale.py can call for the same figure on its own daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from checks import Listener, addrs  # noqa: E402

from lvsd.config.load import load_config  # noqa: E402
from lvsd.daemon.daemon import Daemon  # noqa: E402
from lvsd.daemon.notify import Notifier  # noqa: E402
from lvsd.ipvs.backend import OpKind  # noqa: E402


def config_text(n: int, port: int, interval: float, timeout: float, fall: int = 1,
                victims: frozenset[str] = frozenset()) -> str:
    """N servers at 127.1.x.y:port in services of 10, one TCP check each; the ``victims``
    addresses at port + 1 instead (a listener of their own, which a kill closes)."""
    out = ["[daemon]", 'resync = "300s"', "[defaults]", 'forward = "nat"',
           f'check = {{ type = "tcp", interval = {interval}, timeout = {timeout}, rise = 1, fall = {fall} }}']
    targets = addrs(n)
    for i in range(0, n, 10):
        s = i // 10
        out += ["[[service]]", f'name = "s{s}"', f'vip = "10.{100 + s // 62500}.{s // 250 % 250}.{s % 250 + 1}:80"']
        for a in targets[i:i + 10]:
            out += ["  [[service.server]]", f'  address = "{a}"', f"  port = {port + (a in victims)}"]
    return "\n".join(out) + "\n"


class Watch:
    """Wraps the backend: when each server entered (or left) the table, and how many batches."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches = 0
        self.dests = 0
        self.full_at: float | None = None
        self.want = 0
        self.deleted: dict[str, float] = {}  # server address -> when its delete was applied

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply(self, ops: list[Any]) -> None:
        self.inner.apply(ops)
        now = time.monotonic()
        self.batches += 1
        for op in ops:
            if op.kind is OpKind.ADD_DEST:
                self.dests += 1
            elif op.kind is OpKind.DEL_DEST and op.dest is not None:
                self.dests -= 1
                self.deleted[op.dest.key.addr] = now
        if self.full_at is None and self.want and self.dests >= self.want:
            self.full_at = now


class Lines(logging.Handler):
    """Counts the log lines at info and above."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.n = 0
        self.last: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1
        self.last.append(record.getMessage())


async def detect_kills(watch: Watch, kill: Callable[[str], None], targets: list[str], gap: float,
                       limit: float = 120.0) -> list[float]:
    """Kill each of ``targets`` (``kill(addr)`` makes addr refuse), one every ``gap`` seconds
    while the others keep being checked, and return each one's time from its kill to its
    delete in the table (``watch``: the daemon's backend wrapped in Watch). For
    tests/bench/scale.py too: any daemon, any backend, any way to kill."""
    killed: dict[str, float] = {}
    for addr in targets:
        killed[addr] = time.monotonic()
        kill(addr)
        await asyncio.sleep(gap)
    deadline = time.monotonic() + limit
    while any(a not in watch.deleted for a in killed) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return [watch.deleted[a] - t for a, t in killed.items() if a in watch.deleted]


class GCTime:
    """Time spent in garbage collections (the loop stands still meanwhile), by generation."""

    def __init__(self) -> None:
        self.t0 = 0.0
        self.spent = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        import gc

        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.t0 = time.perf_counter()
        else:
            g = info["generation"]
            self.spent[g] += time.perf_counter() - self.t0
            self.count[g] += 1

    def take(self) -> str:
        out = ", ".join(f"gen{g} {n} x {1000 * t:.0f} ms" for g, (n, t) in enumerate(zip(self.count, self.spent, strict=True)))
        self.spent, self.count = [0.0, 0.0, 0.0], [0, 0, 0]
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000, help="servers (default 10,000)")
    ap.add_argument("--interval", type=float, default=30.0)
    ap.add_argument("--timeout", type=float, default=3.0)
    ap.add_argument("--fall", type=int, default=1)
    ap.add_argument("--port", type=int, default=18090)
    ap.add_argument("--kills", type=int, default=0, help="then kill this many servers, one at a time")
    a = ap.parse_args()

    from lvsd.ipvs.memory import MemoryBackend

    with tempfile.TemporaryDirectory() as tmp, Listener(a.port, False) as _ls:
        path = os.path.join(tmp, "lvsd.toml")
        import socket

        # kill targets: own listeners (never accepted from: the kernel completes the handshake)
        kill_socks: dict[str, socket.socket] = {}
        for addr in addrs(a.n)[1::max(1, a.n // max(1, a.kills))][:a.kills]:
            ls = kill_socks[addr] = socket.socket()
            ls.bind((addr, a.port + 1))
            ls.listen(4096)
        with open(path, "w") as f:
            f.write(config_text(a.n, a.port, a.interval, a.timeout, a.fall, frozenset(kill_socks)))
        cfg = load_config(path)
        watch = Watch(MemoryBackend())
        watch.want = a.n
        lines = Lines()
        logging.getLogger("lvsd").addHandler(lines)
        logging.getLogger("lvsd").setLevel(logging.INFO)
        d = Daemon(cfg, watch, config_path=path, notifier=Notifier(""), api=False, install_signals=False)
        gct = GCTime()
        gcs: list[str] = []
        cpus: list[float] = []  # this process's CPU time from READY to the table full

        async def run() -> tuple[float, float | None, int, int, list[float]]:
            t0 = time.monotonic()
            task = asyncio.create_task(d.run())
            await d.running.wait()
            ready = time.monotonic()
            cpu0 = time.process_time()
            gcs.append(gct.take())
            batches0, lines0 = watch.batches, lines.n
            limit = ready + a.timeout + 2 + 60
            while watch.full_at is None and time.monotonic() < limit:
                await asyncio.sleep(0.01)
            full = watch.full_at
            cpus.append(time.process_time() - cpu0)
            gcs.append(gct.take())
            batches, nlines = watch.batches - batches0, lines.n - lines0
            await asyncio.sleep(0.2)  # the summary line
            detect: list[float] = []
            if a.kills:
                victims = list(kill_socks)

                def kill(addr: str) -> None:
                    kill_socks.pop(addr).close()  # nothing else listens on addr:port+1: refused

                detect = await detect_kills(watch, kill, victims, 0.05)
            d.request_stop()
            await task
            return ready - t0, (full - ready) if full is not None else None, batches, nlines, detect

        ready, full, batches, nlines, detect = asyncio.run(run())
        print(f"servers {a.n:,}, interval {a.interval:g} s, timeout {a.timeout:g} s; load {os.getloadavg()[0]:.2f}")
        print(f"  start to READY                         {ready:8.2f} s")
        if full is None:
            print(f"  READY to the last server in the table  not within timeout + 62 s ({watch.dests:,} in)")
        else:
            ok = full <= a.timeout + 2
            print(f"  READY to the last server in the table  {full:8.2f} s   (target <= timeout + 2 s = "
                  f"{a.timeout + 2:g} s){'  OK' if ok else '  MISSED'}")
            print(f"    of which this process's CPU time     {cpus[0]:8.2f} s   (the rest: waiting for a CPU)")
        print(f"  kernel batches meanwhile               {batches:8d}")
        print(f"  garbage collections to READY: {gcs[0]}; then to full: {gcs[1]}")
        print(f"  log lines at info meanwhile            {nlines:8d}   (last: {lines.last[-1] if lines.last else ''})")
        if detect:
            detect.sort()
            p50 = detect[len(detect) // 2]
            p99 = detect[min(len(detect) - 1, int(len(detect) * 0.99))]
            bound = a.interval * a.fall + a.timeout + 0.05
            print(f"  kill to delete, p50 / p99 of {len(detect)}       {p50:8.3f} / {p99:.3f} s   (bound {bound:.3f} s)"
                  f"{'  OK' if p99 <= bound else '  MISSED'}")
        if len(detect) < a.kills:
            print(f"  {a.kills - len(detect)} kills not detected within 120 s")
        return 0 if full is not None and full <= a.timeout + 2 else 1

if __name__ == "__main__":
    sys.exit(main())
