"""lvsadm -Ln (and --stats, --rate, --exact, --nosort): the kernel table listed straight from the
netlink dump replies, without the backend, the model or any per-server object.

Why: scripts run ``ipvsadm -Ln`` in loops and on big tables; building 10,000 Destination
values only to print them cost more than the whole ipvsadm process (docs/performance.md,
"lvsadm"). This module imports genl (socket, struct, os, errno) and lvsadm_list (formatting and
ipvsadm's sort order, shared with the general path so both print the same bytes).

Contract: ``list_table(fmt)`` returns the lines ipvsadm prints, or raises; the caller then runs
the general path, which prints the same listing or ipvsadm's error message (a listing is
read-only, so trying twice is harmless). Anything unexpected -- a reply layout other than the
one checked below, a missing attribute, a kernel error -- raises ``Unsupported``.
"""

import _socket  # not `socket`: its enum set-up costs ~0.1 s of start-up under emulation
import struct
from itertools import chain, repeat

from lvsd.ipvs import genl
from lvsd.ipvs.layout import (
    DEST_HEADERS,
    DEST_HEADERS_FORMAT,
    DEST_REPLY_SIZE,
    DEST_VALUE_OFFSETS,
    DEST_VALUES_FORMAT,
)

from . import lvsadm_list as L
from .lvsadm_parse import FMT_EXACT, FMT_NOSORT, FMT_NUMERIC, FMT_RATE, FMT_STATS

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up)
if TYPE_CHECKING:  # the annotations naming these are quoted: nothing here is imported at run time
    from collections.abc import Callable
    from typing import Any

#: the formats this path prints (with FMT_NUMERIC required); anything else takes the general path
FORMATS = FMT_NUMERIC | FMT_STATS | FMT_RATE | FMT_EXACT | FMT_NOSORT


class Unsupported(Exception):
    """Something this lean path does not handle: let the general path list the table."""


def supports(fmt: int) -> bool:
    """Can list_table() print this format (numeric; plain, --stats or --rate)?"""
    return (
        bool(fmt & FMT_NUMERIC)
        and not fmt & ~FORMATS
        and (fmt & (FMT_STATS | FMT_RATE)) != (FMT_STATS | FMT_RATE)
    )


# --- include/uapi/linux/ip_vs.h (the few we need; lvsd/ipvs/netlink.py has them all) ---------------

_CMD_GET_SERVICE, _CMD_GET_DEST, _CMD_GET_INFO = 4, 8, 15
_ATTR_SERVICE = 1
_SVC_AF, _SVC_PROTOCOL, _SVC_ADDR, _SVC_PORT, _SVC_FWMARK, _SVC_SCHED = 1, 2, 3, 4, 5, 6
_SVC_FLAGS, _SVC_TIMEOUT, _SVC_NETMASK, _SVC_STATS, _SVC_PE, _SVC_STATS64 = 7, 8, 9, 10, 11, 12
_INFO_VERSION, _INFO_CONN_TAB_SIZE = 1, 2
_SVC_F_HASHED = 0x0002
_AF_INET6 = 10

# A GET_DEST reply's layout is lvsd/ipvs/layout.py's (the backend's too).
#: a whole dest reply message: nlmsghdr (len, type, flags, seq, pid) + genlmsghdr + the values
_DEST_MSG = struct.Struct("=IHHII4x" + DEST_VALUES_FORMAT)
_DEST_MSG_LEN = genl.HDRLEN + DEST_REPLY_SIZE
#: value offsets within a whole reply message (see layout.DEST_VALUE_OFFSETS for the numbering)
_VALUE_OFFSETS = tuple((genl.HDRLEN + off, fmt, width) for off, fmt, width in DEST_VALUE_OFFSETS)


