"""CheckManager over real loopback servers: transitions and their reasons, dedup of identical
checks, reload keeping state, all-must-pass, cadence, stop (start-up spread and jitter:
test_checks_manager_start.py). How fast transitions come
(DOWN within interval x fall + timeout, UP within interval x rise) and how close each probe keeps
to its interval depend on the machine's load: tests/bench/check_timing.py reports those figures;
these tests check the behaviour."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from lvsd.checks.manager import CheckManager
from lvsd.config.load import parse_config
from lvsd.core.health import Health


def listen(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(128)
    return s


def config(services: list[tuple[str, list[int], str]]):
    """services: (name, server ports on 127.0.0.1, inline check table)."""
    parts = []
    for i, (name, ports, check) in enumerate(services):
        parts.append(f'[[service]]\nname = "{name}"\nvip = "10.0.0.{i + 1}:80"\nforward = "nat"\ncheck = {check}\n')
        for p in ports:
            parts.append(f'  [[service.server]]\n  address = "127.0.0.1"\n  port = {p}\n')
    return parse_config("\n".join(parts))


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, tuple, Health, int | None, str]] = []
        self.cond: asyncio.Condition | None = None

    def __call__(self, sid, h) -> None:
        self.events.append((time.monotonic(), sid, h.state, h.weight, h.reason))
        if self.cond is not None:
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        assert self.cond is not None
        async with self.cond:
            self.cond.notify_all()

    async def wait(self, pred, timeout: float = 5.0) -> None:
        if self.cond is None:
            self.cond = asyncio.Condition()
        async with self.cond:
            await asyncio.wait_for(self.cond.wait_for(lambda: pred(self.events)), timeout)


def has(sid, state):
    return lambda ev: any(e[1] == sid and e[2] is state for e in ev)


def count(sid, state, n):
    return lambda ev: sum(1 for e in ev if e[1] == sid and e[2] is state) >= n


TCP = '{ type = "tcp", interval = 0.05, timeout = 0.1, rise = 2, fall = 3 }'


def test_up_down_up_with_reasons(caplog, free_port, run_async) -> None:
    port = free_port()
    ls = listen(port)
    cfg = config([("web", [port], TCP)])
    sid = ("web", cfg.services[0].servers[0].key)

    async def main():
        rec = Recorder()
        m = CheckManager(rec)
        await m.start(cfg)
        assert m.snapshot() == {sid: m.snapshot()[sid]} and m.snapshot()[sid].state is Health.UNKNOWN
        await rec.wait(has(sid, Health.UP))
        assert rec.events[0][2:] == (Health.UP, None, "tcp connect ok (1/1 passed)")
        ls.close()
        await rec.wait(has(sid, Health.DOWN))
        assert rec.events[-1][4] == "tcp connect: connection refused (3/3 failed)"
        ls2 = listen(port)
        await rec.wait(count(sid, Health.UP, 2))
        assert rec.events[-1][4] == "tcp connect ok (2/2 passed)"
        assert m.snapshot()[sid].state is Health.UP
        await m.stop()
        ls2.close()
        return [e[2] for e in rec.events]

    with caplog.at_level(logging.INFO, logger="lvsd.checks"):
        states = run_async(main())
    assert states == [Health.UP, Health.DOWN, Health.UP]  # each change once, in order
    msgs = [r.getMessage() for r in caplog.records]
    assert f"web 127.0.0.1:{port} DOWN: tcp connect: connection refused (3/3 failed)" in msgs
    assert f"web 127.0.0.1:{port} UP: tcp connect ok (2/2 passed)" in msgs


def test_identical_checks_are_one_probe(free_port, run_async) -> None:
    port = free_port()
    ls = listen(port)
    # two services, same server, same check: one probe feeding both
    cfg = config([("a", [port], TCP), ("b", [port], TCP),
                  ("c", [port], '{ type = "tcp", interval = 0.05, timeout = 0.1, rise = 2, fall = 2 }')])

    async def main():
        rec = Recorder()
        m = CheckManager(rec)
        await m.start(cfg)
        assert m.probe_count() == 2  # a and b share; c differs (fall)
        key = cfg.services[0].servers[0].key
        await rec.wait(lambda ev: {e[1][0] for e in ev if e[2] is Health.UP} == {"a", "b", "c"})
        probes = list(m.probes.values())
        await m.stop()
        return probes, key

    probes, key = run_async(main())
    ls.close()
    shared = [p for p in probes if len(p.servers) == 2]
    assert len(shared) == 1 and {s.sid[0] for s in shared[0].servers} == {"a", "b"}


def test_equal_check_values_share_a_probe_per_target(run_async) -> None:
    """Sharing is by value: equal check objects built apart are one probe against one target;
    a check whose connect points elsewhere, or another check type, is a probe of its own."""
    from lvsd.checks.tcp import TCPCheck
    from lvsd.checks.udp import UDPCheck
    from lvsd.ipvs.model import DestKey

    a = TCPCheck(interval=60.0, timeout=1.0)
    b = TCPCheck(interval=60.0, timeout=1.0)
    assert a is not b and a == b and hash(a) == hash(b)
    moved = TCPCheck(interval=60.0, timeout=1.0, connect_port=81)  # same server, other port
    udp = UDPCheck(interval=60.0, timeout=1.0, send=b"x")

    def srv(port: int, checks):
        return type("Srv", (), {"key": DestKey.of("127.0.0.1", port), "checks": checks})()

    svc1 = type("Svc", (), {"name": "one", "servers": (srv(80, (a,)), srv(81, (a,)))})()
    svc2 = type("Svc", (), {"name": "two", "servers": (srv(80, (b, moved, udp)),)})()
    cfg = type("Cfg", (), {"services": (svc1, svc2)})()

    async def main():
        m = CheckManager(lambda sid, h: None)
        await m.start(cfg)
        probes = sorted((p.cfg.type, p.checker.port, sorted(s.sid[0] for s in p.servers)) for p in m.probes.values())
        await m.stop()
        return probes

    # a == b against :80 is one probe; against :81 a and moved differ (moved's connect is a key)
    assert run_async(main()) == [("tcp", 80, ["one", "two"]), ("tcp", 81, ["one"]), ("tcp", 81, ["two"]), ("udp", 80, ["two"])]


def test_reload_keeps_unchanged_state_and_timers(free_port, run_async) -> None:
    p1, p2 = free_port(), free_port()
    l1, l2 = listen(p1), listen(p2)
    cfg1 = config([("web", [p1, p2], TCP)])
    slow = '{ type = "tcp", interval = 0.05, timeout = 0.1, rise = 3, fall = 3 }'

    async def main():
        rec = Recorder()
        m = CheckManager(rec)
        await m.start(cfg1)
        s1 = ("web", cfg1.services[0].servers[0].key)
        s2 = ("web", cfg1.services[0].servers[1].key)
        await rec.wait(lambda ev: has(s1, Health.UP)(ev) and has(s2, Health.UP)(ev))
        probe1 = next(p for p in m.probes.values() if p.key[2] == p1)
        results_before = probe1.results
        n_events = len(rec.events)
        # same file plus a new service: web's check is unchanged
        cfg2 = config([("web", [p1, p2], TCP), ("new", [p2], slow)])
        await m.reload(cfg2)
        assert next(p for p in m.probes.values() if p.key[2] == p1) is probe1
        assert m.snapshot()[s1].state is Health.UP and m.snapshot()[s2].state is Health.UP
        assert len(rec.events) == n_events  # no transition from a no-op reload
        assert m.snapshot()[("new", s2[1])].state is Health.UNKNOWN
        await asyncio.sleep(0.2)
        assert probe1.results > results_before  # its timer kept running
        # change web's check: a new probe, state starts over (UNKNOWN, reported)
        cfg3 = config([("web", [p1], slow)])
        await m.reload(cfg3)
        assert probe1.checker.sock is None and probe1 not in m.probes.values()
        assert set(m.snapshot()) == {s1}
        assert rec.events[-1][1:3] == (s1, Health.UNKNOWN)
        await rec.wait(lambda ev: ev[-1][1:3] == (s1, Health.UP))
        await m.stop()

    run_async(main())
    l1.close()
    l2.close()


def test_all_checks_must_pass(free_port, run_async) -> None:
    up, dead = free_port(), free_port()
    ls = listen(up)
    both = (f'[{{ type = "tcp", interval = 0.05, timeout = 0.1, rise = 1, fall = 1 }}, '
            f'{{ type = "tcp", connect = "127.0.0.1:{dead}", interval = 0.05, timeout = 0.1, rise = 1, fall = 1 }}]')
    cfg = config([("web", [up], both)])
    sid = ("web", cfg.services[0].servers[0].key)

    async def main():
        rec = Recorder()
        m = CheckManager(rec)
        await m.start(cfg)
        await rec.wait(has(sid, Health.DOWN))
        assert rec.events[-1][4] == "tcp connect: connection refused (1/1 failed)"
        l2 = listen(dead)
        await rec.wait(has(sid, Health.UP))
        await m.stop()
        l2.close()
        return [e[2] for e in rec.events]

    states = run_async(main())
    ls.close()
    assert states == [Health.DOWN, Health.UP]


def test_stop_releases_everything(run_async) -> None:
    ls, fillers = None, []
    # a listener with a full backlog: probes hang in connect until stop
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    port = ls.getsockname()[1]
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    cfg = config([("web", [port], '{ type = "tcp", interval = 0.02, timeout = 5, rise = 1, fall = 1 }')])

    async def main():
        events = []
        m = CheckManager(lambda sid, h: events.append(h))
        await m.start(cfg)
        await asyncio.sleep(0.1)
        probe = next(iter(m.probes.values()))
        assert probe.inflight and probe.checker.sock is not None
        poller = probe.checker.poller
        await m.stop()
        assert probe.checker.sock is None and not poller.handlers
        await asyncio.sleep(0.1)
        return events

    assert run_async(main()) == []
    for c in fillers:
        c.close()
    ls.close()


def test_dynamic_weight_changes_are_reported(tmp_path, run_async) -> None:
    import sys

    state = tmp_path / "rc"
    state.write_text("12")
    script = tmp_path / "check.py"
    script.write_text(f"import sys; sys.exit(int(open({str(state)!r}).read()))\n")
    chk = (f'{{ type = "script", argv = ["{sys.executable}", "{script}"], dynamic_weight = true, '
           f'interval = 0.05, timeout = 2, rise = 1, fall = 1 }}')
    cfg = config([("web", [80], chk)])
    sid = ("web", cfg.services[0].servers[0].key)

    async def main():
        rec = Recorder()
        m = CheckManager(rec)
        await m.start(cfg)
        await rec.wait(has(sid, Health.UP))
        assert rec.events[-1][2:4] == (Health.UP, 10)
        state.write_text("52")
        await rec.wait(lambda ev: ev[-1][3] == 50)
        state.write_text("1")
        await rec.wait(has(sid, Health.DOWN))
        state.write_text("0")
        await rec.wait(lambda ev: ev[-1][2:4] == (Health.UP, None))
        await m.stop()

    run_async(main())


def test_unbuildable_checker_fails_instead_of_crashing(tmp_path, run_async) -> None:
    from lvsd.checks.http import HTTPCheck

    spec = HTTPCheck(type="https", ca=str(tmp_path / "gone.pem"), interval=0.05, timeout=0.1, rise=1, fall=1)

    class Srv:
        def __init__(self) -> None:
            from lvsd.ipvs.model import DestKey

            self.key = DestKey.of("127.0.0.1", 443)
            self.checks = (spec,)

    class Svc:
        name = "web"
        servers = (Srv(),)

    class Cfg:
        services = (Svc(),)

    async def main():
        rec = Recorder()
        m = CheckManager(rec)
        await m.start(Cfg())
        sid = ("web", Svc.servers[0].key)
        await rec.wait(has(sid, Health.DOWN))
        await m.stop()
        return rec.events[-1][4]

    reason = run_async(main())
    assert reason.startswith("https check cannot run:") and "gone.pem" in reason


def test_every_probe_keeps_its_cadence(free_port, run_async) -> None:
    """Many probes on one timer heap: every one keeps running, again and again, and none runs more
    often than its interval. (How close each keeps to the interval depends on the machine's load:
    tests/bench/check_timing.py reports it; a mis-armed timer once stretched periods to interval +
    timeout.)"""
    ls = listen(free_port())
    port = ls.getsockname()[1]
    # 30 distinct probes: same server, checks differing only in `rise`
    checks = ", ".join(f'{{ type = "tcp", interval = 0.05, timeout = 0.04, rise = {r}, fall = 1 }}' for r in range(1, 31))
    cfg = config([("web", [port], f"[{checks}]")])

    async def main():
        m = CheckManager(lambda sid, h: None)
        await m.start(cfg)
        await asyncio.sleep(0.1)  # past the jittered first runs
        before = {k: p.results for k, p in m.probes.items()}
        t0 = time.monotonic()
        # a window of at least 1 s (20 intervals) in which every probe runs 5 more times, however
        # slow the machine (run_async bounds a stall)
        while time.monotonic() - t0 < 1.0 or min(p.results - before[k] for k, p in m.probes.items()) < 5:
            await asyncio.sleep(0.05)
        counts = [p.results - before[k] for k, p in m.probes.items()]
        elapsed = time.monotonic() - t0
        await m.stop()
        return counts, elapsed

    counts, elapsed = run_async(main())
    ls.close()
    assert len(counts) == 30 and min(counts) >= 5
    # never faster than the interval: each run starts `interval` after the previous one started
    assert max(counts) <= elapsed / 0.05 + 2, (elapsed, counts)


def test_out_of_descriptors_is_no_verdict(free_port, run_async) -> None:
    """EMFILE on the director is not the server's fault: the probe retries and decides nothing."""
    import os
    import resource

    import lvsd.checks.tcp  # noqa: F401  (imported now: importing needs a descriptor too)
    from lvsd.checks.manager import check_once
    from lvsd.checks.tcp import TCPCheck

    ls = listen(free_port())
    port = ls.getsockname()[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    async def main():
        from lvsd.checks.base import poller_for

        poller_for(asyncio.get_running_loop())  # the loop's epoll set exists before the limit bites
        fill = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
        try:
            while True:
                fill.append(socket.socket())
        except OSError:
            pass
        try:
            return await check_once(TCPCheck(timeout=0.5), "127.0.0.1", port)
        finally:
            for s in fill:
                s.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    ok, detail, _ = run_async(main())
    ls.close()
    assert ok is None and detail == "tcp: socket: too many open files", (ok, detail)


def test_start_lifts_the_descriptor_limit() -> None:
    import resource

    from lvsd.checks.manager import raise_nofile

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        raise_nofile(5000)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == min(5000, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_deadlines_never_fire_early(free_port, run_async) -> None:
    """A timeout shorter than the batch slack still gives the probe its whole timeout (a deadline
    popped with the batch that launched it would fail every probe at once)."""
    from lvsd.checks import manager as mgr
    from lvsd.checks.tcp import TCPCheck
    from lvsd.ipvs.model import DestKey

    ls = listen(free_port())
    spec = TCPCheck(interval=1.0, timeout=0.005, rise=1, fall=1)  # slack: 10 ms

    class Srv:
        key = DestKey.of("127.0.0.1", ls.getsockname()[1])
        checks = (spec,)

    class Svc:
        name = "web"
        servers = (Srv(),)

    class Cfg:
        services = (Svc(),)

    async def main():
        rec = Recorder()
        m = mgr.CheckManager(rec)
        await m.start(Cfg())
        assert m.sched.slack == mgr.SLACK_MAX
        await rec.wait(lambda ev: len(ev) >= 1, timeout=5)
        await m.stop()
        return rec.events[0][2], rec.events[0][4]

    state, reason = run_async(main())
    ls.close()
    assert state is Health.UP, reason
