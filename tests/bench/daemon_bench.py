#!/usr/bin/env python3
"""Daemon benchmark (run by hand): 1,000 services x 10 servers.

    python3 tests/bench/daemon_bench.py                     # host: memory backend parts
    tests/kernel/vm.sh python3 tests/bench/daemon_bench.py  # VM, as root: adds the kernel parts

Measures, each against its target (issue 4):
  1. parse + validate + desired + diff of the config        <= 300 ms
     (against an empty kernel, and against a kernel that already holds the table)
  2. a no-op reload through Daemon.reload()                  <= 300 ms, zero kernel writes
     (plus, for information, a one-weight reload: full dump + diff + one write, and a reload that
     changes 1% of the weights, issue 16's comparison with keepalived)
  3. cold start: the daemon's first reconcile applying the whole table on the real kernel
     <= 0.25x `ipvsadm -R` of the same table, same run, best of --repeat
     (plus, for information, process start to READY=1 including Python start-up)
  4. RSS of an lvsd process running that config              <= 80 MB
Exits 1 if a target is missed. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)

from lvsd.config import load as _load  # noqa: E402
from lvsd.config.load import load_config  # noqa: E402

# The loader remembers the TOML parse of the last text (an unchanged file re-validates only).
# "parse" figures must parse: forget it before each such run.
_clear = getattr(_load, "clear_parse_cache", lambda: None)


def cold_load(path: str):
    """load_config with the TOML parse cache emptied first: a real parse + validate."""
    _clear()
    return load_config(path)
from lvsd.core.desired import desired_table  # noqa: E402
from lvsd.core.diff import diff  # noqa: E402
from lvsd.ipvs.backend import Backend  # noqa: E402


def vip(i: int) -> str:
    return f"10.{100 + i // 250}.{i % 250}.1"


def rip(i: int, j: int) -> str:
    """Server j of service i: distinct within a service, valid up to 4,000 services x 240 servers
    (at most 12 x 250 services kept the old 172.16/16 addresses; more use the rest of 172.16/12)."""
    if i < 3000:
        return f"172.16.{i % 250}.{j + 10 + 20 * (i // 250)}"
    return f"172.{17 + (i - 3000) // 250 % 15}.{i % 250}.{j + 10}"


def config_text(n_svc: int, n_srv: int, sock: str, checks: bool = False, inline: bool = False) -> str:
    """The bench config; ``inline`` writes each service's servers as one array of inline tables
    (``server = [{ address = ..., ... }, ...]``, the same TOML data in fewer, shorter lines)."""
    out = [
        "[daemon]",
        'resync = "30s"',
        "[api]",
        f'socket = "{sock}"',
        "[defaults]",
        'forward = "nat"',
        'scheduler = "wrr"',
    ]
    if checks:
        out.append('check = { type = "tcp", interval = "10s", timeout = "1s" }')
    for i in range(n_svc):
        out += ["[[service]]", f'name = "svc{i}"', f'vip = "{vip(i)}:80"']
        if inline:
            out.append(
                "server = ["
                + ", ".join(f'{{ address = "{rip(i, j)}", port = 8080, weight = {j + 1} }}' for j in range(n_srv))
                + "]"
            )
            continue
        for j in range(n_srv):
            out += ["  [[service.server]]", f'  address = "{rip(i, j)}"', "  port = 8080", f"  weight = {j + 1}"]
    return "\n".join(out) + "\n"


def ipvsadm_rules(n_svc: int, n_srv: int) -> str:
    out = []
    for i in range(n_svc):
        out.append(f"-A -t {vip(i)}:80 -s wrr")
        for j in range(n_srv):
            out.append(f"-a -t {vip(i)}:80 -r {rip(i, j)}:8080 -m -w {j + 1}")
    return "\n".join(out) + "\n"


class Counting(Backend):
    """Wraps a backend, counting write batches and ops."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.batches = 0
        self.ops = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def dump(self):
        return self.inner.dump()

    def services(self):
        return self.inner.services()

    def service(self, key):
        return self.inner.service(key)

    def dests(self, key):
        return self.inner.dests(key)

    def timeouts(self):
        return self.inner.timeouts()

    def daemons(self):
        return self.inner.daemons()

    def apply(self, ops):
        ops = list(ops)
        self.batches += 1
        self.ops += len(ops)
        self.inner.apply(ops)


def best(fn, repeat: int) -> float:
    """Best CPU time of ``repeat`` runs (also printing the best wall time).

    CPU time of this single-threaded process equals wall time on an idle core; on the shared
    2-core development machine wall time mostly measures the other tenants, so the targets are
    checked against CPU time and the wall time is printed next to it."""
    cpu, wall = [], []
    for _ in range(repeat):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    global last_wall
    last_wall = min(wall)
    return min(cpu)


results: list[tuple[str, float, float, str]] = []  # (what, value, target, unit)
last_wall: float | None = None  # wall time of the last best() run, printed with its CPU time


