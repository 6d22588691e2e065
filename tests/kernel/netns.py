"""Network-namespace labs for kernel tests: namespaces, veth pairs, bridges, addresses, routes,
HTTP servers that answer with their own name, and client loops, all torn down even on failure.

Everything a test builds goes through one ``Lab`` (a context manager, or the ``lab`` fixture of
tests/kernel/conftest.py), which records what it made and undoes it in reverse order on exit:
processes are stopped, namespaces deleted (their veth ends go with them), root-namespace links
and addresses removed, sysctls restored. Setup uses iproute2's ``ip``; servers and clients run
as threads *inside the test process* on sockets created in the namespace (setns on the calling
thread only), because a Python start-up costs ~0.6 s in the TCG VM and a thread costs nothing.

Only use addresses inside namespaces made here (10.77.0.0/16 is this project's test range).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
CMD_TIMEOUT = 30.0  # any single `ip`/`sysctl` call; bounded so nothing hangs CI

_libc = ctypes.CDLL(None, use_errno=True)


class LabError(RuntimeError):
    """A setup command failed; the message names the command and its stderr."""


def sh(*argv: str, check: bool = True, timeout: float = CMD_TIMEOUT, input: str | None = None) -> str:
    """Run a command (no shell), ``input`` on its stdin (else none), return its stdout; LabError
    with its stderr if it fails. The one ``sh`` of the kernel tests."""
    stdin = subprocess.DEVNULL if input is None else None
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=stdin, input=input)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout}s") from None
    if check and r.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def _setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the block with the calling thread inside namespace ``name`` (None: stay here).

    Sockets created in the block belong to that namespace for their whole life, so a socket can
    be made here and used from any thread afterwards."""
    if name is None:
        yield
        return
    here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        there = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY)
        try:
            _setns(there)
        finally:
            os.close(there)
        try:
            yield
        finally:
            _setns(here)
    finally:
        os.close(here)


def wait_until(cond: Callable[[], object], timeout: float, what: str, step: float = 0.05) -> object:
    """Poll ``cond`` until it returns something true and return that; AssertionError naming
    ``what`` after ``timeout`` seconds. For state that has no event to wait on (kernel counters)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


# --- HTTP ----------------------------------------------------------------------------------------


def _read_head(conn: socket.socket, buf: bytes) -> tuple[bytes | None, bytes]:
    """Read until the end of an HTTP head; (head, rest) or (None, b"") on EOF."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            return None, b""
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


