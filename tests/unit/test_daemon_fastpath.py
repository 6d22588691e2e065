"""The daemon's health-transition fast path: a transition is diffed against lvsd's own view of
its services (no kernel read) and applies exactly the delta; a refused delta drops the view and
repairs from a fresh dump in the same pass; the periodic resync still repairs outside edits the
view cannot know about; a failure of both is retried with backoff."""

from __future__ import annotations

import asyncio
import errno
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakes import FakeChecks, NoHA

from lvsd.config import load_config
from lvsd.core.health import Health, ServerHealth
from lvsd.daemon.daemon import Daemon
from lvsd.daemon.notify import Notifier
from lvsd.ipvs.backend import IPVSError, Op, OpKind
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import Destination, DestKey, Forward, ServiceKey

WEB = ServiceKey.inet("tcp", "10.0.0.1", 80)
DNS = ServiceKey.inet("udp", "10.0.0.2", 53)
A = DestKey.of("192.168.0.1", 80)
B = DestKey.of("192.168.0.2", 80)
C = DestKey.of("192.168.0.3", 80)
UP = ServerHealth(Health.UP)
DOWN = ServerHealth(Health.DOWN, reason="refused")

CONFIG = """
[daemon]
resync = "{resync}"

[defaults]
check = {{ type = "tcp" }}

[[service]]
name = "web"
vip = "10.0.0.1:80"
scheduler = "wrr"
  [[service.server]]
  address = "192.168.0.1"
  weight = 3
  [[service.server]]
  address = "192.168.0.2"
  weight = 2
  [[service.server]]
  address = "192.168.0.3"
  weight = 4
  on_failure = "inhibit"

[[service]]
name = "dns"
vip = "10.0.0.2:53"
protocol = "udp"
  [[service.server]]
  address = "192.168.0.1"
  port = 53
"""


