"""Issue 16: the kernel's counters are read only when asked and at most once per IPVS stats
period, by one cache that /services and /metrics share: concurrent requests wait for the read in
flight, requests within the period reuse it, a few services are read on their own, and the
reconciler's dumps neither fill nor replace it."""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeChecks, NoHA

from lvsd.config import load_config
from lvsd.daemon.daemon import Daemon
from lvsd.daemon.kernel_stats import KernelStats
from lvsd.ipvs.backend import IPVSError, Op
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import AF_INET, Destination, DestKey, Service, ServiceKey


def table(n: int = 3) -> MemoryBackend:
    b = MemoryBackend()
    for i in range(n):
        key = ServiceKey.inet("tcp", f"10.0.0.{i + 1}", 80)
        b.apply([Op.add_service(Service(key, "wrr")), Op.add_dest(key, Destination(DestKey(AF_INET, "192.168.0.1", 80), weight=i + 1))])
    return b


class Counting:
    """A backend's reads, counted; ``slow`` makes each dump yield to the loop first (a read in
    flight that other requests can see)."""

    def __init__(self, backend: MemoryBackend) -> None:
        self.backend = backend
        self.dumps = 0
        self.dests_reads = 0
        self.error: Exception | None = None

    def dump(self) -> Any:
        self.dumps += 1
        if self.error is not None:
            raise self.error
        return self.backend.dump()

    def dests(self, key: ServiceKey) -> list[Destination]:
        self.dests_reads += 1
        return self.backend.dests(key)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_requests_share_one_read() -> None:
    c = Counting(table())
    ks = KernelStats(c.dump, c.dests)

    async def main() -> list[Any]:
        return await asyncio.gather(*(ks.table() for _ in range(50)))

    tables = asyncio.run(main())
    assert c.dumps == 1 and ks.dumps == 1
    assert all(t is tables[0] for t in tables) and len(tables[0]) == 3


def test_concurrent_requests_wait_for_a_slow_read_in_flight() -> None:
    """A read that lets the loop run while it works (as a chunked or threaded dump would): the
    requests arriving meanwhile await it instead of starting their own."""
    c = Counting(table())
    started = 0

    async def slow_read() -> Any:
        nonlocal started
        started += 1
        await asyncio.sleep(0.01)
        return c.dump()

    ks = KernelStats(slow_read, c.dests)

    async def main() -> None:
        first = asyncio.ensure_future(ks.table())
        await asyncio.sleep(0)  # the read is in flight
        rest = [asyncio.ensure_future(ks.table()) for _ in range(20)]
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert started == 1 and c.dumps == 1


def test_requests_within_the_period_reuse_the_read_and_after_it_read_again() -> None:
    c = Counting(table())
    clock = Clock()
    ks = KernelStats(c.dump, c.dests, period=2.0, clock=clock)

    async def main() -> None:
        await ks.table()
        clock.now += 1.9
        await ks.table()
        assert c.dumps == 1
        clock.now += 0.2
        await ks.table()
        assert c.dumps == 2

    asyncio.run(main())


def test_a_write_by_lvsd_makes_the_read_stale_within_the_period() -> None:
    """The operator who reloads or drains and then looks sees the kernel after the write."""
    c = Counting(table(8))
    writes = [0]
    ks = KernelStats(c.dump, c.dests, period=3600.0, writes=lambda: writes[0])
    k1 = ServiceKey.inet("tcp", "10.0.0.1", 80)

    async def main() -> None:
        await ks.table()
        await ks.table()
        await ks.services([k1], of=8)
        assert (c.dumps, c.dests_reads) == (1, 0)
        writes[0] += 3
        await ks.services([k1], of=8)  # the stale table is not used: this one service is read
        await ks.services([k1], of=8)
        assert (c.dumps, c.dests_reads) == (1, 1)
        await ks.table()
        await ks.table()
        assert c.dumps == 2
        writes[0] += 1
        await ks.services([k1], of=8)
        assert c.dests_reads == 2

    asyncio.run(main())


def test_a_read_error_is_kept_for_the_period_and_given_to_every_request() -> None:
    c = Counting(table())
    c.error = IPVSError("list-services", errno.EPERM)
    clock = Clock()
    ks = KernelStats(c.dump, c.dests, clock=clock)

    async def main() -> None:
        for _ in range(3):
            with pytest.raises(IPVSError):
                await ks.table()
        assert c.dumps == 1
        c.error = None
        clock.now += ks.period
        assert len(await ks.table()) == 3

    asyncio.run(main())


