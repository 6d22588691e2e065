"""The Checker interface, the normalized check parameters (CheckSpec) and shared helpers.

A Checker probes one target. The scheduler (lvsd.checks.manager) calls ``start()``; the checker
reports exactly one verdict through the ``done(ok, detail, weight)`` callback it was built with,
unless the scheduler calls ``cancel()`` first (timeout, stop), after which it must report nothing
and must have released every socket, handler and process. Checkers are built once per target and
reused for every probe, so the per-probe path allocates as little as possible.
"""

from __future__ import annotations

import asyncio
import errno
import re
import select
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: done(ok, detail, weight): weight is a dynamic weight (script checks) or None. ok is None when
#: the director itself could not probe (out of descriptors, memory, processes): no verdict.
Done = Callable[["bool | None", str, "int | None"], None]

#: errnos that mean "this director cannot probe right now", never "the server is down"
LOCAL_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EAGAIN})

CHECK_TYPES = ("tcp", "http", "https", "script", "udp", "dns")

DEFAULT_INTERVAL = 2.0
DEFAULT_TIMEOUT = 1.0
DEFAULT_RISE = 2
DEFAULT_FALL = 3
DEFAULT_BODY_LIMIT = 1 << 20
DEFAULT_STATUS = ((200, 299),)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One probe's verdict: ok, a short human reason, and an optional dynamic weight."""

    ok: bool
    detail: str = ""
    weight: int | None = None


def parse_status(value: Any) -> tuple[tuple[int, int], ...]:
    """Status codes and ranges: 200, "200-299", [200, "301-302"], "200,204" -> ((lo, hi), ...)."""
    if value is None or value == () or value == []:
        return DEFAULT_STATUS
    if isinstance(value, int) and not isinstance(value, bool):
        return ((value, value),)
    if isinstance(value, str):
        value = [p for p in value.replace(" ", "").split(",") if p]
    out: list[tuple[int, int]] = []
    for item in value:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            lo, hi = int(item[0]), int(item[1])
        elif isinstance(item, int):
            lo = hi = item
        else:
            text = str(item)
            if "-" in text:
                a, b = text.split("-", 1)
                lo, hi = int(a), int(b)
            else:
                lo = hi = int(text)
        if not (100 <= lo <= hi <= 999):
            raise ValueError(f"status range {item!r} must be within 100..999")
        out.append((lo, hi))
    return tuple(out)


def _bytes(v: Any) -> bytes | None:
    if v is None or v == "" or v == b"":
        return None
    return v if isinstance(v, bytes) else str(v).encode()


def _split_hostport(v: Any) -> tuple[str | None, int | None]:
    """'addr:port', '[v6]:port', 'addr', (addr, port) -> (addr, port)."""
    if v is None or v == "":
        return None, None
    if isinstance(v, (tuple, list)):
        return str(v[0]), int(v[1])
    text = str(v)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host or None, int(port)
    return text, None


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """Every parameter of one check, normalized; built from the config's CheckConfig."""

    type: str
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL
    retry_delay: float | None = None  # None = interval
    # target override and source
    connect_addr: str | None = None
    connect_port: int | None = None
    bind: str | None = None
    # tcp / udp
    send: bytes | None = None
    expect: bytes | None = None
    # http(s)
    method: str = "GET"
    path: str = "/"
    host: str | None = None
    status: tuple[tuple[int, int], ...] = DEFAULT_STATUS
    body: str | None = None  # regex searched in the body
    digest: str | None = None  # hex digest of the body (keepalived genhash)
    digest_algorithm: str = "md5"
    headers: tuple[tuple[str, str], ...] = ()
    verify: bool = True
    ca: str | None = None
    sni: str | None = None
    cert: str | None = None
    key: str | None = None
    body_limit: int = DEFAULT_BODY_LIMIT
    # script
    argv: tuple[str, ...] = ()
    user: str | None = None
    group: str | None = None
    dynamic_weight: bool = False
    # dns
    query: str | None = None
    qtype: str = "A"
    rcode: str = "NOERROR"
    dns_expect: tuple[str, ...] = ()  # each must be among the answers' data (text form)
    _compiled: Any = field(default=None, compare=False, repr=False)

    @property
    def retry(self) -> float:
        """Delay before the next probe after a failure."""
        return self.interval if self.retry_delay is None else self.retry_delay

    def body_re(self) -> re.Pattern[bytes] | None:
        """The body regex, compiled once."""
        if self.body is None:
            return None
        if self._compiled is None:
            object.__setattr__(self, "_compiled", re.compile(self.body.encode()))
        return self._compiled


