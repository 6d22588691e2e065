"""The planner with operator overrides (disable, drain, weight, drain_on_remove) and sorry_mode /
sorry_inhibit: pure rules of lvsd.core.overrides and lvsd.core.desired."""

from __future__ import annotations

from dataclasses import replace

from lvsd.config.model import Config, ServerConfig, ServiceConfig, TCPCheck
from lvsd.core.desired import plan_table
from lvsd.core.health import Health, ServerHealth
from lvsd.core.overrides import Override, drain_finished
from lvsd.ipvs.model import Destination, DestKey, Forward, Service, ServiceKey

KEY = ServiceKey.inet("tcp", "10.0.0.1", 80)
CHECK = (TCPCheck(),)
UP = ServerHealth(Health.UP)
DOWN = ServerHealth(Health.DOWN, reason="refused")
SORRY = Destination(DestKey.of("192.168.0.99", 80), Forward.MASQ, 1)


def server(i: int, weight: int = 3, on_failure: str = "remove") -> ServerConfig:
    key = DestKey.of(f"192.168.0.{i}", 80)
    return ServerConfig("web", key, Destination(key, Forward.MASQ, weight), checks=CHECK, on_failure=on_failure)


def config(*servers: ServerConfig, **kw: object) -> Config:
    return Config(services=(ServiceConfig("web", KEY, Service(KEY, "wrr"), servers, **kw),))  # type: ignore[arg-type]


def sid(i: int) -> tuple[str, DestKey]:
    return ("web", DestKey.of(f"192.168.0.{i}", 80))


def weights(cfg: Config, health: dict, overrides: dict | None = None, previous: dict | None = None) -> dict[str, int]:
    table, _ = plan_table(cfg, health, {}, previous, None, overrides)
    return {str(k).split(":")[0].rsplit(".", 1)[1]: d.weight for k, d in table[KEY].dests.items()}


ALL_UP = {sid(1): UP, sid(2): UP, sid(3): UP}


def test_disable_follows_on_failure_and_keeps_health() -> None:
    cfg = config(server(1), server(2, on_failure="inhibit"), server(3))
    ov = {sid(1): Override("disable"), sid(2): Override("disable")}
    assert weights(cfg, ALL_UP, ov) == {"2": 0, "3": 3}


def test_drain_is_weight_zero_then_out_when_drained() -> None:
    cfg = config(server(1), server(2))
    health = {sid(1): UP, sid(2): UP}
    assert weights(cfg, health, {sid(1): Override("drain")}) == {"1": 0, "2": 3}
    assert weights(cfg, health, {sid(1): Override("drain", drained=True)}) == {"2": 3}


def test_drain_of_a_down_removed_server_keeps_it_out() -> None:
    cfg = config(server(1), server(2))
    assert weights(cfg, {sid(1): DOWN, sid(2): UP}, {sid(1): Override("drain")}) == {"2": 3}


def test_weight_pins_over_configured_and_dynamic_but_not_over_down() -> None:
    cfg = config(server(1), server(2), server(3))
    health = {sid(1): UP, sid(2): ServerHealth(Health.UP, weight=42), sid(3): DOWN}
    ov = {sid(i): Override("weight", weight=7) for i in (1, 2, 3)}
    assert weights(cfg, health, ov) == {"1": 7, "2": 7}


def test_overridden_weight_is_the_quorum_measure() -> None:
    cfg = config(server(1), server(2), quorum=4, sorry_server=SORRY)
    _, states = plan_table(cfg, {sid(1): UP, sid(2): UP}, {}, None, None, {sid(1): Override("disable")})
    assert states == {"web": True}


def test_removed_server_drains_at_weight_zero_until_drained() -> None:
    cfg = config(server(1))
    gone = DestKey.of("192.168.0.2", 80)
    dest = Destination(gone, Forward.MASQ, 3)
    ov = {("web", gone): Override("drain", by="config", dest=dest)}
    assert weights(cfg, {sid(1): UP}, ov) == {"1": 3, "2": 0}
    ov = {("web", gone): replace(ov[("web", gone)], drained=True)}
    assert weights(cfg, {sid(1): UP}, ov) == {"1": 3}


def test_drain_finished_by_connections_or_timeout() -> None:
    d = Destination(DestKey.of("192.168.0.1", 80), weight=0, active_conns=1, inact_conns=2)
    ov = Override("drain", at=100.0, until=700.0)
    assert not drain_finished(ov, d, 200.0)
    assert drain_finished(ov, d, 700.0)
    assert drain_finished(ov, replace(d, active_conns=0, inact_conns=0), 200.0)
    assert drain_finished(ov, None, 200.0)
    assert not drain_finished(Override("drain"), d, 1e12)  # no timeout: waits for the connections
    assert not drain_finished(Override("disable"), None, 0.0)


def test_sorry_mode_add_keeps_live_servers_beside_the_sorry_server() -> None:
    cfg = config(server(1), server(2), quorum=6, sorry_server=SORRY)
    assert weights(cfg, {sid(1): UP, sid(2): DOWN}) == {"1": 3, "99": 1}


def test_sorry_mode_replace_takes_live_servers_out_below_quorum() -> None:
    cfg = config(server(1), server(2, on_failure="inhibit"), server(3), quorum=9, sorry_server=SORRY, sorry_mode="replace")
    assert weights(cfg, {sid(1): UP, sid(2): UP, sid(3): DOWN}) == {"2": 0, "99": 1}
    # quorum back: the live servers return, the sorry server leaves
    assert weights(cfg, ALL_UP, previous={"web": True}) == {"1": 3, "2": 3, "3": 3}


def test_sorry_inhibit_keeps_the_sorry_server_at_weight_zero() -> None:
    cfg = config(server(1), quorum=3, sorry_server=SORRY, sorry_inhibit=True)
    assert weights(cfg, {sid(1): UP}) == {"1": 3, "99": 0}
    assert weights(cfg, {sid(1): DOWN}) == {"99": 1}


def test_keys_parse_inherit_from_defaults_and_refuse_bad_values() -> None:
    import pytest

    from lvsd.config.load import ConfigError, parse_config

    text = """
[defaults]
sorry_mode = "replace"
drain_on_remove = "5m"
[[service]]
name = "web"
vip = "10.0.0.1:80"
sorry_inhibit = true
server = [{ address = "192.168.0.1" }]
"""
    svc = parse_config(text, check_files=False).services[0]
    assert (svc.sorry_mode, svc.sorry_inhibit, svc.drain_on_remove) == ("replace", True, 300.0)
    with pytest.raises(ConfigError) as e:
        parse_config(text.replace('"replace"', '"swap"'), check_files=False)
    assert "defaults.sorry_mode" in str(e.value.errors)