class Backend(MemoryBackend):
    """The memory backend counting kernel reads and recording every batch; can refuse batches."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Op]] = []
        self.reads = 0
        self.fail_next = 0

    def dump(self):  # type: ignore[override]
        self.reads += 1
        return super().dump()

    def service(self, key):  # type: ignore[override]
        self.reads += 1
        return super().service(key)

    def dests(self, key):  # type: ignore[override]
        self.reads += 1
        return super().dests(key)

    def apply(self, ops):  # type: ignore[override]
        ops = list(ops)
        if self.fail_next:
            self.fail_next -= 1
            raise IPVSError(ops[0], errno.ENOMEM)
        super().apply(ops)
        self.batches.append(ops)

    def outside(self, ops: list[Op]) -> None:
        """An edit behind lvsd's back (ipvsadm): not recorded as lvsd's."""
        MemoryBackend.apply(self, ops)

    def weights(self, key: ServiceKey = WEB) -> dict[DestKey, int]:
        return {k: d.weight for k, d in MemoryBackend.dump(self)[key].dests.items()}


class Checks(FakeChecks):
    """The shared fake, with verdicts addressed by server alone (service "web" unless named)."""

    def set(self, server: DestKey, h: ServerHealth, service: str = "web") -> None:
        super().set((service, server), h)


def start(tmp_path: Path, b: Backend, resync: str = "1h") -> Daemon:
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(textwrap.dedent(CONFIG.format(resync=resync)))
    return Daemon(load_config(str(cfg)), b, str(cfg), Notifier(""), checks_factory=Checks, ha_factory=NoHA,
                  api=False, install_signals=False)


def run(body: Callable[[Daemon, Checks, Backend], Any], tmp_path: Path, resync: str = "1h") -> None:
    async def main() -> None:
        b = Backend()
        d = start(tmp_path, b, resync)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), 10)
        checks = d.checks
        for srv in (A, B, C):
            checks.set(srv, UP)
        checks.set(DestKey.of("192.168.0.1", 53), UP, "dns")
        assert await d.wait_reconciled()
        assert b.weights() == {A: 3, B: 2, C: 4}
        await body(d, checks, b)
        d.request_stop()
        await task

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_transition_applies_exactly_its_delta_without_reading_the_kernel(tmp_path: Path) -> None:
    async def body(d: Daemon, checks: Checks, b: Backend) -> None:
        cases = [
            (A, DOWN, [(OpKind.DEL_DEST, A, None)], {B: 2, C: 4}),
            (C, DOWN, [(OpKind.EDIT_DEST, C, 0)], {B: 2, C: 0}),  # inhibit: weight 0, stays in
            (A, UP, [(OpKind.ADD_DEST, A, 3)], {A: 3, B: 2, C: 0}),
            (C, ServerHealth(Health.UP, weight=7), [(OpKind.EDIT_DEST, C, 7)], {A: 3, B: 2, C: 7}),
        ]
        for srv, h, ops, table in cases:
            reads, n = b.reads, len(b.batches)
            checks.set(srv, h)
            assert await d.wait_reconciled()
            assert b.reads == reads, "a health transition must not read the kernel"
            assert len(b.batches) == n + 1
            assert [(o.kind, o.dest.key, None if o.kind is OpKind.DEL_DEST else o.dest.weight)
                    for o in b.batches[-1]] == ops
            assert all(o.key == WEB for o in b.batches[-1])
            assert b.weights() == table
        assert d.reconciler.view == MemoryBackend.dump(b)  # the view is exactly the kernel

    run(body, tmp_path)


def test_a_refused_delta_falls_back_to_a_full_reconcile_at_once(tmp_path: Path) -> None:
    async def body(d: Daemon, checks: Checks, b: Backend) -> None:
        # behind lvsd's back: A deleted, B reweighted; lvsd's view still has both as it wrote them
        b.outside([Op.del_dest(WEB, A), Op.edit_dest(WEB, Destination(B, Forward.MASQ, 9))])
        reads, repairs = b.reads, d.stats.repairs
        checks.set(A, DOWN)  # the delta (delete A) is refused: A is already gone
        assert await d.wait_reconciled()  # same pass, no retry backoff
        assert b.reads > reads  # the fallback read the kernel
        assert b.weights() == {B: 2, C: 4}  # B repaired too
        assert d.stats.repairs == repairs + 1
        assert d.stats.reconciles["error"] == 0
        assert d.reconciler.view == MemoryBackend.dump(b)
        # and the view is trusted again afterwards
        reads = b.reads
        checks.set(A, UP)
        assert await d.wait_reconciled()
        assert b.reads == reads and b.weights() == {A: 3, B: 2, C: 4}

    run(body, tmp_path)


def test_a_refused_delta_is_repaired_in_full_then_retried_with_backoff(tmp_path: Path) -> None:
    async def body(d: Daemon, checks: Checks, b: Backend) -> None:
        b.fail_next = 2  # the delta and the repairing full pass both refused
        checks.set(B, DOWN)
        assert await d.wait_reconciled()  # one refused op does not fail the pass
        assert WEB not in (d.reconciler.view or {})  # its service is read from the kernel next time
        assert b.weights() == {A: 3, B: 2, C: 4}
        assert [r.count for r in d.reconciler.refused.values()] == [2]
        reads = b.reads
        assert await d.wait_reconciled()  # the retry (after the backoff) is a full reconcile
        assert b.reads > reads
        assert b.weights() == {A: 3, C: 4}
        assert not d.reconciler.refused
        assert d.reconciler.view == MemoryBackend.dump(b)

    run(body, tmp_path)


def test_a_failing_kernel_drops_the_view_and_retries_in_full(tmp_path: Path) -> None:
    async def body(d: Daemon, checks: Checks, b: Backend) -> None:
        b.fail_next = 1
        d.request_resync()  # a full pass of several ops, the whole batch refused: the pass fails
        b.outside([Op.edit_dest(WEB, Destination(B, Forward.MASQ, 9)), Op.edit_dest(WEB, Destination(C, Forward.MASQ, 9))])
        assert not await d.wait_reconciled()
        assert d.reconciler.view is None
        reads = b.reads
        assert await d.wait_reconciled()  # the retry (after the backoff) is a full reconcile
        assert b.reads > reads
        assert b.weights() == {A: 3, B: 2, C: 4}
        assert d.reconciler.view == MemoryBackend.dump(b)

    run(body, tmp_path)


def test_the_resync_still_repairs_edits_the_view_cannot_see(tmp_path: Path) -> None:
    async def body(d: Daemon, checks: Checks, b: Backend) -> None:
        b.outside([Op.edit_dest(WEB, Destination(B, Forward.MASQ, 9))])
        checks.set(A, DOWN)  # a delta that does not conflict with the edit: applied from the view
        assert await d.wait_reconciled()
        assert b.weights() == {B: 9, C: 4}
        d._runner.max_interval = 0.05  # resync due now: the periodic compare with the kernel
        d._kick()
        for _ in range(10):
            assert await d.wait_reconciled()
            if b.weights() == {B: 2, C: 4}:
                break
        assert b.weights() == {B: 2, C: 4}
        assert d.stats.repairs == 1

    run(body, tmp_path)