def spec_from_config(cc: Any) -> CheckSpec:
    """Normalize a config CheckConfig (any object with the documented attribute names, or a
    mapping) into a CheckSpec. Unknown/absent attributes take the defaults."""
    if isinstance(cc, CheckSpec):
        return cc
    get = cc.get if isinstance(cc, dict) else (lambda k, d=None: getattr(cc, k, d))
    kind = str(get("type") or get("kind") or "tcp").lower()
    if kind not in CHECK_TYPES:
        raise ValueError(f"unknown check type {kind!r}")
    caddr, cport = _split_hostport(get("connect"))
    if get("connect_port") is not None:
        cport = int(get("connect_port"))
    for name in ("connect_address", "connect_addr"):
        if get(name):
            caddr = str(get(name))
    headers = get("headers") or ()
    if isinstance(headers, dict):
        headers = tuple(headers.items())
    else:
        headers = tuple((str(k), str(v)) for k, v in headers)
    interval = float(get("interval", DEFAULT_INTERVAL) or DEFAULT_INTERVAL)
    rd = get("retry_delay")
    argv = get("argv") or ()
    if isinstance(argv, str):
        raise ValueError("script argv must be a list, not a shell string")
    return CheckSpec(
        type=kind,
        interval=interval,
        timeout=float(get("timeout", DEFAULT_TIMEOUT) or DEFAULT_TIMEOUT),
        rise=int(get("rise", DEFAULT_RISE) or DEFAULT_RISE),
        fall=int(get("fall", DEFAULT_FALL) or DEFAULT_FALL),
        retry_delay=None if rd is None else float(rd),
        connect_addr=caddr,
        connect_port=cport,
        bind=get("bind") or None,
        send=_bytes(get("send") if kind != "udp" else (get("send") or get("payload"))),
        expect=None if kind == "dns" else _bytes(get("expect")),
        method=str(get("method") or "GET").upper(),
        path=str(get("path") or "/"),
        host=get("host") or None,
        status=parse_status(get("status")),
        body=get("body") or None,
        digest=(str(get("digest")).lower() if get("digest") else None),
        digest_algorithm=str(get("digest_algorithm") or "md5").lower(),
        headers=headers,
        verify=bool(get("verify", True)) if get("verify") is not None else True,
        ca=get("ca") or None,
        sni=get("sni") or None,
        cert=get("cert") or None,
        key=get("key") or None,
        body_limit=int(get("body_limit") or get("max_body") or DEFAULT_BODY_LIMIT),
        argv=tuple(str(a) for a in argv),
        user=get("user") or None,
        group=get("group") or None,
        dynamic_weight=bool(get("dynamic_weight", False)),
        query=get("query") or get("name") or None,
        qtype=str(get("qtype") or get("query_type") or "A").upper(),
        rcode=str(get("rcode") or "NOERROR").upper(),
        dns_expect=_dns_expect(get("expect")) if kind == "dns" else (),
    )


def _dns_expect(v: Any) -> tuple[str, ...]:
    if not v:
        return ()
    if isinstance(v, (str, bytes)):
        v = [v]
    return tuple(x.decode() if isinstance(x, bytes) else str(x) for x in v)


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

    def __init__(self, spec: CheckSpec, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done):
        self.spec = spec
        self.addr = spec.connect_addr or addr
        self.port = spec.connect_port if spec.connect_port is not None else port
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

    sock: Any = None
    fd: int = -1
    watched = False

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
