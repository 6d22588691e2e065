"""NetlinkBackend: the kernel's IPVS table through the "IPVS" generic-netlink family.

Encodings follow include/uapi/linux/ip_vs.h and net/netfilter/ipvs/ip_vs_ctl.c (checked against
ipvsadm 1.31 on Linux 6.1): addresses are raw bytes (4 or 16), ports and TUN_PORT big-endian
u16, the IPv4 netmask a big-endian u32 mask while the IPv6 one is the prefix length as a
host-order u32, service flags the struct {flags, mask} with mask ~0 (replace all flags, as
ipvsadm does on -A and -E: editing without -p clears persistence).

Writes go through ``apply()``: every op is validated first (nothing is sent if one is bad),
encoded, and sent in as few sendmsg() calls as the socket buffers allow (genl.GenlSocket.batch);
each kernel refusal comes back as ``IPVSError(op, errno)``.

Imports only cheap stdlib modules (socket, struct, errno, os) besides lvsd.ipvs itself.
"""

from __future__ import annotations

import _socket  # not `socket`: its enum set-up costs ~0.1 s of start-up under emulation
import errno as _errno
import struct
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import genl
from .backend import Backend, BackendUnavailable, BatchError, IPVSError, Op, OpKind
from .layout import DEST_HEADERS, DEST_HEADERS_FORMAT, DEST_REPLY_SIZE, DEST_VALUES_FORMAT
from .model import (
    AF_INET,
    AF_INET6,
    Connection,
    Destination,
    DestKey,
    Forward,
    Info,
    Service,
    ServiceEntry,
    ServiceKey,
    Stats,
    SyncDaemon,
    Timeouts,
    TunType,
    normalize_addr,
)

# --- include/uapi/linux/ip_vs.h -----------------------------------------------------------------

IPVS_GENL_NAME = "IPVS"

IPVS_CMD_NEW_SERVICE = 1
IPVS_CMD_SET_SERVICE = 2
IPVS_CMD_DEL_SERVICE = 3
IPVS_CMD_GET_SERVICE = 4
IPVS_CMD_NEW_DEST = 5
IPVS_CMD_SET_DEST = 6
IPVS_CMD_DEL_DEST = 7
IPVS_CMD_GET_DEST = 8
IPVS_CMD_NEW_DAEMON = 9
IPVS_CMD_DEL_DAEMON = 10
IPVS_CMD_GET_DAEMON = 11
IPVS_CMD_SET_CONFIG = 12
IPVS_CMD_GET_CONFIG = 13
IPVS_CMD_SET_INFO = 14
IPVS_CMD_GET_INFO = 15
IPVS_CMD_ZERO = 16
IPVS_CMD_FLUSH = 17

IPVS_CMD_ATTR_SERVICE = 1
IPVS_CMD_ATTR_DEST = 2
IPVS_CMD_ATTR_DAEMON = 3
IPVS_CMD_ATTR_TIMEOUT_TCP = 4
IPVS_CMD_ATTR_TIMEOUT_TCP_FIN = 5
IPVS_CMD_ATTR_TIMEOUT_UDP = 6

IPVS_SVC_ATTR_AF = 1
IPVS_SVC_ATTR_PROTOCOL = 2
IPVS_SVC_ATTR_ADDR = 3
IPVS_SVC_ATTR_PORT = 4
IPVS_SVC_ATTR_FWMARK = 5
IPVS_SVC_ATTR_SCHED_NAME = 6
IPVS_SVC_ATTR_FLAGS = 7
IPVS_SVC_ATTR_TIMEOUT = 8
IPVS_SVC_ATTR_NETMASK = 9
IPVS_SVC_ATTR_STATS = 10
IPVS_SVC_ATTR_PE_NAME = 11
IPVS_SVC_ATTR_STATS64 = 12

IPVS_DEST_ATTR_ADDR = 1
IPVS_DEST_ATTR_PORT = 2
IPVS_DEST_ATTR_FWD_METHOD = 3
IPVS_DEST_ATTR_WEIGHT = 4
IPVS_DEST_ATTR_U_THRESH = 5
IPVS_DEST_ATTR_L_THRESH = 6
IPVS_DEST_ATTR_ACTIVE_CONNS = 7
IPVS_DEST_ATTR_INACT_CONNS = 8
IPVS_DEST_ATTR_PERSIST_CONNS = 9
IPVS_DEST_ATTR_STATS = 10
IPVS_DEST_ATTR_ADDR_FAMILY = 11
IPVS_DEST_ATTR_STATS64 = 12
IPVS_DEST_ATTR_TUN_TYPE = 13
IPVS_DEST_ATTR_TUN_PORT = 14
IPVS_DEST_ATTR_TUN_FLAGS = 15

IPVS_DAEMON_ATTR_STATE = 1
IPVS_DAEMON_ATTR_MCAST_IFN = 2
IPVS_DAEMON_ATTR_SYNC_ID = 3
IPVS_DAEMON_ATTR_SYNC_MAXLEN = 4
IPVS_DAEMON_ATTR_MCAST_GROUP = 5
IPVS_DAEMON_ATTR_MCAST_GROUP6 = 6
IPVS_DAEMON_ATTR_MCAST_PORT = 7
IPVS_DAEMON_ATTR_MCAST_TTL = 8

