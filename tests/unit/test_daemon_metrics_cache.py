"""Issue 11, item 4 (every scrape renders the whole page on the loop): scrapes within the cache
period share one render, the render is made in steps with the loop free in between, and a
snapshot renders exactly what the daemon itself would."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_daemon import CountingBackend, FakeChecks, daemon, finish, started

from lvsd.core.health import Health, ServerHealth
from lvsd.daemon import api, metrics
from lvsd.ipvs.model import DestKey

CONFIG = """
[api]
socket = "{sock}"

[[service]]
name = "web"
vip = "10.0.0.1:80"
""" + "".join(
    f'  [[service.server]]\n  address = "192.168.0.{i}"\n  forward = "nat"\n  check = {{ type = "tcp" }}\n' for i in range(1, 40)
)


def test_scrapes_share_one_render_made_in_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "METRICS_CACHE_SECONDS", 3600.0)  # every scrape below is "within the period"
    monkeypatch.setattr(metrics, "CHUNK", 10)  # 39 servers: several chunks
    renders: list[int] = []  # per render: how many times it let the loop run
    real = metrics.render_steps

    def counting(d, o):  # type: ignore[no-untyped-def]
        renders.append(0)
        for step in real(d, o):
            renders[-1] += 1
            yield step

    monkeypatch.setattr(metrics, "render_steps", counting)
    cfg = tmp_path / "lvsd.toml"
    sock = tmp_path / "lvsd.sock"
    cfg.write_text(CONFIG.replace("{sock}", str(sock)))
    FakeChecks.instances.clear()

    async def scrape() -> bytes:
        r, w = await asyncio.open_unix_connection(str(sock))
        w.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        out = await r.read()
        w.close()
        return out

    async def main() -> None:
        d = daemon(cfg, CountingBackend(), api=True)
        t = await started(d)
        FakeChecks.instances[0].set(("web", DestKey.of("192.168.0.1", 80)), ServerHealth(Health.UP))
        pages = await asyncio.gather(*(scrape() for _ in range(20)))
        assert len({p.split(b"\r\n\r\n", 1)[1] for p in pages}) == 1
        assert len(renders) == 1, renders
        assert renders[0] > 5  # rendered in steps, the loop free in between
        body = pages[0].split(b"\r\n\r\n", 1)[1].decode()
        assert body == metrics.render(d)  # the snapshot's page is the daemon's
        await finish(d, t)

    asyncio.run(asyncio.wait_for(main(), 30))
