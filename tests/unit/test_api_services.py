"""GET /services and `lvsctl services` tell the configured sorry server from a server somebody
added behind lvsd's back (both are in the kernel without being a configured server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from lvsd.cli import lvsctl
from lvsd.config import load_config
from lvsd.daemon.daemon import Daemon
from lvsd.ipvs.backend import Op
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import AF_INET, Destination, DestKey

CONFIG = """
[[service]]
name = "web"
vip = "10.0.0.1:80"
quorum = 2
sorry_server = {{ address = "192.168.9.9" }}
  [[service.server]]
  address = "192.168.0.1"

[api]
socket = "{sock}"
"""


def test_services_marks_the_sorry_server(tmp_path: Path, capsys) -> None:
    sock = tmp_path / "lvsd.sock"
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG.format(sock=sock))
    b = MemoryBackend()
    d = Daemon(load_config(str(cfg)), b, config_path=str(cfg), install_signals=False)

    async def main() -> None:
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), 30)
        key = d.config.services[0].key
        b.apply([Op.add_dest(key, Destination(DestKey(AF_INET, "192.168.7.7", 80), weight=5))])
        rc = await asyncio.to_thread(lvsctl.main, ["-s", str(sock), "services"])
        d.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
        assert rc == 0

    asyncio.run(main())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("web  tcp 10.0.0.1:80") and "[BELOW QUORUM]" in lines[0]
    rows = {ln.split()[0]: ln.split()[1] for ln in lines[1:]}
    assert rows == {"192.168.0.1:80": "up", "192.168.9.9:80": "sorry", "192.168.7.7:80": "extra"}
