"""HTTP and HTTPS checks (``type = "http"`` / ``"https"``): their config and their checker, on raw
non-blocking sockets.

Per probe: connect (tcp.StreamChecker), TLS handshake for https (ssl-wrapped non-blocking socket),
send one precomputed HTTP/1.0 request (``Connection: close``; 1.0 so no chunked replies in
practice, as keepalived's HTTP_GET), read the status line and headers, judge the status, then read
the body only if a ``body`` regex or a ``digest`` needs it, never more than ``max_body`` bytes.
The socket is closed with RST. 3xx replies are judged by their status and never followed.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

from lvsd.config.checks import NetCheckConfig
from lvsd.config.keys import BOOL, FILE, INT, Choice, Key
from lvsd.config.reader import Reader, Table, _p, _show, _tname

from .tcp import _IN, _OUT, StreamChecker

if TYPE_CHECKING:  # ssl is imported when an https checker is built, not by the loader
    import asyncio
    import ssl

    from .base import Checker, Done

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS")
DIGESTS = {"md5": 32, "sha1": 40, "sha256": 64}
_HEADER_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")


def _method(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    method = tbl.get(key, default)
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        r.err(_p(path, key), f"must be one of {', '.join(HTTP_METHODS)}, got {_show(method)}")
        return default
    return method.upper()


def _path(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = r.get_str(tbl, key, path, default)
    if not v.startswith("/") or any(ch in v for ch in " \r\n\t"):
        r.err(_p(path, key), f'must start with "/" and contain no spaces, got {_show(v)}')
        return default
    return v


def _host(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    host = r.get_str(tbl, key, path)
    if host is not None and any(ch in host for ch in " \r\n\t/"):
        r.err(_p(path, key), f"not a valid Host header value: {_show(host)}")
        return None
    return host


def _body(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    body = r.get_str(tbl, key, path)
    if body is not None:
        try:
            re.compile(body)
        except re.error as e:
            r.err(_p(path, key), f"not a valid regular expression: {e}")
    return body


def _digest(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    digest = r.get_str(tbl, key, path)
    if digest is not None:
        algo = vals["digest_algorithm"]
        if not _HEX_RE.fullmatch(digest) or len(digest) != DIGESTS[algo]:
            r.err(_p(path, key), f"must be {DIGESTS[algo]} hex digits ({algo}), got {_show(digest)}")
        digest = digest.lower()
    if vals["body"] is not None and digest is not None:
        r.err(_p(path, key), "use body or digest, not both")
    return digest


def _headers(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    headers: list[tuple[str, str]] = []
    for hk, hv in (r.table(tbl, key, path) or {}).items():
        hp = _p(_p(path, key), hk)
        if not _HEADER_RE.fullmatch(hk):
            r.err(hp, "not a valid header name")
        elif hk.lower() == "host":  # the probe always sends one Host; a second makes servers answer 400
            r.err(hp, 'set the Host header with the check\'s "host" key')
        elif not isinstance(hv, str) or any(ch in hv for ch in "\r\n\0"):
            r.err(hp, "must be a string without line breaks")
        else:
            headers.append((hk, hv))
    return tuple(headers)


def _key(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = FILE(r, tbl, key, path, default, vals)
    if v is not None and vals["cert"] is None:
        r.err(_p(path, key), "needs cert (the client certificate)")
    return v


def _sni(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    sni = r.get_str(tbl, key, path)
    return sni if sni is not None else vals["host"]


def _digits(s: str) -> bool:
    """ASCII digits only, short enough for int(): "²" and a 5000-digit string are not numbers."""
    return s.isascii() and s.isdigit() and len(s) <= 9


def _status(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = tbl.get(key)
    if v is None:
        return default
    p = _p(path, key)
    items = v if isinstance(v, list) else [v]
    if not items:
        r.err(p, "must not be empty")
        return default
    out: list[tuple[int, int]] = []
    for i, it in enumerate(items):
        ip = _p(p, i) if isinstance(v, list) else p
        if isinstance(it, int) and not isinstance(it, bool):
            lo = hi = it
        elif isinstance(it, str):
            a, sep, b = it.partition("-")
            a, b = a.strip(), b.strip()
            if not _digits(a) or (sep and not _digits(b)):
                r.err(ip, f'must be a status code or a range like "200-299", got {_show(it)}')
                continue
            lo, hi = int(a), int(b) if sep else int(a)
        else:
            r.err(ip, f'must be a status code, a range like "200-299", or a list of them, got {_tname(it)}')
            continue
        if not (100 <= lo <= 599 and 100 <= hi <= 599 and lo <= hi):
            r.err(ip, f"must be codes 100..599 with low <= high, got {_show(it)}")
            continue
        out.append((lo, hi))
    return tuple(out) or default


#: http keys, then (https only) the TLS keys, then the rest: the order the loader reads them
_HTTP_A = (
    Key("method", _method, "GET", doc="the request method: " + ", ".join(HTTP_METHODS)),
    Key("path", _path, "/", doc="the request path"),
    Key("host", _host, None, doc="the Host header (default: the target address)"),
    Key("body", _body, None, doc="a regular expression the body must match"),
    Key("digest_algorithm", Choice(tuple(DIGESTS)), "md5", doc="the digest's hash: " + ", ".join(DIGESTS)),
    Key("digest", _digest, None, doc="the hex digest the body must have (not with body)"),
    Key("headers", _headers, (), doc="extra request headers, a table of name = value"),
)
_TLS = (
    Key("cert", FILE, None, doc="client certificate (PEM)"),
    Key("key", _key, None, doc="the client certificate's key (PEM; needs cert)"),
    Key("sni", _sni, None, doc="the TLS server name sent and verified (default: host)"),
    Key("verify", BOOL, True, doc="verify the server's certificate"),
    Key("ca", FILE, None, doc="CA file or directory to verify with (default: the system's)"),
)
_HTTP_B = (
    Key("status", _status, ((200, 299),), doc='accepted status codes or ranges ("200-299")'),
    Key("max_body", INT(1, 1 << 30), 1048576, doc="at most this many body bytes are read"),
)
_ROWS = _HTTP_A + _TLS + _HTTP_B
_D = {k.name: k.default for k in _ROWS}


@dataclass(frozen=True, slots=True)
class HTTPCheck(NetCheckConfig):
    """``type = "http" | "https"``. ``status`` is a tuple of inclusive (low, high) ranges.
    ``body`` is a regex (re.search over the body read, at most ``max_body`` bytes); ``digest``
    is the lowercase hex ``digest_algorithm`` hash of that body (keepalived genhash style).
    TLS keys only matter for https; ``sni`` is already defaulted to ``host``."""

    KEYS: ClassVar[tuple[Key, ...]] = _HTTP_A + _HTTP_B
    TLS_KEYS: ClassVar[tuple[Key, ...]] = _TLS

    type: str = "http"
    method: str = _D["method"]
    path: str = _D["path"]
    host: str | None = _D["host"]
    status: tuple[tuple[int, int], ...] = _D["status"]
    body: str | None = _D["body"]
    digest: str | None = _D["digest"]
    digest_algorithm: str = _D["digest_algorithm"]
    headers: tuple[tuple[str, str], ...] = _D["headers"]
    verify: bool = _D["verify"]
    ca: str | None = _D["ca"]
    sni: str | None = _D["sni"]
    cert: str | None = _D["cert"]
    key: str | None = _D["key"]
    max_body: int = _D["max_body"]

    @classmethod
    def rows(cls, ctype: str) -> tuple[Key, ...]:
        base = NetCheckConfig.rows(ctype)
        return base + (_ROWS if ctype == "https" else _HTTP_A + _HTTP_B)

    @property
    def tls(self) -> bool:
        """True for https."""
        return self.type == "https"

    def status_ok(self, code: int) -> bool:
        """True if ``code`` is in one of the accepted ranges."""
        return any(lo <= code <= hi for lo, hi in self.status)

    def checker(self, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done) -> Checker:
        return HTTPChecker(self, addr, port, loop, done)

MAX_HEADER = 64 * 1024
_STATUS_RE = re.compile(rb"HTTP/\d(?:\.\d)? +(\d{3})")


def tls_name(host: str | None) -> str | None:
    """Name to verify (and send as SNI unless an IP): a Host value without its port."""
    if not host:
        return None
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host or None


@lru_cache(maxsize=64)
def tls_context(verify: bool, check_hostname: bool, ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """One shared client context per distinct TLS setting (loading CAs is expensive)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        if ca and os.path.isdir(ca):
            ctx.load_verify_locations(capath=ca)
        elif ca:
            try:
                ctx.load_verify_locations(cafile=ca)  # raises if it is gone or not PEM
            except (OSError, ssl.SSLError) as e:
                raise ValueError(f"cannot load ca {ca}: {getattr(e, 'strerror', None) or e}") from None
        else:
            ctx.load_default_certs()
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        try:
            ctx.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"cannot load cert {cert}: {getattr(e, 'strerror', None) or e}") from None
    return ctx


