"""Issue 11, item 7 (a batched reconcile logs one server's event as the reason of every edit):
health changes of several servers coalesced into one kernel batch are logged op by op, each with
its own server's event, for bursts of every size and mix of transitions."""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path

import pytest
from test_daemon import CountingBackend, FakeChecks, daemon, finish, started

from lvsd.core.health import Health, ServerHealth
from lvsd.ipvs.model import DestKey

N = 5
CONFIG = """
[[service]]
name = "web"
vip = "10.0.0.1:80"
""" + "".join(
    f"""
  [[service.server]]
  address = "192.168.0.{i}"
  forward = "nat"
  check = {{ type = "tcp" }}
  on_failure = "{'inhibit' if i % 2 else 'remove'}"
"""
    for i in range(1, N + 1)
)

# bursts: which servers change in the same batch, and to what
BURSTS = [
    pytest.param(servers, states, id=f"{'-'.join(map(str, servers))}:{''.join(s[0] for s in states)}")
    for size in (2, 3, N)
    for servers in [tuple(range(1, size + 1)), tuple(range(N - size + 1, N + 1))]
    for states in itertools.islice(itertools.product(("down", "weight"), repeat=size), 0, 4)
]


@pytest.mark.parametrize(("servers", "states"), BURSTS)
def test_each_op_of_a_batch_carries_its_own_servers_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, servers: tuple[int, ...], states: tuple[str, ...]
) -> None:
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG)
    FakeChecks.instances.clear()
    b = CountingBackend()

    async def main() -> None:
        d = daemon(cfg, b)
        t = await started(d)
        checks = FakeChecks.instances[0]
        for i in range(1, N + 1):
            checks.set(("web", DestKey.of(f"192.168.0.{i}", 80)), ServerHealth(Health.UP, reason="up"))
        assert await d.wait_reconciled()
        before = len(b.batches)
        caplog.clear()
        for i, state in zip(servers, states, strict=True):  # one burst: no await in between
            sid = ("web", DestKey.of(f"192.168.0.{i}", 80))
            if state == "down":
                checks.set(sid, ServerHealth(Health.DOWN, reason=f"reason-of-{i}"))
            else:
                checks.set(sid, ServerHealth(Health.UP, weight=7 + i, reason=f"reason-of-{i}"))
        assert await d.wait_reconciled()
        assert len(b.batches) == before + 1  # one batch for the burst
        await finish(d, t)

    with caplog.at_level("INFO", logger="lvsd"):
        asyncio.run(asyncio.wait_for(main(), 30))
    ops = [r.getMessage() for r in caplog.records if re.match(r"(delete|edit|add)-server ", r.getMessage())]
    assert len(ops) == len(servers)
    for line in ops:
        target = re.search(r"-> 192\.168\.0\.(\d+):80", line)
        assert target, line
        assert line.endswith(f"reason-of-{target.group(1)})"), line