def _column_struct(order: str, picks: tuple[tuple[int, str], ...]) -> struct.Struct:
    """A whole dest reply message (no alignment, byte order ``order``) unpacking only the values
    in ``picks`` as (value number, struct format); everything else is pad bytes."""
    out, pos = [order], 0
    for i, fmt in picks:
        off = _VALUE_OFFSETS[i][0]
        out.append(f"{off - pos}x{fmt}")
        pos = off + struct.calcsize("<" + fmt)
    out.append(f"{_DEST_MSG_LEN - pos}x")
    return struct.Struct("".join(out))


# Row by row (_row_lines): ADDR (the 16-byte union), PORT (read in host order), FWD_METHOD,
# WEIGHT (signed, as ipvsadm prints it), ACTIVE_CONNS, INACT_CONNS, ADDR_FAMILY[, five STATS64
# counters: conns..outbytes or cps..outbps].
_ROW_BASE = ((0, "16s"), (1, "H"), (2, "I"), (3, "i"), (9, "I"), (10, "I"), (12, "H"))
_ROW_PLAIN = _column_struct("=", _ROW_BASE)
_ROW_STATS = _column_struct("=", (*_ROW_BASE, *((i, "Q") for i in range(23, 28))))
_ROW_RATE = _column_struct("=", (*_ROW_BASE, *((i, "Q") for i in range(28, 33))))
_DEST_HDR_CHECK = struct.Struct("=20x" + DEST_HEADERS_FORMAT)
_NLMSGHDR = struct.Struct("=IHHII")
_NLMSGHDR4 = struct.Struct("=IHHI")
_REQ_HDR = struct.Struct("=IHHIIBBH")  # nlmsghdr + genlmsghdr of a request
_STATS64 = struct.Struct("=" + "HHQ" * 10)
_STATS64_TYPES = tuple(range(1, 11))
_u16 = struct.Struct("=H").unpack_from
_nla_hdr = struct.Struct("=HH").unpack_from
_u32 = struct.Struct("=I").unpack_from
_be16 = struct.Struct(">H").unpack_from
_be32 = struct.Struct(">I").unpack_from
_v6words = struct.Struct(">4I").unpack
_LITTLE = struct.pack("=H", 1) == b"\x01\x00"
_MSG_TRUNC = int(_socket.MSG_TRUNC)


# Whole-table rows (see _table_lines): the address's first four bytes, the port's two
# (big-endian: bytes compare as the numbers do), what the format prints, then the family. The
# plain listing's columns (forwarding method, weight, active and inactive connections) come as
# the raw span of attributes from FWD_METHOD to INACT_CONNS: one bytes object per server, and
# the same bytes for every idle server of the same weight and method (see _tail).
_SPAN = _VALUE_OFFSETS[10][0] + 4 - _VALUE_OFFSETS[2][0]
_ROWS_PLAIN = _column_struct("<", ((0, "4s"), (1, "2s"), (2, f"{_SPAN}s"), (12, "H")))
# --stats and --rate: their five STATS64 counters as one span too (12 bytes each: header, u64)
_ROWS_STATS = _column_struct("<", ((0, "4s"), (1, "2s"), (12, "H"), (23, "56s")))
_ROWS_RATE = _column_struct("<", ((0, "4s"), (1, "2s"), (12, "H"), (28, "56s")))
_COUNTERS = struct.Struct("=Q4xQ4xQ4xQ4xQ")  # the five values within such a span


def _span_values() -> struct.Struct:
    """FWD_METHOD, WEIGHT (signed, as ipvsadm prints it), ACTIVE_CONNS, INACT_CONNS within
    that span."""
    out, at = ["="], _VALUE_OFFSETS[2][0]
    for i, f in ((2, "I"), (3, "i"), (9, "I"), (10, "I")):
        off = _VALUE_OFFSETS[i][0]
        out.append(f"{off - at}x{f}")
        at = off + 4
    return struct.Struct("".join(out))


_SPAN_VALUES = _span_values()


# --- light stand-ins for the model's values (what lvsadm_list.service_head reads) ----------------