def build_request(cfg: HTTPCheck, addr: str, port: int, tls: bool) -> bytes:
    """The request bytes, computed once per target."""
    if cfg.host:
        host = cfg.host
    else:
        host = f"[{addr}]" if ":" in addr else addr
        if port != (443 if tls else 80):
            host = f"{host}:{port}"
    lines = [f"{cfg.method} {cfg.path} HTTP/1.0", f"Host: {host}"]
    names = {k.lower() for k, _ in cfg.headers}
    if "user-agent" not in names:
        lines.append("User-Agent: lvsd-check")
    if "connection" not in names:
        lines.append("Connection: close")
    if cfg.method in ("POST", "PUT") and "content-length" not in names:
        lines.append("Content-Length: 0")
    lines.extend(f"{k}: {v}" for k, v in cfg.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def dechunk(raw: bytes) -> tuple[bytes, bool]:
    """Decode a chunked body; return (body, complete)."""
    out = bytearray()
    pos = 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return bytes(out), False
        try:
            size = int(raw[pos:eol].split(b";", 1)[0].strip(), 16)
        except ValueError:
            return bytes(out), False
        if size == 0:
            return bytes(out), True
        start = eol + 2
        if len(raw) < start + size:
            out += raw[start:]
            return bytes(out), False
        out += raw[start:start + size]
        pos = start + size + 2


def _bind_ssl() -> None:
    """Bind this module's name ``ssl`` on first use: the loader imports this module for
    ``--check-config`` without paying for ssl; the probe paths name ``ssl`` in except clauses."""
    if "ssl" not in globals():
        import ssl as module

        globals()["ssl"] = module


class HTTPChecker(StreamChecker):
    """http / https: status codes/ranges, optional body regex or md5 digest, TLS options."""

    cfg: HTTPCheck

    def __init__(self, cfg: HTTPCheck, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done):
        super().__init__(cfg, addr, port, loop, done)
        _bind_ssl()
        self.tls = cfg.type == "https"
        self.kind = cfg.type
        if self.tls:
            self.socket_type = socket.socket  # ssl wraps only socket.socket
            # the name verified (and sent as SNI unless it is an IP): sni, else host, else the address
            self.server_hostname = tls_name(cfg.sni or cfg.host) or self.addr
            self.ctx = tls_context(cfg.verify, cfg.verify, cfg.ca, cfg.cert, cfg.key)
        self.request = build_request(cfg, self.addr, self.port, self.tls)
        self.ranges = cfg.status
        self.need_body = cfg.body is not None or cfg.digest is not None
        self.body_re = None if cfg.body is None else re.compile(cfg.body.encode())
        self.limit = cfg.max_body

    # --- phases ---
    def connected(self) -> None:
        self.buf = bytearray()
        self.hdr_end = -1
        self.code = 0
        self.clen = -1
        self.chunked = False
        self.pending = memoryview(self.request)
        if self.tls:
            try:
                self.sock = self.ctx.wrap_socket(self.sock, server_hostname=self.server_hostname,
                                                 do_handshake_on_connect=False)
            except (ssl.SSLError, OSError, ValueError) as e:
                self._finish(False, f"https tls: {e}")
                return
            self.phase = "tls handshake"
            self._handshake()
        else:
            self.phase = "send"
            self._on_send()

    def _handshake(self) -> None:
        s = self.sock
        if s is None:
            return
        try:
            s.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(_IN, self._handshake)
            return
        except ssl.SSLWantWriteError:
            self._watch(_OUT, self._handshake)
            return
        except ssl.SSLCertVerificationError as e:
            self._finish(False, f"https certificate: {e.verify_message or e.reason}")
            return
        except (ssl.SSLError, OSError) as e:
            self._finish(False, f"https tls handshake: {getattr(e, 'reason', None) or e}")
            return
        self.phase = "send"
        self._on_send()

    def _on_send(self) -> None:
        if not self._send_pending():
            return
        self.phase = "read"
        self._watch(_IN, self._on_read)
        if self.tls:
            self._on_read()  # TLS may already hold decrypted data

    def _send_failed(self, e: OSError) -> None:
        """TLS may need the socket writable or readable before the send can go on; else the check fails."""
        if isinstance(e, ssl.SSLWantWriteError):
            self._watch(_OUT, self._on_send)
        elif isinstance(e, ssl.SSLWantReadError):
            self._watch(_IN, self._on_send)
        else:
            self._finish(False, f"{self.kind} send: {e.strerror or e}")

    def _on_read(self) -> None:
        while True:
            s = self.sock
            if s is None:
                return
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                self._watch(_OUT, self._on_read)
                return
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            except OSError as e:
                if self.hdr_end >= 0 and self.clen < 0 and not self.chunked:
                    data = b""  # reset after a body without length: treat as its end
                else:
                    self._finish(False, f"{self.kind} recv: {e.strerror or e}")
                    return
            if self._feed(data):
                return
            if not self.tls or not s.pending():
                return

    def _feed(self, data: bytes) -> bool:
        """Take bytes (b"" = EOF); return True once the verdict is given."""
        buf = self.buf
        if self.hdr_end < 0:
            if not data:
                what = "no reply" if not buf else "incomplete headers"
                self._finish(False, f"{self.kind} {what} (connection closed)")
                return True
            old = len(buf)
            buf += data
            end = buf.find(b"\r\n\r\n", max(0, old - 3))
            if end < 0:
                if len(buf) > MAX_HEADER:
                    self._finish(False, f"{self.kind} headers larger than {MAX_HEADER} bytes")
                    return True
                return False
            return self._headers(end)
        if data:
            buf += data
        return self._body_progress(eof=not data)

    def _body_progress(self, eof: bool) -> bool:
        """Judge the body once it is complete, at EOF, or at the limit; True if judged."""
        body_len = len(self.buf) - self.hdr_end
        if self.clen >= 0:
            complete = body_len >= self.clen
        elif self.chunked:
            complete = self.buf.endswith(b"0\r\n\r\n")
        else:
            complete = eof
        if complete or eof or body_len >= self.limit:
            self._judge_body(complete)
            return True
        return False

    def _headers(self, end: int) -> bool:
        buf = self.buf
        m = _STATUS_RE.match(buf)
        if m is None:
            line = bytes(buf[: min(end, 60)]).split(b"\r\n", 1)[0]
            self._finish(False, f"{self.kind} malformed status line {line!r}")
            return True
        code = int(m.group(1))
        self.code = code
        for lo, hi in self.ranges:
            if lo <= code <= hi:
                break
        else:
            self._finish(False, f"{self.kind} status {code}")
            return True
        if not self.need_body or self.cfg.method == "HEAD":
            self._finish(True, f"{self.kind} status {code}")
            return True
        self.hdr_end = end + 4
        for line in bytes(buf[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    self.clen = int(value.strip())
                except ValueError:
                    pass
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
        if self.chunked:
            self.clen = -1
        return self._body_progress(eof=False)

    def _judge_body(self, complete: bool) -> None:
        raw = bytes(self.buf[self.hdr_end:])
        if self.clen >= 0:
            raw = raw[: self.clen]
        if self.chunked:
            raw, complete = dechunk(raw)
        if len(raw) > self.limit:
            raw = raw[: self.limit]
            complete = False
        code = self.code
        cfg = self.cfg
        if cfg.digest is not None:
            import hashlib

            if not complete:
                self._finish(False, f"{self.kind} body larger than {self.limit} bytes, digest not computed")
                return
            got = hashlib.new(cfg.digest_algorithm, raw).hexdigest()
            if got != cfg.digest:
                self._finish(False, f"{self.kind} digest {got} != {cfg.digest}")
                return
        if self.body_re is not None and self.body_re.search(raw) is None:
            self._finish(False, f"{self.kind} body does not match /{cfg.body}/ (status {code})")
            return
        self._finish(True, f"{self.kind} status {code}, body ok")

    def cancel(self) -> str:
        phase = self.phase if self.sock is not None else "connect"
        self._release()
        t = f"{self.cfg.timeout:g}s"
        if phase == "read":
            return f"{self.kind} no {'complete ' if self.hdr_end >= 0 else ''}reply within {t}"
        return f"{self.kind} {phase} timeout after {t}"