IPVS_INFO_ATTR_VERSION = 1
IPVS_INFO_ATTR_CONN_TAB_SIZE = 2

IP_VS_CONN_F_FWD_MASK = 0x7
IP_VS_SVC_F_HASHED = 0x0002

_nla_pack = struct.Struct("=HH").pack
_u16 = struct.Struct("=H")
_u32 = struct.Struct("=I")
_be16 = struct.Struct(">H")
_be32 = struct.Struct(">I")
_flags = struct.Struct("=II")
_inet_pton = _socket.inet_pton
_inet_ntop = _socket.inet_ntop

_U32_ATTR = struct.Struct("=HHI")
if TYPE_CHECKING:
    from typing import TypeVar

    _T = TypeVar("_T")

_ENCODE_CACHE_MAX = 4096


def _addr_bytes(af: int, addr: str) -> bytes:
    fam = _socket.AF_INET6 if af == AF_INET6 else _socket.AF_INET
    try:
        return _inet_pton(fam, addr)
    except (OSError, TypeError):  # not canonical text (e.g. "[::1]"): let the model normalize it
        return _inet_pton(fam, normalize_addr(addr, af)[1])


def _addr_text(af: int, raw: bytes) -> str:
    """Kernel address bytes -> the canonical text model.normalize_addr() produces."""
    if af == AF_INET6:
        text = _inet_ntop(_socket.AF_INET6, raw[:16])
        if "." in text:  # v4-mapped/compatible: ipaddress prints these as plain hextets
            import ipaddress

            text = str(ipaddress.IPv6Address(raw[:16]))
        return text
    return _inet_ntop(_socket.AF_INET, raw[:4])


def encode_service_id(key: ServiceKey) -> bytes:
    """The identifying attributes of a service (what DEL/GET/ZERO and dest commands need)."""
    if key.fwmark:
        return _nla_pack(6, IPVS_SVC_ATTR_AF) + _u16.pack(key.af) + b"\0\0" + _U32_ATTR.pack(
            8, IPVS_SVC_ATTR_FWMARK, key.fwmark
        )
    raw = _addr_bytes(key.af, key.addr)
    return (
        _nla_pack(6, IPVS_SVC_ATTR_AF)
        + _u16.pack(key.af)
        + b"\0\0"
        + _nla_pack(6, IPVS_SVC_ATTR_PROTOCOL)
        + _u16.pack(key.protocol)
        + b"\0\0"
        + _nla_pack(4 + len(raw), IPVS_SVC_ATTR_ADDR)
        + raw
        + _nla_pack(6, IPVS_SVC_ATTR_PORT)
        + _be16.pack(key.port)
        + b"\0\0"
    )


def encode_service(svc: Service, ident: bytes | None = None) -> bytes:
    """IPVS_CMD_ATTR_SERVICE with every settable field (NEW/SET_SERVICE); ``ident``: the key's
    encode_service_id(), when the caller has it already."""
    key = svc.key
    if ident is None:
        ident = encode_service_id(key)
    body = [ident, genl.nla_str(IPVS_SVC_ATTR_SCHED_NAME, svc.scheduler)]
    if svc.pe_name:
        body.append(genl.nla_str(IPVS_SVC_ATTR_PE_NAME, svc.pe_name))
    body.append(_nla_pack(12, IPVS_SVC_ATTR_FLAGS) + _flags.pack(svc.flags & ~IP_VS_SVC_F_HASHED, 0xFFFFFFFF))
    body.append(_U32_ATTR.pack(8, IPVS_SVC_ATTR_TIMEOUT, svc.timeout))
    if key.af == AF_INET6:
        body.append(_U32_ATTR.pack(8, IPVS_SVC_ATTR_NETMASK, svc.netmask))  # prefix length, host order
    else:
        body.append(_nla_pack(8, IPVS_SVC_ATTR_NETMASK) + _be32.pack(svc.netmask))  # be32 mask
    return genl.nla_nest(IPVS_CMD_ATTR_SERVICE, *body)


_DEST4 = struct.Struct("=HH" + "HH4s" + "HH2s2x" + "HHI" * 4 + "HHB3x" + "HH2s2x" + "HHH2x" + "HHH2x")
_DEST6 = struct.Struct("=HH" + "HH16s" + "HH2s2x" + "HHI" * 4 + "HHB3x" + "HH2s2x" + "HHH2x" + "HHH2x")
_be16_pack = _be16.pack


