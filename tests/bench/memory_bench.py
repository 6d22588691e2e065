#!/usr/bin/env python3
"""Memory per server (issue 16), run by hand: where a running daemon's bytes go, by object type.

    python tests/bench/memory_bench.py [SERVICES] [SERVERS] [--checks] [--settle S]

Starts a Daemon in this process on the memory backend with SERVICES x SERVERS (default 5,000 x 10
= 50,000 servers; with --checks each server has a TCP check every 5 s against a refused loopback
port, so the real check engine runs), lets it run --settle seconds, and prints: the process RSS
before and after (MB, bytes per server), the Python heap that tracemalloc sees, and a census of
the collector-tracked objects by type (count, bytes by sys.getsizeof; strings and ints are not
tracked and show only in the tracemalloc lines, grouped by the line that allocated them).
Target (docs/performance.md, "memory per server"): at most 150 MB RSS, 3 kB a server, at 50,000.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import os
import sys
import tempfile
import time
import tracemalloc

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def config_text(n_svc: int, n_srv: int, checks: bool) -> str:
    """N wrr NAT services of M servers on port 8080 of loopback addresses (nothing listens there:
    a TCP check gets a refusal at once, the engine runs at its full rate without open sockets)."""
    out = ['[daemon]\nresync = "30s"\n[defaults]\nforward = "nat"\nscheduler = "wrr"\n']
    if checks:
        out.append('check = { type = "tcp", interval = "5s", timeout = "1s" }\n')
    for i in range(n_svc):
        out.append(f'[[service]]\nname = "svc{i}"\nvip = "10.{100 + i // 250}.{i % 250}.1:80"\n')
        for j in range(n_srv):
            out.append(
                f'  [[service.server]]\n  address = "127.{1 + i // 250}.{i % 250}.{j + 1}"\n'
                f"  port = 8080\n  weight = {j + 1}\n"
            )
    return "".join(out)


def census() -> tuple[collections.Counter[str], collections.Counter[str]]:
    """Collector-tracked objects by type name: counts and sys.getsizeof bytes."""
    n: collections.Counter[str] = collections.Counter()
    b: collections.Counter[str] = collections.Counter()
    for o in gc.get_objects():
        t = type(o).__name__
        n[t] += 1
        b[t] += sys.getsizeof(o)
    return n, b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("services", nargs="?", type=int, default=5000)
    ap.add_argument("servers", nargs="?", type=int, default=10)
    ap.add_argument("--checks", action="store_true", help="a TCP check per server (the real engine)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds to run before measuring")
    ap.add_argument("--top", type=int, default=15, help="lines of each listing")
    ap.add_argument("--rss", action="store_true", help="RSS only: no tracemalloc, no census (the figure to compare)")
    args = ap.parse_args()
    n = args.services * args.servers
    tmp = tempfile.mkdtemp(prefix="lvsd-mem-")
    path = os.path.join(tmp, "lvsd.toml")
    with open(path, "w") as f:
        f.write(config_text(args.services, args.servers, args.checks))

    from fakes import FakeChecks

    import lvsd.checks.manager  # noqa: F401  (imports count as the baseline, not as the servers)
    import lvsd.checks.tcp  # noqa: F401
    from lvsd.config.load import load_config
    from lvsd.daemon.daemon import Daemon
    from lvsd.daemon.notify import Notifier
    from lvsd.ipvs.memory import MemoryBackend

    gc.collect()
    r0 = rss_mb()
    if not args.rss:
        tracemalloc.start(1)
    snap0 = tracemalloc.take_snapshot() if not args.rss else None
    n0, b0 = census() if not args.rss else (collections.Counter(), collections.Counter())

    async def run() -> None:
        cfg = load_config(path)
        kw = {} if args.checks else {"checks_factory": FakeChecks}
        d = Daemon(cfg, MemoryBackend(), config_path=path, notifier=Notifier(""), api=False,
                   install_signals=False, **kw)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        await d.start()
        started = time.perf_counter() - t0
        await asyncio.sleep(args.settle)
        del cfg
        gc.unfreeze()  # frozen objects are invisible to gc.get_objects()
        gc.collect()
        r1 = rss_mb()
        if args.rss:
            print(f"# {n} servers, checks {'tcp 5 s' if args.checks else 'none (fake)'}: started in {started:.2f} s; "
                  f"RSS {r0:.1f} -> {r1:.1f} MB: +{r1 - r0:.1f} MB, {(r1 - r0) * 2**20 / n:.0f} B/server above "
                  f"the imports, {r1 * 2**20 / n:.0f} B/server in all")
            await d.stop()
            return
        snap1 = tracemalloc.take_snapshot()
        n1, b1 = census()
        assert snap0 is not None
        stats = snap1.compare_to(snap0, "lineno")
        traced = sum(s.size_diff for s in stats) / 2**20
        print(f"# {args.services} services x {args.servers} servers = {n}; checks: {'tcp, 5 s' if args.checks else 'none (fake)'}; "
              f"started in {started:.2f} s (with tracemalloc), settled {args.settle:g} s")
        print(f"RSS {r0:.1f} -> {r1:.1f} MB: +{r1 - r0:.1f} MB (tracemalloc's own included: --rss for the figure)")
        print(f"Python heap (tracemalloc): +{traced:.1f} MB, {traced * 2**20 / n:.0f} B/server; by allocating line:")
        for s in stats[: args.top]:
            print(f"  {s.size_diff / 1024:9.0f} KB {s.count_diff:8d}  {s.traceback}")
        print("tracked objects by type (count, getsizeof):")
        for t, _ in sorted(b1.items(), key=lambda kv: -(kv[1] - b0[kv[0]]))[: args.top]:
            dn, db = n1[t] - n0[t], b1[t] - b0[t]
            print(f"  {t:<24} {dn:8d} {db / 1024:9.0f} KB  {db / max(dn, 1):6.0f} B each")
        await d.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