class _Key:
    __slots__ = ("af", "protocol", "addr", "port", "fwmark")
    af: int
    protocol: int
    addr: str
    port: int
    fwmark: int


class _Svc:
    __slots__ = ("key", "scheduler", "flags", "timeout", "netmask", "pe_name", "stats")
    key: _Key
    scheduler: str
    flags: int
    timeout: int
    netmask: int
    pe_name: str
    stats: "_Stats"  # None when the format prints no counters (then nothing reads it)


class _Stats:
    __slots__ = (
        "conns",
        "inpkts",
        "outpkts",
        "inbytes",
        "outbytes",
        "cps",
        "inpps",
        "outpps",
        "inbps",
        "outbps",
    )

    def __init__(self, v: tuple) -> None:
        (self.conns, self.inpkts, self.outpkts, self.inbytes, self.outbytes,
         self.cps, self.inpps, self.outpps, self.inbps, self.outbps) = v  # fmt: skip


def _stats(payload: bytes | None) -> tuple:
    """IPVS_SVC_ATTR_STATS64 (or the older STATS) -> the ten counters in attribute order."""
    if not payload:
        return (0,) * 10
    if len(payload) == 120:
        v = _STATS64.unpack(payload)
        if v[1::3] == _STATS64_TYPES:
            return v[2::3]
    a = genl.parse_attrs(payload)
    g = genl.get_uint
    return tuple(g(a[t]) if t in a else 0 for t in _STATS64_TYPES)


def _service_attrs(payload: bytes) -> tuple[_Svc, tuple]:
    """A GET_SERVICE reply -> (service stand-in, its ipvsadm sort key)."""
    if len(payload) < 4:
        raise Unsupported("short service reply")
    n, t = _nla_hdr(payload)
    if t & genl.NLA_TYPE_MASK != _ATTR_SERVICE or n > len(payload):
        raise Unsupported("unexpected service reply")
    a = genl.parse_attrs(payload, 4, n)
    try:
        af = _u16(a[_SVC_AF])[0]
        k = _Key()
        k.af = af
        fw = a.get(_SVC_FWMARK)
        if fw is not None:
            k.protocol, k.addr, k.port, k.fwmark = 0, "", 0, _u32(fw)[0]
            words: tuple = (0, 0, 0, 0)
        else:
            raw = a[_SVC_ADDR]
            k.protocol = _u16(a[_SVC_PROTOCOL])[0]
            k.port = _be16(a[_SVC_PORT])[0]
            k.fwmark = 0
            if af == _AF_INET6:
                k.addr = _socket.inet_ntop(_socket.AF_INET6, raw[:16])
                words = _v6words(raw[:16])
            else:
                k.addr = _socket.inet_ntop(_socket.AF_INET, raw[:4])
                words = (int.from_bytes(raw[:4], "big"), 0, 0, 0)
        s = _Svc()
        s.key = k
        flags, mask = struct.unpack_from("=II", a[_SVC_FLAGS]) if _SVC_FLAGS in a else (0, 0)
        s.flags = flags & mask & ~_SVC_F_HASHED
        s.scheduler = genl.get_str(a[_SVC_SCHED]) if _SVC_SCHED in a else ""
        s.timeout = _u32(a[_SVC_TIMEOUT])[0] if _SVC_TIMEOUT in a else 0
        nm = a[_SVC_NETMASK]  # always sent; without it the model's default applies: general path
        s.netmask = _u32(nm)[0] if af == _AF_INET6 else _be32(nm)[0]
        pe = a.get(_SVC_PE)
        s.pe_name = genl.get_str(pe) if pe else ""
        st = a.get(_SVC_STATS64)
        s.stats = _Stats(_stats(st) if st is not None else _stats(a.get(_SVC_STATS)))
    except (KeyError, struct.error) as e:
        raise Unsupported(f"service reply without {e}") from None
    return s, (k.fwmark, af, k.protocol) + words + (k.port,)


