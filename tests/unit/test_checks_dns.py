"""A DNS check is up only on a well-formed reply to its own query: a reply that is not DNS (too
short, our query echoed, cut at any length, extended, another question, a pointer loop) is a
failure with its reason, whether or not ``expect`` is set. Real UDP on loopback, plus the verdict
function over generated replies."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsd.checks.dns import DNSCheck, DNSChecker, parse_reply
from lvsd.checks.manager import check_once

NAME = "svc.example.org"


def reply(query: bytes, rcode: int = 0, answers: tuple[tuple[int, bytes], ...] = ((1, bytes([10, 0, 0, 5])),)) -> bytes:
    qid = struct.unpack_from("!H", query)[0]
    body = query[12:]
    for rtype, rdata in answers:
        body += b"\xc0\x0c" + struct.pack("!HHIH", rtype, 1, 60, len(rdata)) + rdata
    return struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(answers), 0, 0) + body


def checker(**kw: object) -> DNSChecker:
    """A checker whose verdict function is called directly (no socket: ``start`` is never called)."""
    c = DNSChecker(DNSCheck(name=NAME, **kw), "127.0.0.1", 53, asyncio.new_event_loop(), lambda *a: None)  # type: ignore[arg-type]
    c.loop.close()
    return c


def query_of(c: DNSChecker) -> bytes:
    return c.payload()


def test_a_well_formed_reply_passes() -> None:
    c = checker()
    q = query_of(c)
    assert c.judge(reply(q)) == (True, "dns NOERROR, 1 answers")
    assert c.judge(reply(q).replace(b"\x03svc", b"\x03SVC")) == (True, "dns NOERROR, 1 answers")  # 0x20 case


@pytest.mark.parametrize("expect", [(), ("10.0.0.5",)])
def test_reply_cut_at_every_length_is_a_failure(expect: tuple[str, ...]) -> None:
    c = checker(expect=expect)
    full = reply(query_of(c))
    for n in range(len(full)):
        verdict = c.judge(full[:n])
        assert verdict is not None and verdict[0] is False, (n, verdict)


def test_replies_that_are_not_dns_fail_with_their_reason() -> None:
    c = checker()
    q = query_of(c)
    good = reply(q)
    qid = q[:2]
    cases = {
        "short": (b"\x00\x01", "not DNS: 2 bytes"),
        "echo": (q, "QR bit clear"),
        "opcode": (qid + b"\x88\x00" + good[4:], "opcode 1"),
        "trailing": (good + b"junk", "4 bytes after the last record"),
        "question": (reply(q.replace(b"\x03svc", b"\x03abc")), "another question (abc.example.org type 1)"),
        "qtype": (reply(q[:-4] + b"\x00\x1c\x00\x01"), "another question"),
        "no question": (qid + b"\x81\x80\x00\x00\x00\x00\x00\x00\x00\x00", "another question (none)"),
        "loop": (good[:-16] + b"\xc0" + bytes([len(good) - 16]) + good[-14:], "malformed"),
        "junk": (qid + b"\x81\x80" + b"\xff" * 40, "malformed"),
    }
    for label, (data, why) in cases.items():
        verdict = c.judge(data)
        assert verdict is not None and verdict[0] is False and why in verdict[1], (label, verdict)
    assert c.judge(b"\xff\xff" + good[2:]) is None or q[:2] == b"\xff\xff"  # another id: a late reply, ignored


def test_error_reply_without_the_question_is_judged_by_rcode() -> None:
    c = checker(rcode="REFUSED")
    q = query_of(c)
    assert c.judge(q[:2] + b"\x81\x85" + b"\x00" * 8) == (True, "dns REFUSED, 0 answers")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=80), st.integers(0, 200), st.booleans())
def test_any_bytes_after_our_id_are_a_verdict_never_an_exception(tail: bytes, cut: int, expect: bool) -> None:
    """Generated members of the class: our ID and the response bit followed by anything, and a
    valid reply with its end replaced: always a verdict (passes only if the message parses)."""
    c = checker(expect=("10.0.0.5",) if expect else ())
    q = query_of(c)
    for data in (q[:2] + b"\x81\x80" + tail, reply(q)[:cut] + tail):
        verdict = c.judge(data)
        if verdict is None:
            assert data[:2] != q[:2]
            continue
        if verdict[0]:
            parse_reply(data)  # a pass implies a well-formed message


def serve(respond) -> tuple[bool | None, str]:  # type: ignore[no-untyped-def]
    """One check over real UDP on loopback against a server answering with ``respond(query)``."""

    async def main():  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()

        class Server(asyncio.DatagramProtocol):
            def connection_made(self, t):  # type: ignore[no-untyped-def]
                self.t = t

            def datagram_received(self, data, addr):  # type: ignore[no-untyped-def]
                for d in respond(data):
                    self.t.sendto(d, addr)

        t, _ = await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", 0))
        port = t.get_extra_info("sockname")[1]
        try:
            return await check_once(DNSCheck(name=NAME, timeout=0.5), "127.0.0.1", port)
        finally:
            t.close()

    ok, detail, _ = asyncio.run(asyncio.wait_for(main(), 20))
    return ok, detail


def test_garbage_reply_over_udp_fails_without_expect() -> None:
    ok, detail = serve(lambda q: [q[:2] + b"\x81\x80" + b"garbage garbage garbage"])
    assert ok is False and detail.startswith("dns malformed reply"), detail
    ok, detail = serve(lambda q: [q])  # an echo server
    assert ok is False and "QR bit clear" in detail, detail
    ok, detail = serve(lambda q: [b"\x00" * 12, reply(q)])  # a stray datagram first: ignored
    assert ok is True and detail == "dns NOERROR, 1 answers", detail
