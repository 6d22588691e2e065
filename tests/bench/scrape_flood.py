#!/usr/bin/env python3
"""Failure detection under a /metrics scrape flood (issue 11, item 4), run by hand:

    python3 tests/bench/scrape_flood.py [--servers 10000] [--scrapers 4] [--rounds 5]

lvsd (memory backend, real TCP checks on loopback) checks N servers plus one target; the target
is killed ``--rounds`` times with nobody scraping and as many times while ``--scrapers`` clients
fetch /metrics in a loop. Prints each detection time (kill -> lvsd's notify_down hook), the
medians and their ratio (target: flood / quiet <= 1.5), and lvsd's CPU use in each phase.
Exits 1 if the ratio is above the target. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "abuse"))

from harness import Lab, cpu_seconds  # noqa: E402

TARGET_RATIO = 1.5


def measure(tmp: Path, servers: int, scrapers: int, rounds: int, bound: float = 60) -> tuple[list[float], list[float], dict[str, float]]:
    """Detection times quiet and under the flood, and lvsd's CPU share (of one core) in each."""
    lab = Lab(tmp, servers)
    cpu: dict[str, float] = {}
    try:
        lab.start(timeout=300)
        assert lab.lvsd is not None
        lab.wait_all_up()  # the start-up's burst of transitions over
        time.sleep(1)
        quiet, flood = [], []
        c0, t0 = cpu_seconds(lab.lvsd.pid), time.monotonic()
        for _ in range(rounds):
            quiet.append(lab.kill_target(bound))
            lab.revive_target()
        cpu["quiet"] = (cpu_seconds(lab.lvsd.pid) - c0) / (time.monotonic() - t0)
        ps = lab.scrapers(scrapers, 3600)
        time.sleep(2)
        c0, t0 = cpu_seconds(lab.lvsd.pid), time.monotonic()
        for _ in range(rounds):
            flood.append(lab.kill_target(bound))
            lab.revive_target()
        cpu["flood"] = (cpu_seconds(lab.lvsd.pid) - c0) / (time.monotonic() - t0)
        for p in ps:
            p.kill()
        return quiet, flood, cpu
    finally:
        lab.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--scrapers", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        quiet, flood, cpu = measure(Path(tmp), a.servers, a.scrapers, a.rounds)
    q, f = statistics.median(quiet), statistics.median(flood)
    print(f"servers {a.servers}, scrapers {a.scrapers}, rounds {a.rounds}")
    print(f"quiet: {' '.join(f'{x:.3f}' for x in quiet)}  median {q:.3f}s  lvsd cpu {cpu['quiet']:.0%}")
    print(f"flood: {' '.join(f'{x:.3f}' for x in flood)}  median {f:.3f}s  lvsd cpu {cpu['flood']:.0%}")
    ratio = f / q
    print(f"ratio flood/quiet: {ratio:.2f} (target <= {TARGET_RATIO})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
