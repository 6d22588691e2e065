"""HTTP and HTTPS checkers against real servers on loopback: every verdict."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time

import pytest
import trustme

from lvsd.checks.http import HTTPCheck
from lvsd.checks.manager import check_once


def reply(status: int = 200, body: bytes = b"hello world", extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


async def serve(handler, ssl_ctx=None):
    """An asyncio server on 127.0.0.1 calling handler(request_bytes, writer)."""
    seen: list[bytes] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            req = await r.readuntil(b"\r\n\r\n")
            seen.append(req)
            await handler(req, w)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            w.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_ctx)
    return srv, srv.sockets[0].getsockname()[1], seen


def fixed(data: bytes, delay: float = 0.0):
    async def h(req, w):
        if delay:
            await asyncio.sleep(delay)
        w.write(data)
        await w.drain()
    return h


def http(**kw) -> HTTPCheck:
    kw.setdefault("timeout", 0.5)
    return HTTPCheck(type=kw.pop("type", "http"), **kw)


async def one(handler, spec: HTTPCheck, ssl_ctx=None):
    srv, port, seen = await serve(handler, ssl_ctx)
    try:
        res = await check_once(spec, "127.0.0.1", port)
    finally:
        srv.close()
    return res, seen


@pytest.mark.parametrize(
    "data,spec_kw,ok,detail",
    [
        (reply(200), {}, True, "http status 200"),
        (reply(204, b""), {}, True, "http status 204"),
        (reply(500), {}, False, "http status 500"),
        (reply(503), {}, False, "http status 503"),
        (reply(302, b"", "Location: /elsewhere\r\n"), {}, False, "http status 302"),  # not followed
        (reply(302, b"", "Location: /elsewhere\r\n"), {"status": ((200, 399),)}, True, "http status 302"),
        (reply(404), {"status": ((404, 404),)}, True, "http status 404"),
        (reply(200, b"status: ok"), {"body": r"status: (ok|fine)"}, True, "http status 200, body ok"),
        (reply(200, b"status: broken"), {"body": r"status: ok"}, False, "does not match /status: ok/"),
        (reply(200, b"abc"), {"digest": hashlib.md5(b"abc").hexdigest()}, True, "body ok"),
        (reply(200, b"abd"), {"digest": hashlib.md5(b"abc").hexdigest()}, False, "http digest"),
        (reply(200, b"abc"), {"digest": hashlib.sha256(b"abc").hexdigest(), "digest_algorithm": "sha256"}, True, "body ok"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
         {"digest": hashlib.md5(b"abcde").hexdigest()}, True, "body ok"),
        (b"HTTP/1.0 200 OK\r\n\r\nno length, until close", {"body": "until close$"}, True, "body ok"),
        (b"garbage\r\n\r\n", {}, False, "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", {"body": "x"}, False, "does not match"),
    ],
)
def test_http_verdicts(data, spec_kw, ok, detail, run_async) -> None:
    (res_ok, res_detail, _), _ = run_async(one(fixed(data), http(**spec_kw)))
    assert res_ok is ok and detail in res_detail, res_detail


def test_http_request_line_and_headers(run_async) -> None:
    spec = http(method="HEAD", path="/health?x=1", host="www.example.org", headers=(("X-Probe", "lvsd"),))
    (ok, _, _), seen = run_async(one(fixed(reply(200, b"")), spec))
    assert ok
    req = seen[0].decode()
    assert req.startswith("HEAD /health?x=1 HTTP/1.0\r\n")
    assert "Host: www.example.org\r\n" in req and "X-Probe: lvsd\r\n" in req and "Connection: close" in req


def test_http_default_host_header_has_port(run_async) -> None:
    (ok, _, _), seen = run_async(one(fixed(reply()), http()))
    assert ok and b"Host: 127.0.0.1:" in seen[0]


def test_http_refused(free_port, run_async) -> None:
    ok, detail, _ = run_async(check_once(http(), "127.0.0.1", free_port()))
    assert not ok and detail == "http connect: connection refused"


def test_http_accepts_never_answers(run_async) -> None:
    async def h(req, w):
        await asyncio.sleep(10)  # then closes: a checker that ignored its timeout would wait for that

    t0 = time.monotonic()
    (ok, detail, _), _ = run_async(one(h, http(timeout=0.3)))
    assert not ok and detail == "http no reply within 0.3s"
    assert time.monotonic() - t0 < 4.5  # the 0.3 s timeout, not the server's 10 s, ended it (slack: a loaded machine)


def test_http_slower_than_timeout(run_async) -> None:
    (ok, detail, _), _ = run_async(one(fixed(reply(), delay=0.5), http(timeout=0.2)))
    assert not ok and "within 0.2s" in detail
    (ok, detail, _), _ = run_async(one(fixed(reply(), delay=0.05), http(timeout=0.5)))
    assert ok, detail


def test_http_closed_without_reply(run_async) -> None:
    async def h(req, w):
        pass

    (ok, detail, _), _ = run_async(one(h, http()))
    assert not ok and detail == "http no reply (connection closed)"


def huge_body_handler(sent: list[int]):
    async def h(req, w):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
        chunk = b"x" * 65536
        for _ in range(15000):  # up to ~1 GB, unless the client goes away
            w.write(chunk)
            await w.drain()
            sent[0] += len(chunk)
    return h


@pytest.mark.parametrize(
    "spec_kw,ok,detail",
    [
        ({}, True, "http status 200"),  # status only: body never read
        ({"body": "xxxx", "max_body": 200000}, True, "body ok"),  # regex on the first 200 kB
        ({"body": "yyyy", "max_body": 200000}, False, "does not match"),
        ({"digest": "0" * 32, "max_body": 200000}, False, "larger than 200000 bytes"),
    ],
)
def test_http_huge_body_limit_respected(spec_kw, ok, detail, run_async) -> None:
    sent = [0]
    t0 = time.monotonic()
    # the timeout (10 s) is well past the bound below: a checker that kept reading until it fired
    # fails the bound, one that hangs up at the limit (or after the status) passes on a loaded machine
    (res_ok, res_detail, _), _ = run_async(one(huge_body_handler(sent), http(timeout=10, **spec_kw)))
    assert res_ok is ok and detail in res_detail, res_detail
    assert time.monotonic() - t0 < 4.5
    assert sent[0] < 50_000_000  # the checker hung up long before 1 GB


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = trustme.CA()
    cert = ca.issue_cert("www.example.org", "127.0.0.1")
    d = tmp_path_factory.mktemp("pki")
    ca_path = d / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    client = ca.issue_cert("probe.example.org")
    client_pem = d / "client.pem"
    client.private_key_and_cert_chain_pem.write_to_path(str(client_pem))
    mtls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(mtls)
    ca.configure_trust(mtls)
    mtls.verify_mode = ssl.CERT_REQUIRED
    return {"ca": str(ca_path), "server": server, "mtls": mtls, "client": str(client_pem)}


@pytest.mark.parametrize(
    "spec_kw,ok,detail",
    [
        ({"ca": "CA", "sni": "www.example.org"}, True, "https status 200"),
        ({"ca": "CA", "host": "www.example.org"}, True, "https status 200"),
        ({"ca": "CA"}, True, "https status 200"),  # no name: the address, in the cert's IP SANs
        ({"ca": "CA", "sni": "127.0.0.1"}, True, "https status 200"),  # IP SAN
        ({"ca": "CA", "sni": "other.example.org"}, False, "https certificate"),  # wrong name
        ({"sni": "www.example.org"}, False, "https certificate"),  # unknown CA
        ({"verify": False, "sni": "other.example.org"}, True, "https status 200"),
        ({"ca": "CA", "body": "hello"}, True, "https status 200, body ok"),
    ],
)
def test_https(pki, spec_kw, ok, detail, run_async) -> None:
    if spec_kw.get("ca") == "CA":
        spec_kw = {**spec_kw, "ca": pki["ca"]}
    (res_ok, res_detail, _), _ = run_async(one(fixed(reply()), http(type="https", **spec_kw), pki["server"]))
    assert res_ok is ok and detail in res_detail, res_detail


def test_https_address_checked_when_no_name(pki, tmp_path, run_async) -> None:
    ca = trustme.CA()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("www.example.org").configure_cert(server)  # no IP SAN
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    (ok, detail, _), _ = run_async(one(fixed(reply()), http(type="https", ca=str(ca_path)), server))
    assert not ok and "https certificate" in detail, detail
    (ok, detail, _), _ = run_async(one(fixed(reply()), http(type="https", ca=str(ca_path), host="www.example.org:8443"), server))
    assert ok, detail


def test_https_client_certificate(pki, run_async) -> None:
    spec = http(type="https", ca=pki["ca"], sni="www.example.org", cert=pki["client"])
    (ok, detail, _), _ = run_async(one(fixed(reply()), spec, pki["mtls"]))
    assert ok, detail
    spec = http(type="https", ca=pki["ca"], sni="www.example.org")
    (ok, detail, _), _ = run_async(one(fixed(reply()), spec, pki["mtls"]))
    assert not ok


def test_https_against_plain_http_fails(pki, run_async) -> None:
    (ok, detail, _), _ = run_async(one(fixed(reply()), http(type="https", ca=pki["ca"])))
    assert not ok and detail.startswith("https"), detail
