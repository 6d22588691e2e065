"""DNS check (``type = "dns"``): its config and its checker. Query ``name`` of type ``qtype`` over UDP; up if the reply's rcode is ``rcode``
(default NOERROR) and every value in ``expect`` is among the answers' data in text form
(A/AAAA addresses, names for CNAME/NS/PTR, "pref name" for MX, the strings for TXT)."""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from lvsd.config.checks import NetCheckConfig
from lvsd.config.keys import Key
from lvsd.config.reader import Reader, Table, _p, _show

from .udp import DatagramChecker

if TYPE_CHECKING:
    import asyncio

    from .base import Checker, Done

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33, "ANY": 255, "CAA": 257}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
RCODE_NAMES = {v: k for k, v in RCODES.items()}
#: the qtypes and rcodes the config names (in messages in this order); TYPEnn is also a qtype
DNS_QTYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "CAA", "ANY")
DNS_RCODES = tuple(RCODES)
_DNSNAME_RE = re.compile(r"(?=.{1,254}$)([A-Za-z0-9_*](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+|\.")


def _name(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    name = r.get_str(tbl, key, path)
    if name is None and key not in tbl:
        r.err(_p(path, key), 'missing: the name to query, e.g. "www.example.org"')
    elif name is not None and not _DNSNAME_RE.fullmatch(name):
        r.err(_p(path, key), f"not a DNS name: {_show(name)}")
    return name or default


def _qtype(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    qtype = tbl.get(key, default)
    if isinstance(qtype, str) and qtype.upper() in DNS_QTYPES:
        return qtype.upper()
    if isinstance(qtype, str) and re.fullmatch(r"TYPE[0-9]{1,5}", qtype.upper()) and int(qtype[4:]) < 65536:
        return qtype.upper()
    r.err(_p(path, key), f"must be one of {', '.join(DNS_QTYPES)} or TYPEnn, got {_show(qtype)}")
    return default


def _rcode(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    rcode = tbl.get(key, default)
    if isinstance(rcode, str) and rcode.upper() in DNS_RCODES:
        return rcode.upper()
    r.err(_p(path, key), f"must be one of {', '.join(DNS_RCODES)}, got {_show(rcode)}")
    return default


def _expect(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    expect = tbl.get(key, [])
    if isinstance(expect, str):
        expect = [expect]
    if not isinstance(expect, list) or not all(isinstance(e, str) and e for e in expect):
        r.err(_p(path, key), "must be a string or a list of non-empty strings")
        return default
    return tuple(expect)


@dataclass(frozen=True, slots=True)
class DNSCheck(NetCheckConfig):
    """``type = "dns"``: query ``name``/``qtype`` over UDP; up if the reply's rcode is ``rcode``
    and, when ``expect`` is set, every expected value is among the answers' data (text form)."""

    KEYS: ClassVar[tuple[Key, ...]] = (
        Key("name", _name, "", doc="the name to query (required)"),
        Key("qtype", _qtype, "A", doc="the query type: " + ", ".join(DNS_QTYPES) + " or TYPEnn"),
        Key("rcode", _rcode, "NOERROR", doc="the reply's rcode that means up"),
        Key("expect", _expect, (), doc="values that must all be among the answers' data"),
    )

    type: str = "dns"
    name: str = KEYS[0].default
    qtype: str = KEYS[1].default
    rcode: str = KEYS[2].default
    expect: tuple[str, ...] = KEYS[3].default

    def checker(self, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done) -> Checker:
        return DNSChecker(self, addr, port, loop, done)


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
    """Decode a possibly compressed name at pos; return (name, position after it).

    Raises ValueError for anything that is no well-formed name: past the end, a reserved label
    type, a pointer that does not point back (the only way to loop), more than 255 bytes."""
    labels: list[str] = []
    end = -1
    size = 1
    lowest = pos  # a pointer must go strictly back from where it is
    while True:
        if pos >= len(msg):
            raise ValueError("name runs past the end")
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise ValueError("name pointer cut short")
            target = ((n & 0x3F) << 8) | msg[pos + 1]
            if end < 0:
                end = pos + 2
            if target >= lowest:
                raise ValueError("name pointer does not point back")
            pos = lowest = target
            continue
        if n & 0xC0:
            raise ValueError(f"reserved label type 0x{n & 0xC0:02x}")
        if n == 0:
            return ".".join(labels), (end if end >= 0 else pos + 1)
        if pos + 1 + n > len(msg):
            raise ValueError("label runs past the end")
        size += n + 1
        if size > 255:
            raise ValueError("name longer than 255 bytes")
        labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n


def _rdata_text(msg: bytes, rtype: int, pos: int, rdlen: int) -> str:
    """An answer's data in text form (as ``expect`` names it)."""
    rd = msg[pos:pos + rdlen]
    if rtype == 1 and rdlen == 4:
        return str(ipaddress.IPv4Address(rd))
    if rtype == 28 and rdlen == 16:
        return str(ipaddress.IPv6Address(rd))
    if rtype in (2, 5, 12):
        return read_name(msg, pos)[0]
    if rtype == 15 and rdlen >= 3:
        return f"{struct.unpack_from('!H', msg, pos)[0]} {read_name(msg, pos + 2)[0]}"
    if rtype == 16:
        i, parts = 0, []
        while i < len(rd):
            if i + 1 + rd[i] > len(rd):
                raise ValueError("TXT string runs past its record")
            parts.append(rd[i + 1:i + 1 + rd[i]].decode("utf-8", "replace"))
            i += 1 + rd[i]
        return "".join(parts)
    return rd.hex()


def parse_reply(msg: bytes) -> tuple[list[tuple[str, int, int]], list[str]]:
    """(questions as (name, type, class), the answers' data in text form) of a whole message.

    Every section is walked (authority and additional records too) and the message must end
    where the last record does: anything else raises ValueError with a one-line reason."""
    if len(msg) < 12:
        raise ValueError(f"{len(msg)} bytes, shorter than a header")
    qd, an, ns, ar = struct.unpack_from("!HHHH", msg, 4)
    pos = 12
    questions: list[tuple[str, int, int]] = []
    for _ in range(qd):
        name, pos = read_name(msg, pos)
        if pos + 4 > len(msg):
            raise ValueError("question cut short")
        qtype, qclass = struct.unpack_from("!HH", msg, pos)
        questions.append((name, qtype, qclass))
        pos += 4
    out: list[str] = []
    for i in range(an + ns + ar):
        _, pos = read_name(msg, pos)
        if pos + 10 > len(msg):
            raise ValueError("record header cut short")
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
        pos += 10
        if pos + rdlen > len(msg):
            raise ValueError("record data runs past the end")
        if i < an:
            out.append(_rdata_text(msg, rtype, pos, rdlen))
        pos += rdlen
    if pos != len(msg):
        raise ValueError(f"{len(msg) - pos} bytes after the last record")
    return questions, out


def answers(msg: bytes, qdcount: int, ancount: int) -> list[str]:
    """The answer section's data in text form (ValueError if the message is malformed)."""
    return parse_reply(msg)[1]


class DNSChecker(DatagramChecker):
    """dns: query, qtype, rcode, answer."""

    kind = "dns"
    cfg: DNSCheck

    def __init__(self, cfg: DNSCheck, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done):
        super().__init__(cfg, addr, port, loop, done)
        if not cfg.name:
            raise ValueError("dns check needs a query name")
        import random  # here, not at import: the loader imports this module for --check-config

        self.getrandbits = random.getrandbits
        qt = cfg.qtype
        self.qtype = int(qt[4:]) if qt.startswith("TYPE") else QTYPES[qt]
        self.rcode = RCODES[cfg.rcode]
        self.question = encode_name(cfg.name) + struct.pack("!HH", self.qtype, 1)
        self.qid = 0

    def payload(self) -> bytes:
        self.qid = self.getrandbits(16)
        return struct.pack("!HHHHHH", self.qid, 0x0100, 1, 0, 0, 0) + self.question

    def judge(self, data: bytes) -> tuple[bool, str] | None:
        """Up only for a well-formed reply to this query: our ID, the response bit, a standard
        query, our question echoed, every record inside the message; then rcode and ``expect``.
        A reply with another ID is a late answer to an earlier query: ignored."""
        if len(data) < 12:
            return False, f"dns reply is not DNS: {len(data)} bytes, shorter than a header"
        qid, flags = struct.unpack_from("!HH", data)
        if qid != self.qid:
            return None  # not our reply
        if not flags & 0x8000:
            return False, "dns reply is not a response (QR bit clear: the query echoed back?)"
        if (flags >> 11) & 0xF:
            return False, f"dns reply has opcode {(flags >> 11) & 0xF}, not a standard query"
        try:
            questions, got = parse_reply(data)
        except (ValueError, IndexError, struct.error) as e:
            return False, f"dns malformed reply: {e}"
        rcode = flags & 0xF
        name = RCODE_NAMES.get(rcode, str(rcode))
        if questions or rcode == 0:  # an error reply may leave the question out (RFC 6891 6.1.3)
            want_q = (self.cfg.name.rstrip(".").lower(), self.qtype, 1)
            if len(questions) != 1 or (questions[0][0].lower(), questions[0][1], questions[0][2]) != want_q:
                shown = f"{questions[0][0]} type {questions[0][1]}" if questions else "none"
                return False, f"dns reply answers another question ({shown}), not {self.cfg.name} {self.cfg.qtype}"
        if rcode != self.rcode:
            return False, f"dns rcode {name} for {self.cfg.name} {self.cfg.qtype}"
        want = self.cfg.expect
        if want:
            have = {g.rstrip(".").lower() for g in got}
            missing = [w for w in want if w.rstrip(".").lower() not in have]
            if missing:
                return False, f"dns {self.cfg.name} {self.cfg.qtype}: {missing[0]} not in answers {got[:4]}"
        return True, f"dns {name}, {len(got)} answers"
