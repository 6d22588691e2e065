"""Runtime control end to end: lvsctl disable/enable/drain/weight against a running daemon on the
memory backend; overrides kept across reload and restart; drain_on_remove; a corrupt file."""

from __future__ import annotations

import asyncio
import json
import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lvsd.cli import lvsctl
from lvsd.config import load_config
from lvsd.daemon import overrides as overrides_mod
from lvsd.daemon.daemon import Daemon
from lvsd.daemon.notify import Notifier
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import DestKey, ServiceKey

WEB = ServiceKey.inet("tcp", "10.0.0.1", 80)
DEADLINE = 10.0


def write_config(tmp: Path, servers: tuple[int, ...] = (1, 2, 3), extra: str = "") -> Path:
    cfg = tmp / "lvsd.toml"
    body = "".join(f'  [[service.server]]\n  address = "192.168.0.{i}"\n' for i in servers)
    cfg.write_text(
        textwrap.dedent(
            f"""
            [daemon]
            state_file = "{tmp}/state/state.json"
            [api]
            socket = "{tmp}/lvsd.sock"
            [[service]]
            name = "web"
            vip = "10.0.0.1:80"
            weight = 5
            {extra}
            """
        )
        + body
    )
    return cfg


def kernel(b: MemoryBackend) -> dict[str, int]:
    entry = b.dump().get(WEB)
    return {} if entry is None else {k.addr.rsplit(".", 1)[1]: d.weight for k, d in entry.dests.items()}