#: GET_SERVICE reply layouts seen, by reply length: (headers Struct, the headers expected,
#: values Struct, where each value is). A table's services mostly share a few layouts (the
#: scheduler name's length and a PE name change them), so after the first reply of each, a
#: reply costs one header comparison and one unpack instead of an attribute walk.
_svc_layouts: dict[int, list[tuple[struct.Struct, tuple, struct.Struct, dict[str, int]]]] = {}
_SVC_FIELDS = {_SVC_AF: "H", _SVC_PROTOCOL: "H", _SVC_ADDR: "16s", _SVC_PORT: "2s", _SVC_FWMARK: "I",
               _SVC_FLAGS: "II", _SVC_TIMEOUT: "I", _SVC_NETMASK: "4s"}  # fmt: skip


def _svc_layout(payload: bytes) -> tuple[struct.Struct, tuple, struct.Struct, dict[str, int]] | None:
    """This reply's layout (see _svc_layouts), or None if it is not one the lean path decodes by
    position (then _service_attrs() parses it attribute by attribute)."""
    if len(payload) < 4 or not _LITTLE:
        return None
    heads: list[tuple[int, int, int]] = []  # (offset, nla_len, nla_type) of every header
    vals: list[tuple[int, str, str]] = []  # (offset, format, name)
    n, t = _nla_hdr(payload)
    if t != _ATTR_SERVICE or n != len(payload):
        return None
    heads.append((0, n, t))
    pos, seen = 4, set()
    while pos + 4 <= n:
        ln, at = _nla_hdr(payload, pos)
        if ln < 4 or pos + ln > n or at in seen or at & ~genl.NLA_TYPE_MASK:
            return None
        seen.add(at)
        heads.append((pos, ln, at))
        width = ln - 4
        if at in _SVC_FIELDS:
            fmt = _SVC_FIELDS[at]
            if struct.calcsize("=" + fmt) != width:
                return None
            vals.append((pos + 4, fmt, str(at)))
        elif at in (_SVC_SCHED, _SVC_PE):
            if width < 1 or payload[pos + ln - 1] != 0:
                return None
            vals.append((pos + 4, f"{width - 1}s", str(at)))
        elif at == _SVC_STATS64:
            sub = pos + 4
            for want in _STATS64_TYPES:
                if sub + 12 > pos + ln or _nla_hdr(payload, sub) != (12, want):
                    return None
                heads.append((sub, 12, want))
                vals.append((sub + 4, "Q", f"st{want}"))
                sub += 12
            if sub != pos + ln:
                return None
        elif at != _SVC_STATS:  # the 32-bit counters: STATS64 has them all
            return None
        pos += (ln + 3) & ~3
    if pos != n or _SVC_AF not in seen or _SVC_STATS64 not in seen or _SVC_NETMASK not in seen:
        return None
    if (_SVC_FWMARK in seen) == (_SVC_ADDR in seen):
        return None

    def layout(items: "list[tuple[int, Any, Any]]", fmt_of: "Callable[[Any], str]") -> str:
        out, at = ["="], 0
        for item in sorted(items):
            out.append(f"{item[0] - at}x{fmt_of(item)}")
            at = item[0] + struct.calcsize("=" + fmt_of(item))
        return "".join(out)

    hs = struct.Struct(layout(heads, lambda h: "HH"))
    vs = struct.Struct(layout(vals, lambda v: v[1]))
    where, i = {}, 0
    for _o, f, name in sorted(vals):
        where[name] = i
        i += 2 if f == "II" else 1  # FLAGS (flags, mask) is the only two-value field
    return hs, tuple(x for h in sorted(heads) for x in h[1:]), vs, where


