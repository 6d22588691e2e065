"""UDP check: send a payload to the target and expect a reply (optionally containing ``expect``).

A connected non-blocking datagram socket, so an ICMP port-unreachable comes back as ECONNREFUSED
and fails the check at once instead of waiting for the timeout.
"""

from __future__ import annotations

import _socket
import select
import socket

from .base import LOCAL_ERRNOS, Checker
from .tcp import _err

_DGRAM = socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC


class DatagramChecker(Checker):
    """Send one datagram, wait for one matching reply; subclasses define payload() and judge()."""

    kind = "udp"
    sock: _socket.socket | None = None
    fd = -1

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
        self.poller.set(self.fd, select.EPOLLIN, self._on_read)

    def _on_read(self) -> None:
        s = self.sock
        if s is None:
            return
        try:
            data = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._finish(False, f"{self.kind}: {_err(e.errno or 0)}")
            return
        verdict = self.judge(data)
        if verdict is not None:
            self._finish(*verdict)

    def _release(self) -> None:
        s = self.sock
        if s is not None:
            self.sock = None
            self.poller.forget(self.fd)  # closing removes it from epoll
            self.fd = -1
            s.close()

    def _finish(self, ok: bool, detail: str) -> None:
        self._release()
        self.done(ok, detail, None)

    def cancel(self) -> str:
        self._release()
        return f"{self.kind} no reply within {self.spec.timeout:g}s"


class UDPChecker(DatagramChecker):
    """udp: payload (``send``), optional ``expect``."""

    kind = "udp"
