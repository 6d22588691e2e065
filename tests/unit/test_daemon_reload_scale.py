"""The reload path at scale (issue 16), by behaviour: one compare decides the no-op and the
summary (a reordered file is still a change), and the daemon keeps its long-lived heap frozen
while it runs (out of the cyclic collector's full walks) and gives it back when it stops."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

from lvsd.config import load_config, parse_config
from lvsd.core.plan import NO_CHANGE, summarize_change
from lvsd.daemon.daemon import Daemon
from lvsd.ipvs.memory import MemoryBackend

WEB = """
[[service]]
name = "web"
vip = "10.0.0.1:80"
  [[service.server]]
  address = "192.168.0.1"
  weight = {w}
"""
DNS = """
[[service]]
name = "dns"
vip = "10.0.0.2:53"
protocol = "udp"
  [[service.server]]
  address = "192.168.0.1"
"""


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_summarize_change_names_what_differs_and_says_no_change_otherwise() -> None:
    a = parse_config(WEB.format(w=1) + DNS)
    assert summarize_change(a, parse_config(WEB.format(w=1) + DNS)) == NO_CHANGE
    assert summarize_change(a, parse_config(WEB.format(w=2) + DNS)) == "changed web"
    assert summarize_change(a, parse_config(WEB.format(w=1))) == "removed dns"
    assert summarize_change(a, parse_config(DNS + WEB.format(w=1))) == "reordered services"
    # any section, [defaults] included, is named when it differs
    with_defaults = parse_config('[defaults]\nweight = 3\n' + WEB.format(w=1) + DNS)
    assert summarize_change(a, with_defaults).endswith("changed [defaults]")


def test_reload_tells_unchanged_from_reordered_and_changed(tmp_path: Path) -> None:
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(WEB.format(w=1) + DNS)
    b = MemoryBackend()
    d = Daemon(load_config(str(cfg)), b, config_path=str(cfg), api=False, install_signals=False)

    async def main() -> None:
        task = asyncio.create_task(d.run())
        await d.running.wait()
        assert gc.get_freeze_count() > 0  # the heap is out of the collector's walks while running
        assert await d.request_reload() == (True, "unchanged")
        cfg.write_text(DNS + WEB.format(w=1))  # same services, other order: the kernel's list order differs
        ok, msg = await d.request_reload()
        assert ok and msg != "unchanged"
        assert [s.name for s in d.config.services] == ["dns", "web"]
        cfg.write_text(DNS + WEB.format(w=5))
        assert await d.request_reload() == (True, "reloaded")
        assert [x.weight for e in b.dump().values() for x in e.dests.values() if x.weight == 5]
        assert gc.get_freeze_count() > 0
        d.request_stop()
        assert await task == 0

    try:
        run(main())
        assert gc.get_freeze_count() == 0  # stopped: what it held is ordinary garbage again
    finally:
        gc.unfreeze()
