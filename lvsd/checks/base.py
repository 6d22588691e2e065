"""The Checker interface and the helpers every check type shares (the epoll Poller, socket probes).

A Checker probes one target. The scheduler (lvsd.checks.manager) calls ``start()``; the checker
reports exactly one verdict through the ``done(ok, detail, weight)`` callback it was built with,
unless the scheduler calls ``cancel()`` first (timeout, stop), after which it must report nothing
and must have released every socket, handler and process. Checkers are built once per target and
reused for every probe, so the per-probe path allocates as little as possible.
"""

from __future__ import annotations

import errno
import select
import socket
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # asyncio is imported by the daemon; the loader imports this module without it
    import asyncio

    from lvsd.config.checks import CheckConfig

#: done(ok, detail, weight): weight is a dynamic weight (script checks) or None. ok is None when
#: the director itself could not probe (out of descriptors, memory, processes): no verdict.
Done = Callable[["bool | None", str, "int | None"], None]

#: errnos that mean "this director cannot probe right now", never "the server is down"
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EAGAIN})


class Poller:
    """One epoll set for every check socket, itself watched by the event loop as a single fd.

    asyncio's add_reader/add_writer cost ~10 us of Python per registration (selector keys, handles,
    transport checks); here a registration is one epoll_ctl and a dict store, and a wakeup runs the
    ready callbacks directly. Level-triggered; callbacks take no arguments."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # weak: poller_for's WeakKeyDictionary must not keep loops alive
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[], None]] = {}
        loop.add_reader(self.ep.fileno(), self.dispatch)

    def set(self, fd: int, events: int, cb: Callable[[], None]) -> None:
        """Watch fd for events (select.EPOLLIN/EPOLLOUT), calling cb when ready."""
        if fd in self.handlers:
            self.ep.modify(fd, events)
        else:
            self.ep.register(fd, events)
        self.handlers[fd] = cb

    def clear(self, fd: int) -> None:
        """Stop watching fd (call before closing it)."""
        if self.handlers.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except OSError:
                pass

    def forget(self, fd: int) -> None:
        """Drop fd's handler just before the socket is closed: closing the last reference removes
        it from the epoll set by itself, which saves an epoll_ctl per probe."""
        self.handlers.pop(fd, None)

    def dispatch(self) -> None:
        """Run the callbacks of every ready socket now (also called by the event loop)."""
        handlers = self.handlers
        for fd, _ev in self.ep.poll(0, 128):
            cb = handlers.get(fd)
            if cb is not None:
                cb()

    def close(self) -> None:
        loop = self._loop()
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.ep.fileno())
        self.ep.close()
        self.handlers.clear()


_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Poller] = weakref.WeakKeyDictionary()


_last: tuple[weakref.ref[asyncio.AbstractEventLoop], Poller] | None = None


def poller_for(loop: asyncio.AbstractEventLoop) -> Poller:
    """The Poller shared by every checker on this loop."""
    global _last
    last = _last
    if last is not None and last[0]() is loop and not last[1].ep.closed:
        return last[1]  # fast path: 10,000 checkers built at start-up on one loop
    p = _pollers.get(loop)
    if p is None or p.ep.closed:
        p = _pollers[loop] = Poller(loop)
    _last = (weakref.ref(loop), p)
    return p


class Checker:
    """One target's probe. Subclasses implement start() and cancel(); see the module docstring."""

    kind = "abstract"
    # one checker per probe: slots save its __dict__ (~100 bytes at 50,000 probes, issue 16);
    # a subclass without __slots__ simply gets a __dict__ for its own fields
    __slots__ = ("cfg", "addr", "port", "family", "loop", "done", "poller")

    def __init__(self, cfg: CheckConfig, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done):
        self.cfg = cfg
        self.addr, self.port = cfg.target_of(addr, port)
        self.family = socket.AF_INET6 if ":" in self.addr else socket.AF_INET
        self.loop = loop
        self.done = done
        self.poller = poller_for(loop)

    def start(self) -> None:
        """Begin one probe; report through self.done exactly once unless cancelled."""
        raise NotImplementedError

    def cancel(self) -> str:
        """Abort the probe in flight and release its resources; return a timeout reason."""
        raise NotImplementedError

    def close(self) -> None:
        """Forget the target for good (probe removed); default: cancel anything in flight."""
        self.cancel()


_ERRTEXT: dict[int, str] = {}


def errno_text(err: int) -> str:
    """Short text of a socket errno: 'connection refused' (cached: probes fail by thousands)."""
    t = _ERRTEXT.get(err)
    if t is None:
        import os

        t = _ERRTEXT[err] = os.strerror(err).lower()
    return t


class SocketProbe(Checker):
    """A checker whose probe is one non-blocking socket watched by the poller: the receive,
    release and finish steps tcp, http(s), udp and dns share."""

    __slots__ = ("sock", "fd", "watched")

    def __init__(self, cfg: CheckConfig, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done):
        super().__init__(cfg, addr, port, loop, done)
        self.sock: Any = None
        self.fd = -1
        self.watched = False

    def _watch(self, events: int, cb: Callable[[], None]) -> None:
        self.watched = True
        self.poller.set(self.fd, events, cb)

    def _recv(self, what: str) -> bytes | None:
        """One read of the socket: its data (b"" at end of stream), or None when there is nothing
        yet or the probe is over (a socket error finishes it as ``what: <error>``)."""
        s = self.sock
        if s is None:
            return None
        try:
            return s.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            self._finish(False, f"{what}: {errno_text(e.errno or 0)}")
            return None

    def _release(self) -> None:
        s = self.sock
        if s is None:
            return
        self.sock = None
        if self.watched:
            self.watched = False
            self.poller.forget(self.fd)  # the close below removes it from epoll
        self.fd = -1
        s.close()  # stream sockets have SO_LINGER 0: RST, no TIME_WAIT

    def _finish(self, ok: bool, detail: str) -> None:
        self._release()
        self.done(ok, detail, None)