def _wall() -> float | None:
    return last_wall


def report(what: str, value: float, target: float | None, unit: str = "ms", wall: float | None = None) -> None:
    shown = value * 1000 if unit == "ms" else value
    if wall is not None:
        what += f" [wall {wall * 1000:.0f} ms]"
    tgt = "" if target is None else f"  (target <= {target * 1000 if unit == 'ms' else target:g} {unit})"
    ok = "" if target is None else ("  OK" if value <= target else "  MISSED")
    print(f"{what:<62} {shown:10.1f} {unit}{tgt}{ok}", flush=True)
    if target is not None:
        results.append((what, value, target, unit))


def open_kernel() -> Backend | None:
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        return None
    from lvsd.ipvs.netlink import NetlinkBackend

    return NetlinkBackend()


def open_memory() -> Backend | None:
    try:
        from lvsd.ipvs.memory import MemoryBackend
    except ImportError:
        return None
    return MemoryBackend()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("services", nargs="?", type=int, default=1000)
    ap.add_argument("servers", nargs="?", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n_svc, n_srv, rep = args.services, args.servers, args.repeat
    tmp = tempfile.mkdtemp(prefix="lvsd-bench-")
    path = os.path.join(tmp, "lvsd.toml")
    with open(path, "w") as f:
        f.write(config_text(n_svc, n_srv, os.path.join(tmp, "lvsd.sock")))
    kernel = open_kernel()
    backend = kernel or open_memory()
    where = "kernel (netlink)" if kernel else ("memory backend" if backend else "no backend")
    print(f"# {n_svc} services x {n_srv} servers; {where}; best of {rep}", flush=True)

    # 1. parse + validate + desired + diff
    cfg = load_config(path)
    managed = {s.key for s in cfg.services}

    def plan_empty() -> None:
        c = cold_load(path)
        diff(desired_table(c, {}, {}), {}, managed)

    report("parse+validate+diff (empty kernel), CPU", best(plan_empty, rep), 0.300, wall=_wall())
    full = desired_table(cfg, {}, {})
    ops0 = diff(full, {}, managed)
    assert len(ops0) == n_svc * (1 + n_srv)
    # the daemon keeps its long-lived heap out of the collector's walks (gc.freeze after start and
    # after each reload): so does the bench, or plan + diff would time full collections of it
    gc.freeze()

    def plan_same() -> None:
        c = cold_load(path)
        assert diff(desired_table(c, {}, full), full, managed) == []

    report("parse+validate+diff (kernel already right), CPU", best(plan_same, rep), 0.300, wall=_wall())
    report("  of which parse+validate, CPU", best(lambda: cold_load(path), rep), None, wall=_wall())
    ipath = os.path.join(tmp, "inline.toml")
    with open(ipath, "w") as f:
        f.write(config_text(n_svc, n_srv, os.path.join(tmp, "lvsd.sock"), inline=True))
    assert load_config(ipath).services == cfg.services

    def plan_inline() -> None:
        c = cold_load(ipath)
        diff(desired_table(c, {}, {}), {}, managed)

    report("same, servers as inline tables, CPU", best(plan_inline, rep), None, wall=_wall())

    if backend is None:
        print("# no backend available: skipping daemon parts")
        return _verdict()

    from lvsd.daemon.daemon import Daemon
    from lvsd.daemon.notify import Notifier

    # 3. cold start vs ipvsadm -R (kernel only), and the daemon's first reconcile
    if kernel is not None:
        rules = ipvsadm_rules(n_svc, n_srv)

        def ipvsadm_restore() -> float:
            subprocess.run(["ipvsadm", "-C"], check=True)
            t0 = time.perf_counter()
            subprocess.run(["ipvsadm", "-R"], input=rules, text=True, check=True)
            return time.perf_counter() - t0

        def table() -> str:
            out = subprocess.run(["ipvsadm", "-Sn"], capture_output=True, text=True, check=True).stdout
            return "\n".join(sorted(out.splitlines()))

        def lvsd_cold() -> float:
            subprocess.run(["ipvsadm", "-C"], check=True)
            cb = Counting(kernel)
            d = Daemon(cfg, cb, config_path=path, notifier=Notifier(""), api=False, install_signals=False)

            async def cold() -> float:
                t0 = time.perf_counter()
                d._reconcile(full=True, cause="start")
                return time.perf_counter() - t0

            t = asyncio.run(cold())
            assert cb.ops == n_svc * (1 + n_srv), cb.ops
            return t

        # interleaved rounds: the machine's load changes by the minute, a round compares like with like
        t_ipv: list[float] = []
        t_lvsd: list[float] = []
        ref = mine = ""
        for _ in range(rep):
            t_ipv.append(ipvsadm_restore())
            ref = table()
            t_lvsd.append(lvsd_cold())
            mine = table()
        assert mine == ref, "lvsd's table differs from ipvsadm -R's"
        report("ipvsadm -R (reference), best", min(t_ipv), None)
        report("cold start: dump + plan + diff + apply the whole table, best", min(t_lvsd), None)
        rounds = ", ".join(f"{b / a:.3f}" for a, b in zip(t_ipv, t_lvsd, strict=True))
        ratio = min(t_lvsd) / min(t_ipv)
        print(f"{'  ratio to ipvsadm -R (best / best); per round: ' + rounds:<62} {ratio:10.3f} x   "
              f"(target <= 0.25 x){'  OK' if ratio <= 0.25 else '  MISSED'}")
        results.append(("cold start ratio to ipvsadm -R", ratio, 0.25, "x"))
    else:
        backend.apply(ops0)

    # 2. no-op reload, then a one-weight reload, through the daemon
    cb = Counting(backend)
    d = Daemon(cfg, cb, config_path=path, notifier=Notifier(""), api=False, install_signals=False)

    async def reloads() -> tuple[float, float, int, int]:
        d._reconcile(full=True, cause="start")
        cb.batches = cb.ops = 0
        noop, noop_wall, edited = [], [], []
        for i in range(rep):
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            ok, msg = await d.reload()  # the file as it is (its TOML parse is remembered)
            noop.append(time.process_time() - c0)
            noop_wall.append(time.perf_counter() - t0)
            assert ok and msg == "unchanged", msg
            with open(path, "a") as f:
                f.write(f"# comment {i}\n")  # same config, different text: a full parse
            gc.collect()
            c0 = time.process_time()
            ok, msg = await d.reload()
            edited.append(time.process_time() - c0)
            assert ok and msg == "unchanged", msg
        global last_wall
        last_wall = min(noop_wall)
        t_edit = min(edited)
        print(f"{'no-op reload after a comment-only edit (full parse), CPU':<62} {t_edit * 1000:10.1f} ms"
              f"  (target <= 300 ms){'  OK' if t_edit <= 0.3 else '  MISSED'}")
        results.append(("no-op reload, comment edit", t_edit, 0.300, "ms"))
        writes = cb.batches
        text = open(path).read().replace("weight = 3\n", "weight = 4\n", 1)
        with open(path, "w") as f:
            f.write(text)
        c0 = time.process_time()
        ok, msg = await d.reload()
        one = time.process_time() - c0
        assert ok, msg
        one_ops = cb.ops
        # issue 16: 1% of the servers change weight (every 100th "weight = N" line), as keepalived's
        # reload was measured; the ops written must be exactly those servers' edits
        lines = open(path).read().split("\n")
        changed = 0
        for k, line in enumerate(lines):
            if line.startswith("  weight = "):
                changed += 1
                if changed % 100 == 0:
                    lines[k] = f"  weight = {int(line.split('=')[1]) + 100}"
        with open(path, "w") as f:
            f.write("\n".join(lines))
        cb.ops = 0
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        ok, msg = await d.reload()
        pct = time.process_time() - c0
        pct_wall = time.perf_counter() - t0
        assert ok and msg == "reloaded", msg
        assert cb.ops == changed // 100, (cb.ops, changed // 100)
        print(f"{'1% weight reload (' + str(cb.ops) + ' edits written), CPU [wall ' + f'{pct_wall * 1000:.0f} ms]':<62} "
              f"{pct * 1000:10.1f} ms")
        return min(noop), one, writes, one_ops

    t_noop, t_one, writes, one_ops = asyncio.run(reloads())
    report("no-op reload, unchanged file, CPU", t_noop, 0.300, wall=_wall())
    print(f"{'  kernel writes during no-op reloads':<62} {writes:10d}      (target 0){'  OK' if writes == 0 else '  MISSED'}")
    results.append(("no-op reload kernel writes", writes, 0, "writes"))
    report(f"one-weight reload (full dump + diff, {one_ops} op written), CPU", t_one, None)
    assert one_ops == 1

    # 4. RSS of a real lvsd process with that config (kernel: netlink; host: memory backend)
    rss, ready = run_process(path, kernel is not None, tmp)
    report("lvsd process: start to READY=1 (incl. Python start-up)", ready, None)
    report("lvsd process RSS after start", rss, 80.0, "MB")
    if kernel is not None:
        subprocess.run(["ipvsadm", "-C"], check=True)
    return _verdict()


def run_process(path: str, kernel: bool, tmp: str) -> tuple[float, float]:
    """Start `lvsd -f path`, wait for READY=1, read VmRSS, stop it. (MB, seconds)."""
    from benchlib import Lvsd

    if kernel:
        subprocess.run(["ipvsadm", "-C"], check=True)
    with Lvsd(path, tmp, kernel=kernel) as p:
        ready = p.wait_ready(300)
        rss = p.rss_mb()
    return rss, ready


def _verdict() -> int:
    missed = [r for r in results if r[1] > r[2]]
    print(f"# {len(results) - len(missed)}/{len(results)} targets met")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
