"""DNS check: query ``name`` of type ``qtype`` over UDP; up if the reply's rcode is ``rcode``
(default NOERROR) and every value in ``expect`` is among the answers' data in text form
(A/AAAA addresses, names for CNAME/NS/PTR, "pref name" for MX, the strings for TXT)."""

from __future__ import annotations

import ipaddress
import random
import struct

from .udp import DatagramChecker

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33, "ANY": 255, "CAA": 257}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
RCODE_NAMES = {v: k for k, v in RCODES.items()}


def encode_name(name: str) -> bytes:
    """Wire form of a domain name."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if not label:
            continue
        b = label.encode("idna") if not label.isascii() else label.encode()
        if len(b) > 63:
            raise ValueError(f"dns label too long in {name!r}")
        out.append(len(b))
        out += b
    out.append(0)
    return bytes(out)


def build_query(qid: int, name: str, qtype: int) -> bytes:
    """A recursion-desired query for one question."""
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + struct.pack("!HH", qtype, 1)


def read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """Decode a possibly compressed name at pos; return (name, position after it)."""
    labels: list[str] = []
    end = -1
    for _ in range(128):  # bounded: no pointer loops
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | msg[pos + 1]
            continue
        if n == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    raise ValueError("dns name pointer loop")


def answers(msg: bytes, qdcount: int, ancount: int) -> list[str]:
    """The answer section's data in text form."""
    pos = 12
    for _ in range(qdcount):
        _, pos = read_name(msg, pos)
        pos += 4
    out: list[str] = []
    for _ in range(ancount):
        _, pos = read_name(msg, pos)
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
        pos += 10
        rd = msg[pos:pos + rdlen]
        if rtype == 1 and rdlen == 4:
            out.append(str(ipaddress.IPv4Address(rd)))
        elif rtype == 28 and rdlen == 16:
            out.append(str(ipaddress.IPv6Address(rd)))
        elif rtype in (2, 5, 12):
            out.append(read_name(msg, pos)[0])
        elif rtype == 15:
            out.append(f"{struct.unpack_from('!H', msg, pos)[0]} {read_name(msg, pos + 2)[0]}")
        elif rtype == 16:
            i, parts = 0, []
            while i < len(rd):
                parts.append(rd[i + 1:i + 1 + rd[i]].decode("utf-8", "replace"))
                i += 1 + rd[i]
            out.append("".join(parts))
        else:
            out.append(rd.hex())
        pos += rdlen
    return out


class DNSChecker(DatagramChecker):
    """dns: query, qtype, rcode, answer."""

    kind = "dns"

    def __init__(self, spec, addr, port, loop, done):  # type: ignore[no-untyped-def]
        super().__init__(spec, addr, port, loop, done)
        if not spec.query:
            raise ValueError("dns check needs a query name")
        qt = spec.qtype
        self.qtype = int(qt[4:]) if qt.startswith("TYPE") else QTYPES[qt]
        self.rcode = RCODES[spec.rcode]
        self.question = encode_name(spec.query) + struct.pack("!HH", self.qtype, 1)
        self.qid = 0

    def payload(self) -> bytes:
        self.qid = random.getrandbits(16)
        return struct.pack("!HHHHHH", self.qid, 0x0100, 1, 0, 0, 0) + self.question

    def judge(self, data: bytes) -> tuple[bool, str] | None:
        if len(data) < 12:
            return None
        qid, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", data)
        if qid != self.qid or not flags & 0x8000:
            return None  # not our reply
        rcode = flags & 0xF
        name = RCODE_NAMES.get(rcode, str(rcode))
        if rcode != self.rcode:
            return False, f"dns rcode {name} for {self.spec.query} {self.spec.qtype}"
        want = self.spec.dns_expect
        if want:
            try:
                got = answers(data, qd, an)
            except (ValueError, IndexError, struct.error):
                return False, "dns malformed reply"
            missing = [w for w in want if w.rstrip(".").lower() not in {g.rstrip(".").lower() for g in got}]
            if missing:
                return False, f"dns {self.spec.query} {self.spec.qtype}: {missing[0]} not in answers {got[:4]}"
        return True, f"dns {name}, {an} answers"