def _service(payload: bytes, with_stats: bool = True) -> tuple[_Svc, tuple]:
    """A GET_SERVICE reply -> (service stand-in, its ipvsadm sort key); by position when its
    layout is known (see _svc_layouts), else through _service_attrs()."""
    lays = _svc_layouts.get(len(payload))
    if lays is None:
        lay = _svc_layout(payload)
        lays = _svc_layouts[len(payload)] = [lay] if lay else []
    for lay in lays:
        if lay[0].unpack_from(payload) == lay[1]:
            break
    else:
        lay = _svc_layout(payload)
        if lay is None or len(lays) >= 8:
            return _service_attrs(payload)
        lays.append(lay)
    vs, w = lay[2], lay[3]
    v = vs.unpack_from(payload)
    af = v[w["1"]]
    k = _Key()
    k.af = af
    if "5" in w:
        k.protocol, k.addr, k.port, k.fwmark = 0, "", 0, v[w["5"]]
        words: tuple = (0, 0, 0, 0)
    else:
        raw = v[w["3"]]
        k.protocol = v[w["2"]]
        k.port = int.from_bytes(v[w["4"]], "big")
        k.fwmark = 0
        if af == _AF_INET6:
            k.addr = _socket.inet_ntop(_socket.AF_INET6, raw)
            words = _v6words(raw)
        else:
            k.addr = _socket.inet_ntop(_socket.AF_INET, raw[:4])
            words = (int.from_bytes(raw[:4], "big"), 0, 0, 0)
    s = _Svc()
    s.key = k
    if "7" in w:
        i = w["7"]
        s.flags = v[i] & v[i + 1] & ~_SVC_F_HASHED
    else:
        s.flags = 0
    s.scheduler = v[w["6"]].decode() if "6" in w else ""
    s.timeout = v[w["8"]] if "8" in w else 0
    s.netmask = int.from_bytes(v[w["9"]], "little" if af == _AF_INET6 else "big")
    s.pe_name = v[w["11"]].decode() if "11" in w else ""
    s.stats = _Stats(v[w["st1"] : w["st1"] + 10]) if with_stats else None  # type: ignore[assignment]  # None: not read
    return s, (k.fwmark, af, k.protocol) + words + (k.port,)


# --- the listing --------------------------------------------------------------------------------

_layout_checked = False
_lens: dict[int, memoryview] = {}  # k -> k message lengths, as the cast view compares them


def _dest_blocks(sock: genl.GenlSocket, payloads: list[bytes]) -> list[bytes]:
    """Dump each service's destinations (``payloads``: the services' GET_SERVICE replies, which
    identify them): per service, its reply messages back to back, each exactly _DEST_MSG_LEN bytes
    of the checked layout, as one bytes object."""
    s = sock.sock
    fam, ver = sock.family_id, sock.version
    buf, view = sock._buf, sock._view
    size = len(buf)
    recv = s.recv_into
    head4 = _NLMSGHDR4.unpack_from
    pack = _REQ_HDR.pack
    m = _DEST_MSG_LEN
    words = m // 4
    flags = genl.NLM_F_REQUEST | genl.NLM_F_DUMP
    done = genl.NLMSG_DONE
    blocks: list[bytes] = []
    for p in payloads:
        seq = sock.seq = (sock.seq + 1) & 0xFFFFFFFF
        s.send(pack(genl.HDRLEN + len(p), fam, flags, seq, 0, _CMD_GET_DEST, ver, 0) + p)
        parts: list[bytes] = []
        while True:
            try:
                n = recv(buf, 0, _MSG_TRUNC)
            except BlockingIOError:
                raise Unsupported("netlink receive timed out") from None
            if n > size:
                raise Unsupported("netlink datagram truncated")
            ln, mtype, _fl, mseq = head4(buf)
            if mseq == seq:
                # the usual datagrams of one dump: k dest replies (all from one dump callback:
                # the same type and sequence; their lengths are checked), then NLMSG_DONE alone
                if mtype == fam and ln == m and n % m == 0 and _LITTLE:
                    k = n // m
                    if k == 1 or view[:n].cast("I")[::words] == _lengths(k):
                        _check_layout(buf, 0)
                        parts.append(bytes(view[:n]))
                        continue
                elif mtype == done and n == ln:
                    break
            if _walk(buf, view, n, seq, fam, parts):
                break
        blocks.append(parts[0] if len(parts) == 1 else b"".join(parts))
    return blocks