def encode_dest(dest: Destination, full: bool = True) -> bytes:
    """IPVS_CMD_ATTR_DEST: identity (addr, port, family) and, when full, every settable field:
    FWD_METHOD, WEIGHT, U/L_THRESH (u32), TUN_TYPE (u8), TUN_PORT (be16), TUN_FLAGS (u16)."""
    k = dest.key
    raw = _addr_bytes(k.af, k.addr)
    if not full:
        ident = (
            _nla_pack(4 + len(raw), IPVS_DEST_ATTR_ADDR)
            + raw
            + _nla_pack(6, IPVS_DEST_ATTR_PORT)
            + _be16_pack(k.port)
            + b"\0\0"
            + _nla_pack(6, IPVS_DEST_ATTR_ADDR_FAMILY)
            + _u16.pack(k.af)
            + b"\0\0"
        )
        return genl.nla_nest(IPVS_CMD_ATTR_DEST, ident)
    st = _DEST6 if len(raw) == 16 else _DEST4
    return st.pack(
        st.size, IPVS_CMD_ATTR_DEST,
        4 + len(raw), IPVS_DEST_ATTR_ADDR, raw,
        6, IPVS_DEST_ATTR_PORT, _be16_pack(k.port),
        8, IPVS_DEST_ATTR_FWD_METHOD, dest.forward & IP_VS_CONN_F_FWD_MASK,
        8, IPVS_DEST_ATTR_WEIGHT, dest.weight,
        8, IPVS_DEST_ATTR_U_THRESH, dest.u_threshold,
        8, IPVS_DEST_ATTR_L_THRESH, dest.l_threshold,
        5, IPVS_DEST_ATTR_TUN_TYPE, dest.tun_type,
        6, IPVS_DEST_ATTR_TUN_PORT, _be16_pack(dest.tun_port),
        6, IPVS_DEST_ATTR_TUN_FLAGS, dest.tun_flags,
        6, IPVS_DEST_ATTR_ADDR_FAMILY, k.af,
    )  # fmt: skip


def encode_daemon(d: SyncDaemon, full: bool = True) -> bytes:
    """IPVS_CMD_ATTR_DAEMON; zero/empty optional fields are left to the kernel's defaults."""
    body = [_U32_ATTR.pack(8, IPVS_DAEMON_ATTR_STATE, d.state)]
    if full:
        body.append(genl.nla_str(IPVS_DAEMON_ATTR_MCAST_IFN, d.mcast_ifn))
        body.append(_U32_ATTR.pack(8, IPVS_DAEMON_ATTR_SYNC_ID, d.syncid))
        if d.sync_maxlen:
            body.append(genl.nla_u16(IPVS_DAEMON_ATTR_SYNC_MAXLEN, d.sync_maxlen))
        if d.mcast_group:
            if ":" in d.mcast_group:
                body.append(genl.nla(IPVS_DAEMON_ATTR_MCAST_GROUP6, _inet_pton(_socket.AF_INET6, d.mcast_group)))
            else:
                body.append(genl.nla(IPVS_DAEMON_ATTR_MCAST_GROUP, _inet_pton(_socket.AF_INET, d.mcast_group)))
        if d.mcast_port:
            body.append(genl.nla_u16(IPVS_DAEMON_ATTR_MCAST_PORT, d.mcast_port))
        if d.mcast_ttl:
            body.append(genl.nla_u8(IPVS_DAEMON_ATTR_MCAST_TTL, d.mcast_ttl))
    return genl.nla_nest(IPVS_CMD_ATTR_DAEMON, *body)


def encode_op(op: Op, svc_ids: dict[ServiceKey, bytes] | None = None) -> tuple[int, bytes]:
    """(IPVS command, attribute payload) for one validated Op. ``svc_ids`` caches the encoded
    service identity across the ops of one batch (dest ops repeat it)."""
    k = op.kind
    if k is OpKind.ADD_DEST or k is OpKind.EDIT_DEST or k is OpKind.DEL_DEST:
        key = op.key
        assert key is not None and op.dest is not None
        sid = svc_ids.get(key) if svc_ids is not None else None
        if sid is None:
            sid = genl.nla_nest(IPVS_CMD_ATTR_SERVICE, encode_service_id(key))
            if svc_ids is not None and len(svc_ids) < _ENCODE_CACHE_MAX:
                svc_ids[key] = sid
        if k is OpKind.DEL_DEST:
            return IPVS_CMD_DEL_DEST, sid + encode_dest(op.dest, full=False)
        cmd = IPVS_CMD_NEW_DEST if k is OpKind.ADD_DEST else IPVS_CMD_SET_DEST
        return cmd, sid + encode_dest(op.dest)
    if k is OpKind.ADD_SERVICE or k is OpKind.EDIT_SERVICE:
        assert op.service is not None
        cmd = IPVS_CMD_NEW_SERVICE if k is OpKind.ADD_SERVICE else IPVS_CMD_SET_SERVICE
        return cmd, encode_service(op.service)
    if k is OpKind.DEL_SERVICE:
        assert op.key is not None
        return IPVS_CMD_DEL_SERVICE, genl.nla_nest(IPVS_CMD_ATTR_SERVICE, encode_service_id(op.key))
    if k is OpKind.FLUSH:
        return IPVS_CMD_FLUSH, b""
    if k is OpKind.ZERO:
        if op.key is None:
            return IPVS_CMD_ZERO, b""
        return IPVS_CMD_ZERO, genl.nla_nest(IPVS_CMD_ATTR_SERVICE, encode_service_id(op.key))
    if k is OpKind.SET_TIMEOUTS:
        t = op.timeouts
        assert t is not None
        return IPVS_CMD_SET_CONFIG, (
            _U32_ATTR.pack(8, IPVS_CMD_ATTR_TIMEOUT_TCP, t.tcp)
            + _U32_ATTR.pack(8, IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, t.tcp_fin)
            + _U32_ATTR.pack(8, IPVS_CMD_ATTR_TIMEOUT_UDP, t.udp)
        )
    if k is OpKind.START_DAEMON:
        assert op.daemon is not None
        return IPVS_CMD_NEW_DAEMON, encode_daemon(op.daemon)
    if k is OpKind.STOP_DAEMON:
        assert op.daemon is not None
        return IPVS_CMD_DEL_DAEMON, encode_daemon(op.daemon, full=False)
    raise ValueError(f"unknown operation {k!r}")


