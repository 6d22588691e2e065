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

from __future__ import annotations

import _socket  # not `socket`: its enum set-up costs ~0.1 s of start-up under emulation
import struct

from lvsd.ipvs import genl

from . import lvsadm_list as L
from .lvsadm_parse import FMT_EXACT, FMT_NOSORT, FMT_NUMERIC, FMT_RATE, FMT_STATS

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

# A GET_DEST reply as ip_vs_genl_fill_dest() writes it on Linux 3.18+ (tun fields 5.2+): every
# attribute, in this order, with these sizes. Kept equal to lvsd/ipvs/netlink.py's fast-path layout
# (tests/unit/test_genl.py compares them). (type, struct format of the value, value width)
_DEST_PARTS: tuple = (
    (2, None, 0),  # IPVS_CMD_ATTR_DEST, nested
    (1, "16s", 16),  # ADDR (the 16-byte union)
    (2, "H2x", 2),  # PORT (be16)
    (3, "I", 4),  # FWD_METHOD
    (4, "I", 4),  # WEIGHT
    (13, "B3x", 1),  # TUN_TYPE
    (14, "H2x", 2),  # TUN_PORT
    (15, "H2x", 2),  # TUN_FLAGS
    (5, "I", 4),  # U_THRESH
    (6, "I", 4),  # L_THRESH
    (7, "I", 4),  # ACTIVE_CONNS
    (8, "I", 4),  # INACT_CONNS
    (9, "I", 4),  # PERSIST_CONNS
    (11, "H2x", 2),  # ADDR_FAMILY
    (10, None, 0),  # STATS (32-bit counters), nested: skipped
    *((t, "4x" if t not in (4, 5) else "8x", 4 if t not in (4, 5) else 8) for t in range(1, 11)),
    (12, None, 0),  # STATS64, nested
    *((t, "Q", 8) for t in range(1, 11)),
)


def _layout() -> tuple[str, str, tuple, int]:
    """(values format, headers format, expected header words, payload size) of a GET_DEST reply."""
    vals, hdrs = [], []
    expected: list[int] = []
    nests: list[tuple[int, int]] = []
    size = 0
    for atype, fmt, width in _DEST_PARTS:
        if fmt is None:
            nests.append((len(expected), size))
            expected += [0, atype]
            vals.append("4x")
            hdrs.append("HH")
            size += 4
            continue
        expected += [4 + width, atype]
        pad = -width & 3
        vals.append("4x" + fmt)
        hdrs.append("HH" + f"{width + pad}x")
        size += 4 + width + pad
    (top_i, _), (st_i, st_off), (st64_i, st64_off) = nests
    expected[top_i] = size
    expected[st_i] = st64_off - st_off
    expected[st64_i] = size - st64_off
    return "".join(vals), "".join(hdrs), tuple(expected), size


_VALS, _HDRS, _EXPECTED_HDRS, DEST_REPLY_SIZE = _layout()
#: a whole dest reply message: nlmsghdr (len, type, flags, seq, pid) + genlmsghdr + the values
_DEST_MSG = struct.Struct("=IHHII4x" + _VALS)


def _row_struct(keep: frozenset[int]) -> struct.Struct:
    """A whole dest reply message unpacking only the value parts numbered in ``keep`` (0 ADDR,
    1 PORT, 2 FWD_METHOD, 3 WEIGHT, ... in _DEST_PARTS order, nests not counted): fewer Python
    objects per server. The rest are pad bytes of the same size."""
    out = ["=IHHII4x"]
    i = 0
    for _atype, fmt, width in _DEST_PARTS:
        if fmt is None:
            out.append("4x")
            continue
        out.append("4x" + (fmt if i in keep else f"{width + (-width & 3)}x"))
        i += 1
    return struct.Struct("".join(out))


# rows: (nlmsghdr: len, type, flags, seq, pid, ADDR, PORT, FWD_METHOD, WEIGHT, ACTIVE_CONNS,
#        INACT_CONNS, ADDR_FAMILY[, five counters of STATS64: conns..outbytes or cps..outbps])
_ROW_BASE = frozenset((0, 1, 2, 3, 9, 10, 12))
_ROW_PLAIN = _row_struct(_ROW_BASE)
_ROW_STATS = _row_struct(_ROW_BASE | frozenset(range(23, 28)))
_ROW_RATE = _row_struct(_ROW_BASE | frozenset(range(28, 33)))
_DEST_HDR_CHECK = struct.Struct("=20x" + _HDRS)
_DEST_MSG_LEN = genl.HDRLEN + DEST_REPLY_SIZE
_NLMSGHDR = struct.Struct("=IHHII")
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


# --- light stand-ins for the model's values (what lvsadm_list.service_head reads) ----------------


class _Key:
    __slots__ = ("af", "protocol", "addr", "port", "fwmark")


class _Svc:
    __slots__ = ("key", "scheduler", "flags", "timeout", "netmask", "pe_name", "stats")


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


def _service(payload: bytes) -> tuple[_Svc, tuple]:
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


# --- the listing --------------------------------------------------------------------------------

_layout_checked = False


