"""The check engine's lean per-server structures (issue 16, docs/performance.md "Where the bytes
go") keep the behaviour: probes and servers link both ways (one reference plus a tuple), a
server with the same check twice is fed by one probe once, labels read as before, alike verdicts
are one shared object, and a stopped probe's checker no longer points back at it (no cycle left
for the collector)."""

from __future__ import annotations

import gc
from typing import Any

from lvsd.checks.manager import CheckManager
from lvsd.checks.tcp import TCPCheck
from lvsd.core import health
from lvsd.core.health import CheckState, Health
from lvsd.ipvs.model import DestKey


def _cfg(services: list[tuple[str, list[tuple[int, tuple[Any, ...]]]]]) -> Any:
    """A config-like object: (service name, [(server port on 127.0.0.1, its checks)])."""
    def srv(port: int, checks: tuple[Any, ...]) -> Any:
        return type("Srv", (), {"key": DestKey.of("127.0.0.1", port), "checks": checks})()

    svcs = tuple(type("Svc", (), {"name": n, "servers": tuple(srv(p, c) for p, c in servers)})()
                 for n, servers in services)
    return type("Cfg", (), {"services": svcs})()


def test_links_labels_and_duplicate_checks(run_async) -> None:
    a = TCPCheck(interval=60.0, timeout=1.0)
    other = TCPCheck(interval=60.0, timeout=1.0, connect_port=9)
    # one: :80 with a, :81 with a twice; two: :80 with a and other (a's probe on :80 is shared)
    cfg = _cfg([("one", [(80, (a,)), (81, (a, a))]), ("two", [(80, (a, other))])])

    async def main() -> None:
        m = CheckManager(lambda sid, h: None)
        await m.start(cfg)
        k80, k81 = DestKey.of("127.0.0.1", 80), DestKey.of("127.0.0.1", 81)
        assert m.probe_count() == 3
        s81 = m.servers[("one", k81)]
        assert len(s81.probes) == 1 and s81.probes[0].servers == (s81,)  # a twice: one probe, once
        two = m.servers[("two", k80)]
        assert [p.checker.port for p in two.probes] == [80, 9]
        shared = two.probes[0]
        assert {s.sid[0] for s in shared.servers} == {"one", "two"} and len(shared.servers) == 2
        assert two.probes[1].servers == (two,)
        assert two.label == "two 127.0.0.1:80" and shared.label == "tcp 127.0.0.1:80"
        # a reload that drops service one: the shared probe now feeds two alone
        await m.reload(_cfg([("two", [(80, (a, other))])]))
        assert m.probe_count() == 2 and shared.servers == (m.servers[("two", k80)],)
        await m.stop()

    run_async(main())


def test_stopped_probe_is_freed_without_the_collector(run_async) -> None:
    a = TCPCheck(interval=60.0, timeout=1.0)
    b = TCPCheck(interval=60.0, timeout=2.0)

    async def main() -> None:
        m = CheckManager(lambda sid, h: None)
        await m.start(_cfg([("one", [(80, (a,))])]))
        probe = next(iter(m.probes.values()))
        checker = probe.checker
        assert checker.done is probe  # the probe is the checker's callable, no bound method
        await m.reload(_cfg([("one", [(80, (b,))])]))  # a replaced by b: a's probe stopped
        # the checker no longer refers to the probe: the probe <-> checker cycle is broken, so
        # refcounting frees both once the scheduler's stale heap entry is popped
        assert checker.done is not probe
        assert not any(r is checker for r in gc.get_referrers(probe))
        await m.stop()

    enabled = gc.isenabled()
    gc.disable()
    try:
        run_async(main())
    finally:
        if enabled:
            gc.enable()


def test_alike_verdicts_are_one_object_and_the_table_is_bounded(monkeypatch) -> None:
    x, y = CheckState(1, 2), CheckState(1, 2)
    for s in (x, y):
        assert not s.record(False, "tcp connect: connection refused")
        assert s.record(False, "tcp connect: connection refused")
    assert x.health() is y.health()
    assert x.state is Health.DOWN and x.reason == "tcp connect: connection refused (2/2 failed)"
    assert x.record(True, "ok", 7) and x.weight == 7 and x.health().weight == 7
    assert y.health().state is Health.DOWN  # sharing never leaks a state across checks
    monkeypatch.setattr(health, "VERDICTS_MAX", 3)
    health._VERDICTS.clear()
    for i in range(10):
        health.shared_health(Health.UP, i, "r")
        assert len(health._VERDICTS) <= 3