def test_a_few_services_are_read_on_their_own_and_kept_for_the_period() -> None:
    c = Counting(table(8))
    clock = Clock()
    ks = KernelStats(c.dump, c.dests, clock=clock)
    k1, k2 = ServiceKey.inet("tcp", "10.0.0.1", 80), ServiceKey.inet("tcp", "10.0.0.2", 80)
    gone = ServiceKey.inet("tcp", "10.9.9.9", 80)

    async def main() -> None:
        got = await ks.services([k1, gone], of=8)
        assert c.dumps == 0 and c.dests_reads == 2
        assert got[gone] is None and got[k1] is not None and [d.weight for d in got[k1].values()] == [1]
        await ks.services([k1, k2], of=8)  # k1 within the period: only k2 is read
        assert c.dests_reads == 3
        clock.now += ks.period
        await ks.services([k1], of=8)
        assert c.dests_reads == 4 and c.dumps == 0
        # half of the services: one dump is cheaper than one read each; then the fresh table serves all
        got = await ks.services([ServiceKey.inet("tcp", f"10.0.0.{i + 1}", 80) for i in range(4)], of=8)
        assert c.dumps == 1 and len(got) == 4
        await ks.services([k2], of=8)
        assert c.dumps == 1 and c.dests_reads == 4

    asyncio.run(main())


# --- through the real API ----------------------------------------------------------------------

CONFIG = """
[daemon]
resync = 0

[api]
socket = "{sock}"
""" + "".join(
    f'[[service]]\nname = "s{i}"\nvip = "10.0.0.{i + 1}:80"\n  [[service.server]]\n  address = "192.168.0.1"\n  forward = "nat"\n'
    for i in range(6)
)


class CountingBackend(MemoryBackend):
    """The memory backend, counting whole-table dumps."""

    dumps = 0

    def dump(self) -> Any:
        self.dumps += 1
        return super().dump()


async def get(sock: Path, path: str) -> tuple[int, bytes]:
    r, w = await asyncio.open_unix_connection(str(sock))
    w.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    raw = await r.read()
    w.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_api_and_metrics_share_one_read_per_period(tmp_path: Path) -> None:
    sock, cfg = tmp_path / "lvsd.sock", tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG.format(sock=sock))
    b = CountingBackend()

    async def main() -> None:
        d = Daemon(load_config(str(cfg)), b, config_path=str(cfg), install_signals=False,
                   checks_factory=FakeChecks, ha_factory=NoHA)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), 20)
        d.api.kernel.period = 3600.0  # every request below is "within the period", however slow the host
        before = b.dumps
        answers = await asyncio.gather(*(get(sock, "/services") for _ in range(10)), *(get(sock, "/metrics") for _ in range(10)))
        assert all(code == 200 for code, _ in answers)
        assert b.dumps - before == 1  # 20 concurrent requests of both kinds: one read
        await get(sock, "/services")
        await get(sock, "/services?service=s1")
        assert b.dumps - before == 1 and d.api.kernel.service_reads == 0  # the fresh table serves all
        row = json.loads((await get(sock, "/services?service=s1"))[1])["services"][0]
        assert row["in_kernel"] and row["servers"][0]["kernel_weight"] == 1
        # a reload that writes a weight: the next look shows it, however long the period
        cfg.write_text(CONFIG.format(sock=sock).replace('address = "192.168.0.1"\n  forward = "nat"\n[[service]]\nname = "s2"',
                                                        'address = "192.168.0.1"\n  forward = "nat"\n  weight = 7\n[[service]]\nname = "s2"'))
        ok, msg = await d.request_reload()
        assert ok, msg
        row = json.loads((await get(sock, "/services?service=s1"))[1])["services"][0]
        assert row["servers"][0]["kernel_weight"] == 7
        # the reconciler's dumps are its own: a full pass neither fills nor replaces the cache
        d.api.kernel.period = 0.0
        reads = d.api.kernel.dumps
        assert d.reconciler.reconcile(True, set(), "test")
        assert d.api.kernel.dumps == reads
        d.request_stop()
        assert await task == 0

    asyncio.run(asyncio.wait_for(main(), 30))
