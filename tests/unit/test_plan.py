"""lvsd.core.plan: the one planner the daemon's reconciles and ``lvsd --plan`` share.

Pure-function tests (quorum and sorry server, the timeouts op, recorded and unmanaged services,
the per-service pass), and one that runs ``lvsd --plan`` and the daemon's start on the same
kernel table and config and finds the same ops.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from lvsd.config import parse_config
from lvsd.config.model import Config, ServerConfig, ServerId, ServiceConfig, TCPCheck
from lvsd.core.health import Health, ServerHealth
from lvsd.core.plan import Plan, describe, plan, retired, timeouts_op
from lvsd.daemon.daemon import Daemon
from lvsd.daemon.main import main
from lvsd.daemon.notify import Notifier
from lvsd.ipvs.backend import Op, OpKind
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import Destination, DestKey, Forward, Service, ServiceEntry, ServiceKey, Timeouts

WEB = ServiceKey.inet("tcp", "10.0.0.1", 80)
OLD = ServiceKey.inet("tcp", "10.0.0.2", 80)  # lvsd's at its last run, no longer configured
OTHER = ServiceKey.inet("tcp", "10.9.9.9", 25)  # somebody else's
UP = ServerHealth(Health.UP)
DOWN = ServerHealth(Health.DOWN, reason="refused")
SORRY = Destination(DestKey.of("192.168.9.9", 80), Forward.MASQ, 1)


def dkey(i: int) -> DestKey:
    return DestKey.of(f"192.168.0.{i}", 80)


def server(i: int, weight: int = 1) -> ServerConfig:
    return ServerConfig("web", dkey(i), Destination(dkey(i), Forward.MASQ, weight), checks=(TCPCheck(),))


def quorum_config(quorum: int = 2, hysteresis: int = 1) -> Config:
    svc = ServiceConfig(
        "web", WEB, Service(WEB, "wrr"), (server(1), server(2), server(3)),
        quorum=quorum, hysteresis=hysteresis, sorry_server=SORRY,
    )
    return Config(services=(svc,))


def health(*states: ServerHealth) -> dict[tuple[str, DestKey], ServerHealth]:
    return {("web", dkey(i + 1)): h for i, h in enumerate(states)}


def entry(*dests: Destination) -> ServiceEntry:
    return ServiceEntry(Service(WEB, "wrr"), {d.key: d for d in dests})


def lines(p: Plan) -> list[str]:
    return [describe(op) for op in p.ops]


# --- quorum and the sorry server ------------------------------------------------------------------


def test_below_quorum_brings_the_sorry_server_in_and_hysteresis_holds_it() -> None:
    cfg = quorum_config(quorum=2, hysteresis=1)
    all_up = [Destination(dkey(i), Forward.MASQ, 1) for i in (1, 2, 3)]
    actual = {WEB: entry(*all_up)}
    # two of three down: live weight 1 < quorum 2
    p = plan(cfg, health(UP, DOWN, DOWN), actual, quorum={"web": False}, managed={WEB})
    assert p.quorum == {"web": True}
    assert lines(p) == [
        "delete-server tcp 10.0.0.1:80 -> 192.168.0.2:80",
        "delete-server tcp 10.0.0.1:80 -> 192.168.0.3:80",
        "add-server tcp 10.0.0.1:80 -> 192.168.9.9:80 weight 1 nat",
    ]
    # one comes back: weight 2 = quorum but < quorum + hysteresis: the sorry server stays
    actual = {WEB: p.desired[WEB]}
    p2 = plan(cfg, health(UP, UP, DOWN), actual, quorum=p.quorum, managed={WEB})
    assert p2.quorum == {"web": True}
    assert SORRY.key in p2.desired[WEB].dests
    assert lines(p2) == ["add-server tcp 10.0.0.1:80 -> 192.168.0.2:80 weight 1 nat"]
    # all back: weight 3 >= quorum + hysteresis: out again
    p3 = plan(cfg, health(UP, UP, UP), {WEB: p2.desired[WEB]}, quorum=p2.quorum, managed={WEB})
    assert p3.quorum == {"web": False}
    assert "delete-server tcp 10.0.0.1:80 -> 192.168.9.9:80" in lines(p3)
    # without memory the same weight-2 state is above quorum: the memory is an input, not a global
    assert plan(cfg, health(UP, UP, DOWN), actual, managed={WEB}).quorum == {"web": False}


def test_the_first_quorum_verdict_waits_for_the_checks() -> None:
    cfg = quorum_config()
    p = plan(cfg, {}, {}, managed={WEB})  # nothing decided yet: no sorry server at start-up
    assert p.quorum == {} and SORRY.key not in p.desired[WEB].dests


# --- timeouts -------------------------------------------------------------------------------------


def test_the_timeouts_op_comes_first_and_only_when_they_differ() -> None:
    cfg = parse_config('[ipvs]\ntimeouts = { tcp = 600 }\n[[service]]\nvip = "10.0.0.1:80"\n', check_files=False)
    kernel = Timeouts(900, 120, 300)
    p = plan(cfg, {}, {}, timeouts=kernel)
    assert p.ops[0] == Op.set_timeouts(Timeouts(600, 0, 0))
    assert [op.kind for op in p.ops] == [OpKind.SET_TIMEOUTS, OpKind.ADD_SERVICE]
    # 0 = keep the kernel's value: equal on the configured field is no op
    assert plan(cfg, {}, {}, timeouts=Timeouts(600, 120, 300)).ops == [Op.add_service(Service(WEB, "wlc"))]
    # not read (None) or a per-service pass: timeouts are left out
    assert OpKind.SET_TIMEOUTS not in [op.kind for op in plan(cfg, {}, {}).ops]
    assert OpKind.SET_TIMEOUTS not in [op.kind for op in plan(cfg, {}, {}, timeouts=kernel, only={"10.0.0.1:80"}).ops]
    assert timeouts_op(None, kernel) is None and timeouts_op(Timeouts(600), None) is None
    assert timeouts_op(Timeouts(0, 0, 30), kernel) == Op.set_timeouts(Timeouts(0, 0, 30))


# --- which services are lvsd's --------------------------------------------------------------------


def test_recorded_services_are_deleted_and_unmanaged_ones_left_alone() -> None:
    cfg = parse_config('[[service]]\nvip = "10.0.0.1:80"\n', check_files=False)
    actual = {k: ServiceEntry(Service(k, "wlc"), {}) for k in (WEB, OLD, OTHER)}
    configured = {WEB}
    gone = retired(configured, {WEB, OLD, ServiceKey.inet("tcp", "10.0.0.3", 80)}, actual)
    assert gone == [OLD]  # recorded, in the kernel, not configured; one not in the kernel is no op
    p = plan(cfg, {}, actual, managed=configured | set(gone))
    assert lines(p) == ["delete-service tcp 10.0.0.2:80"]
    # without the record lvsd cannot tell OLD from somebody else's: both left alone
    assert plan(cfg, {}, actual, managed=configured).ops == []


def test_a_per_service_pass_plans_only_its_services_and_deletes_none() -> None:
    cfg = quorum_config(quorum=0)
    up = Destination(dkey(1), Forward.MASQ, 1)
    actual = {WEB: entry(up), OTHER: ServiceEntry(Service(OTHER, "rr"), {})}
    p = plan(cfg, health(DOWN, UP, UP), actual, managed={WEB, OTHER}, only={"web"})
    assert lines(p) == [
        "delete-server tcp 10.0.0.1:80 -> 192.168.0.1:80",
        "add-server tcp 10.0.0.1:80 -> 192.168.0.2:80 weight 1 nat",
        "add-server tcp 10.0.0.1:80 -> 192.168.0.3:80 weight 1 nat",
    ]
    assert set(p.desired) == {WEB}
    assert plan(cfg, health(UP, UP, UP), actual, managed={WEB, OTHER}, only=()).ops == []


# --- lvsd --plan and the daemon: one planner ------------------------------------------------------

CONFIG = """
[daemon]
state_file = "{state_file}"

