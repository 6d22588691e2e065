"""HA hooks (notify_master ...) are killed with their whole process group at daemon.hook_timeout,
like the per-server and quorum hooks: a child left running would otherwise hold the output pipe
and outlive the hook."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from lvsd.config.load import parse_config
from lvsd.daemon.ha import HAManager
from lvsd.ipvs.memory import MemoryBackend


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_timed_out_ha_hook_is_killed_with_its_children(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    cfg = parse_config(
        f"""
[daemon]
hook_timeout = "500ms"
[ha]
mode = "external"
role = "backup"
notify_master = ["/bin/sh", "-c", "sleep 60 & echo $! > {pidfile}; wait"]
"""
    )

    async def go() -> HAManager:
        m = HAManager(cfg, MemoryBackend(), lambda r: None)
        await m.start()
        m.set_role("master")
        await asyncio.wait_for(m.hooks_done(), 10)
        await m.stop("keep")
        return m

    m = asyncio.run(asyncio.wait_for(go(), 30))
    assert m.hook_results["notify_master"] == "killed after 0.5 s"
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the hook's child survived the timeout"
