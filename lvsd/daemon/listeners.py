"""Limits on the daemon's listeners (the control socket, the [metrics] port): a local user who
opens connections in a loop, sends a byte a second or never sends anything cannot take the
descriptors and the event loop the health checks need.

Each listener serves aiohttp's protocol through ``Guard``, which admits a connection only below
the listener's cap and while the process keeps FD_RESERVE descriptors free, and closes a
connection that has not sent its request's headers within HEADER_TIMEOUT or that stays idle
between requests beyond IDLE_TIMEOUT. Refusals and descriptor exhaustion are logged once per
EXHAUSTION_LOG_INTERVAL with a count, never once per event (``Throttled``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lvsd.daemon.limits import (
    EXHAUSTION_LOG_INTERVAL,
    FD_RESERVE,
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    NOFILE_TARGET,
)

log = logging.getLogger("lvsd")

#: seconds between two sweeps of a listener's connections for their timeouts
SWEEP_INTERVAL = 1.0
#: accept()/socket() errors that mean "out of descriptors or memory"
EXHAUSTED = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class Throttled:
    """Log a recurring event at most once per ``interval`` seconds, with how often it happened."""

    def __init__(self, interval: float = EXHAUSTION_LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def __call__(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        self._count[key] = self._count.get(key, 0) + 1
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            return
        n = self._count.pop(key)
        self._last[key] = now
        more = f" ({n} times in the last {self.interval:g}s)" if n > 1 else ""
        log.warning(msg + more, *args)


#: the daemon's one throttle: every listener and the loop's accept errors share it
throttled = Throttled()


def nofile_limit() -> int:
    """The soft descriptor limit (RLIMIT_NOFILE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_nofile() -> None:
    """Raise the soft descriptor limit to the hard one (at most NOFILE_TARGET): checks of many
    servers need descriptors, and the listeners' reserve is taken from this limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE_TARGET if hard == resource.RLIM_INFINITY else min(hard, NOFILE_TARGET)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (OSError, ValueError) as e:
            log.debug("cannot raise RLIMIT_NOFILE to %d: %s", want, e)


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The event loop's handler: accept() failing for want of descriptors (asyncio pauses that
    listener for a second and retries) is one throttled line, not a traceback per attempt."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and exc.errno in EXHAUSTED:
        throttled("exhausted", "out of descriptors: %s (%s); a listener pauses, checks keep the reserve",
                  context.get("message", ""), exc.strerror)
        return
    loop.default_exception_handler(context)


class Listener:
    """One listening socket served with limits; ``start`` it, ``close`` it at stop."""

    def __init__(self, name: str, cap: int) -> None:
        self.name = name
        self.cap = cap
        self.conns: set[Guard] = set()
        self.by_transport: dict[Any, Guard] = {}
        self.refused = 0  # connections closed at once (cap or descriptor reserve)
        self.timed_out = 0  # connections closed by the header or idle timeout
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket, runner: web.AppRunner) -> None:
        """Serve ``runner``'s app on ``sock`` (listening, non-blocking) within the limits."""
        loop = asyncio.get_running_loop()
        factory = runner.server
        assert factory is not None
        self._server = await loop.create_server(lambda: Guard(self, factory()), sock=sock)
        self._sweeper = asyncio.create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for g in list(self.conns):
            g.close()

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Whether a new connection may stay (below the cap, descriptors above the reserve)."""
        if len(self.conns) >= self.cap:
            self.refused += 1
            throttled(f"cap-{self.name}", "%s: %d connections open, the cap: new ones are closed at once",
                      self.name, self.cap)
            return False
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        # descriptors are allocated lowest first: the new one's number is at least the number in use
        if fd >= nofile_limit() - FD_RESERVE:
            self.refused += 1
            throttled("reserve", "%s: descriptors within %d of the limit (%d): new connections are closed, "
                      "the rest is kept for checks", self.name, FD_RESERVE, nofile_limit())
            return False
        return True

    async def _sweep(self) -> None:
        """Close connections past their header or idle timeout (checked every SWEEP_INTERVAL)."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            now = time.monotonic()
            for g in list(self.conns):
                if g.state == "headers" and now - g.since > HEADER_TIMEOUT:
                    self.timed_out += 1
                    g.close()
                elif g.state == "idle" and now - g.since > IDLE_TIMEOUT:
                    self.timed_out += 1
                    g.close()

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """aiohttp middleware marking a connection busy while its request is handled."""

        @web.middleware
        async def mark(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            g = self.by_transport.get(request.transport)
            if g is not None:
                g.state = "busy"
            try:
                return await handler(request)
            finally:
                if g is not None:
                    g.state, g.since = "idle", time.monotonic()

        return mark


class Guard(asyncio.Protocol):
    """aiohttp's protocol for one connection, admitted and timed by its ``Listener``."""

    def __init__(self, listener: Listener, inner: Any) -> None:
        self.listener = listener
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        self.state = "headers"  # headers: waiting for a request; busy: being answered; idle: keep-alive
        self.since = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self.listener.admit(transport):
            _abort(transport)
            return
        self.transport = transport
        self.listener.conns.add(self)
        self.listener.by_transport[transport] = self
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        if self.state == "idle":
            self.state, self.since = "headers", time.monotonic()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.transport is None:
            return None
        keep: bool | None = self.inner.eof_received()
        return keep

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.listener.conns.discard(self)
        self.listener.by_transport.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.transport is not None:
            self.inner.resume_writing()

    def close(self) -> None:
        """Drop the connection at once (a client that does not read cannot delay it)."""
        if self.transport is not None:
            _abort(self.transport)


def _abort(transport: asyncio.BaseTransport) -> None:
    if isinstance(transport, asyncio.Transport):
        transport.abort()
    else:
        transport.close()
