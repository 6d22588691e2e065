"""Issue 11, item 2 on the real kernel (run in the VM): ops the kernel refuses (a destination
at 127.255.255.255, lo's broadcast address: EINVAL from the kernel itself) and ops refused before
they are sent (thresholds.upper = 2^31, above the kernel's INT_MAX) leave every other op of the
batch applied, and a dead server in an unrelated service still leaves the table at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeChecks, NoHA

from lvsd.config import load_config
from lvsd.core.health import Health, ServerHealth
from lvsd.daemon.daemon import Daemon
from lvsd.ipvs.model import DestKey, ServiceKey

pytestmark = pytest.mark.kernel

CONFIG = """
[daemon]
resync = "30s"

[[service]]
name = "a"
vip = "10.71.0.1:80"
  [[service.server]]
  address = "10.71.1.1"
  forward = "nat"
  [[service.server]]
  address = "127.255.255.255"
  forward = "nat"
{threshold}

[[service]]
name = "b"
vip = "10.71.0.2:80"
  [[service.server]]
  address = "10.72.0.1"
  forward = "nat"
  check = {{ type = "tcp" }}
  [[service.server]]
  address = "10.72.0.2"
  forward = "nat"
  check = {{ type = "tcp" }}
"""
# thresholds.upper = 2^31 on a third server of a, while the config still accepts it
THRESHOLD = """  [[service.server]]
  address = "10.71.1.3"
  forward = "nat"
  thresholds = { upper = 2147483648 }"""

A = ServiceKey.inet("tcp", "10.71.0.1", 80)
B = ServiceKey.inet("tcp", "10.71.0.2", 80)
B1, B2 = DestKey.of("10.72.0.1", 80), DestKey.of("10.72.0.2", 80)


def ready_checks(on_change: Callable[[Any, ServerHealth], None]) -> FakeChecks:
    """Both servers of "b" already UP, as a manager that checked them would say."""
    return FakeChecks(on_change, {("b", B1): ServerHealth(Health.UP), ("b", B2): ServerHealth(Health.UP)})


def _config(tmp_path: Path) -> Path:
    from lvsd.config import ConfigError

    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG.format(threshold=THRESHOLD))
    try:
        load_config(str(cfg))
    except ConfigError:  # the config refuses 2^31 now: the kernel's own refusal is the case left
        cfg.write_text(CONFIG.format(threshold=""))
    return cfg


def test_a_refused_op_never_blocks_other_services_on_the_kernel(ipvs: Any, tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    made: list[FakeChecks] = []

    def checks(cb: Callable[[Any, ServerHealth], None]) -> FakeChecks:
        made.append(ready_checks(cb))
        return made[0]

    async def main() -> None:
        d = Daemon(load_config(str(cfg)), ipvs, config_path=str(cfg), checks_factory=checks,
                   ha_factory=NoHA, api=False, install_signals=False)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), 60)
        table = ipvs.dump()
        assert set(table[B].dests) == {B1, B2}
        assert DestKey.of("10.71.1.1", 80) in table[A].dests  # the rest of a is applied too
        refused = {(r.service, op.dest.key.addr if op.dest else "") for op, r in d.reconciler.refused.items()}
        assert ("a", "127.255.255.255") in refused
        assert all(s == "a" for s, _ in refused)

        made[0].state[("b", B1)] = ServerHealth(Health.DOWN, reason="test")
        made[0].on_change(("b", B1), made[0].state[("b", B1)])
        assert await asyncio.wait_for(d.wait_reconciled(), 60)
        assert set(ipvs.dump()[B].dests) == {B2}, "the dead server left the kernel table"
        assert d.stats.refusals[("a", "add-server")] >= 1
        d.request_stop()
        assert await task == 0

    asyncio.run(asyncio.wait_for(main(), 300))
