"""HTTP and HTTPS checks on raw non-blocking sockets.

Per probe: connect (tcp.StreamChecker), TLS handshake for https (ssl-wrapped non-blocking socket),
send one precomputed HTTP/1.0 request (``Connection: close``; 1.0 so no chunked replies in
practice, as keepalived's HTTP_GET), read the status line and headers, judge the status, then read
the body only if a ``body`` regex or a ``digest`` needs it, never more than ``body_limit`` bytes.
The socket is closed with RST. 3xx replies are judged by their status and never followed.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
from functools import lru_cache

from .base import CheckSpec
from .tcp import _IN, _OUT, StreamChecker

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


def build_request(spec: CheckSpec, addr: str, port: int, tls: bool) -> bytes:
    """The request bytes, computed once per target."""
    if spec.host:
        host = spec.host
    else:
        host = f"[{addr}]" if ":" in addr else addr
        if port != (443 if tls else 80):
            host = f"{host}:{port}"
    lines = [f"{spec.method} {spec.path} HTTP/1.0", f"Host: {host}"]
    names = {k.lower() for k, _ in spec.headers}
    if "user-agent" not in names:
        lines.append("User-Agent: lvsd-check")
    if "connection" not in names:
        lines.append("Connection: close")
    if spec.method in ("POST", "PUT") and "content-length" not in names:
        lines.append("Content-Length: 0")
    lines.extend(f"{k}: {v}" for k, v in spec.headers)
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


class HTTPChecker(StreamChecker):
    """http / https: status codes/ranges, optional body regex or md5 digest, TLS options."""

    def __init__(self, spec, addr, port, loop, done):  # type: ignore[no-untyped-def]
        super().__init__(spec, addr, port, loop, done)
        self.tls = spec.type == "https"
        self.kind = spec.type
        if self.tls:
            self.socket_type = socket.socket  # ssl wraps only socket.socket
            # the name verified (and sent as SNI unless it is an IP): sni, else host, else the address
            self.server_hostname = tls_name(spec.sni or spec.host) or self.addr
            self.ctx = tls_context(spec.verify, spec.verify, spec.ca, spec.cert, spec.key)
        self.request = build_request(spec, self.addr, self.port, self.tls)
        self.ranges = spec.status
        self.need_body = spec.body is not None or spec.digest is not None
        self.body_re = spec.body_re()
        self.limit = spec.body_limit

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
            s.do_handshake()  # type: ignore[attr-defined]
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
        s = self.sock
        if s is None:
            return
        try:
            n = s.send(self.pending)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            self._watch(_OUT, self._on_send)
            return
        except ssl.SSLWantReadError:
            self._watch(_IN, self._on_send)
            return
        except OSError as e:
            self._finish(False, f"{self.kind} send: {e.strerror or e}")
            return
        self.pending = self.pending[n:]
        if self.pending:
            self._watch(_OUT, self._on_send)
            return
        self.phase = "read"
        self._watch(_IN, self._on_read)
        if self.tls:
            self._on_read()  # TLS may already hold decrypted data

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
            if not self.tls or not s.pending():  # type: ignore[attr-defined]
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
        if not self.need_body or self.spec.method == "HEAD":
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
        spec = self.spec
        if spec.digest is not None:
            if not complete:
                self._finish(False, f"{self.kind} body larger than {self.limit} bytes, digest not computed")
                return
            got = hashlib.new(spec.digest_algorithm, raw).hexdigest()
            if got != spec.digest:
                self._finish(False, f"{self.kind} digest {got} != {spec.digest}")
                return
        if self.body_re is not None and self.body_re.search(raw) is None:
            self._finish(False, f"{self.kind} body does not match /{spec.body}/ (status {code})")
            return
        self._finish(True, f"{self.kind} status {code}, body ok")

    def cancel(self) -> str:
        phase = self.phase if self.sock is not None else "connect"
        self._release()
        t = f"{self.spec.timeout:g}s"
        if phase == "read":
            return f"{self.kind} no {'complete ' if self.hdr_end >= 0 else ''}reply within {t}"
        return f"{self.kind} {phase} timeout after {t}"