def _check_layout(buf: bytearray, pos: int) -> None:
    """The first dest reply of the process must have exactly layout.py's header words; the rest,
    from the same kernel code, are then checked by length only."""
    global _layout_checked
    if not _layout_checked:
        if _DEST_HDR_CHECK.unpack_from(buf, pos) != DEST_HEADERS:
            raise Unsupported("unexpected dest reply layout")
        _layout_checked = True


def _lengths(k: int) -> memoryview:
    """k dest reply lengths as native u32s (not `array`: importing it imports collections.abc,
    ~80 ms of start-up under emulation)."""
    v = _lens.get(k)
    if v is None:
        v = _lens[k] = memoryview(struct.pack(f"={k}I", *[_DEST_MSG_LEN] * k)).cast("I")
    return v


def _walk(buf: bytearray, view: memoryview, n: int, seq: int, fam: int, parts: list[bytes]) -> bool:
    """Any other datagram of a dest dump, message by message: dest replies are added to
    ``parts``; True at NLMSG_DONE."""
    hdr = _NLMSGHDR.unpack_from
    m = _DEST_MSG_LEN
    pos = 0
    while pos + 16 <= n:
        ln, mtype, _fl, mseq, _pid = hdr(buf, pos)
        if ln < 16:
            break
        if mseq == seq:
            if mtype == genl.NLMSG_DONE:
                return True
            if mtype == genl.NLMSG_ERROR or mtype != fam:
                raise Unsupported("kernel error or unexpected reply in a dest dump")
            if ln != m or pos + ln > n or not _LITTLE:
                raise Unsupported("unexpected dest reply size")
            _check_layout(buf, pos)
            parts.append(bytes(view[pos : pos + ln]))
        pos += (ln + 3) & ~3
    return False


_concat = str.__add__  # not operator.add: importing operator costs ~10 ms under emulation
_FWD_NAMES = {i: L.FWD_NAME.get(i, "(null)") for i in range(8)}
_BIG = 100000000  # largenum() prints "%9d" below this, in both --exact and rounded forms


def _plain_tail(fwd: int, w: int, ac: int, ic: int) -> str:
    """The plain listing's columns after the address."""
    return f" {_FWD_NAMES[fwd & 7]:<7} {w:<6d} {ac:<10d} {ic:<10d}"


def _tail(span: bytes) -> str:
    """_plain_tail() of a server's span of attributes (see _ROWS_PLAIN)."""
    return _plain_tail(*_SPAN_VALUES.unpack(span))


def _counts_tail(v: tuple, fmt: int) -> str:
    """--stats / --rate: the columns after the address, from the five counters."""
    if fmt & FMT_RATE:
        return f" {v[0]:8d} {v[1]:8d} {v[2]:8d}" + L.largenum(v[3], fmt) + L.largenum(v[4], fmt)
    return "".join([L.largenum(x, fmt) for x in v])


def _count_tail(span: bytes, fmt: int) -> str:
    """_counts_tail() of a server's span of counters."""
    return _counts_tail(_COUNTERS.unpack(span), fmt)


def _count_columns(cols: list, fmt: int) -> str:
    """--stats / --rate: the line pattern for these five counter columns (formatted in place:
    a column with a value that needs largenum()'s K/M/G units, or --exact's wider field, becomes
    largenum()'s strings)."""
    parts = ["  -> %-28s"]
    for j, c in enumerate(cols):
        if fmt & FMT_RATE and j < 3:
            parts.append(" %8d")
        elif max(c) < _BIG:
            parts.append("%9d")
        else:
            parts.append("%s")
            cols[j] = list(map(L.largenum, c, repeat(fmt)))
    return "".join(parts)


