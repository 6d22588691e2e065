"""UDP check: send a payload to the target and expect a reply (optionally containing ``expect``).

A connected non-blocking datagram socket, so an ICMP port-unreachable comes back as ECONNREFUSED
and fails the check at once instead of waiting for the timeout.
"""

from __future__ import annotations

import _socket
import select
import socket

from .base import LOCAL_ERRNOS, SocketProbe
from .base import errno_text as _err

_DGRAM = socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC


class DatagramChecker(SocketProbe):
    """Send one datagram, wait for one matching reply; subclasses define payload() and judge()."""

    kind = "udp"

    def payload(self) -> bytes:
        return self.spec.send or b""

    def judge(self, data: bytes) -> tuple[bool, str] | None:
        """Verdict on a reply, or None to keep waiting (a stray datagram)."""
        exp = self.spec.expect
        if exp is None or exp in data:
            return True, "udp reply received"
        return False, f"udp reply did not contain {exp[:40]!r}"

    def start(self) -> None:
        try:
            s = _socket.socket(self.family, _DGRAM)
        except OSError as e:
            local = e.errno in LOCAL_ERRNOS
            self.done(None if local else False, f"{self.kind}: socket: {_err(e.errno or 0)}", None)
            return
        try:
            if self.spec.bind:
                s.bind((self.spec.bind, 0))
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
        return f"{self.kind} no reply within {self.spec.timeout:g}s"


class UDPChecker(DatagramChecker):
    """udp: payload (``send``), optional ``expect``."""

    kind = "udp"
