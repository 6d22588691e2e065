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
        if len(data) < 12:
            return None
        qid, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", data)
        if qid != self.qid or not flags & 0x8000:
            return None  # not our reply
        rcode = flags & 0xF
        name = RCODE_NAMES.get(rcode, str(rcode))
        if rcode != self.rcode:
            return False, f"dns rcode {name} for {self.cfg.name} {self.cfg.qtype}"
        want = self.cfg.expect
        if want:
            try:
                got = answers(data, qd, an)
            except (ValueError, IndexError, struct.error):
                return False, "dns malformed reply"
            missing = [w for w in want if w.rstrip(".").lower() not in {g.rstrip(".").lower() for g in got}]
            if missing:
                return False, f"dns {self.cfg.name} {self.cfg.qtype}: {missing[0]} not in answers {got[:4]}"
        return True, f"dns {name}, {an} answers"
