"""Issue 16: a config of more servers than ``[daemon] max_servers`` (default 200,000) is refused
with one line naming the count and the limit, before any server is built; ``lvsd --check-config``
exits 78 with it, and a reload over the limit keeps the running config."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fakes import NoHA

from lvsd.config import ConfigError, load_config, parse_config
from lvsd.config import services as services_mod
from lvsd.config.load import build_config
from lvsd.config.model import DaemonConfig
from lvsd.daemon import main as lvsd_main
from lvsd.daemon.daemon import Daemon
from lvsd.ipvs.memory import MemoryBackend


def config(servers: int, limit: int | None, services: int = 2, extra: str = "") -> str:
    """``servers`` servers spread over ``services`` services; ``[daemon] max_servers = limit``."""
    out = ["[daemon]", f"max_servers = {limit}"] if limit is not None else []
    for s in range(services):
        out += ["[[service]]", f'name = "s{s}"', f'vip = "10.0.0.{s + 1}:80"']
        for k in range(s, servers, services):
            out += ["  [[service.server]]", f'  address = "192.168.0.{k + 1}"']
    return "\n".join(out) + "\n" + extra


def test_over_the_limit_is_one_line_naming_count_and_limit() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(config(6, 5), "/etc/lvsd/lvsd.toml")
    assert e.value.errors == ["/etc/lvsd/lvsd.toml: 6 servers, more than [daemon] max_servers = 5 (raise it if this is meant)"]


def test_at_the_limit_is_fine_and_the_limit_counts_every_service() -> None:
    cfg = parse_config(config(5, 5, services=3))
    assert sum(len(s.servers) for s in cfg.services) == 5
    assert cfg.daemon.max_servers == 5


def test_the_limit_comes_before_every_other_error_and_before_any_server_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file over the limit with a mistake in a server reports the limit only, and the builder of
    servers is never called (the count is made on the parsed lists)."""

    def no_server(*a: Any, **k: Any) -> None:
        raise AssertionError("a server was built")

    monkeypatch.setattr(services_mod._Builder, "server", no_server)
    monkeypatch.setattr(services_mod._Builder, "service", no_server)
    bad = config(4, 3) + '[[service]]\nname = "x"\nvip = "10.0.0.9:80"\n  [[service.server]]\n  address = "192.168.0.1"\n  weight = -1\n'
    with pytest.raises(ConfigError) as e:
        parse_config(bad)
    assert e.value.errors == ["<string>: 5 servers, more than [daemon] max_servers = 3 (raise it if this is meant)"]


def test_default_limit_refuses_half_a_million_servers() -> None:
    assert DaemonConfig().max_servers == 200_000
    one = {"address": "192.168.0.1"}
    data = {"service": [{"name": f"s{i}", "vip": f"10.0.{i}.1:80", "server": [one] * 50_000} for i in range(10)]}
    with pytest.raises(ConfigError) as e:
        build_config(data, "big.toml")
    assert e.value.errors == ["big.toml: 500000 servers, more than [daemon] max_servers = 200000 (raise it if this is meant)"]


@pytest.mark.parametrize("value", [0, -1, '"many"', 2**31])
def test_a_bad_limit_is_a_config_error(value: object) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(config(1, value))  # type: ignore[arg-type]
    assert len(e.value.errors) == 1 and e.value.errors[0].startswith("daemon.max_servers: "), e.value.errors


def test_included_servers_count_too(tmp_path: Path) -> None:
    (tmp_path / "more.toml").write_text(config(3, None, services=1).replace('"s0"', '"inc"').replace("10.0.0.1", "10.0.9.1"))
    main = tmp_path / "lvsd.toml"
    main.write_text(f'include = ["{tmp_path}/more.toml"]\n' + config(2, 4))
    with pytest.raises(ConfigError) as e:
        load_config(str(main))
    assert e.value.errors == [f"{main}: 5 servers, more than [daemon] max_servers = 4 (raise it if this is meant)"]


def test_check_config_exits_78_with_the_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "lvsd.toml"
    path.write_text(config(3, 2))
    assert lvsd_main.main(["--check-config", str(path)]) == lvsd_main.EX_CONFIG == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{path}: 3 servers, more than [daemon] max_servers = 2 (raise it if this is meant)"]


def test_reload_over_the_limit_keeps_the_running_config(tmp_path: Path) -> None:
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(config(2, 2))
    b = MemoryBackend()

    async def main() -> None:
        d = Daemon(load_config(str(cfg)), b, config_path=str(cfg), api=False, install_signals=False,
                   ha_factory=NoHA)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), 20)
        before, running = b.dump(), d.config
        cfg.write_text(config(3, 2))
        ok, msg = await d.request_reload()
        assert not ok and "3 servers, more than [daemon] max_servers = 2" in msg and "\n" not in msg
        assert d.config is running and b.dump() == before
        d.request_stop()
        assert await task == 0

    asyncio.run(asyncio.wait_for(main(), 20))
