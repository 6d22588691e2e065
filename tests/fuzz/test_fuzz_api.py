"""Fuzzer of the control API's HTTP input: raw bytes on the unix socket, and well-formed requests
with hostile methods, paths, headers and bodies. The oracle: every answer is an HTTP error
(4xx) or a correct answer (2xx, JSON where JSON is due), never a 5xx, a traceback or an ERROR log
line; and the daemon keeps checking and answering (a health change still reaches the kernel)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from budget import budget
from fakes import FakeChecks
from hypothesis import given
from hypothesis import strategies as st

from lvsd.config import load_config
from lvsd.core.health import Health, ServerHealth
from lvsd.daemon import api, listeners
from lvsd.daemon.daemon import Daemon
from lvsd.ipvs.memory import MemoryBackend
from lvsd.ipvs.model import DestKey, ServiceKey

CONFIG = """
[api]
socket = "{sock}"

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
WEB = ServiceKey.inet("tcp", "10.0.0.1", 80)


class HA:
    def __init__(self, *a: Any) -> None:
        self.role = "master"

    async def start(self) -> None:
        pass

    async def reload(self, config: Any) -> None:
        pass

    async def stop(self, on_stop: str) -> None:
        pass

    def set_role(self, role: str) -> None:
        self.role = role

    def status(self) -> dict[str, Any]:
        return {"mode": "external", "role": self.role}


class Errors(logging.Handler):
    """Every record at ERROR or with a traceback, from any logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.bad.append(f"{record.name}: {record.getMessage()}")


class Running:
    """lvsd's daemon on the memory backend, in a thread with its own event loop."""

    def __init__(self, tmp: Path) -> None:
        self.sock = str(tmp / "lvsd.sock")
        cfg = tmp / "lvsd.toml"
        cfg.write_text(CONFIG.format(sock=self.sock))
        self.backend = MemoryBackend()
        self.checks: list[FakeChecks] = []
        self.d = Daemon(load_config(str(cfg)), self.backend, config_path=str(cfg), checks_factory=self._checks,
                        ha_factory=HA, api=True, install_signals=False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.d.run(),), daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.d.running.wait(), self.loop).result(30)

    def _checks(self, cb: Any) -> FakeChecks:
        self.checks.append(FakeChecks(cb))
        return self.checks[0]

    def health(self, addr: str, state: Health) -> None:
        async def go() -> bool:
            self.checks[0].set(("web", DestKey.of(addr, 80)), ServerHealth(state, reason="fuzz"))
            return await self.d.wait_reconciled()

        assert asyncio.run_coroutine_threadsafe(go(), self.loop).result(30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.d.request_stop)
        self.thread.join(30)


@pytest.fixture(scope="module")
def lvsd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Errors]]:
    # incomplete requests wait for these: short, so that an example costs milliseconds
    mp = pytest.MonkeyPatch()
    mp.setattr(listeners, "HEADER_TIMEOUT", 0.3)
    mp.setattr(listeners, "IDLE_TIMEOUT", 0.3)
    mp.setattr(listeners, "SWEEP_INTERVAL", 0.05)
    mp.setattr(api, "BODY_TIMEOUT", 0.3)
    errors = Errors()
    for name in ("lvsd", "aiohttp", "asyncio"):
        logging.getLogger(name).addHandler(errors)
    r = Running(tmp_path_factory.mktemp("api"))
    try:
        yield r, errors
    finally:
        r.stop()
        for name in ("lvsd", "aiohttp", "asyncio"):
            logging.getLogger(name).removeHandler(errors)
        mp.undo()


def exchange(path: str, raw: bytes) -> bytes:
    """Send ``raw``; what the daemon answers, up to the end of its first response (or the close)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(path)
    try:
        try:
            s.sendall(raw)
        except OSError:
            pass
        out = b""
        while not _complete(out):
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                break
            if not b:
                break
            out += b
        return out
    finally:
        s.close()


def _complete(out: bytes) -> bool:
    head, sep, body = out.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length" and v.strip().isdigit():
            return len(body) >= int(v)
    return False  # no length: read to the close


def check_answer(raw: bytes, out: bytes) -> None:
    if not out:
        return  # closed without an answer (cap, timeout, unparsable request): an allowed refusal
    head, _, body = out.partition(b"\r\n\r\n")
    first = head.split(b"\r\n", 1)[0].split(b" ", 2)
    assert first[0].startswith(b"HTTP/") and first[1].isdigit(), (raw[:80], out[:80])
    status = int(first[1])
    assert status < 500, (raw[:120], out[:200])
    if status == 200 and b"application/json" in head and not raw.startswith(b"HEAD "):  # HEAD: no body
        json.loads(body)


METHODS = st.one_of(st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT"]),
                    st.from_regex(r"\A[A-Z!#$%&'*+.^_`|~-]{1,12}\Z"))
PATHS = st.one_of(
    st.sampled_from(["/status", "/services", "/reload", "/role", "/metrics", "/", "*", "/status?x=1", "//status",
                     "/%2e%2e/etc/passwd", "/role/../status", "http://x/status"]),
    st.from_regex(r"\A/[\x21-\x7e]{0,60}\Z"),
)
HEADER_NAME = st.from_regex(r"\A[A-Za-z0-9-]{1,20}\Z")
HEADER_VALUE = st.one_of(st.from_regex(r"\A[\x20-\x7e]{0,60}\Z"), st.sampled_from(["-1", "99999999999999999999", "chunked", "gzip"]))
HEADERS = st.lists(st.tuples(st.one_of(HEADER_NAME, st.sampled_from(["Content-Length", "Transfer-Encoding",
                   "Content-Type", "Content-Encoding", "Connection", "Expect", "Upgrade"])), HEADER_VALUE), max_size=6)
JSONV = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                     lambda i: st.lists(i, max_size=4) | st.dictionaries(st.text(max_size=6), i, max_size=4), max_leaves=12)
BODIES = st.one_of(st.binary(max_size=300), JSONV.map(lambda v: json.dumps(v).encode()),
                   st.sampled_from([b'{"role": "master"}', b'{"role": "backup"}', b'{"role": ["master"]}', b'{"role": {}}',
                                    b'{"role": "x' + b"\xff" * 3 + b'"}', b"[" * 5000]))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method, path = draw(METHODS), draw(PATHS)
    version = draw(st.sampled_from(["HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1x"]))
    body = draw(BODIES)
    headers = draw(HEADERS)
    if draw(st.booleans()):
        headers.append(("Content-Length", str(len(body))))
    if version == "HTTP/1.1" and draw(st.booleans()):
        headers.append(("Host", "localhost"))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode() + body


@budget(300)
@given(raw=st.one_of(requests(), st.binary(max_size=400)))
def test_fuzz_control_api_answers_4xx_or_correctly(lvsd: tuple[Running, Errors], raw: bytes) -> None:
    r, errors = lvsd
    check_answer(raw, exchange(r.sock, raw))
    assert not errors.bad, errors.bad


def test_after_the_fuzzing_lvsd_still_checks_and_answers(lvsd: tuple[Running, Errors]) -> None:
    r, errors = lvsd
    r.health("192.168.0.1", Health.UP)
    r.health("192.168.0.2", Health.UP)
    r.health("192.168.0.1", Health.DOWN)
    assert set(r.backend.dump()[WEB].dests) == {DestKey.of("192.168.0.2", 80)}
    out = exchange(r.sock, b"GET /status HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.0 200") or out.startswith(b"HTTP/1.1 200")
    assert not errors.bad, errors.bad
