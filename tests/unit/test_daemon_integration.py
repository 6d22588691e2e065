"""The daemon with the real CheckManager (TCP checks against a loopback listener) and the real
HAManager (external role set through lvsctl), on the memory backend."""

from __future__ import annotations

import asyncio
import os
import socket
import textwrap
from pathlib import Path

from lvsd.checks.manager import CheckManager
from lvsd.cli import lvsctl
from lvsd.config import load_config
from lvsd.daemon.daemon import Daemon
from lvsd.daemon.ha import HAManager
from lvsd.daemon.notify import Notifier
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import DaemonState, ServiceKey

WEB = ServiceKey.inet("tcp", "10.0.0.1", 80)
DEADLINE = 10.0


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def until(d: Daemon, pred, what: str) -> None:
    """Wait, reconcile by reconcile, until pred() holds (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not pred():
        left = deadline - loop.time()
        assert left > 0, f"timed out waiting for {what}"
        try:
            await asyncio.wait_for(d.wait_reconciled(), left)
        except asyncio.TimeoutError:
            pass


def test_real_checks_drive_the_table(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            [[service]]
            name = "web"
            vip = "10.0.0.1:80"
            check = {{ type = "tcp", interval = "50ms", timeout = "200ms", rise = 1, fall = 1, connect = "127.0.0.1:{port}" }}
              [[service.server]]
              address = "192.168.0.1"
              weight = 3
              [[service.server]]
              address = "192.168.0.2"
              check = []
            """
        )
    )
    b = MemoryBackend()

    def dests() -> dict[str, int]:
        t = b.dump()
        return {str(k): v.weight for k, v in t[WEB].dests.items()} if WEB in t else {}

    async def main() -> None:
        d = Daemon(load_config(str(cfg)), b, str(cfg), Notifier(""), api=False, install_signals=False)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), DEADLINE)
        assert isinstance(d.checks, CheckManager)
        await until(d, lambda: dests() == {"192.168.0.2:80": 1}, "the checked server to stay out")
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
        await until(d, lambda: dests() == {"192.168.0.1:80": 3, "192.168.0.2:80": 1}, "UP -> added")
        server.close()
        await server.wait_closed()
        await until(d, lambda: dests() == {"192.168.0.2:80": 1}, "DOWN -> removed")
        d.request_stop()
        assert await asyncio.wait_for(task, DEADLINE) == 0

    asyncio.run(asyncio.wait_for(main(), 3 * DEADLINE))


def test_external_role_through_lvsctl_switches_the_sync_daemon(tmp_path: Path, capsys) -> None:
    sock = tmp_path / "lvsd.sock"
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(
        textwrap.dedent(
            f"""
            [api]
            socket = "{sock}"
            [ha]
            mode = "external"
            role = "backup"
            [sync]
            interface = "lo"
            syncid = 7
            on_fault = "none"
            [[service]]
            name = "web"
            vip = "10.0.0.1:80"
              [[service.server]]
              address = "192.168.0.1"
            """
        )
    )
    sysctls = tmp_path / "vs"
    sysctls.mkdir()
    b = MemoryBackend(interfaces={"lo": 65536})

    def ha(config, backend, on_role):
        return HAManager(config, backend, on_role, sysctl_dir=str(sysctls))

    def running() -> list[int]:
        return sorted(x.state for x in b.daemons())

    async def main() -> None:
        d = Daemon(load_config(str(cfg)), b, str(cfg), Notifier(""), ha_factory=ha, install_signals=False)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), DEADLINE)
        assert d.role == "backup" and running() == [DaemonState.BACKUP]
        rc = await asyncio.to_thread(lvsctl.main, ["-s", str(sock), "role", "master"])
        assert rc == 0 and d.role == "master" and running() == [DaemonState.MASTER]
        rc = await asyncio.to_thread(lvsctl.main, ["-s", str(sock), "role", "fault"])
        assert rc == 0 and running() == []
        rc = await asyncio.to_thread(lvsctl.main, ["-s", str(sock), "status"])
        assert rc == 0
        d.request_stop()
        assert await asyncio.wait_for(task, DEADLINE) == 0

    asyncio.run(asyncio.wait_for(main(), 3 * DEADLINE))
    out = capsys.readouterr().out
    assert "role:     fault" in out
    assert (sysctls / "sync_threshold").read_text().strip() == "3 0"
    assert not os.path.exists(sock)