async def until(d: Daemon, pred: Any, what: str) -> None:
    """Wait, reconcile by reconcile, until pred() holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not pred():
        left = deadline - loop.time()
        assert left > 0, f"timed out waiting for {what}"
        try:
            await asyncio.wait_for(d.wait_reconciled(), min(left, 0.5))
        except asyncio.TimeoutError:
            pass


async def ctl(tmp: Path, *args: str) -> int:
    return await asyncio.to_thread(lvsctl.main, ["-s", str(tmp / "lvsd.sock"), *args])


async def start(cfg: Path, b: MemoryBackend) -> tuple[Daemon, asyncio.Task[int]]:
    d = Daemon(load_config(str(cfg)), b, str(cfg), Notifier(""), install_signals=False)
    task = asyncio.create_task(d.run())
    await asyncio.wait_for(d.running.wait(), DEADLINE)
    return d, task


async def stop(d: Daemon, task: asyncio.Task[int]) -> None:
    d.request_stop()
    assert await asyncio.wait_for(task, DEADLINE) == 0


@pytest.fixture(autouse=True)
def fast_drain_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overrides_mod, "DRAIN_POLL", 0.05)


def test_disable_weight_drain_enable_and_restart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    b = MemoryBackend()
    s3 = DestKey.of("192.168.0.3", 80)

    async def main() -> None:
        d, task = await start(cfg, b)
        assert kernel(b) == {"1": 5, "2": 5, "3": 5}
        assert await ctl(tmp_path, "disable", "web", "192.168.0.1", "--reason", "disk swap") == 0
        await until(d, lambda: "1" not in kernel(b), "disable to remove .1")
        assert await ctl(tmp_path, "weight", "web", "192.168.0.2:80", "7") == 0
        await until(d, lambda: kernel(b).get("2") == 7, "the pinned weight")
        b.set_counts(WEB, s3, active=2, inactive=1)
        assert await ctl(tmp_path, "drain", "web", "192.168.0.3", "--timeout", "10m") == 0
        await until(d, lambda: kernel(b).get("3") == 0, "the drain's weight 0")
        capsys.readouterr()
        assert await ctl(tmp_path, "services") == 0
        out = capsys.readouterr().out
        assert "draining (3 conns) by uid " in out
        assert "disabled by uid " in out and "disk swap" in out and "weight pinned 7" in out
        assert await ctl(tmp_path, "metrics") == 0
        metrics = capsys.readouterr().out
        assert 'lvsd_server_override{service="web",server="192.168.0.1:80",kind="disable",by="uid ' in metrics
        assert 'reason="disk swap"}' in metrics
        # lasts across a restart: the new daemon's first plan keeps them
        await stop(d, task)
        d, task = await start(cfg, b)
        assert kernel(b) == {"2": 7, "3": 0}
        b.set_counts(WEB, s3)  # the last connections close: the drain finishes, the server leaves
        await until(d, lambda: "3" not in kernel(b), "the drain to finish")
        assert d.overrides.active[("web", s3)].drained
        assert await ctl(tmp_path, "weight", "--clear", "web", "192.168.0.2") == 0
        await until(d, lambda: kernel(b).get("2") == 5, "the weight unpinned")
        assert await ctl(tmp_path, "enable", "web") == 0
        await until(d, lambda: kernel(b) == {"1": 5, "2": 5, "3": 5}, "enable")
        assert d.overrides.active == {}
        await stop(d, task)

    asyncio.run(asyncio.wait_for(main(), 6 * DEADLINE))
    doc = json.loads((tmp_path / "state" / "overrides.json").read_text())
    assert doc == {"version": 1, "overrides": []}


def test_unknown_service_or_server_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path)
    b = MemoryBackend()

    async def main() -> None:
        d, task = await start(cfg, b)
        assert await ctl(tmp_path, "disable", "nope") == 1
        assert await ctl(tmp_path, "drain", "web", "192.168.9.9") == 1
        assert await ctl(tmp_path, "weight", "web", "192.168.0.1", "-1") == 1
        await stop(d, task)

    asyncio.run(asyncio.wait_for(main(), 3 * DEADLINE))
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "lvsctl: no service named 'nope'"
    assert err[1] == "lvsctl: service 'web' has no server '192.168.9.9'"
    assert err[2].startswith("lvsctl: weight must be an integer")


def test_reload_drops_the_override_of_a_removed_server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = write_config(tmp_path)
    b = MemoryBackend()

    async def main() -> None:
        d, task = await start(cfg, b)
        assert await ctl(tmp_path, "disable", "web", "192.168.0.2") == 0
        await until(d, lambda: "2" not in kernel(b), "disable")
        write_config(tmp_path, servers=(1, 3))
        assert await ctl(tmp_path, "reload") == 0
        assert d.overrides.active == {}
        write_config(tmp_path, servers=(1, 2, 3))  # back in the config: back in the table
        assert await ctl(tmp_path, "reload") == 0
        await until(d, lambda: kernel(b) == {"1": 5, "2": 5, "3": 5}, "the server back")
        await stop(d, task)

    with caplog.at_level(logging.INFO, logger="lvsd"):
        asyncio.run(asyncio.wait_for(main(), 3 * DEADLINE))
    assert "override disable of web 192.168.0.2:80 dropped: the reload removed the server" in caplog.text


def test_drain_on_remove_keeps_a_removed_server_until_its_connections_end(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra='drain_on_remove = "5m"')
    b = MemoryBackend()
    s2 = DestKey.of("192.168.0.2", 80)

    async def main() -> None:
        d, task = await start(cfg, b)
        b.set_counts(WEB, s2, active=1)
        write_config(tmp_path, servers=(1, 3), extra='drain_on_remove = "5m"')
        assert await ctl(tmp_path, "reload") == 0
        await until(d, lambda: kernel(b) == {"1": 5, "2": 0, "3": 5}, "the removed server draining")
        # a restart in between: the drain (and the removed server's destination) is remembered
        await stop(d, task)
        d, task = await start(cfg, b)
        assert kernel(b) == {"1": 5, "2": 0, "3": 5}
        b.set_counts(WEB, s2)
        await until(d, lambda: kernel(b) == {"1": 5, "3": 5}, "the drained server gone")
        assert d.overrides.active == {}
        await stop(d, task)

    asyncio.run(asyncio.wait_for(main(), 4 * DEADLINE))


def test_without_drain_on_remove_a_removed_server_is_cut(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    b = MemoryBackend()

    async def main() -> None:
        d, task = await start(cfg, b)
        b.set_counts(WEB, DestKey.of("192.168.0.2", 80), active=1)
        write_config(tmp_path, servers=(1, 3))
        assert await ctl(tmp_path, "reload") == 0
        assert kernel(b) == {"1": 5, "3": 5}
        await stop(d, task)

    asyncio.run(asyncio.wait_for(main(), 3 * DEADLINE))


@pytest.mark.parametrize("content", ["{not json", '{"version": 99, "overrides": []}', '{"version": 1, "overrides": [{"kind": "melt"}]}'])
def test_a_corrupt_overrides_file_is_reported_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / "overrides.json"
    path.write_text(content)
    b = MemoryBackend()

    async def main() -> None:
        d, task = await start(cfg, b)
        assert kernel(b) == {"1": 5, "2": 5, "3": 5}
        assert d.overrides.error.startswith(f"{path}: unreadable, ignored (")
        capsys.readouterr()
        assert await ctl(tmp_path, "status") == 0
        assert f"overrides: 0 (lvsctl services shows them); {path}: unreadable, ignored (" in capsys.readouterr().out
        assert await ctl(tmp_path, "disable", "web", "192.168.0.1") == 0  # and the next change rewrites it
        await stop(d, task)

    with caplog.at_level(logging.INFO, logger="lvsd"):
        asyncio.run(asyncio.wait_for(main(), 3 * DEADLINE))
    assert "lvsd runs without the overrides it held" in caplog.text
    assert json.loads(path.read_text())["overrides"][0]["kind"] == "disable"


def test_a_server_removed_while_lvsd_was_stopped_loses_its_override(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = write_config(tmp_path)
    b = MemoryBackend()

    async def main() -> None:
        d, task = await start(cfg, b)
        assert await ctl(tmp_path, "disable", "web", "192.168.0.2") == 0
        assert await ctl(tmp_path, "weight", "web", "192.168.0.3", "9") == 0
        await stop(d, task)
        write_config(tmp_path, servers=(1, 3))
        d, task = await start(cfg, b)
        assert kernel(b) == {"1": 5, "3": 9}
        assert list(d.overrides.active) == [("web", DestKey.of("192.168.0.3", 80))]
        await stop(d, task)

    with caplog.at_level(logging.INFO, logger="lvsd"):
        asyncio.run(asyncio.wait_for(main(), 3 * DEADLINE))
    assert "override disable of web 192.168.0.2:80 dropped: the config no longer has the server" in caplog.text


def test_plan_shows_what_a_start_with_the_overrides_file_would_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lvsd.core.overrides import Override
    from lvsd.daemon.main import main as lvsd_main

    cfg = write_config(tmp_path)
    (tmp_path / "state").mkdir()
    path = tmp_path / "state" / "overrides.json"
    gone = ("web", DestKey.of("192.168.0.7", 80))  # a server the config no longer has: dropped
    doc = overrides_mod.encode({("web", DestKey.of("192.168.0.2", 80)): Override("disable"), gone: Override("disable")})
    path.write_text(json.dumps(doc))
    kernel_file = tmp_path / "kernel.json"
    assert lvsd_main(["--plan", str(cfg), "--backend", "memory", "--state", str(kernel_file)]) == 0
    out, err = capsys.readouterr()
    assert "192.168.0.2" not in out and out.count("add-server") == 2
    assert "# 1 overrides from" in err
    assert json.loads(path.read_text()) == doc  # --plan writes nothing
