"""CheckManager at start and reload (issue 16): first probes run at once under a cap on probes in
flight, a reload's new probe runs at once, the steady state is spread over the interval, first
verdicts reach the daemon in batches while later transitions go at once, and the log summarises
a start instead of a line per server. Probes are fakes the test answers, so nothing here depends
on the machine's speed: the tests count events and read the scheduler's heap."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from lvsd.checks import manager as mgr
from lvsd.checks.base import Checker
from lvsd.config.checks import CheckConfig
from lvsd.core.health import Health
from lvsd.ipvs.model import DestKey


class Probes:
    """Every fake probe started and not yet answered, in start order."""

    def __init__(self) -> None:
        self.pending: list[FakeChecker] = []
        self.starts = 0
        self.most = 0  # most probes in flight at once

    def answer(self, n: int, ok: bool = True) -> None:
        batch, self.pending = self.pending[:n], self.pending[n:]
        for c in batch:
            c.done(ok, "fake ok" if ok else "fake failed", None)


PROBES = Probes()


class FakeChecker(Checker):
    kind = "fake"

    def start(self) -> None:
        PROBES.starts += 1
        PROBES.pending.append(self)
        PROBES.most = max(PROBES.most, len(PROBES.pending))

    def cancel(self) -> str:
        if self in PROBES.pending:
            PROBES.pending.remove(self)
        return "fake timeout"


@dataclass(frozen=True)
class FakeCheck(CheckConfig):
    type: str = "fake"

    def checker(self, addr: str, port: int, loop: Any, done: Any) -> Checker:
        return FakeChecker(self, addr, port, loop, done)


SPEC = FakeCheck(interval=30.0, timeout=3.0, rise=1, fall=1)


@dataclass
class Srv:
    key: DestKey
    checks: tuple[CheckConfig, ...] = (SPEC,)


@dataclass
class Svc:
    name: str
    servers: tuple[Srv, ...]


@dataclass
class Cfg:
    services: tuple[Svc, ...]


def cfg(n: int, name: str = "web") -> Cfg:
    return Cfg((Svc(name, tuple(Srv(DestKey.of(f"127.2.{i // 250}.{i % 250 + 1}", 80)) for i in range(n))),))


async def until(pred: Any, what: str) -> None:
    """Let the loop run until pred() holds (a generous bound: a hang fails, slowness does not)."""
    for _ in range(20_000):
        if pred():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never: {what}")


def fresh() -> Probes:
    global PROBES
    PROBES = Probes()
    return PROBES


def test_first_probes_run_at_once_with_at_most_cap_in_flight(run_async) -> None:
    probes = fresh()
    events: list[tuple[Any, Health]] = []

    async def main() -> tuple[float, int]:
        m = mgr.CheckManager(lambda sid, h: events.append((sid, h.state)), inflight_max=10)
        loop = asyncio.get_running_loop()
        await m.start(cfg(100))
        assert m.sched is not None
        t0 = loop.time()
        latest = max(w for w, _g, _p in m.sched.heap) - t0  # every first run, 30 s interval
        await until(lambda: probes.starts == 10 and len(m.sched.waiting) == 90, "10 started, 90 waiting")
        stalled = probes.starts
        probes.answer(4)
        await until(lambda: probes.starts == 14, "4 more started as 4 finished")
        while probes.starts < 100:
            probes.answer(len(probes.pending))
            await until(lambda: probes.pending, "the next slice started")
        probes.answer(len(probes.pending))
        await until(lambda: len(events) == 100, "every first verdict handed over")
        await m.stop()
        return latest, stalled

    latest, stalled = run_async(main())
    assert latest <= mgr.START_SPREAD  # not spread over the 30 s interval
    assert stalled == 10 and probes.most == 10
    assert {s for _sid, s in events} == {Health.UP}


def test_reload_runs_a_new_probe_at_once_and_keeps_the_others(run_async) -> None:
    probes = fresh()

    async def main() -> tuple[float, list[float], list[float]]:
        m = mgr.CheckManager(lambda sid, h: None)
        loop = asyncio.get_running_loop()
        await m.start(cfg(20))
        await until(lambda: probes.starts == 20, "first probes")
        probes.answer(20)
        await until(lambda: len(m.sched.heap) >= 20 and not probes.pending, "all scheduled")
        before = sorted(w for w, g, p in m.sched.heap if g == p.gen)
        await m.reload(cfg(21))
        now = loop.time()
        entries = [(w, p) for w, g, p in m.sched.heap if g == p.gen]
        new = [w - now for w, p in entries if p.results == 0]
        kept = sorted(w for w, p in entries if p.results)
        await m.stop()
        return new[0] if len(new) == 1 else float("nan"), before, kept

    new_at, before, kept = run_async(main())
    assert new_at <= 0  # due now, not within the 30 s interval
    assert kept == before  # reload leaves every other probe's next run alone


def test_steady_state_spread_over_the_interval(run_async) -> None:
    probes = fresh()

    async def main() -> list[float]:
        m = mgr.CheckManager(lambda sid, h: None)
        loop = asyncio.get_running_loop()
        await m.start(cfg(50))
        await until(lambda: probes.starts == 50, "first probes")
        probes.answer(50)  # all answer in the same instant
        t = loop.time()
        nxt = sorted(w - t for w, g, p in m.sched.heap if g == p.gen)
        await m.stop()
        return nxt

    nxt = run_async(main())
    assert len(nxt) == 50
    assert nxt[-1] <= SPEC.interval  # detection intact: the next run is within one interval
    assert nxt[-1] - nxt[0] > SPEC.interval / 3  # not synchronised by the start


def test_first_verdicts_are_batched_later_transitions_are_not(run_async) -> None:
    probes = fresh()
    events: list[tuple[Any, Health]] = []

    async def main() -> tuple[int, int]:
        m = mgr.CheckManager(lambda sid, h: events.append((sid, h.state)))
        await m.start(cfg(30))
        await until(lambda: probes.starts == 30, "first probes")
        probes.answer(30)
        held = len(events)  # answered, but waiting for the batch
        await until(lambda: len(events) == 30, "the batch")
        # a server going DOWN later is handed over from the probe's own callback
        m.sched.heap.sort()
        p = m.sched.heap[0][2]
        p.launch(asyncio.get_running_loop().time())
        probes.answer(1, ok=False)
        immediate = len(events)
        await m.stop()
        return held, immediate

    held, immediate = run_async(main())
    assert held == 0
    assert immediate == 31 and events[-1][1] is Health.DOWN


def test_a_first_verdict_down_is_not_held_for_the_batch(run_async) -> None:
    """A server adopted from the kernel is in it until its first verdict: a DOWN goes at once."""
    probes = fresh()
    events: list[tuple[Any, Health]] = []

    async def main() -> int:
        m = mgr.CheckManager(lambda sid, h: events.append((sid, h.state)))
        await m.start(cfg(30))
        await until(lambda: probes.starts == 30, "first probes")
        probes.answer(1, ok=False)
        at_once = len(events)
        probes.answer(29)
        await until(lambda: len(events) == 30, "the batch")
        await m.stop()
        return at_once

    assert run_async(main()) == 1 and events[0][1] is Health.DOWN


def test_start_logs_a_summary_not_a_line_per_server(caplog, run_async) -> None:
    probes = fresh()
    n = mgr.LOG_FIRST + 60

    async def main() -> None:
        m = mgr.CheckManager(lambda sid, h: None)
        await m.start(cfg(n))
        await until(lambda: probes.starts == n, "first probes")
        probes.answer(n - 5)
        probes.answer(5, ok=False)
        await until(lambda: m.startlog is None, "the summary")
        await m.stop()

    with caplog.at_level(logging.INFO, logger="lvsd.checks"):
        run_async(main())
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    per_server = [x for x in msgs if " UP: " in x or " DOWN: " in x]
    assert len(per_server) == mgr.LOG_FIRST
    assert f"start: checked {n} servers: {n - 5} up, 5 down" in msgs[-1], msgs[-1]


def test_summary_gives_up_on_servers_that_never_get_a_verdict(caplog, run_async) -> None:
    """A server the director cannot probe stays UNKNOWN: the progress lines stop after
    PROGRESS_MAX and later first verdicts are logged one line each (not held for a summary)."""
    probes = fresh()
    n = mgr.LOG_FIRST + 10

    async def main() -> bool:
        m = mgr.CheckManager(lambda sid, h: None)
        await m.start(cfg(n))
        await until(lambda: probes.starts == n, "first probes")
        slog = m.startlog
        assert slog is not None and slog.timer is not None
        slog.timer.cancel()
        for _ in range(mgr.PROGRESS_MAX):  # the progress timer's calls, without the waits
            slog._progress()
        stopped = slog.timer is None
        probes.answer(n)
        await until(lambda: m.startlog is None and not m._first, "the verdicts")
        await m.stop()
        return stopped

    with caplog.at_level(logging.INFO, logger="lvsd.checks"):
        stopped = run_async(main())
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert stopped
    assert sum(1 for x in msgs if "still checking" in x) == mgr.PROGRESS_MAX
    assert sum(1 for x in msgs if " UP: " in x) == n


def test_a_small_start_logs_each_verdict_and_no_summary(caplog, run_async) -> None:
    probes = fresh()

    async def main() -> None:
        m = mgr.CheckManager(lambda sid, h: None)
        await m.start(cfg(3))
        await until(lambda: probes.starts == 3, "first probes")
        probes.answer(3)
        await until(lambda: m.startlog is None, "the verdicts")
        await m.stop()

    with caplog.at_level(logging.INFO, logger="lvsd.checks"):
        run_async(main())
    msgs = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(msgs) == 3 and all(" UP: fake ok (1/1 passed)" in x for x in msgs), msgs
