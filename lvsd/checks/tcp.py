"""TCP check (``type = "tcp"``): its config and its checker. Connect (optionally from ``bind``, optionally to ``connect``), optionally send bytes
and expect bytes in the reply, then close with RST (SO_LINGER 0) so no TIME_WAIT is left behind.

Lean on purpose: a raw non-blocking socket driven by the event loop's add_writer/add_reader, no
transport/protocol objects, no task, no per-probe closures; see docs/performance.md ("checks").
"""

from __future__ import annotations

import _socket
import errno
import select
import socket
import struct
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


def _expect(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = bytes_kind(r, tbl, key, path, None, vals)
    if v is not None and not v:
        r.err(_p(path, key), "must not be empty")
    return v or None


@dataclass(frozen=True, slots=True)
class TCPCheck(NetCheckConfig):
    """``type = "tcp"``: connect; optionally send bytes and expect the reply to contain ``expect``."""

    KEYS: ClassVar[tuple[Key, ...]] = (
        Key("send", bytes_kind, None, doc="bytes to send once connected"),
        Key("expect", _expect, None, doc="the reply must contain these bytes"),
    )

    type: str = "tcp"
    send: bytes | None = KEYS[0].default
    expect: bytes | None = KEYS[1].default

    def checker(self, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done) -> Checker:
        return TCPChecker(self, addr, port, loop, done)


#: a tcp reply is read up to this many bytes looking for ``expect``
REPLY_LIMIT = 1 << 20

_LINGER0 = struct.pack("ii", 1, 0)
_SOL_SOCKET = socket.SOL_SOCKET
_SO_LINGER = socket.SO_LINGER
_SO_ERROR = socket.SO_ERROR
_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_EINPROGRESS = errno.EINPROGRESS
_IN = select.EPOLLIN
_OUT = select.EPOLLOUT


class StreamChecker(SocketProbe):
    """Connect phase shared by tcp and http(s): start() opens the socket and connects; on success
    ``connected()`` is called with the socket registered nowhere."""

    kind = "tcp"
    cfg: NetCheckConfig
    __slots__ = ("phase", "pending")  # pending: what is left to send

    phase: str
    pending: memoryview
    #: the C socket type: no Python-level __init__ per probe (https needs socket.socket for ssl)
    socket_type: type[_socket.socket] | type[socket.socket] = _socket.socket

    def _open(self) -> _socket.socket | socket.socket:
        s = self.socket_type(self.family, _STREAM)
        s.setsockopt(_SOL_SOCKET, _SO_LINGER, _LINGER0)
        bind = self.cfg.bind
        if bind:
            s.bind((bind, 0))
        return s

    def __init__(self, cfg: NetCheckConfig, addr: str, port: int, loop: asyncio.AbstractEventLoop,
                 done: Done) -> None:
        super().__init__(cfg, addr, port, loop, done)
        self.phase = "connect"

    def start(self) -> None:
        try:
            s = self._open()
        except OSError as e:
            local = e.errno in LOCAL_ERRNOS
            self.done(None if local else False, f"{self.kind}: socket: {_err(e.errno or 0)}", None)
            return
        err = s.connect_ex((self.addr, self.port))
        if err == _EINPROGRESS:
            self.sock = s
            self.fd = fd = s.fileno()
            self.phase = "connect"
            self.watched = True
            self.poller.set(fd, _OUT, self._on_connect)
            return
        if err:
            s.close()
            self.done(False, f"{self.kind} connect: {_err(err)}", None)
            return
        self.sock = s
        self.fd = s.fileno()
        self.connected()

    def _on_connect(self) -> None:
        s = self.sock
        if s is None:
            return
        # still registered for EPOLLOUT: the next phase re-watches (modify) or closes (no epoll_ctl)
        err = s.getsockopt(_SOL_SOCKET, _SO_ERROR)
        if err:
            self._finish(False, f"{self.kind} connect: {_err(err)}")
            return
        self.connected()

    def connected(self) -> None:
        """The TCP connection is up: the type's protocol goes on from here."""
        raise NotImplementedError

    def _on_send(self) -> None:
        """Writable again: send on (``_send_pending``), then the type's next phase."""
        raise NotImplementedError

    def _send_pending(self) -> bool:
        """Send what is pending; True once all of it is out. Otherwise ``_on_send`` waits for the
        socket again, or the check ended on an error (``_send_failed``)."""
        s = self.sock
        if s is None:
            return False
        try:
            n = s.send(self.pending)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as e:
            self._send_failed(e)
            return False
        self.pending = self.pending[n:]
        if self.pending:
            self._watch(_OUT, self._on_send)
            return False
        return True

    def _send_failed(self, e: OSError) -> None:
        """A send raised ``e``: the check fails (TLS first tells a renegotiation's wait apart)."""
        self._finish(False, f"{self.kind} send: {_err(e.errno or 0)}")

    def cancel(self) -> str:
        phase = self.phase if self.sock is not None else "connect"
        self._release()
        what = {"connect": "connect", "send": "send", "read": "no reply"}.get(phase, phase)
        return f"{self.kind} {what} timeout after {self.cfg.timeout:g}s"


class TCPChecker(StreamChecker):
    """tcp: connect, optional send/expect, RST."""

    kind = "tcp"
    cfg: TCPCheck
    __slots__ = ("buf",)

    def connected(self) -> None:
        """The TCP connection is up; plain tcp check: send/expect or done."""
        cfg = self.cfg
        if not cfg.send and cfg.expect is None:
            self._finish(True, "tcp connect ok")
            return
        self.buf = bytearray()
        if cfg.send:
            self.pending = memoryview(cfg.send)
            self.phase = "send"
            self._on_send()
        else:
            self._want_read()

    def _on_send(self) -> None:
        if not self._send_pending():
            return
        if self.cfg.expect is None:
            self._finish(True, "tcp send ok")
            return
        self._want_read()

    def _want_read(self) -> None:
        self.phase = "read"
        self._watch(_IN, self._on_read)

    def _on_read(self) -> None:
        data = self._recv("tcp recv")
        if data is None:
            return
        expect = self.cfg.expect
        assert expect is not None
        buf = self.buf
        buf += data
        if expect in buf:
            self._finish(True, "tcp reply matched")
        elif not data:
            self._finish(False, f"tcp reply did not contain {expect[:40]!r}")
        elif len(buf) > max(REPLY_LIMIT, len(expect)):
            self._finish(False, f"tcp reply did not contain {expect[:40]!r} in {len(buf)} bytes")