# --- decoding -----------------------------------------------------------------------------------

_STATS64_FAST = struct.Struct("=" + "HHQ" * 10)
_STATS64_TYPES = tuple(range(1, 11))
_parse = genl.parse_attrs
_nla_hdr_unpack = struct.Struct("=HH").unpack_from
_u16_unpack = _u16.unpack_from
_u32_unpack = _u32.unpack_from
_be16_unpack = _be16.unpack_from
_be32_unpack = _be32.unpack_from
_ZERO_STATS = Stats()
_ZEROS10 = (0,) * 10


def _nested(payload: bytes, atype: int) -> dict[int, bytes]:
    """The attributes inside top-level attribute `atype` (usually the first and only one)."""
    if len(payload) >= 4:
        n, t = _nla_hdr_unpack(payload)
        if t & genl.NLA_TYPE_MASK == atype and n <= len(payload):
            return _parse(payload, 4, n)
    return _parse(_parse(payload)[atype])


def decode_stats(payload: bytes | None, wide: bool) -> Stats:
    """IPVS_*_ATTR_STATS64 (wide) or the older STATS (u32 counters, u64 bytes) -> Stats."""
    if not payload:
        return _ZERO_STATS
    if wide and len(payload) == 120:
        v = _STATS64_FAST.unpack(payload)
        if v[1::3] == _STATS64_TYPES:  # the kernel's usual layout: no pad attributes
            vals = v[2::3]
            return _ZERO_STATS if vals == _ZEROS10 else Stats(*vals)
    a = _parse(payload)
    g = genl.get_uint
    return Stats(*(g(a[t]) if t in a else 0 for t in _STATS64_TYPES))


def decode_service(payload: bytes) -> Service:
    """A GET_SERVICE reply (genl attributes) -> Service (flags without HASHED)."""
    a = _nested(payload, IPVS_CMD_ATTR_SERVICE)
    af = _u16_unpack(a[IPVS_SVC_ATTR_AF])[0]
    fw = a.get(IPVS_SVC_ATTR_FWMARK)
    if fw is not None:
        key = ServiceKey(af, 0, "", 0, _u32_unpack(fw)[0])
    else:
        key = ServiceKey(
            af,
            _u16_unpack(a[IPVS_SVC_ATTR_PROTOCOL])[0],
            _addr_text(af, a[IPVS_SVC_ATTR_ADDR]),
            _be16_unpack(a[IPVS_SVC_ATTR_PORT])[0],
            0,
        )
    flags, mask = _flags.unpack_from(a[IPVS_SVC_ATTR_FLAGS]) if IPVS_SVC_ATTR_FLAGS in a else (0, 0)
    nm = a.get(IPVS_SVC_ATTR_NETMASK)
    st = a.get(IPVS_SVC_ATTR_STATS64)
    stats = decode_stats(st, True) if st is not None else decode_stats(a.get(IPVS_SVC_ATTR_STATS), False)
    pe = a.get(IPVS_SVC_ATTR_PE_NAME)
    sched = genl.get_str(a[IPVS_SVC_ATTR_SCHED_NAME]) if IPVS_SVC_ATTR_SCHED_NAME in a else ""
    timeout = _u32_unpack(a[IPVS_SVC_ATTR_TIMEOUT])[0] if IPVS_SVC_ATTR_TIMEOUT in a else 0
    flags = flags & mask & ~IP_VS_SVC_F_HASHED
    if nm is None:  # let Service.__post_init__ fill in the family's default
        return Service(key, sched, flags, timeout, -1, genl.get_str(pe) if pe else "", stats)
    # Everything is already normalized (no HASHED flag, a real netmask), so __post_init__ would
    # change nothing: build through the slot descriptors, as decode_dests() does (a third faster).
    svc = _new(Service)
    _svc_key(svc, key)
    _svc_sched(svc, sched)
    _svc_flags(svc, flags)
    _svc_timeout(svc, timeout)
    _svc_netmask(svc, _u32_unpack(nm)[0] if af == AF_INET6 else _be32_unpack(nm)[0])
    _svc_pe(svc, genl.get_str(pe) if pe else "")
    _svc_stats(svc, stats)
    return svc


_new = object.__new__
_svc_key, _svc_sched, _svc_flags, _svc_timeout, _svc_netmask, _svc_pe, _svc_stats = (
    Service.__dict__[n].__set__ for n in ("key", "scheduler", "flags", "timeout", "netmask", "pe_name", "stats")
)


