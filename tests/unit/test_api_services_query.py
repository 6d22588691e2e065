"""Issue 16: GET /services filters and pages in the API (service names and globs, VIPs, server
states, limit and offset, with the total), builds rows and reads the kernel for the selected
page only, and answers a bad parameter with one line (404 for an unknown service, 400 otherwise)
without ever failing; `lvsctl services --service ... --limit ...` sends them."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeChecks, NoHA

from lvsd.cli import lvsctl
from lvsd.config import load_config
from lvsd.core.health import Health, ServerHealth
from lvsd.daemon.daemon import Daemon
from lvsd.ipvs.backend import Op
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import AF_INET, Destination, DestKey

SERVICES = [f"web-{i}" for i in range(6)] + [f"db-{i}" for i in range(3)]


def config(sock: Path) -> str:
    out = ["[daemon]", "resync = 0", "[api]", f'socket = "{sock}"', "[defaults]", 'forward = "nat"',
           'check = { type = "tcp" }']
    for i, name in enumerate(SERVICES):
        vip = "10.0.0.1" if name.startswith("web") else "10.0.0.2"
        out += ["[[service]]", f'name = "{name}"', f'vip = "{vip}:{8000 + i}"']
        if name == "web-1":
            out.append('sorry_server = { address = "192.168.9.9" }')
        out += [line for k in range(3) for line in ("  [[service.server]]", f'  address = "192.168.{i}.{k + 1}"')]
    out += ["[[service]]", 'name = "six"', 'vip = "[2001:db8::1]:443"',
            "  [[service.server]]", '  address = "2001:db8::10"']
    return "\n".join(out) + "\n"


Body = dict[str, Any]


async def get(sock: Path, path: str) -> tuple[int, Body]:
    r, w = await asyncio.open_unix_connection(str(sock))
    w.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    raw = await r.read()
    w.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def with_daemon(tmp_path: Path, test: Callable[[Daemon, Path, MemoryBackend], Coroutine[Any, Any, None]]) -> None:
    """Run ``test`` against a started daemon (memory backend, fake checks) serving its API."""
    sock, cfg = tmp_path / "lvsd.sock", tmp_path / "lvsd.toml"
    cfg.write_text(config(sock))
    b = MemoryBackend()

    async def main() -> None:
        d = Daemon(load_config(str(cfg)), b, config_path=str(cfg), install_signals=False,
                   checks_factory=FakeChecks, ha_factory=NoHA)
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.running.wait(), 20)
        checks = d.checks
        for i, name in enumerate(SERVICES):  # server 1 of every service up, 2 down, 3 unknown
            checks.set((name, DestKey(AF_INET, f"192.168.{i}.1", 8000 + i)), ServerHealth(Health.UP))
            checks.set((name, DestKey(AF_INET, f"192.168.{i}.2", 8000 + i)), ServerHealth(Health.DOWN, reason="refused"))
        await asyncio.sleep(0.2)
        try:
            await test(d, sock, b)
        finally:
            d.request_stop()
            assert await task == 0

    asyncio.run(asyncio.wait_for(main(), 30))


def names(body: Body) -> list[str]:
    return [s["name"] for s in body["services"]]


def test_no_query_is_every_service_with_the_total(tmp_path: Path) -> None:
    async def test(d: Daemon, sock: Path, b: MemoryBackend) -> None:
        code, body = await get(sock, "/services")
        assert code == 200 and names(body) == SERVICES + ["six"]
        assert (body["total"], body["offset"], body["limit"]) == (10, 0, None)
        counts = {"up": 0, "down": 0, "unknown": 0}
        for svc in body["services"]:
            for srv in svc["servers"]:
                counts[srv["health"]] += 1
        assert counts == {"up": 9, "down": 9, "unknown": 10}
        assert (await get(sock, "/status"))[1]["health"] == counts  # /status counts what /services shows

    with_daemon(tmp_path, test)


def test_one_service_is_its_row_of_the_whole_answer_built_alone(tmp_path: Path) -> None:
    async def test(d: Daemon, sock: Path, b: MemoryBackend) -> None:
        whole = (await get(sock, "/services"))[1]
        built: list[list[str]] = []
        real = d.server_states

        def counting(services: Any = None) -> Any:
            rows = real(services)
            built.append([r["name"] for r in rows])
            return rows

        d.server_states = counting  # type: ignore[method-assign]
        d.api.kernel.period = 0.0  # the whole table is stale: the kernel is read for this one service
        dumps, reads = d.api.kernel.dumps, d.api.kernel.service_reads
        code, body = await get(sock, "/services?service=web-1")
        assert code == 200 and body["total"] == 1
        assert body["services"] == [s for s in whole["services"] if s["name"] == "web-1"]
        assert built == [["web-1"]]  # no other service's rows were made
        assert d.api.kernel.dumps == dumps and d.api.kernel.service_reads == reads + 1
        assert [o["server"] for o in body["services"][0]["other_kernel_servers"]] == []

    with_daemon(tmp_path, test)


def test_globs_repeats_and_vips_select_in_config_order(tmp_path: Path) -> None:
    async def test(d: Daemon, sock: Path, b: MemoryBackend) -> None:
        assert names((await get(sock, "/services?service=db-*"))[1]) == ["db-0", "db-1", "db-2"]
        assert names((await get(sock, "/services?service=db-2&service=web-[13]&service=db-2"))[1]) == ["web-1", "web-3", "db-2"]
        code, body = await get(sock, "/services?service=nothing-*")
        assert code == 200 and body["services"] == [] and body["total"] == 0
        assert names((await get(sock, "/services?vip=10.0.0.2"))[1]) == ["db-0", "db-1", "db-2"]
        assert names((await get(sock, "/services?vip=10.0.0.1:8003"))[1]) == ["web-3"]
        assert names((await get(sock, "/services?vip=10.0.0.1:8003&vip=10.0.0.2:8006"))[1]) == ["web-3", "db-0"]
        assert names((await get(sock, "/services?vip=%5B2001:db8:0::1%5D:443"))[1]) == ["six"]
        assert names((await get(sock, "/services?vip=2001:db8::1"))[1]) == ["six"]
        assert names((await get(sock, "/services?vip=10.0.0.1&service=db-*"))[1]) == []  # both must hold
        assert names((await get(sock, "/services?vip=10.9.9.9"))[1]) == []

    with_daemon(tmp_path, test)


def test_state_keeps_only_servers_in_it_and_their_services(tmp_path: Path) -> None:
    async def test(d: Daemon, sock: Path, b: MemoryBackend) -> None:
        web1 = d.config.services[1].key
        b.apply([Op.add_dest(web1, Destination(DestKey(AF_INET, "192.168.7.7", 80), weight=5))])  # behind lvsd's back
        code, body = await get(sock, "/services?state=down&service=web-*")
        assert code == 200 and body["total"] == 6
        for svc in body["services"]:
            assert [s["health"] for s in svc["servers"]] == ["down"]
        # servers left out by the filter are configured ones, not "in the kernel only"
        other = {s["name"]: [o["server"] for o in s["other_kernel_servers"]] for s in body["services"]}
        assert other["web-1"] == ["192.168.7.7:80"] and other["web-0"] == []
        body = (await get(sock, "/services?state=up&state=unknown&service=six"))[1]
        assert [s["health"] for s in body["services"][0]["servers"]] == ["unknown"]
        body = (await get(sock, "/services?state=down&service=six"))[1]
        assert body["services"] == [] and body["total"] == 0
        body = (await get(sock, "/services?state=down&limit=2&offset=1"))[1]
        assert names(body) == ["web-1", "web-2"] and body["total"] == 9

    with_daemon(tmp_path, test)


def test_pages_cover_the_selection_once(tmp_path: Path) -> None:
    async def test(d: Daemon, sock: Path, b: MemoryBackend) -> None:
        whole = (await get(sock, "/services"))[1]["services"]
        pages: list[Any] = []
        for offset in range(0, 12, 4):
            code, body = await get(sock, f"/services?limit=4&offset={offset}")
            assert code == 200 and body["total"] == 10 and (body["offset"], body["limit"]) == (offset, 4)
            pages += body["services"]
        assert pages == whole
        assert (await get(sock, "/services?limit=0"))[1]["services"] == []
        assert names((await get(sock, "/services?offset=8"))[1]) == ["db-2", "six"]
        assert (await get(sock, "/services?offset=99"))[1]["services"] == []

    with_daemon(tmp_path, test)


BAD = [
    ("service=nope", 404, "no service named 'nope'"),
    ("service=web-1&service=nope&service=gone", 404, "no service named 'nope', 'gone'"),
    ("limit=abc", 400, "limit: must be a whole number 0 or more, got 'abc'"),
    ("limit=-1", 400, "limit: must be a whole number 0 or more, got '-1'"),
    ("limit=", 400, "limit: must be a whole number 0 or more, got ''"),
    ("limit=" + "9" * 5000, 400, "limit: must be a whole number 0 or more, got '999"),
    ("offset=1.5", 400, "offset: must be a whole number 0 or more, got '1.5'"),
    ("limit=%D9%A3", 400, "limit: must be a whole number 0 or more"),  # an Arabic-Indic 3: isdigit, not a number here
    ("limit=1&limit=2", 400, "limit: given 2 times"),
    ("state=sleeping", 400, "state: must be up, down, unknown, got 'sleeping'"),
    ("vip=nowhere", 400, "vip: must be an address or address:port, got 'nowhere'"),
    ("vip=10.0.0.1:99999", 400, "vip: must be an address or address:port"),
    ("vip=10.0.0.1:", 400, "vip: must be an address or address:port"),
    ("srvice=web-1", 400, "unknown parameter 'srvice': /services takes service, vip, state, limit, offset"),
    ("service=%00%0a", 404, "no service named '\\x00\\n'"),
]


def test_bad_parameters_are_one_line_and_never_fail_the_api(tmp_path: Path) -> None:
    async def test(d: Daemon, sock: Path, b: MemoryBackend) -> None:
        for query, status, message in BAD:
            code, body = await get(sock, "/services?" + query)
            assert code == status and body["ok"] is False, (query, code, body)
            assert body["message"].startswith(message) and "\n" not in body["message"], (query, body)
            assert len(body["message"]) < 300
        assert (await get(sock, "/services?service=web-1"))[0] == 200  # still serving

    with_daemon(tmp_path, test)


def test_lvsctl_sends_the_filters_and_says_where_the_rest_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def test(d: Daemon, sock: Path, b: MemoryBackend) -> None:
        def run(*argv: str) -> int:
            return lvsctl.main(["-s", str(sock), "services", *argv])

        assert await asyncio.to_thread(run, "--service", "web-1") == 0
        out = capsys.readouterr()
        assert out.out.splitlines()[0].startswith("web-1  tcp 10.0.0.1:8001") and out.err == ""
        assert await asyncio.to_thread(run, "--service", "web-*", "--state", "down", "--limit", "2", "--offset", "1") == 0
        out = capsys.readouterr()
        assert [ln.split()[0] for ln in out.out.splitlines() if not ln.startswith(" ")] == ["web-1", "web-2"]
        assert all("down" in ln for ln in out.out.splitlines() if ln.startswith(" "))
        assert out.err == "lvsctl: services 2-3 of 6 shown; --offset 3 for the next\n"
        assert await asyncio.to_thread(run, "--vip", "[2001:db8::1]:443") == 0
        assert capsys.readouterr().out.startswith("six  tcp [2001:db8::1]:443")
        assert await asyncio.to_thread(run, "--service", "nope") == 1
        assert capsys.readouterr().err == "lvsctl: no service named 'nope'\n"
        assert await asyncio.to_thread(run, "--service", "zz*") == 0
        assert capsys.readouterr().err == "lvsctl: no service matches\n"

    with_daemon(tmp_path, test)


def test_lvsctl_query_encoding() -> None:
    ns = argparse.Namespace(service=["web-*", "a b&c"], vip=["[2001:db8::1]:443"], state=["down"], limit=5, offset=None)
    assert lvsctl._query(ns) == "?service=web-%2A&service=a%20b%26c&vip=%5B2001%3Adb8%3A%3A1%5D%3A443&state=down&limit=5"
    assert lvsctl._query(argparse.Namespace(service=None, vip=None, state=None, limit=None, offset=None)) == ""


@pytest.mark.parametrize("argv", [["--limit", "x"], ["--offset", "-1"], ["--state", "sleeping"]])
def test_lvsctl_refuses_bad_options_as_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        lvsctl.main(["-s", "/nonexistent", "services", *argv])
    assert e.value.code == 2


def test_random_queries_get_an_answer_never_an_error(tmp_path: Path) -> None:
    """Seeded random queries (known and unknown names, values of any bytes): every answer is 200,
    400 or 404 with JSON, and the API keeps serving."""
    import random

    rng = random.Random(16)
    names_ = ["service", "vip", "state", "limit", "offset", "x", ""]
    values = ["web-1", "web-*", "*", "[", "[!a-z]*", "10.0.0.1", "::", "[::1]:0", "1", "0", "-0", "1e3",
              "99999999999999999999", "up", "down", "%", "%zz", "\u00e9", "\ud7ff", "a" * 3000]

    def enc(v: str) -> str:
        return "".join(chr(b) if b < 128 and chr(b).isalnum() else f"%{b:02X}" for b in v.encode("utf-8", "surrogatepass"))

    async def test(d: Daemon, sock: Path, b: MemoryBackend) -> None:
        for _ in range(150):
            parts = []
            for _ in range(rng.randint(0, 4)):
                v = rng.choice(values) if rng.random() < 0.7 else bytes(rng.randrange(256) for _ in range(rng.randint(0, 8))).decode("latin-1")
                parts.append(f"{enc(rng.choice(names_))}={enc(v)}")
            query = "&".join(parts)
            code, body = await get(sock, "/services?" + query)
            assert code in (200, 400, 404), (query, code)
            assert ("services" in body) if code == 200 else (body["ok"] is False and "\n" not in body["message"]), query
        assert (await get(sock, "/services?service=web-1"))[0] == 200

    with_daemon(tmp_path, test)