def _table_lines(blocks: list[bytes], fmt: int) -> list[list[str] | None]:
    """Every service's server lines (``blocks`` from _dest_blocks, in listing order) as ipvsadm
    prints them, in its order; formatted a column at a time over the whole table (a handful of
    C-level passes, not a dozen Python steps per server). None for a service this cannot do (an
    IPv6 server; addresses 2^31 or more apart, where ipvsadm's wrapping comparison is not plain
    order): the caller formats those with _row_lines()."""
    m = _DEST_MSG_LEN
    counts = [len(b) // m for b in blocks]
    n = sum(counts)
    if not n:
        return [[] for _ in blocks]
    counted = fmt & (FMT_STATS | FMT_RATE)
    unpack = (_ROWS_STATS if fmt & FMT_STATS else _ROWS_RATE if counted else _ROWS_PLAIN).iter_unpack
    if fmt & FMT_NOSORT:
        rows = list(chain.from_iterable(map(unpack, blocks)))
    else:
        # each service's servers by (address, port): IPv4 rows are unique there, so the other
        # fields never take part (IPv6 services are redone row by row anyway)
        rows = list(chain.from_iterable(map(sorted, map(unpack, blocks))))
    cols = list(zip(*rows, strict=True))
    a4s, p2s = cols[0], cols[1]
    afs = cols[2] if counted else cols[3]
    bad: set[int] = set()
    if afs.count(_socket.AF_INET) != n or (
        not fmt & FMT_NOSORT
        and int.from_bytes(max(a4s), "big") - int.from_bytes(min(a4s), "big") >= 0x80000000
    ):
        bad = _odd_services(counts, a4s, afs, fmt)
    pstr = {p: f":{int.from_bytes(p, 'big')}" for p in set(p2s)}
    names = map(_concat, map(_socket.inet_ntop, repeat(_socket.AF_INET, n), a4s), map(pstr.__getitem__, p2s))
    if counted:
        spans = cols[3]
        distinct = set(spans)
        if len(distinct) * 4 <= n:  # idle or alike servers: each set of counters formatted once
            tails = {t: _count_tail(t, fmt) for t in distinct}
            lines = list(map(_concat, map("  -> %-28s".__mod__, names), map(tails.__getitem__, spans)))
        else:
            vals = list(zip(*map(_COUNTERS.unpack, spans), strict=True))
            line = _count_columns(vals, fmt)
            lines = list(map(line.__mod__, zip(names, *vals, strict=True)))
    else:
        spans = cols[2]
        tails = {t: _tail(t) for t in set(spans)}
        lines = list(map(_concat, map("  -> %-28s".__mod__, names), map(tails.__getitem__, spans)))
    out: list[list[str] | None] = []
    pos = 0
    for i, c in enumerate(counts):
        out.append(None if i in bad else lines[pos : pos + c])
        pos += c
    return out


def _odd_services(counts: list[int], a4s: tuple, afs: tuple, fmt: int) -> set[int]:
    """The services (by position) with an IPv6 server, or (when sorting) IPv4 servers 2^31 or
    more apart: _table_lines() leaves them to _row_lines()."""
    bad = set()
    pos = 0
    for i, c in enumerate(counts):
        if c:
            if afs[pos : pos + c].count(_socket.AF_INET) != c:
                bad.add(i)
            elif not fmt & FMT_NOSORT:
                # sorted: the service's first and last servers are its lowest and highest
                if int.from_bytes(a4s[pos + c - 1], "big") - int.from_bytes(a4s[pos], "big") >= 0x80000000:
                    bad.add(i)
        pos += c
    return bad


def list_table(fmt: int) -> list[str]:
    """ipvsadm -L with this format (see supports()): the lines it prints, header to last server."""
    sock = genl.GenlSocket("IPVS", timeout=30.0)
    try:
        return _list(sock, fmt)
    except OSError as e:
        raise Unsupported(str(e)) from None
    finally:
        sock.close()


def _list(sock: genl.GenlSocket, fmt: int) -> list[str]:
    (info,) = sock.request(_CMD_GET_INFO)
    a = genl.parse_attrs(info)
    v = _u32(a[_INFO_VERSION])[0]
    out: list = [
        f"IP Virtual Server version {v >> 16}.{(v >> 8) & 255}.{v & 255} (size={_u32(a[_INFO_CONN_TAB_SIZE])[0]})",
        L.title(fmt),
    ]
    raws = sock.dump(_CMD_GET_SERVICE)
    with_stats = bool(fmt & (FMT_STATS | FMT_RATE))  # only those print a service's counters
    svcs = []
    keys = []
    for raw in raws:
        s, key = _service(raw, with_stats)
        svcs.append(s)
        keys.append(key)
    order = range(len(svcs)) if fmt & FMT_NOSORT or len(svcs) < 2 else L.service_order(keys)
    namer = L.Namer(True)
    head = L.service_head
    blocks = _dest_blocks(sock, [raws[i] for i in order])
    append = out.append
    for i, blk, lines in zip(order, blocks, _table_lines(blocks, fmt), strict=True):
        append(head(svcs[i], fmt, namer)[1])
        out += _row_lines(blk, fmt) if lines is None else lines
    return out


def _row_lines(blk: bytes, fmt: int) -> list[str]:
    """One service's servers (a _dest_blocks block) as ipvsadm prints them, server by server:
    every case, _table_lines() only the common ones."""
    counted = fmt & (FMT_STATS | FMT_RATE)
    ntop = _socket.inet_ntop
    v6 = _socket.AF_INET6
    row = _ROW_STATS if fmt & FMT_STATS else _ROW_RATE if counted else _ROW_PLAIN
    items: list[tuple[tuple[Any, ...], str]] = []  # (sort key, line)
    add = items.append
    plain4 = True  # every server IPv4: sortable by (address bytes, port), see below
    for r in row.iter_unpack(blk):
        addr, port, af = r[0], r[1], r[6]  # see _ROW_BASE
        port = ((port & 0xFF) << 8) | (port >> 8)
        if af == _AF_INET6:
            plain4 = False
            dname = f"[{ntop(v6, addr)}]:{port}"
            key: tuple = (af, *_v6words(addr), port)
        else:
            a4 = addr[:4]
            dname = f"{ntop(2, a4)}:{port}"[:28]
            key = (a4, port)
        tail = _counts_tail(r[7:12], fmt) if counted else _plain_tail(*r[2:6])
        add((key, f"  -> {dname:<28}{tail}"))
    if not fmt & FMT_NOSORT and len(items) > 1:
        if plain4 and _span4_ok(items):
            # no two addresses 2^31 or more apart: ipvsadm's wrapping comparison is plain
            # order, and big-endian bytes compare as the numbers do
            items.sort(key=_first)
        else:
            items = _sorted_dests(items)
    return [line for _k, line in items]


def _span4_ok(items: list[tuple]) -> bool:
    lo = min(items, key=_first_addr)[0][0]
    hi = max(items, key=_first_addr)[0][0]
    return int.from_bytes(hi, "big") - int.from_bytes(lo, "big") < 0x80000000


def _first(item: tuple) -> tuple:
    return item[0]


def _first_addr(item: tuple) -> bytes:
    return item[0][0]


def _sorted_dests(items: list[tuple]) -> list[tuple]:
    """(key, line) pairs in ipvsadm's destination order (lvsadm_list.dest_order); key is
    (address bytes, port) of an IPv4 server, dest_order's key already for an IPv6 one."""
    keys = [(2, int.from_bytes(k[0], "big"), 0, 0, 0, k[1]) if len(k) == 2 else k for k, _line in items]
    return [items[i] for i in L.dest_order(keys)]