def decode_dest(payload: bytes, service_af: int) -> Destination:
    """A GET_DEST reply -> Destination. Kernels before 3.18 send no ADDR_FAMILY: the service's."""
    a = _nested(payload, IPVS_CMD_ATTR_DEST)
    g32 = _u32_unpack
    fam = a.get(IPVS_DEST_ATTR_ADDR_FAMILY)
    af = _u16_unpack(fam)[0] if fam is not None else service_af
    st = a.get(IPVS_DEST_ATTR_STATS64)
    tt = a.get(IPVS_DEST_ATTR_TUN_TYPE)
    tp = a.get(IPVS_DEST_ATTR_TUN_PORT)
    tf = a.get(IPVS_DEST_ATTR_TUN_FLAGS)
    return Destination(
        DestKey(af, _addr_text(af, a[IPVS_DEST_ATTR_ADDR]), _be16_unpack(a[IPVS_DEST_ATTR_PORT])[0]),
        g32(a[IPVS_DEST_ATTR_FWD_METHOD])[0] & IP_VS_CONN_F_FWD_MASK,
        g32(a[IPVS_DEST_ATTR_WEIGHT])[0],
        g32(a[IPVS_DEST_ATTR_U_THRESH])[0],
        g32(a[IPVS_DEST_ATTR_L_THRESH])[0],
        tt[0] if tt else 0,
        _be16_unpack(tp)[0] if tp else 0,
        _u16_unpack(tf)[0] if tf else 0,
        g32(a[IPVS_DEST_ATTR_ACTIVE_CONNS])[0] if IPVS_DEST_ATTR_ACTIVE_CONNS in a else 0,
        g32(a[IPVS_DEST_ATTR_INACT_CONNS])[0] if IPVS_DEST_ATTR_INACT_CONNS in a else 0,
        g32(a[IPVS_DEST_ATTR_PERSIST_CONNS])[0] if IPVS_DEST_ATTR_PERSIST_CONNS in a else 0,
        decode_stats(st, True) if st is not None else decode_stats(a.get(IPVS_DEST_ATTR_STATS), False),
    )


# Fast path for dest dumps (lvsd/ipvs/layout.py): a whole reply decodes with one unpack. The
# layout is verified in full on the first reply of every dump (header words compared with the
# expected ones); the rest of that dump, made by the same kernel code, is checked by size.
# Anything else (older kernels, other arches with pad attributes) takes decode_dest().
_DEST_VALS = struct.Struct("=" + DEST_VALUES_FORMAT)
_DEST_HDRS = struct.Struct("=" + DEST_HEADERS_FORMAT)
_DEST_HDR_BYTES = _DEST_HDRS.pack(*DEST_HEADERS)
_dest_vals_unpack = _DEST_VALS.unpack
_dest_new = object.__new__
_set = {n: Destination.__dict__[n].__set__ for n in Destination.__slots__}
_setk = {n: DestKey.__dict__[n].__set__ for n in DestKey.__slots__}
_stats_new = Stats
_LITTLE = struct.pack("=H", 1) == b"\x01\x00"  # the fast path byte-swaps be16 ports itself


#: Set once a reply of this kernel had exactly the expected layout (headers compared word for
#: word); from then on replies are checked by size. The layout is a property of the running
#: ip_vs module's code, which cannot change while it has a netlink family registered to us.
_dest_layout_verified = False


#: Raw (address, port, family) of a reply -> its DestKey. Keys are immutable values, so a table
#: dumped again (the daemon does, every reconcile) reuses them instead of rebuilding 10,000
#: address strings. Bounded: cleared when it reaches the limit.
_dest_keys: dict[tuple[bytes, int, int], DestKey] = {}
_DEST_KEY_CACHE_MAX = 65536


def dest_layout_matches(payload: bytes) -> bool:
    """Does this GET_DEST reply have exactly the layout the fast path decodes?"""
    return len(payload) == DEST_REPLY_SIZE and _DEST_HDRS.pack(*_DEST_HDRS.unpack(payload)) == _DEST_HDR_BYTES


