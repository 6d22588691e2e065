"""desired_table / quorum_states: every rule of interfaces.md, on configs built from the model."""

from __future__ import annotations

from lvsd.config.model import Config, ServerConfig, ServiceConfig, TCPCheck
from lvsd.core.desired import desired_table, quorum_states
from lvsd.core.health import Health, ServerHealth
from lvsd.ipvs.model import Destination, DestKey, Forward, Service, ServiceEntry, ServiceKey

KEY = ServiceKey.inet("tcp", "10.0.0.1", 80)
CHECK = (TCPCheck(),)
UP = ServerHealth(Health.UP)
DOWN = ServerHealth(Health.DOWN, reason="refused")
UNKNOWN = ServerHealth(Health.UNKNOWN)


def server(i: int, weight: int = 3, checks=CHECK, on_failure: str = "remove", name: str = "web") -> ServerConfig:
    key = DestKey.of(f"192.168.0.{i}", 80)
    return ServerConfig(name, key, Destination(key, Forward.MASQ, weight), checks=checks, on_failure=on_failure)


def config(*servers: ServerConfig, quorum: int = 1, hysteresis: int = 0, sorry: Destination | None = None) -> Config:
    svc = ServiceConfig(
        "web", KEY, Service(KEY, "wrr"), servers, quorum=quorum, hysteresis=hysteresis, sorry_server=sorry
    )
    return Config(services=(svc,))


def weights(table, key=KEY) -> dict[str, int]:
    return {str(k): d.weight for k, d in table[key].dests.items()}


def sid(i: int) -> tuple[str, DestKey]:
    return ("web", DestKey.of(f"192.168.0.{i}", 80))


def test_server_without_checks_is_in_at_configured_weight() -> None:
    t = desired_table(config(server(1, 5, checks=())), {}, {})
    assert weights(t) == {"192.168.0.1:80": 5}
    assert t[KEY].service == Service(KEY, "wrr")


def test_up_uses_configured_or_dynamic_weight() -> None:
    cfg = config(server(1, 5), server(2, 5))
    t = desired_table(cfg, {sid(1): UP, sid(2): ServerHealth(Health.UP, weight=42)}, {})
    assert weights(t) == {"192.168.0.1:80": 5, "192.168.0.2:80": 42}


def test_down_remove_is_absent_and_inhibit_is_weight_zero() -> None:
    cfg = config(server(1), server(2, on_failure="inhibit"))
    t = desired_table(cfg, {sid(1): DOWN, sid(2): DOWN}, {})
    assert weights(t) == {"192.168.0.2:80": 0}
    # inhibit keeps every other attribute as configured
    assert t[KEY].dests[sid(2)[1]].forward == Forward.MASQ


def test_unknown_new_server_gets_no_traffic() -> None:
    cfg = config(server(1), server(2, on_failure="inhibit"))
    t = desired_table(cfg, {}, {})  # checks have not run: absent from the snapshot = UNKNOWN
    assert weights(t) == {"192.168.0.2:80": 0}
    t = desired_table(cfg, {sid(1): UNKNOWN, sid(2): UNKNOWN}, {})
    assert weights(t) == {"192.168.0.2:80": 0}


def test_unknown_adopted_server_keeps_kernel_weight_but_config_attributes() -> None:
    cfg = config(server(1, 3), server(2, 3, on_failure="inhibit"))
    k1, k2 = sid(1)[1], sid(2)[1]
    actual = {
        KEY: ServiceEntry(
            Service(KEY, "wrr"),
            {k1: Destination(k1, Forward.ROUTE, 7), k2: Destination(k2, Forward.MASQ, 9)},
        )
    }
    t = desired_table(cfg, {}, actual)
    assert weights(t) == {"192.168.0.1:80": 7, "192.168.0.2:80": 9}
    assert t[KEY].dests[k1].forward == Forward.MASQ  # the config's method, the kernel's weight
    # once the checks decide, the config wins
    t = desired_table(cfg, {sid(1): UP, sid(2): DOWN}, actual)
    assert weights(t) == {"192.168.0.1:80": 3, "192.168.0.2:80": 0}


def test_quorum_adds_and_removes_sorry_server_with_hysteresis() -> None:
    sorry_key = DestKey.of("192.168.9.9", 80)
    sorry = Destination(sorry_key, Forward.MASQ, 1)
    cfg = config(server(1, 2), server(2, 2), quorum=3, hysteresis=2, sorry=sorry)
    # both up: weight 4 >= 3 + 2 -> above
    h = {sid(1): UP, sid(2): UP}
    q = quorum_states(cfg, h, {})
    assert q == {"web": False}
    assert "192.168.9.9:80" not in weights(desired_table(cfg, h, {}, q))
    # one down: 2 < 3 -> below, sorry server in
    h = {sid(1): UP, sid(2): DOWN}
    q = quorum_states(cfg, h, {}, q)
    assert q == {"web": True}
    assert weights(desired_table(cfg, h, {}, q)) == {"192.168.0.1:80": 2, "192.168.9.9:80": 1}
    # dynamic weight brings the sum to 4 = quorum + hysteresis - 1 -> stays below (hysteresis)
    h = {sid(1): UP, sid(2): ServerHealth(Health.UP, weight=2)}
    cfg2 = config(server(1, 2), server(2, 2), quorum=3, hysteresis=2, sorry=sorry)
    h = {sid(1): ServerHealth(Health.UP, weight=1), sid(2): ServerHealth(Health.UP, weight=3)}
    q = quorum_states(cfg2, h, {}, q)
    assert q == {"web": True}
    # 5 >= 3 + 2 -> above again, sorry server out
    h = {sid(1): ServerHealth(Health.UP, weight=2), sid(2): ServerHealth(Health.UP, weight=3)}
    q = quorum_states(cfg2, h, {}, q)
    assert q == {"web": False}
    assert "192.168.9.9:80" not in weights(desired_table(cfg2, h, {}, q))


def test_quorum_waits_for_first_verdict() -> None:
    cfg = config(server(1), quorum=1)
    assert quorum_states(cfg, {}, {}) == {}  # UNKNOWN at start: no sorry server, no hook
    assert quorum_states(cfg, {sid(1): DOWN}, {}) == {"web": True}


def test_only_restricts_to_named_services() -> None:
    cfg = config(server(1, checks=()))
    assert desired_table(cfg, {}, {}, only=["other"]) == {}
    assert KEY in desired_table(cfg, {}, {}, only=["web"])