[ipvs]
timeouts = {{ tcp = 600 }}

[[service]]
name = "web"
vip = "10.0.0.1:80"
scheduler = "wrr"
quorum = 5
sorry_server = {{ address = "192.168.9.9", forward = "nat" }}
  [[service.server]]
  address = "192.168.0.1"
  weight = 3
  forward = "nat"
  [[service.server]]
  address = "192.168.0.2"
  forward = "nat"
  check = {{ type = "tcp" }}

[[service]]
name = "dns"
vip = "10.0.0.5:53"
protocol = "udp"
  [[service.server]]
  address = "192.168.0.7"
  forward = "dr"
"""


class Recording(MemoryBackend):
    """The memory kernel, keeping every batch the daemon applies."""

    def __init__(self, state: str) -> None:
        super().__init__(state=state)
        self.batches: list[list[Op]] = []

    def apply(self, ops: Sequence[Op]) -> None:
        self.batches.append(list(ops))
        super().apply(ops)


class AllUp:
    """A check manager whose every check has passed (what --plan assumes)."""

    def __init__(self, on_change: Callable[[ServerId, ServerHealth], None]) -> None:
        self.ids: list[ServerId] = []

    async def start(self, cfg: Config) -> None:
        self.ids = [srv.id for s in cfg.services for srv in s.servers if srv.checks]

    def snapshot(self) -> dict[ServerId, ServerHealth]:
        return {sid: UP for sid in self.ids}

    async def stop(self) -> None:
        pass


def test_plan_and_the_daemon_apply_the_same_ops(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "ipvs.json"
    record = tmp_path / "managed.json"
    cfg_path = tmp_path / "lvsd.toml"
    cfg_path.write_text(CONFIG.format(state_file=record))
    with MemoryBackend(state=str(state)) as b:
        b.apply(
            [
                Op.add_service(Service(WEB, "rr")),
                Op.add_dest(WEB, Destination(dkey(1), Forward.MASQ, 3)),
                Op.add_dest(WEB, Destination(dkey(9), Forward.MASQ, 1)),
                Op.add_service(Service(OLD, "rr")),
                Op.add_service(Service(OTHER, "rr")),
            ]
        )
    record.write_text(json.dumps({"services": [[k.af, k.protocol, k.addr, k.port, k.fwmark] for k in (WEB, OLD)]}))

    assert main(["--plan", str(cfg_path), "--backend", "memory", "--state", str(state)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "set-timeouts tcp 600 tcpfin 0 udp 0"
    assert "delete-service tcp 10.0.0.2:80" in printed  # recorded, no longer configured
    assert not any("10.9.9.9" in line for line in printed)  # not lvsd's
    assert any("192.168.9.9" in line for line in printed)  # weight 4 < quorum 5: sorry server in

    from lvsd.config import load_config

    kernel = Recording(str(state))
    d = Daemon(load_config(str(cfg_path)), kernel, str(cfg_path), Notifier(""), checks_factory=AllUp,
               api=False, install_signals=False)

    async def start() -> None:
        await d.start()
        await d.stop()

    asyncio.run(start())
    assert [[describe(op) for op in batch] for batch in kernel.batches] == [printed]
