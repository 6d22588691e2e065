"""Issue 11, items 3 and 7 (listeners a local user can exhaust; a traceback per malformed
request): for each listener (the control unix socket, the [metrics] TCP port) and each kind of
hostile client (silent, a byte at a time, idle after a request, one connection too many,
malformed bytes), the connection is closed or answered 4xx, each malformed request is one log
line, and the daemon keeps applying health changes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_daemon import WEB, CountingBackend, FakeChecks, daemon, finish, started, weights

from lvsd.core.health import Health, ServerHealth
from lvsd.daemon import api, listeners
from lvsd.ipvs.model import DestKey

CONFIG = """
[api]
socket = "{sock}"

[metrics]
listen = "127.0.0.1:{port}"

[[service]]
name = "web"
vip = "10.0.0.1:80"
  [[service.server]]
  address = "192.168.0.1"
  forward = "nat"
  check = {{ type = "tcp" }}
  [[service.server]]
  address = "192.168.0.2"
  forward = "nat"
  check = {{ type = "tcp" }}
"""
CAP = 4


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def _connect(kind: str, where: Any) -> socket.socket:
    s = socket.socket(socket.AF_UNIX if kind == "control" else socket.AF_INET)
    s.settimeout(10)
    s.connect(where)
    return s


def _closed(s: socket.socket) -> bytes | None:
    """What the daemon sent before closing the connection; None if it stayed open 10 s."""
    data = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                return data
            data += b
    except (ConnectionResetError, BrokenPipeError):
        return data
    except TimeoutError:
        return None
    finally:
        s.close()


def _silent(c: Callable[[], socket.socket]) -> bytes | None:
    return _closed(c())


def _slow(c: Callable[[], socket.socket]) -> bytes | None:
    """A request line sent a byte at a time, never finished."""
    s = c()
    s.settimeout(0.05)
    for b in b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
        try:
            s.send(bytes([b]))
            if not s.recv(1):
                return b""
        except TimeoutError:
            continue
        except OSError:
            return b""
    s.settimeout(10)
    return _closed(s)


def _idle(c: Callable[[], socket.socket]) -> bytes | None:
    """One complete keep-alive request, then nothing: answered, then closed."""
    s = c()
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    return _closed(s)


@pytest.fixture
def fast_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listeners, "HEADER_TIMEOUT", 0.5)
    monkeypatch.setattr(listeners, "IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(listeners, "SWEEP_INTERVAL", 0.1)
    monkeypatch.setattr(api, "IDLE_TIMEOUT", 0.5)
    monkeypatch.setattr(api, "CONTROL_MAX_CONNECTIONS", CAP)
    monkeypatch.setattr(api, "METRICS_MAX_CONNECTIONS", CAP)


def _run(tmp_path: Path, body: Callable[..., Any]) -> None:
    FakeChecks.instances.clear()
    port = _free_port()
    sock = tmp_path / "lvsd.sock"
    cfg = tmp_path / "lvsd.toml"
    cfg.write_text(CONFIG.format(sock=sock, port=port))
    b = CountingBackend()

    async def main() -> None:
        d = daemon(cfg, b, api=True)
        t = await started(d)
        checks = FakeChecks.instances[0]
        for addr in ("192.168.0.1", "192.168.0.2"):
            checks.set(("web", DestKey.of(addr, 80)), ServerHealth(Health.UP))
        await d.wait_reconciled()
        where = {"control": str(sock), "metrics": ("127.0.0.1", port)}
        await body(where)
        # the daemon still applies health changes and answers
        checks.set(("web", DestKey.of("192.168.0.1", 80)), ServerHealth(Health.DOWN, reason="dead"))
        assert await d.wait_reconciled()
        assert weights(b, WEB) == {"192.168.0.2:80": 1}
        for kind, w in where.items():
            s = await asyncio.to_thread(_connect, kind, w)
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            answer = await asyncio.to_thread(_closed, s)
            assert answer is not None and answer.startswith(b"HTTP/1.0 200")
        await finish(d, t)

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("listener", ["control", "metrics"])
@pytest.mark.parametrize("client", [_silent, _slow, _idle], ids=["silent", "byte-at-a-time", "idle-keepalive"])
def test_every_listener_closes_connections_that_hold_it(tmp_path: Path, fast_limits: None, listener: str, client: Any) -> None:
    async def body(where: dict[str, Any]) -> None:
        got = await asyncio.to_thread(client, lambda: _connect(listener, where[listener]))
        assert got is not None, "the connection was never closed"
        if client is _idle:
            assert got.startswith(b"HTTP/1.1 200")  # answered first

    _run(tmp_path, body)


@pytest.mark.parametrize("listener", ["control", "metrics"])
def test_every_listener_caps_its_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listener: str) -> None:
    monkeypatch.setattr(api, "CONTROL_MAX_CONNECTIONS", CAP)
    monkeypatch.setattr(api, "METRICS_MAX_CONNECTIONS", CAP)
    monkeypatch.setattr(listeners, "HEADER_TIMEOUT", 60.0)  # only the cap can close the extra one
    monkeypatch.setattr(listeners, "IDLE_TIMEOUT", 60.0)

    async def body(where: dict[str, Any]) -> None:
        held = [await asyncio.to_thread(_connect, listener, where[listener]) for _ in range(CAP)]
        await asyncio.sleep(0.2)
        extra = await asyncio.to_thread(_connect, listener, where[listener])
        assert await asyncio.to_thread(_closed, extra) == b""  # closed unanswered: over the cap
        for s in held:
            s.close()

    _run(tmp_path, body)


MALFORMED = [
    b"\x00\xff\xfe garbage\r\n\r\n",
    b"GET /status HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
    b"GET /status HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"GET /" + b"a" * 70000 + b" HTTP/1.0\r\n\r\n",
    b"GET /status HTTP/1.0\r\n" + b"X: y\r\n" * 200 + b"X-Long: " + b"z" * 70000 + b"\r\n\r\n",
    b"POST /role HTTP/1.0\r\nContent-Length: 5\r\n\r\n{{{{{",
    b"POST /role HTTP/1.0\r\nContent-Length: 999999999\r\n\r\n{}",
    b"POST /role HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"BREW /status HTTP/1.0\r\n\r\n",
]


def test_a_malformed_request_is_a_4xx_answer_and_one_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(where: dict[str, Any]) -> None:
        for raw in MALFORMED:
            s = await asyncio.to_thread(_connect, "control", where["control"])
            try:
                s.sendall(raw)
            except OSError:
                pass
            got = await asyncio.to_thread(_closed, s)
            assert got is not None
            if got:
                status = int(got.split(b" ", 2)[1])
                assert 400 <= status < 500, (raw[:40], got[:80])

    with caplog.at_level("DEBUG"):
        _run(tmp_path, body)
    for r in caplog.records:
        assert r.exc_info is None and "Traceback" not in r.getMessage(), r.getMessage()
        assert r.levelname != "ERROR", r.getMessage()
