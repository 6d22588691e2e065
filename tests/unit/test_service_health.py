"""lvsd.core.service_health: the one "is this service healthy" rule that VRRP's track_services
and BGP's announce share, checked against the planner's quorum verdict it builds on."""

from __future__ import annotations

from dataclasses import replace

from lvsd.config.model import Config, ServerConfig, ServiceConfig, TCPCheck
from lvsd.core.health import Health, ServerHealth
from lvsd.core.plan import plan
from lvsd.core.service_health import healthy, service_verdicts
from lvsd.ipvs.model import Destination, DestKey, Forward, Service, ServiceKey

WEB = ServiceKey.inet("tcp", "10.0.0.1", 80)
UP = ServerHealth(Health.UP)
DOWN = ServerHealth(Health.DOWN, reason="refused")
UNKNOWN = ServerHealth(Health.UNKNOWN)


def dkey(i: int) -> DestKey:
    return DestKey.of(f"192.168.0.{i}", 80)


def server(i: int, weight: int = 1) -> ServerConfig:
    return ServerConfig("web", dkey(i), Destination(dkey(i), Forward.MASQ, weight), checks=(TCPCheck(),))


def config(quorum: int = 0, hysteresis: int = 0) -> Config:
    svc = ServiceConfig(
        "web",
        WEB,
        Service(WEB, "wrr"),
        (server(1), server(2), server(3)),
        quorum=quorum,
        hysteresis=hysteresis,
    )
    return Config(services=(svc,))


def health(*states: ServerHealth) -> dict[tuple[str, DestKey], ServerHealth]:
    return {("web", dkey(i + 1)): h for i, h in enumerate(states)}


def test_the_rule() -> None:
    assert healthy(2, False, 0, False) is True  # with a quorum, the planner's verdict decides
    assert healthy(2, True, 5, False) is False
    assert healthy(2, None, 3, True) is None  # no verdict yet
    assert healthy(0, None, 1, True) is True  # no quorum: any live weight
    assert healthy(0, None, 0, False) is False
    assert healthy(0, None, 0, True) is None  # nothing live, checks not all answered


def test_a_service_with_a_quorum_follows_the_planners_verdict_and_its_hysteresis() -> None:
    cfg = config(quorum=2, hysteresis=1)
    states: dict[str, bool] = {}
    for hs, want in [
        ((UP, UP, UP), True),
        ((UP, DOWN, DOWN), False),  # 1 < 2
        ((UP, UP, DOWN), False),  # 2 < quorum + hysteresis: still below (as the sorry server)
        ((UP, UP, UP), True),
    ]:
        states = plan(cfg, health(*hs), {}, quorum=states).quorum
        assert service_verdicts(cfg, health(*hs), states) == {"web": want}


def test_a_service_without_a_quorum_fails_when_no_server_carries_weight() -> None:
    cfg = config()
    assert service_verdicts(cfg, health(DOWN, DOWN, UP), {}) == {"web": True}
    assert service_verdicts(cfg, health(DOWN, DOWN, DOWN), {}) == {"web": False}
    assert service_verdicts(cfg, health(UNKNOWN, DOWN, DOWN), {}) == {"web": None}
    assert service_verdicts(cfg, health(UNKNOWN, DOWN, DOWN), {}, only=["other"]) == {}


def test_no_verdict_before_the_first_checks() -> None:
    cfg = config(quorum=1)
    states = plan(cfg, health(UNKNOWN, UNKNOWN, UNKNOWN), {}).quorum
    assert service_verdicts(cfg, health(UNKNOWN, UNKNOWN, UNKNOWN), states) == {"web": None}
    cfg0 = replace(
        cfg, services=(replace(cfg.services[0], servers=(replace(server(1), checks=()),), quorum=0),)
    )
    assert service_verdicts(cfg0, {}, {}) == {"web": True}  # no checks: always in
