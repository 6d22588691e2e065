"""TCP, UDP and DNS checkers against real sockets on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from lvsd.checks.dns import DNSCheck
from lvsd.checks.http import HTTPCheck
from lvsd.checks.manager import check_once
from lvsd.checks.tcp import TCPCheck
from lvsd.checks.udp import UDPCheck


def tcp(**kw) -> TCPCheck:
    kw.setdefault("timeout", 0.5)
    return TCPCheck(**kw)


def tcp_states(port: int) -> list[str]:
    """TCP states (hex) of sockets on loopback with this port, from /proc/net/tcp."""
    out = []
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            lport = int(parts[1].split(":")[1], 16)
            rport = int(parts[2].split(":")[1], 16)
            if port in (lport, rport):
                out.append(parts[3])
    return out


def test_tcp_healthy_and_no_time_wait(run_async) -> None:
    ls = socket.create_server(("127.0.0.1", 0))
    port = ls.getsockname()[1]

    async def main():
        return [await check_once(tcp(), "127.0.0.1", port) for _ in range(20)]

    res = run_async(main(), timeout=20)
    assert all(r[0] for r in res), res
    assert res[0][1] == "tcp connect ok"
    ls.close()
    # RST on close: the 20 probes leave nothing in TIME_WAIT (06)
    assert "06" not in tcp_states(port)


def test_tcp_refused(free_port, run_async) -> None:
    port = free_port()
    ok, detail, _ = run_async(check_once(tcp(), "127.0.0.1", port), timeout=20)
    assert not ok and detail == "tcp connect: connection refused"


def full_backlog_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A listener whose accept queue is full: further SYNs are dropped, so connect() hangs."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(ls.getsockname())
        fillers.append(c)
    return ls, fillers


def test_tcp_connect_timeout(run_async) -> None:
    ls, fillers = full_backlog_listener()
    ok, detail, _ = run_async(check_once(tcp(timeout=0.3), "127.0.0.1", ls.getsockname()[1]), timeout=20)
    for c in fillers:
        c.close()
    ls.close()
    assert not ok and detail == "tcp connect timeout after 0.3s"


def test_tcp_send_expect(run_async) -> None:
    async def main():
        async def handle(r, w):
            line = await r.readline()
            w.write(b"+PONG\r\n" if line == b"PING\r\n" else b"-ERR\r\n")
            await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        good = await check_once(tcp(send=b"PING\r\n", expect=b"+PONG"), "127.0.0.1", port)
        bad = await check_once(tcp(send=b"HELLO\r\n", expect=b"+PONG"), "127.0.0.1", port)
        srv.close()
        return good, bad

    good, bad = run_async(main(), timeout=20)
    assert good[0], good
    assert not bad[0] and "did not contain" in bad[1]


def test_tcp_accepts_but_never_answers(run_async) -> None:
    ls = socket.create_server(("127.0.0.1", 0))  # listens, never accepts nor answers
    port = ls.getsockname()[1]
    ok_connect = run_async(check_once(tcp(), "127.0.0.1", port), timeout=20)
    hung = run_async(check_once(tcp(send=b"x", expect=b"y", timeout=0.3), "127.0.0.1", port), timeout=20)
    ls.close()
    assert ok_connect[0]  # a plain connect check passes: the kernel completed the handshake
    assert not hung[0] and hung[1] == "tcp no reply timeout after 0.3s"


def test_tcp_connect_override_and_bind(run_async) -> None:
    ls = socket.create_server(("127.0.0.1", 0))
    port = ls.getsockname()[1]
    # the server address is wrong, but connect= points the probe at the listener, from 127.0.0.2
    spec = tcp(connect_address="127.0.0.1", connect_port=port, bind="127.0.0.2")

    async def main():
        res = await check_once(spec, "127.0.0.9", 1)
        return res

    ok, detail, _ = run_async(main(), timeout=20)
    ls.close()
    assert ok, detail


def test_udp_reply_refused_and_expect(free_port, run_async) -> None:
    async def main():
        loop = asyncio.get_running_loop()

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, t):
                self.t = t

            def datagram_received(self, data, addr):
                self.t.sendto(b"pong:" + data, addr)

        t, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        port = t.get_extra_info("sockname")[1]
        good = await check_once(UDPCheck(send=b"ping", expect=b"pong", timeout=0.5), "127.0.0.1", port)
        bad = await check_once(UDPCheck(send=b"ping", expect=b"nope", timeout=0.5), "127.0.0.1", port)
        t.close()
        refused = await check_once(UDPCheck(send=b"ping", timeout=0.5), "127.0.0.1", free_port(socket.SOCK_DGRAM))
        return good, bad, refused

    good, bad, refused = run_async(main(), timeout=20)
    assert good[0], good
    assert not bad[0] and "did not contain" in bad[1]
    assert not refused[0] and refused[1] == "udp: connection refused"


def test_udp_no_reply_times_out(run_async) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))  # bound, never answers
    port = s.getsockname()[1]
    ok, detail, _ = run_async(check_once(UDPCheck(send=b"x", timeout=0.2), "127.0.0.1", port), timeout=20)
    s.close()
    assert not ok and detail == "udp no reply within 0.2s"


def dns_reply(query: bytes, rcode: int, answers: list[tuple[int, bytes]]) -> bytes:
    qid, _flags = struct.unpack_from("!HH", query)
    question = query[12:]
    hdr = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(answers), 0, 0)
    body = question
    for rtype, rdata in answers:
        body += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata
    return hdr + body


@pytest.mark.parametrize(
    "rcode,answers,spec_kw,expect_ok,detail",
    [
        (0, [(1, bytes([10, 0, 0, 5]))], {}, True, "dns NOERROR, 1 answers"),
        (0, [(1, bytes([10, 0, 0, 5]))], {"expect": ("10.0.0.5",)}, True, "dns NOERROR, 1 answers"),
        (0, [(1, bytes([10, 0, 0, 6]))], {"expect": ("10.0.0.5",)}, False, "10.0.0.5 not in answers"),
        (3, [], {}, False, "dns rcode NXDOMAIN"),
        (3, [], {"rcode": "NXDOMAIN"}, True, "dns NXDOMAIN"),
        (2, [], {}, False, "dns rcode SERVFAIL"),
        (0, [(5, b"\x03www\x07example\x00")], {"qtype": "CNAME", "expect": ("www.example",)}, True, "dns NOERROR"),
    ],
)
def test_dns(rcode, answers, spec_kw, expect_ok, detail, run_async) -> None:
    async def main():
        loop = asyncio.get_running_loop()

        class Resp(asyncio.DatagramProtocol):
            def connection_made(self, t):
                self.t = t

            def datagram_received(self, data, addr):
                self.t.sendto(b"\x00" * 12, addr)  # garbage first: must be ignored (wrong id)
                self.t.sendto(dns_reply(data, rcode, answers), addr)

        t, _ = await loop.create_datagram_endpoint(Resp, local_addr=("127.0.0.1", 0))
        port = t.get_extra_info("sockname")[1]
        res = await check_once(DNSCheck(name="svc.example.org", timeout=0.5, **spec_kw), "127.0.0.1", port)
        t.close()
        return res

    ok, d, _ = run_async(main(), timeout=20)
    assert ok is expect_ok and detail in d, d


def test_ipv6_tcp_and_http(run_async) -> None:
    try:
        ls = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = ls.getsockname()[1]

    async def main():
        tcp_res = await check_once(tcp(), "::1", port)

        async def handle(r, w):
            req = await r.readuntil(b"\r\n\r\n")
            ok = f"Host: [::1]:{hport}\r\n".encode() in req
            w.write(b"HTTP/1.0 200 OK\r\n\r\n" if ok else b"HTTP/1.0 400 Bad\r\n\r\n")
            await w.drain()
            w.close()

        srv = await asyncio.start_server(handle, "::1", 0)
        hport = srv.sockets[0].getsockname()[1]
        http_res = await check_once(HTTPCheck(timeout=0.5), "::1", hport)
        srv.close()
        return tcp_res, http_res

    tcp_res, http_res = run_async(main(), timeout=20)
    ls.close()
    assert tcp_res[0], tcp_res
    assert http_res == (True, "http status 200", None), http_res
