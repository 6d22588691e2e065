"""The control API's kernel reads on the real kernel (run in the VM): ``GET /services?service=NAME``
reads only that service's destinations over netlink (a service missing from the kernel is
``in_kernel: false``, the kernel's ESRCH), the whole table is dumped once for /services and
/metrics together, and the answers carry the kernel's weights. Prints the time of one service
against the whole table (for docs/performance.md; no bound: the VM is emulated)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import NoHA

from lvsd.config import parse_config
from lvsd.daemon.daemon import Daemon
from lvsd.ipvs.backend import Op

pytestmark = pytest.mark.kernel

SERVICES = 200  # x 10 servers


def config(sock: Path) -> str:
    out = ["[daemon]", "resync = 0", 'on_stop = "remove"', "[api]", f'socket = "{sock}"', "[defaults]",
           'forward = "nat"', "check = []"]
    for s in range(SERVICES):
        out += ["[[service]]", f'name = "s{s}"', f'vip = "10.80.{s // 250}.{s % 250 + 1}:80"']
        out.append("server = [" + ", ".join(f'{{ address = "10.81.{s % 250}.{k + 1}", weight = {k + 1} }}'
                                            for k in range(10)) + "]")
    return "\n".join(out) + "\n"


async def get(sock: Path, path: str) -> tuple[int, bytes]:
    r, w = await asyncio.open_unix_connection(str(sock))
    w.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    raw = await r.read()
    w.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_one_service_is_read_alone_and_the_table_once_for_both_endpoints(ipvs: Any, tmp_path: Path) -> None:
    sock = tmp_path / "lvsd.sock"
    cfg = parse_config(config(sock))

    async def main() -> None:
        d = Daemon(cfg, ipvs, config_path=str(tmp_path / "x.toml"), install_signals=False, ha_factory=NoHA)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), 300)
        ks = d.api.kernel
        ks.period = 0.0  # nothing fresh: each request below reads the kernel
        t0 = time.perf_counter()
        code, body = await get(sock, "/services?service=s7")
        one = time.perf_counter() - t0
        assert code == 200 and ks.dumps == 0 and ks.service_reads == 1
        row = json.loads(body)["services"][0]
        assert row["in_kernel"] and [s["kernel_weight"] for s in row["servers"]] == list(range(1, 11))
        # a service deleted behind lvsd's back: netlink answers ESRCH, the row says so
        ipvs.apply([Op.del_service(cfg.services[9].key)])
        row = json.loads((await get(sock, "/services?service=s9"))[1])["services"][0]
        assert row["in_kernel"] is False and all(s["kernel_weight"] is None for s in row["servers"])
        t0 = time.perf_counter()
        code, body = await get(sock, "/services")
        whole = time.perf_counter() - t0
        assert code == 200 and ks.dumps == 1
        rows = json.loads(body)["services"]
        assert len(rows) == SERVICES and sum(r["in_kernel"] for r in rows) == SERVICES - 1
        ks.period = 3600.0  # within the period: /metrics uses the same read
        code, page = await get(sock, "/metrics")
        assert code == 200 and ks.dumps == 1
        text = page.decode()
        assert 'lvsd_ipvs_server_weight{service="s7",server="10.81.7.3:80"} 3' in text
        assert "lvsd_kernel_up 1" in text
        print(f"\nVM, {SERVICES * 10} servers: /services?service=NAME {one * 1000:.1f} ms, "
              f"/services whole {whole * 1000:.1f} ms ({whole / one:.0f}x)")
        d.request_stop()
        assert await task == 0

    asyncio.run(asyncio.wait_for(main(), 600))
    assert ipvs.services() == []  # on_stop = remove
