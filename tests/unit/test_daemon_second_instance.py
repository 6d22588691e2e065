"""A second lvsd started on the socket of a running one must stop before it touches the kernel
(it would otherwise rewrite the running daemon's table, e.g. pull its sorry server, and run HA)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lvsd.config import load_config
from lvsd.daemon.api import APIError, _bind_unix
from lvsd.daemon.daemon import Daemon
from lvsd.ipvs.memory import MemoryBackend

CONFIG = """
[[service]]
name = "web"
vip = "10.0.0.1:80"
  [[service.server]]
  address = "192.168.0.1"

[api]
socket = "{sock}"
"""


class RecordingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def apply(self, ops):  # type: ignore[override]
        ops = list(ops)
        self.writes += len(ops)
        super().apply(ops)


def test_a_live_socket_stops_start_up_before_any_kernel_write(tmp_path: Path) -> None:
    sock = tmp_path / "lvsd.sock"
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG.format(sock=sock))
    live = _bind_unix(str(sock), 0o600)  # the running daemon
    b = RecordingBackend()
    d = Daemon(load_config(str(cfg)), b, config_path=str(cfg), install_signals=False)
    try:
        with pytest.raises(APIError, match="another daemon"):
            asyncio.run(asyncio.wait_for(d.run(), 30))
        assert b.writes == 0 and b.dump() == {}
        assert d.ha is None  # no role taken, no sync daemon, no hook
        assert sock.exists()  # the running daemon's socket is left alone
    finally:
        live.close()


def test_the_claimed_socket_is_served_and_removed_on_stop(tmp_path: Path) -> None:
    sock = tmp_path / "lvsd.sock"
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG.format(sock=sock))
    b = RecordingBackend()
    d = Daemon(load_config(str(cfg)), b, config_path=str(cfg), install_signals=False)

    async def main() -> None:
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), 30)
        r, w = await asyncio.open_unix_connection(str(sock))
        w.write(b"GET /status HTTP/1.0\r\n\r\n")
        answer = await asyncio.wait_for(r.read(), 30)
        w.close()
        assert answer.startswith(b"HTTP/1.0 200") and b'"state": "running"' in answer
        d.request_stop()
        assert await asyncio.wait_for(task, 30) == 0

    asyncio.run(main())
    assert b.writes == 2 and not sock.exists()


def test_a_metrics_port_in_use_stops_start_up_before_any_kernel_write(tmp_path: Path) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    sock = tmp_path / "lvsd.sock"
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG.format(sock=sock) + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    b = RecordingBackend()
    d = Daemon(load_config(str(cfg)), b, config_path=str(cfg), install_signals=False)
    try:
        with pytest.raises(APIError, match=f"listen 127.0.0.1:{port}: Address already in use$"):
            asyncio.run(asyncio.wait_for(d.run(), 30))
        assert b.writes == 0 and d.ha is None
        assert not sock.exists()  # the claimed control socket is released again
    finally:
        taken.close()


def test_metrics_are_served_on_the_claimed_port(tmp_path: Path) -> None:
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    sock = tmp_path / "lvsd.sock"
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG.format(sock=sock) + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    d = Daemon(load_config(str(cfg)), RecordingBackend(), config_path=str(cfg), install_signals=False)

    async def main() -> bytes:
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), 30)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        answer = await asyncio.wait_for(r.read(), 30)
        w.close()
        d.request_stop()
        await asyncio.wait_for(task, 30)
        return answer

    answer = asyncio.run(main())
    assert answer.startswith(b"HTTP/1.0 200") and b"lvsd_kernel_up 1" in answer