def decode_dests(payloads: list[bytes], service_af: int) -> list[Destination]:
    """Every reply of one GET_DEST dump -> Destinations, one struct unpack each when the kernel's
    layout is the one we know (verified on the first reply), else through decode_dest()."""
    if not payloads:
        return []
    global _dest_layout_verified
    if not _dest_layout_verified:
        if not _LITTLE or not dest_layout_matches(payloads[0]):
            return [decode_dest(p, service_af) for p in payloads]
        _dest_layout_verified = True
    out: list[Destination] = []
    append = out.append
    unpack = _dest_vals_unpack
    ntop = _inet_ntop
    new = _dest_new
    s_key, s_fwd, s_w, s_u, s_l = _set["key"], _set["forward"], _set["weight"], _set["u_threshold"], _set["l_threshold"]
    s_tt, s_tp, s_tf = _set["tun_type"], _set["tun_port"], _set["tun_flags"]
    s_ac, s_ic, s_pc, s_st = _set["active_conns"], _set["inact_conns"], _set["persist_conns"], _set["stats"]
    k_af, k_addr, k_port = _setk["af"], _setk["addr"], _setk["port"]
    zero = _ZERO_STATS
    zeros = (0,) * 10
    size = DEST_REPLY_SIZE
    keys = _dest_keys
    v6 = _socket.AF_INET6
    for p in payloads:
        if len(p) != size:
            append(decode_dest(p, service_af))
            continue
        v = unpack(p)
        raw, port, fwd, weight, tt, tp, tf, ut, lt, ac, ic, pc, af = v[:13]
        st = v[13:]
        ck = (raw, port, af)
        key = keys.get(ck)
        if key is None:
            if af == AF_INET6:
                text = ntop(v6, raw)
                if "." in text:
                    text = _addr_text(AF_INET6, raw)
            else:
                text = ntop(2, raw[:4])
            key = new(DestKey)
            k_af(key, af)
            k_addr(key, text)
            k_port(key, ((port & 0xFF) << 8) | (port >> 8))
            if len(keys) >= _DEST_KEY_CACHE_MAX:
                keys.clear()
            keys[ck] = key
        d = new(Destination)
        s_key(d, key)
        s_fwd(d, fwd & IP_VS_CONN_F_FWD_MASK)
        s_w(d, weight)
        s_u(d, ut)
        s_l(d, lt)
        s_tt(d, tt)
        s_tp(d, ((tp & 0xFF) << 8) | (tp >> 8))
        s_tf(d, tf)
        s_ac(d, ac)
        s_ic(d, ic)
        s_pc(d, pc)
        s_st(d, zero if st == zeros else _stats_new(*st))
        append(d)
    return out


def decode_daemon(payload: bytes) -> SyncDaemon:
    """A GET_DAEMON reply -> SyncDaemon with the values the kernel runs (defaults filled in)."""
    a = _parse(_parse(payload)[IPVS_CMD_ATTR_DAEMON])
    group = ""
    if IPVS_DAEMON_ATTR_MCAST_GROUP6 in a:
        group = _addr_text(AF_INET6, a[IPVS_DAEMON_ATTR_MCAST_GROUP6])
    elif IPVS_DAEMON_ATTR_MCAST_GROUP in a:
        group = _addr_text(AF_INET, a[IPVS_DAEMON_ATTR_MCAST_GROUP])
    g = genl.get_uint
    return SyncDaemon(
        state=g(a[IPVS_DAEMON_ATTR_STATE]),
        mcast_ifn=genl.get_str(a.get(IPVS_DAEMON_ATTR_MCAST_IFN, b"")),
        syncid=g(a[IPVS_DAEMON_ATTR_SYNC_ID]) if IPVS_DAEMON_ATTR_SYNC_ID in a else 0,
        sync_maxlen=g(a[IPVS_DAEMON_ATTR_SYNC_MAXLEN]) if IPVS_DAEMON_ATTR_SYNC_MAXLEN in a else 0,
        mcast_group=group,
        mcast_port=g(a[IPVS_DAEMON_ATTR_MCAST_PORT]) if IPVS_DAEMON_ATTR_MCAST_PORT in a else 0,
        mcast_ttl=g(a[IPVS_DAEMON_ATTR_MCAST_TTL]) if IPVS_DAEMON_ATTR_MCAST_TTL in a else 0,
    )


# --- validation -----------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF
#: int and the model's IntEnums; bool (an int subclass the model rejects) is deliberately absent
_INT_TYPES = frozenset((int, Forward, TunType))


def _dest_blob(d: Destination, service_af: int | None) -> bytes | None:
    """Encode a destination if a fast equivalent of Destination.validate() accepts it, else None.

    The check only ever *accepts*: bytes back means the model's validate() passes too (inet_pton
    accepts a subset of what ipaddress accepts; exact int types and ranges; tests/unit/test_genl.py
    checks the implication on generated values). None means: ask the model, which raises the
    precise ValueInvalid (or accepts a form we do not take fast, e.g. "[::1]")."""
    k = d.key
    af = k.af
    try:
        if af == AF_INET:
            raw = _inet_pton(_socket.AF_INET, k.addr)
            st = _DEST4
        elif af == AF_INET6:
            raw = _inet_pton(_socket.AF_INET6, k.addr)
            st = _DEST6
        else:
            return None
    except (OSError, TypeError, ValueError):
        return None
    p, f, w, u, lo, tt, tp, tf = k.port, d.forward, d.weight, d.u_threshold, d.l_threshold, d.tun_type, d.tun_port, d.tun_flags
    ints = _INT_TYPES
    if not (
        type(p) in ints and type(f) in ints and type(w) in ints and type(u) in ints and type(lo) in ints
        and type(tt) in ints and type(tp) in ints and type(tf) in ints
        and 0 <= p <= 65535 and 0 <= f <= 4 and 0 <= w <= 0x7FFFFFFF and 0 <= u <= 0x7FFFFFFF and 0 <= lo <= _M32
        and 0 <= tt <= 2 and 0 <= tp <= 65535 and 0 <= tf <= 0xFFFF
        and (service_af is None or service_af == af or f == 2)
    ):  # fmt: skip
        return None
    return st.pack(
        st.size, IPVS_CMD_ATTR_DEST,
        4 + len(raw), IPVS_DEST_ATTR_ADDR, raw,
        6, IPVS_DEST_ATTR_PORT, _be16_pack(p),
        8, IPVS_DEST_ATTR_FWD_METHOD, f,
        8, IPVS_DEST_ATTR_WEIGHT, w,
        8, IPVS_DEST_ATTR_U_THRESH, u,
        8, IPVS_DEST_ATTR_L_THRESH, lo,
        5, IPVS_DEST_ATTR_TUN_TYPE, tt,
        6, IPVS_DEST_ATTR_TUN_PORT, _be16_pack(tp),
        6, IPVS_DEST_ATTR_TUN_FLAGS, tf,
        6, IPVS_DEST_ATTR_ADDR_FAMILY, af,
    )  # fmt: skip


