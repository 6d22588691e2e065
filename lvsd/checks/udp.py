"""UDP check (``type = "udp"``): its config and its checker. Send a payload to the target and expect a reply (optionally containing ``expect``).

A connected non-blocking datagram socket, so an ICMP port-unreachable comes back as ECONNREFUSED
and fails the check at once instead of waiting for the timeout.
"""

from __future__ import annotations

import _socket
import select
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from lvsd.config.checks import NetCheckConfig, bytes_kind
from lvsd.config.keys import Key
from lvsd.config.reader import Reader, Table, _p

from .base import LOCAL_ERRNOS, SocketProbe
from .base import errno_text as _err

if TYPE_CHECKING:
    import asyncio

    from .base import Checker, Done


def _send(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """Required (a wrong value is reported as wrong and as missing)."""
    v = bytes_kind(r, tbl, key, path, None, vals)
    if v is None:
        r.err(_p(path, key), "missing: the datagram to send")
    return v or b""


def _expect(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    return bytes_kind(r, tbl, key, path, None, vals) or None


@dataclass(frozen=True, slots=True)
class UDPCheck(NetCheckConfig):
    """``type = "udp"``: send a datagram; up if a reply comes (containing ``expect`` if set)."""

    KEYS: ClassVar[tuple[Key, ...]] = (
        Key("send", _send, b"", doc="the datagram to send (required)"),
        Key("expect", _expect, None, doc="the reply must contain these bytes"),
    )

    type: str = "udp"
    send: bytes = KEYS[0].default
    expect: bytes | None = KEYS[1].default

    def checker(self, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done) -> Checker:
        return UDPChecker(self, addr, port, loop, done)

_DGRAM = socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC


class DatagramChecker(SocketProbe):
    """Send one datagram, wait for one matching reply; subclasses define payload() and judge()."""

    kind = "udp"
    cfg: NetCheckConfig

    def payload(self) -> bytes:
        """The datagram to send."""
        raise NotImplementedError

    def judge(self, data: bytes) -> tuple[bool, str] | None:
        """Verdict on a reply, or None to keep waiting (a stray datagram)."""
        raise NotImplementedError

    def start(self) -> None:
        try:
            s = _socket.socket(self.family, _DGRAM)
        except OSError as e:
            local = e.errno in LOCAL_ERRNOS
            self.done(None if local else False, f"{self.kind}: socket: {_err(e.errno or 0)}", None)
            return
        try:
            if self.cfg.bind:
                s.bind((self.cfg.bind, 0))
            s.connect((self.addr, self.port))
            s.send(self.payload())
        except OSError as e:
            s.close()
            self.done(False, f"{self.kind} send: {_err(e.errno or 0)}", None)
            return
        self.sock = s
        self.fd = s.fileno()
        self._watch(select.EPOLLIN, self._on_read)

    def _on_read(self) -> None:
        data = self._recv(self.kind)
        if data is None:
            return
        verdict = self.judge(data)
        if verdict is not None:
            self._finish(*verdict)

    def cancel(self) -> str:
        self._release()
        return f"{self.kind} no reply within {self.cfg.timeout:g}s"


class UDPChecker(DatagramChecker):
    """udp: payload (``send``), optional ``expect``."""

    kind = "udp"
    cfg: UDPCheck

    def payload(self) -> bytes:
        return self.cfg.send

    def judge(self, data: bytes) -> tuple[bool, str] | None:
        exp = self.cfg.expect
        if exp is None or exp in data:
            return True, "udp reply received"
        return False, f"udp reply did not contain {exp[:40]!r}"