def _dest_rows(sock: genl.GenlSocket, service_payload: bytes, row: struct.Struct) -> list[tuple]:
    """Dump one service's destinations; one tuple of values per server (see _ROW_PLAIN)."""
    global _layout_checked
    seq = sock.seq = (sock.seq + 1) & 0xFFFFFFFF
    s = sock.sock
    s.send(
        struct.pack("=IHHIIBBH", genl.HDRLEN + len(service_payload), sock.family_id,
                    genl.NLM_F_REQUEST | genl.NLM_F_DUMP, seq, 0, _CMD_GET_DEST, sock.version, 0)
        + service_payload
    )  # fmt: skip
    buf = sock._buf
    bufs = [buf]
    recv = s.recvmsg_into
    unpack_msg = row.unpack_from
    hdr = _NLMSGHDR.unpack_from
    msg_len = _DEST_MSG_LEN
    rows: list[tuple] = []
    append = rows.append
    while True:
        try:
            n, _anc, rflags, _addr = recv(bufs)
        except BlockingIOError:
            raise Unsupported("netlink receive timed out") from None
        if rflags & _MSG_TRUNC:
            raise Unsupported("netlink datagram truncated")
        pos = 0
        while pos + 16 <= n:
            if pos + msg_len <= n:
                v = unpack_msg(buf, pos)
                if v[0] == msg_len and v[3] == seq and v[1] > genl.NLMSG_OVERRUN:
                    if not _layout_checked:
                        if not _LITTLE or _DEST_HDR_CHECK.unpack_from(buf, pos) != _EXPECTED_HDRS:
                            raise Unsupported("unexpected dest reply layout")
                        _layout_checked = True
                    append(v)
                    pos += msg_len
                    continue
            ln, mtype, _fl, mseq, _pid = hdr(buf, pos)
            if ln < 16:
                break
            if mseq == seq:
                if mtype == genl.NLMSG_DONE:
                    return rows
                if mtype == genl.NLMSG_ERROR or mtype > genl.NLMSG_OVERRUN:
                    raise Unsupported("kernel error or unexpected reply in a dest dump")
            pos += (ln + 3) & ~3


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
    svcs = []
    keys = []
    for raw in raws:
        s, key = _service(raw)
        svcs.append(s)
        keys.append(key)
    order = range(len(svcs)) if fmt & FMT_NOSORT or len(svcs) < 2 else L.service_order(keys)
    namer = L.Namer(True)
    stats, rate = fmt & FMT_STATS, fmt & FMT_RATE
    largenum = L.largenum
    fwd_name = L.FWD_NAME
    tails: dict[tuple, str] = {}
    ntop = _socket.inet_ntop
    sort = not fmt & FMT_NOSORT
    append = out.append
    v6 = _socket.AF_INET6
    row = _ROW_STATS if stats else _ROW_RATE if rate else _ROW_PLAIN
    for i in order:
        append(L.service_head(svcs[i], fmt, namer)[1])
        items = []
        add = items.append
        plain4 = True  # every server IPv4: sortable by (address bytes, port), see below
        for r in _dest_rows(sock, raws[i], row):
            # r: see _ROW_PLAIN
            port = r[6]
            port = ((port & 0xFF) << 8) | (port >> 8)
            if r[11] == _AF_INET6:
                plain4 = False
                dname = f"[{ntop(v6, r[5])}]:{port}"
                key = r
            else:
                a4 = r[5][:4]
                dname = f"{ntop(2, a4)}:{port}"[:28]
                key = (a4, port)
            if stats:
                tk = r[12:17]
                tail = tails.get(tk)
                if tail is None:
                    tail = tails[tk] = "".join([largenum(x, fmt) for x in tk])
            elif rate:
                tail = f" {r[12]:8d} {r[13]:8d} {r[14]:8d}" + largenum(r[15], fmt) + largenum(r[16], fmt)
            else:
                tk = r[7:11]
                tail = tails.get(tk)
                if tail is None:
                    fwd, w, ac, ic = tk
                    tail = tails[tk] = (
                        f" {fwd_name.get(fwd & 7, '(null)'):<7} {w if w < 0x80000000 else w - 0x100000000:<6d} "
                        f"{ac:<10d} {ic:<10d}"
                    )
            add((key, f"  -> {dname:<28}{tail}"))
        if sort and len(items) > 1:
            if plain4 and _span4_ok(items):
                # no two addresses 2^31 or more apart: ipvsadm's wrapping comparison is plain
                # order, and big-endian bytes compare as the numbers do
                items.sort(key=_first)
            else:
                items = _sorted_dests(items)
        for _k, line in items:
            append(line)
    return out


def _span4_ok(items: list[tuple]) -> bool:
    lo = min(items, key=_first_addr)[0][0]
    hi = max(items, key=_first_addr)[0][0]
    return int.from_bytes(hi, "big") - int.from_bytes(lo, "big") < 0x80000000


def _first(item: tuple) -> tuple:
    return item[0]


def _first_addr(item: tuple) -> bytes:
    return item[0][0]


def _sorted_dests(items: list[tuple]) -> list[tuple]:
    """(key, line) pairs in ipvsadm's destination order (lvsadm_list.dest_order); key is the
    dump row of an IPv6 server, (address bytes, port) of an IPv4 one."""
    keys = []
    for k, _line in items:
        if len(k) == 2:
            keys.append((2, int.from_bytes(k[0], "big"), 0, 0, 0, k[1]))
        else:
            keys.append((k[11],) + _v6words(k[5]) + (((k[6] & 0xFF) << 8) | (k[6] >> 8),))
    return [items[i] for i in L.dest_order(keys)]