def _dest_fields_ok(d: Destination, service_af: int | None) -> bool:
    """Would the fast path take this destination (see _dest_blob)?"""
    return _dest_blob(d, service_af) is not None


def encode_ops(ops: Sequence[Op]) -> list[tuple[int, bytes]]:
    """validate_all(ops) and encode_op() for every op, in one pass and in order: the first bad
    value raises the model's own ValueInvalid before anything is sent. Made cheap for big
    batches: each service key is validated and encoded once, dest ops go through _dest_blob()
    and fall back to the model's validate() only when it does not take them."""
    out: list[tuple[int, bytes]] = []
    append = out.append
    by_id: dict[int, bytes] = {}  # id(key) -> encoded identity; the ops list keeps the keys alive
    by_key: dict[ServiceKey, bytes] = {}
    add_dest, edit_dest = OpKind.ADD_DEST, OpKind.EDIT_DEST
    add_service, edit_service = OpKind.ADD_SERVICE, OpKind.EDIT_SERVICE
    for op in ops:
        k = op.kind
        key, dest = op.key, op.dest
        if (k is add_dest or k is edit_dest) and key is not None and dest is not None:
            sid = by_id.get(id(key))
            if sid is None:
                sid = by_key.get(key)
                if sid is None:
                    key.validate()  # what op.validate() checks first
                    sid = genl.nla_nest(IPVS_CMD_ATTR_SERVICE, encode_service_id(key))
                    by_key[key] = sid
                by_id[id(key)] = sid
            blob = _dest_blob(dest, key.af)
            if blob is None:
                op.validate()  # raises the model's error, or accepts a form we do not take fast
                blob = encode_dest(dest)
            append((IPVS_CMD_NEW_DEST if k is add_dest else IPVS_CMD_SET_DEST, sid + blob))
        elif (k is add_service or k is edit_service) and op.service is not None:
            op.validate()
            svc = op.service
            # the service's dest ops follow: their key is validated now, its identity encoded once
            ident = encode_service_id(svc.key)
            by_key[svc.key] = genl.nla_nest(IPVS_CMD_ATTR_SERVICE, ident)
            cmd = IPVS_CMD_NEW_SERVICE if k is add_service else IPVS_CMD_SET_SERVICE
            append((cmd, encode_service(svc, ident)))
        else:
            op.validate()
            append(encode_op(op, by_key))
    return out


# --- the backend --------------------------------------------------------------------------------


