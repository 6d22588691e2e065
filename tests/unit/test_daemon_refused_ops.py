"""Issue 11, item 2 (a refused op blocks every other): whatever op of one service the kernel
refuses, and however it refuses it (a batch error naming it, its own error in a batch of one, a
value the validation refuses before anything is sent), the other services' health changes still
reach the kernel, the refusal is reported with its service (log, /status, metrics) and the op
is retried with backoff until the kernel takes it."""

from __future__ import annotations

import asyncio
import errno
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeChecks, NoHA

from lvsd.config import load_config
from lvsd.core.health import Health, ServerHealth
from lvsd.daemon import metrics, reconciler
from lvsd.daemon.api import ControlAPI
from lvsd.daemon.daemon import Daemon
from lvsd.ipvs.backend import BatchError, IPVSError, Op, OpKind
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import DestKey, ServiceKey, ValueInvalid

A = ServiceKey.inet("tcp", "10.0.0.1", 80)
B = ServiceKey.inet("tcp", "10.0.0.2", 80)
B1 = DestKey.of("192.168.1.1", 80)
B2 = DestKey.of("192.168.1.2", 80)
UP = ServerHealth(Health.UP, reason="ok")
DOWN = ServerHealth(Health.DOWN, reason="connection refused")

CONFIG = """
[daemon]
resync = "30s"

[[service]]
name = "a"
vip = "10.0.0.1:80"
  [[service.server]]
  address = "192.168.0.1"
  forward = "nat"
  [[service.server]]
  address = "192.168.0.2"
  forward = "nat"

[[service]]
name = "b"
vip = "10.0.0.2:80"
  [[service.server]]
  address = "192.168.1.1"
  forward = "nat"
  check = { type = "tcp" }
  [[service.server]]
  address = "192.168.1.2"
  forward = "nat"
  check = { type = "tcp" }
"""


class RefusingBackend(MemoryBackend):
    """The memory backend refusing, like the kernel, every op ``refuse`` matches, in ``how``."""

    def __init__(self, refuse: Callable[[Op], bool], how: str, err: int) -> None:
        super().__init__()
        self.refuse, self.how, self.err = refuse, how, err
        self.on = True

    def apply(self, ops):  # type: ignore[override]
        ops = list(ops)
        bad = [op for op in ops if self.on and self.refuse(op)]
        if bad and self.how == "invalid":  # validation: nothing of the batch is sent
            raise ValueInvalid("u_threshold", 2**31, "must be 0..2147483647")
        good = [op for op in ops if op not in bad]
        applied: list[Op] = []
        failed: list[tuple[Op, IPVSError]] = []
        try:
            MemoryBackend.apply(self, good)
            applied = good
        except BatchError as e:
            applied, failed = list(e.applied), list(e.failed)
        except IPVSError as e:
            failed = [(good[0], e)]
        failed += [(op, IPVSError(op, self.err)) for op in bad]
        if not failed:
            return
        if len(ops) == 1:
            raise failed[0][1]
        raise BatchError(applied, failed)


def _refuses(kind: OpKind, service: ServiceKey) -> Callable[[Op], bool]:
    return lambda op: op.kind is kind and op.key == service


# the class: every kind of op the first pass writes for service a, refused every way the
# kernel (or the validation before it) refuses one, with the errors seen from the kernel
CASES = [
    pytest.param(kind, how, err, id=f"{kind.value}-{how}-{errno.errorcode[err]}")
    for kind, (how, err) in itertools.product(
        (OpKind.ADD_SERVICE, OpKind.ADD_DEST),
        (("batch", errno.EINVAL), ("batch", errno.ERANGE), ("batch", errno.ENOMEM), ("invalid", errno.EINVAL)),
    )
]


@pytest.mark.parametrize(("kind", "how", "err"), CASES)
def test_a_refused_op_never_blocks_other_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, kind: OpKind, how: str, err: int
) -> None:
    monkeypatch.setattr(reconciler, "REFUSED_RETRY_INITIAL", 0.2)  # a quick first retry for the test
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG)
    backend = RefusingBackend(_refuses(kind, A), how, err)
    checks: list[FakeChecks] = []

    def make_checks(cb: Callable[[Any, ServerHealth], None]) -> FakeChecks:
        checks.append(FakeChecks(cb, {("b", B1): UP, ("b", B2): UP}))
        return checks[0]

    async def main() -> None:
        d = Daemon(load_config(str(cfg)), backend, config_path=str(cfg), checks_factory=make_checks,
                   ha_factory=NoHA, api=False, install_signals=False)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), 10)
        table = backend.dump()
        assert set(table[B].dests) == {B1, B2}  # the other service is configured in full
        assert d.reconciler.refused, "the refused op is kept for its retry"
        assert {r.service for r in d.reconciler.refused.values()} == {"a"}

        checks[0].set(("b", B1), DOWN)  # a server of the other service dies
        assert await asyncio.wait_for(d.wait_reconciled(), 10)
        assert set(backend.dump()[B].dests) == {B2}, "the dead server left the table"

        # reported: /status (what lvsctl status prints), metrics, the log
        api = ControlAPI(d)
        status = await api.status(None)  # type: ignore[arg-type]
        body = status.text or ""
        assert '"service": "a"' in body and f'"{kind.value}"' in body
        text = metrics.render(d)
        assert f'lvsd_kernel_op_refusals_total{{service="a",kind="{kind.value}"}}' in text
        assert 'lvsd_kernel_ops_refused{service="a"}' in text
        assert "kernel refused" in caplog.text and "(service a)" in caplog.text

        backend.on = False  # the kernel takes it now: the retry applies it, without any event
        for _ in range(20):
            await asyncio.wait_for(d.wait_reconciled(), 10)
            if not d.reconciler.refused:
                break
        assert not d.reconciler.refused
        assert set(backend.dump()[A].dests) == {DestKey.of("192.168.0.1", 80), DestKey.of("192.168.0.2", 80)}
        assert set(backend.dump()[B].dests) == {B2}
        assert d.stats.refusals[("a", kind.value)] >= 1
        d.request_stop()
        assert await task == 0

    with caplog.at_level("INFO", logger="lvsd"):
        asyncio.run(asyncio.wait_for(main(), 30))


def test_retries_back_off_and_stop_when_the_op_is_no_longer_wanted(tmp_path: Path) -> None:
    """The wait doubles per refusal up to the max; a reload that drops the op forgets it."""
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG)
    backend = RefusingBackend(_refuses(OpKind.ADD_DEST, A), "batch", errno.EINVAL)
    rec = reconciler.Reconciler(load_config(str(cfg)), backend, reconciler.Stats(), hooks=None)  # type: ignore[arg-type]
    assert rec.reconcile(True, {}, "start")
    (r1, r2) = rec.refused.values()
    assert r1.backoff == reconciler.REFUSED_RETRY_INITIAL
    for op in rec.refused:  # make them due
        rec.refused[op].retry_at = 0
    assert rec.reconcile(True, {}, "retry")
    assert [r.backoff for r in rec.refused.values()] == [2 * reconciler.REFUSED_RETRY_INITIAL] * 2
    assert rec.reconcile(True, {}, "resync")  # not due: not sent, still kept
    assert all(r.count == 2 for r in rec.refused.values())
    assert rec.stats.repairs == 0  # a held refused op is not an outside edit
    cfg.write_text(CONFIG[: CONFIG.index('name = "a"')] + CONFIG[CONFIG.index('name = "b"') :])
    rec.set_config(load_config(str(cfg)))  # service a is no longer configured
    assert rec.reconcile(True, {}, "reload")
    assert not rec.refused