class HttpServer:
    """A tiny HTTP/1.1 server (keep-alive aware) on a socket bound inside a namespace; every
    answer's body is ``name``. Records each accepted connection's peer so a test can check that
    the client address survived NAT. One thread per connection; ``stop()`` closes everything."""

    def __init__(self, ns: str | None, addr: str, port: int, name: str) -> None:
        self.ns, self.addr, self.port, self.name = ns, addr, port, name
        self.peers: list[tuple[str, int]] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with in_netns(ns):
            self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((addr, port))
        self.sock.listen(512)
        self._accepter = threading.Thread(target=self._accept, name=f"http-{name}", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return  # closed by stop()
            with self._lock:
                self.peers.append(peer[:2])
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        body = self.name.encode()
        buf = b""
        try:
            conn.settimeout(30)
            while True:
                head, buf = _read_head(conn, buf)
                if head is None:
                    return
                lines = head.split(b"\r\n")
                close = lines[0].endswith(b"HTTP/1.0") or any(
                    ln.lower().replace(b" ", b"") == b"connection:close" for ln in lines[1:]
                )
                with self._lock:
                    self.requests += 1
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
                    % (len(body), b"Connection: close\r\n" if close else b"", body)
                )
                if close:
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def stop(self) -> None:
        """Stop listening, cut every open connection, and wait for the threads (bounded)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in [self._accepter, *self._threads]:
            t.join(timeout=5)


@dataclass
class Reply:
    """One answered request: who answered and from which local port the client spoke."""

    body: str
    local_port: int


class HttpClient:
    """An HTTP/1.1 keep-alive connection from namespace ``ns``: ``get()`` may be called many
    times on the same TCP connection (to see it survive a drain)."""

    def __init__(self, ns: str | None, host: str, port: int, timeout: float = 10.0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with in_netns(ns):
            self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.host = host
        try:
            self.sock.connect((host, port))
        except OSError:
            self.sock.close()
            raise
        self.local_port = self.sock.getsockname()[1]
        self._buf = b""

    def get(self, path: str = "/", close: bool = False) -> str:
        """Send one request, return the body of the answer."""
        extra = "Connection: close\r\n" if close else ""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}\r\n".encode())
        head, self._buf = _read_head(self.sock, self._buf)
        if head is None:
            raise ConnectionError(f"connection to {self.host} closed before an answer")
        status = head.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            raise ConnectionError(f"unexpected status line {status!r}")
        length = 0
        for ln in head.split(b"\r\n")[1:]:
            k, _, v = ln.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(self._buf) < length:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("connection closed in the middle of an answer")
            self._buf += chunk
        body, self._buf = self._buf[:length], self._buf[length:]
        return body.decode()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http_get(ns: str | None, host: str, port: int = 80, timeout: float = 10.0) -> Reply:
    """One request on a fresh TCP connection (closed after the answer)."""
    with HttpClient(ns, host, port, timeout) as c:
        return Reply(c.get(close=True), c.local_port)


def client_loop(ns: str | None, host: str, port: int, count: int, timeout: float = 10.0) -> list[Reply]:
    """``count`` requests, each on its own connection (so each is scheduled anew). Raises on the
    first failure: a load balancer that drops a request is a failed test."""
    return [http_get(ns, host, port, timeout) for _ in range(count)]


def tally(replies: Sequence[Reply]) -> Counter[str]:
    """How many replies each server gave."""
    return Counter(r.body for r in replies)


# --- the lab -------------------------------------------------------------------------------------


@dataclass
class Netns:
    """A namespace made by a Lab."""

    name: str
    lab: Lab = field(repr=False)

    def ip(self, *args: str) -> str:
        """``ip -n NAME ARGS...``"""
        return sh("ip", "-n", self.name, *args)

    def run(self, *argv: str, check: bool = True, timeout: float = CMD_TIMEOUT) -> str:
        """Run a command in the namespace and return its stdout."""
        return sh("ip", "netns", "exec", self.name, *argv, check=check, timeout=timeout)

    def popen(self, *argv: str, **kw: object) -> subprocess.Popen:
        """Start a long-running process in the namespace; the lab stops it on exit."""
        return self.lab.popen(*argv, ns=self.name, **kw)

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def enter(self) -> contextlib.AbstractContextManager[None]:
        """``with ns.enter(): sock = socket.socket()`` makes a socket in this namespace."""
        return in_netns(self.name)


class Lab:
    """Builds a topology and undoes all of it on ``close()`` (also on a failed test)."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], object]]] = []
        self.servers: list[HttpServer] = []
        # What goes away by itself when the lab deletes its namespaces and links: undo steps for
        # things inside them are skipped (each `ip` call costs ~0.1-0.5 s under emulation).
        self._own_ns: set[str] = set()
        self._own_links: set[tuple[str | None, str]] = set()
        self._vanishing: list[str] = []  # root-namespace veth ends going with their peer's netns

    def _doomed(self, ns: str | None, dev: str | None = None) -> bool:
        return (ns is not None and ns in self._own_ns) or (dev is not None and (ns, dev) in self._own_links)

    # bookkeeping
    def _on_close(self, what: str, fn: Callable[[], object]) -> None:
        self._undo.append((what, fn))

    def close(self) -> None:
        """Undo everything in reverse order; every step runs even if an earlier one fails, and
        the first failure is raised at the end (a leak is a bug worth seeing)."""
        errors: list[str] = []
        trace = os.environ.get("LVSD_LAB_TRACE") == "1"
        while self._undo:
            what, fn = self._undo.pop()
            t0 = time.monotonic()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - collect, keep cleaning
                errors.append(f"{what}: {e}")
            if trace:
                print(f"lab: {what}: {time.monotonic() - t0:.3f}s", file=sys.stderr)
        # close() returns with the root namespace as it was: the next test's "before" snapshot
        # must not see a veth that is still on its way out
        deadline = time.monotonic() + 10
        while self._vanishing:
            dev = self._vanishing[-1]
            if not os.path.exists(f"/sys/class/net/{dev}"):
                self._vanishing.pop()
            elif time.monotonic() > deadline:
                self._vanishing.pop()
                try:
                    _ipn(None, "link", "del", "dev", dev)
                except Exception as e:  # noqa: BLE001 - collect, keep cleaning
                    errors.append(f"link {dev} outlived its peer's namespace: {e}")
            else:
                time.sleep(0.02)
        if errors:
            raise LabError("cleanup failed: " + "; ".join(errors))

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # topology
    def netns(self, name: str) -> Netns:
        """A fresh namespace with lo up (a stale one of the same name is removed first)."""
        if os.path.exists(f"{NETNS_DIR}/{name}"):
            sh("ip", "netns", "del", name, check=False)
        sh("ip", "netns", "add", name)
        self._on_close(f"netns del {name}", lambda: sh("ip", "netns", "del", name))
        self._own_ns.add(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return Netns(name, self)

    def _own_link(self, dev: str, ns: str | None, peer_ns: str | None = None, peer: str = "") -> None:
        """Record a link this lab made, and delete it on close unless its namespace (or, for a
        veth, its peer's namespace: the pair dies together) goes anyway."""
        self._own_links.add((ns, dev))
        if peer:
            self._own_links.add((peer_ns, peer))

        def undo() -> None:
            if not (self._doomed(ns) or (peer and self._doomed(peer_ns))):
                _ipn(ns, "link", "del", "dev", dev)
            elif ns is None:
                # this end stays in the root namespace and dies with its peer's namespace, which
                # the kernel destroys asynchronously after `ip netns del`: wait for it (below)
                self._vanishing.append(dev)

        self._on_close(f"link del {dev}", undo)

    def veth(
        self,
        a: str,
        a_ns: Netns | str | None,
        b: str,
        b_ns: Netns | str | None,
        up: bool = True,
        master: str | None = None,
    ) -> None:
        """A veth pair: end ``a`` in namespace ``a_ns`` (None: the root namespace), ``b`` in
        ``b_ns``; ``master``: a bridge (in ``a_ns``) that end ``a`` joins."""
        an, bn = _nsname(a_ns), _nsname(b_ns)
        cmd = ["link", "add", a, *(["up"] if up else []), *(["master", master] if master else [])]
        cmd += ["type", "veth", "peer", "name", b, *(["netns", bn] if bn is not None else [])]
        _ipn(an, *cmd)
        self._own_link(a, an, bn, b)
        if up:  # the peer cannot be brought up by the same request (ENOTCONN on 6.1)
            _ipn(bn, "link", "set", b, "up")

    def bridge(self, name: str, ns: Netns | str | None = None, ports: Sequence[str] = ()) -> None:
        """A bridge (up) with ``ports`` (interfaces already in the same namespace) attached."""
        n = _nsname(ns)
        _ipn(n, "link", "add", name, "up", "type", "bridge")
        self._own_link(name, n)
        for p in ports:
            _ipn(n, "link", "set", p, "master", name)

    def routed_netns(self, name: str, dev: str, gw_cidr: str, cidr: str) -> Netns:
        """A namespace behind a veth from the root namespace: ``dev`` (root side) gets
        ``gw_cidr``, the namespace's ``eth0`` gets ``cidr``, and its default route goes via the
        root side (a real server or a client of a director in the root namespace)."""
        ns = self.netns(name)
        self.veth(dev, None, "eth0", ns)
        self.addr(dev, gw_cidr)
        self.addr("eth0", cidr, ns)
        self.route("default", gw_cidr.split("/")[0], ns)
        return ns

    def addr(self, dev: str, cidr: str, ns: Netns | str | None = None) -> None:
        """Add an address (``nodad`` for IPv6, so it is usable at once); removed on close."""
        n = _nsname(ns)
        extra = ["nodad"] if ":" in cidr else []
        _ipn(n, "addr", "add", cidr, "dev", dev, *extra)

        def undo() -> None:
            if not self._doomed(n, dev):
                _ipn(n, "addr", "del", cidr, "dev", dev)

        self._on_close(f"addr del {cidr} dev {dev}", undo)

    def route(self, dst: str, via: str, ns: Netns | str | None = None) -> None:
        """Add a route (e.g. ``default`` via the director); removed on close."""
        n = _nsname(ns)
        _ipn(n, "route", "add", dst, "via", via)

        def undo() -> None:
            if not self._doomed(n):
                _ipn(n, "route", "del", dst, "via", via)

        self._on_close(f"route del {dst}", undo)

    def sysctl(self, key: str, value: str, ns: Netns | str | None = None) -> None:
        """Set a sysctl; the old value is put back on close."""
        n = _nsname(ns)
        pre = ["ip", "netns", "exec", n] if n else []
        old = sh(*pre, "sysctl", "-n", key).strip()
        sh(*pre, "sysctl", "-qw", f"{key}={value}")

        def undo() -> None:
            if not self._doomed(n):
                sh(*pre, "sysctl", "-qw", f"{key}={old}")

        self._on_close(f"sysctl {key}", undo)

    # processes and servers
    def popen(self, *argv: str, ns: Netns | str | None = None, **kw: object) -> subprocess.Popen:
        """Start a process (in namespace ``ns``); on close it gets SIGTERM, then SIGKILL after 5 s."""
        n = _nsname(ns)
        full = ["ip", "netns", "exec", n, *argv] if n else list(argv)
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(full, **kw)  # type: ignore[call-overload]

        def stop() -> None:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=5)

        self._on_close(f"stop {argv[0]}", stop)
        return p

    def http_server(
        self, ns: Netns | str | None, addr: str, port: int = 80, name: str | None = None
    ) -> HttpServer:
        """An HttpServer answering with ``name`` (default: the namespace's name); stopped on close."""
        n = _nsname(ns)
        srv = HttpServer(n, addr, port, name or n or "root")
        self.servers.append(srv)
        self._on_close(f"stop http server {srv.name}", srv.stop)
        return srv


def _nsname(ns: Netns | str | None) -> str | None:
    return ns.name if isinstance(ns, Netns) else ns


def _ipn(ns: str | None, *args: str, check: bool = True) -> str:
    return sh("ip", *(["-n", ns] if ns else []), *args, check=check)