class NetlinkBackend(Backend):
    """The running kernel's IPVS table (this network namespace) over generic netlink.

    Raises BackendUnavailable with a one-line reason if the kernel has no IPVS or we may not
    use it. ``batch_size`` caps operations per sendmsg() (default: what the buffers allow).
    """

    name = "netlink"

    def __init__(self, *, timeout: float = 30.0, batch_size: int | None = None, rcvbuf: int | None = None) -> None:
        kw: dict[str, Any] = {"timeout": timeout}  # GenlSocket's keyword arguments
        if batch_size is not None:
            kw["max_batch"] = batch_size
        if rcvbuf is not None:
            kw["rcvbuf"] = rcvbuf
        try:
            self.sock = genl.GenlSocket(IPVS_GENL_NAME, **kw)
        except genl.FamilyNotFound:
            raise BackendUnavailable(
                "IPVS is not available: this kernel has no 'IPVS' generic netlink family (load the ip_vs module)"
            ) from None
        except PermissionError as e:
            raise BackendUnavailable(f"cannot open a netlink socket: {e.strerror}") from None
        except OSError as e:
            raise BackendUnavailable(f"cannot open a netlink socket: {e.strerror or e}") from None
        try:
            self._info = self._get_info()
        except genl.NetlinkError as e:
            self.sock.close()
            if e.errno == _errno.EPERM:
                raise BackendUnavailable(
                    "permission denied: managing IPVS needs CAP_NET_ADMIN (run as root)"
                ) from None
            raise BackendUnavailable(f"IPVS is not usable: {e.strerror}") from None

    # --- reads ---

    def _get_info(self) -> Info:
        (reply,) = self.sock.request(IPVS_CMD_GET_INFO)
        a = _parse(reply)
        return Info(_u32_unpack(a[IPVS_INFO_ATTR_VERSION])[0], _u32_unpack(a[IPVS_INFO_ATTR_CONN_TAB_SIZE])[0])

    def _read(self, what: str, fn: Callable[..., _T], *args: object) -> _T:
        """Run a read; a kernel refusal or a socket failure becomes IPVSError(what, errno)."""
        try:
            return fn(*args)
        except OSError as e:
            raise IPVSError(what, e.errno or _errno.EIO, e.strerror) from None

    def info(self) -> Info:
        """IPVS version and connection-table size (GET_INFO)."""
        self._info = self._read("get-info", self._get_info)
        return self._info

    def services(self) -> list[Service]:
        """Every service, in the kernel's (hash table) order."""
        return [decode_service(p) for p in self._read("list-services", self.sock.dump, IPVS_CMD_GET_SERVICE)]

    def service(self, key: ServiceKey) -> Service:
        """One service; IPVSError(ESRCH) if there is none."""
        key.validate()
        payload = genl.nla_nest(IPVS_CMD_ATTR_SERVICE, encode_service_id(key))
        try:
            replies = self.sock.request(IPVS_CMD_GET_SERVICE, payload)
        except genl.NetlinkError as e:
            raise IPVSError(f"get-service {key}", e.errno, e.strerror) from None
        if not replies:
            raise IPVSError(f"get-service {key}", _errno.ESRCH, "No such process")
        return decode_service(replies[0])

    def dests(self, key: ServiceKey) -> list[Destination]:
        """Destinations of one service, newest first (kernel order); IPVSError(ESRCH) if none."""
        key.validate()
        payload = genl.nla_nest(IPVS_CMD_ATTR_SERVICE, encode_service_id(key))
        replies = self._read(f"list-servers {key}", self.sock.dump, IPVS_CMD_GET_DEST, payload)
        if not replies:
            try:
                self.service(key)  # the kernel dumps nothing for a missing service: say ESRCH
            except IPVSError as e:
                raise IPVSError(f"list-servers {key}", e.errno, e.strerror) from None
        return decode_dests(replies, key.af)

    def dump(self) -> dict[ServiceKey, ServiceEntry]:
        """The whole table: one service dump, then one dest dump per service."""
        out: dict[ServiceKey, ServiceEntry] = {}
        dump = self.sock.dump
        for raw in self._read("list-services", dump, IPVS_CMD_GET_SERVICE):
            svc = decode_service(raw)
            key = svc.key
            # The service reply is itself a valid IPVS_CMD_ATTR_SERVICE: the kernel looks up the
            # service by its identifying attributes and ignores the rest, so send it back as is.
            try:
                replies = dump(IPVS_CMD_GET_DEST, raw)
            except genl.NetlinkError as e:
                raise IPVSError(f"list-servers {key}", e.errno, e.strerror) from None
            out[key] = ServiceEntry(svc, {d.key: d for d in decode_dests(replies, key.af)})
        return out

    def timeouts(self) -> Timeouts:
        """TCP, TCP FIN and UDP timeouts in seconds (GET_CONFIG)."""
        (reply,) = self._read("get-timeouts", self.sock.request, IPVS_CMD_GET_CONFIG)
        a = _parse(reply)
        g = genl.get_uint
        return Timeouts(
            tcp=g(a[IPVS_CMD_ATTR_TIMEOUT_TCP]) if IPVS_CMD_ATTR_TIMEOUT_TCP in a else 0,
            tcp_fin=g(a[IPVS_CMD_ATTR_TIMEOUT_TCP_FIN]) if IPVS_CMD_ATTR_TIMEOUT_TCP_FIN in a else 0,
            udp=g(a[IPVS_CMD_ATTR_TIMEOUT_UDP]) if IPVS_CMD_ATTR_TIMEOUT_UDP in a else 0,
        )

    def daemons(self) -> list[SyncDaemon]:
        """Running sync daemons (master first), as the kernel runs them (defaults filled in)."""
        return [decode_daemon(p) for p in self._read("list-daemons", self.sock.dump, IPVS_CMD_GET_DAEMON)]

    def connections(self) -> list[Connection]:
        """The connection table (/proc/net/ip_vs_conn: netlink has no connection dump)."""
        from .conntab import read_connections

        return read_connections()

    # --- writes ---

    def apply(self, ops: Sequence[Op]) -> None:
        """Validate every op, then send them all in order, batched. Raises IPVSError for a
        batch of one, BatchError naming what was applied and what failed otherwise."""
        ops = list(ops)
        messages = encode_ops(ops)  # validate_all(ops) + encoding; raises before anything is sent
        if not ops:
            return
        results = self.sock.batch(messages)
        failed: list[tuple[Op, IPVSError]] = []
        applied: list[Op] = []
        for op, err in zip(ops, results, strict=True):
            if err is None:
                applied.append(op)
            else:
                failed.append((op, IPVSError(op, err.errno, err.strerror)))
        if not failed:
            return
        if len(ops) == 1:
            raise failed[0][1]
        raise BatchError(applied, failed)

    def close(self) -> None:
        self.sock.close()

