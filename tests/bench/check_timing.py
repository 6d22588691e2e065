"""Check timing: how soon the CheckManager reports a server DOWN / UP again, and whether every
probe keeps its cadence when many share the timer heap. Figures, not verdicts: the unit tests
(tests/unit/test_checks_manager.py) check the transitions and their reasons; how fast they
come depends on the machine's load, so it is reported here.

    python tests/bench/check_timing.py [--rounds N] [--probes N] [--seconds S]

Reaction (TCP check: interval 0.05 s, timeout 0.1 s, rise 2, fall 3, on 127.0.0.1): the
listener is closed, then opened again; the time from each to the reported change. Budgets:
DOWN within interval x fall + timeout + 0.1 s of slack (0.35 s); UP within interval x rise +
0.1 s (0.2 s). Cadence: N probes of interval 0.05 s on one server over S seconds; each should
run at least 0.7 x S / interval times. Prints each figure with its budget and whether it is met;
exits 0 either way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from lvsd.checks.manager import CheckManager  # noqa: E402
from lvsd.config import Config  # noqa: E402
from lvsd.config.load import parse_config  # noqa: E402
from lvsd.core.health import Health  # noqa: E402

INTERVAL, TIMEOUT, RISE, FALL = 0.05, 0.1, 2, 3
DOWN_BUDGET = INTERVAL * FALL + TIMEOUT + 0.1
UP_BUDGET = INTERVAL * RISE + 0.1


def listen(port: int = 0) -> socket.socket:
    """A TCP listener on 127.0.0.1 (``port`` 0: any); SO_REUSEADDR so it can come back on the same port."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


def config(port: int, checks: str) -> Config:
    """One service with one server, 127.0.0.1:``port``, checked by ``checks`` (inline TOML)."""
    return parse_config(
        f'[[service]]\nname = "web"\nvip = "10.0.0.1:80"\nforward = "nat"\ncheck = {checks}\n'
        f'  [[service.server]]\n  address = "127.0.0.1"\n  port = {port}\n'
    )


async def reaction_round() -> tuple[float, float]:
    """(seconds from closing the listener to DOWN, from re-opening it to UP)."""
    ls = listen()
    port = ls.getsockname()[1]
    cfg = config(port, f'{{ type = "tcp", interval = {INTERVAL}, timeout = {TIMEOUT}, rise = {RISE}, fall = {FALL} }}')
    changed: asyncio.Queue[tuple[float, Health]] = asyncio.Queue()
    m = CheckManager(lambda sid, h: changed.put_nowait((time.monotonic(), h.state)))

    async def until(state: Health) -> float:
        while True:
            t, s = await asyncio.wait_for(changed.get(), 10)
            if s is state:
                return t

    await m.start(cfg)
    try:
        await until(Health.UP)
        ls.close()
        t_kill = time.monotonic()
        down = await until(Health.DOWN) - t_kill
        ls = listen(port)
        t_back = time.monotonic()
        up = await until(Health.UP) - t_back
    finally:
        await m.stop()
        ls.close()
    return down, up


async def cadence(probes: int, seconds: float) -> tuple[list[int], float]:
    """Results per probe over ``seconds`` for ``probes`` distinct checks of one server, and the window."""
    ls = listen()
    checks = ", ".join(
        f'{{ type = "tcp", interval = {INTERVAL}, timeout = 0.04, rise = {r}, fall = 1 }}' for r in range(1, probes + 1)
    )
    m = CheckManager(lambda sid, h: None)
    await m.start(config(ls.getsockname()[1], f"[{checks}]"))
    try:
        await asyncio.sleep(2 * INTERVAL)  # past the jittered first runs
        before = {k: p.results for k, p in m.probes.items()}
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        elapsed = time.monotonic() - t0
        counts = [p.results - before[k] for k, p in m.probes.items()]
    finally:
        await m.stop()
        ls.close()
    return counts, elapsed


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10, help="reaction rounds (default 10)")
    ap.add_argument("--probes", type=int, default=30, help="probes sharing the timer heap (default 30)")
    ap.add_argument("--seconds", type=float, default=1.0, help="cadence window (default 1 s)")
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)  # the checks' DOWN/UP lines: the figures are the output

    downs, ups = [], []
    for _ in range(args.rounds):
        down, up = asyncio.run(reaction_round())
        downs.append(down)
        ups.append(up)
    for name, xs, budget in (("DOWN after the listener closed", downs, DOWN_BUDGET),
                             ("UP after it came back", ups, UP_BUDGET)):  # fmt: skip
        worst = max(xs)
        print(
            f"{name:<32} median {statistics.median(xs) * 1000:6.0f} ms  worst {worst * 1000:6.0f} ms"
            f"  budget {budget * 1000:.0f} ms: {verdict(worst <= budget)} ({worst / budget:.2f}x)"
        )
    counts, elapsed = asyncio.run(cadence(args.probes, args.seconds))
    expected = elapsed / INTERVAL
    low = min(counts)
    print(
        f"cadence of {len(counts)} probes over {elapsed:.2f} s      expected {expected:.1f} runs each,"
        f" min {low} median {statistics.median(counts):.0f} max {max(counts)}"
        f"  budget >= {0.7 * expected:.1f}: {verdict(low >= 0.7 * expected)} ({low / expected:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
