"""The generic-netlink codec and socket (host kernel: the nlctrl family is always there, IPVS is not)
and the IPVS attribute encodings of lvsd.ipvs.netlink, checked byte for byte against ip_vs.h."""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from lvsd.ipvs import genl
from lvsd.ipvs import netlink as nl
from lvsd.ipvs.backend import BackendUnavailable, Op, validate_all
from lvsd.ipvs.model import (
    AF_INET,
    AF_INET6,
    SVC_F_PERSISTENT,
    Destination,
    DestKey,
    Forward,
    Service,
    ServiceKey,
    Stats,
    SyncDaemon,
    Timeouts,
    TunType,
    ValueInvalid,
)

# --- attribute codec ----------------------------------------------------------------------------


def test_nla_header_padding_and_alignment():
    assert genl.nla(1, b"abc") == struct.pack("=HH", 7, 1) + b"abc" + b"\0"
    assert genl.nla(2, b"abcd") == struct.pack("=HH", 8, 2) + b"abcd"
    assert genl.nla_u8(3, 7) == struct.pack("=HHB3x", 5, 3, 7)
    assert genl.nla_u16(4, 0x1234) == struct.pack("=HHH2x", 6, 4, 0x1234)
    assert genl.nla_be16(4, 0x1234) == struct.pack("=HH", 6, 4) + b"\x12\x34\0\0"
    assert genl.nla_u32(5, 0xDEADBEEF) == struct.pack("=HHI", 8, 5, 0xDEADBEEF)
    assert genl.nla_be32(5, 0x01020304) == struct.pack("=HH", 8, 5) + b"\1\2\3\4"
    assert genl.nla_u64(6, 2**40) == struct.pack("=HHQ", 12, 6, 2**40)
    assert genl.nla_str(7, "wrr") == struct.pack("=HH", 8, 7) + b"wrr\0"
    for blob in (genl.nla(1, b"x" * n) for n in range(9)):
        assert len(blob) % 4 == 0


def test_nested_roundtrip_and_flag_masking():
    inner = genl.nla_u32(1, 42) + genl.nla_str(2, "eth0") + genl.nla(3, b"\1\2\3")
    outer = genl.nla_nest(9, inner) + genl.nla_u16(10, 5)
    top = genl.parse_attrs(outer)
    assert set(top) == {9, 10}
    a = genl.parse_attrs(top[9])
    assert genl.get_u32(a[1]) == 42 and genl.get_str(a[2]) == "eth0" and a[3] == b"\1\2\3"
    # NLA_F_NESTED / NLA_F_NET_BYTEORDER are flags, not part of the type
    flagged = struct.pack("=HH", 8, 9 | genl.NLA_F_NESTED) + genl.nla_u16(1, 3)[:4] + b""
    assert list(genl.parse_attrs(struct.pack("=HH", 4, 9 | genl.NLA_F_NESTED))) == [9]
    assert genl.parse_attrs(flagged[:4] + b"\0\0\0\0")  # tolerated


def test_parse_attrs_ignores_truncated_tail():
    good = genl.nla_u32(1, 1)
    assert genl.parse_attrs(good + struct.pack("=HH", 40, 2) + b"\0" * 4) == {1: struct.pack("=I", 1)}
    assert genl.parse_attrs(good + b"\x03") == {1: struct.pack("=I", 1)}
    assert genl.parse_attrs(struct.pack("=HH", 2, 1)) == {}  # length below header size


def test_get_uint_any_width():
    for fmt, v in (("=B", 200), ("=H", 60000), ("=I", 2**31 + 5), ("=Q", 2**63 + 1)):
        assert genl.get_uint(struct.pack(fmt, v)) == v


def test_parse_error_capped_with_ext_ack_message():
    req_hdr = struct.pack("=IHHII", 36, 30, 5, 77, 0)
    tlv = genl.nla_str(genl.NLMSGERR_ATTR_MSG, "bad attribute")
    body = struct.pack("=i", -errno.EINVAL) + req_hdr + tlv
    msg = struct.pack("=IHHII", 16 + len(body), genl.NLMSG_ERROR, genl.NLM_F_CAPPED | genl.NLM_F_ACK_TLVS, 77, 0)
    err, seq, text = genl.parse_error(msg + body, 0, len(msg) + len(body), genl.NLM_F_CAPPED | genl.NLM_F_ACK_TLVS)
    assert (err, seq, text) == (errno.EINVAL, 77, "bad attribute")


# --- the socket on the host kernel --------------------------------------------------------------


def test_resolve_nlctrl_and_missing_family():
    with genl.GenlSocket("nlctrl") as s:
        assert s.family_id == genl.GENL_ID_CTRL
    with pytest.raises(genl.FamilyNotFound) as ei:
        genl.GenlSocket("no-such-fam")
    assert ei.value.errno == errno.ENOENT


def test_backend_unavailable_without_ipvs():
    """The host kernel has no IPVS: one clear line, no traceback material."""
    try:
        with genl.GenlSocket("IPVS"):
            pytest.skip("this kernel has IPVS")
    except genl.FamilyNotFound:
        pass
    with pytest.raises(BackendUnavailable) as ei:
        nl.NetlinkBackend()
    msg = str(ei.value)
    assert "\n" not in msg and "IPVS" in msg and "ip_vs" in msg


def _getfamily(name: str) -> tuple[int, bytes]:
    return genl.CTRL_CMD_GETFAMILY, genl.nla_str(genl.CTRL_ATTR_FAMILY_NAME, name)


def test_batch_maps_each_error_to_its_message():
    names = ["nlctrl", "nope-1", "nlctrl", "nope-2", "nope-3", "nlctrl"]
    with genl.GenlSocket("nlctrl") as s:
        res = s.batch([_getfamily(n) for n in names])
        assert [None if r is None else r.errno for r in res] == [
            None, errno.ENOENT, None, errno.ENOENT, errno.ENOENT, None,
        ]  # fmt: skip
        # the socket is still in step: a plain request works afterwards
        assert s.request(*_getfamily("nlctrl"))


def test_batch_chunks_when_limits_are_small():
    names = [("nlctrl" if i % 3 else f"missing-{i}") for i in range(50)]
    with genl.GenlSocket("nlctrl", max_batch=7) as s:
        assert s.batch_limits()[0] == 7
        sent = []
        real = s.sock

        class Spy:
            def __getattr__(self, name):
                return getattr(real, name)

            def sendmsg(self, bufs):
                sent.append(sum(len(b) for b in bufs))
                return real.sendmsg(bufs)

        s.sock = Spy()  # type: ignore[assignment]
        res = s.batch([_getfamily(n) for n in names])
        s.sock = real
    assert len(sent) == 8  # ceil(50 / 7)
    assert [r is None for r in res] == [n == "nlctrl" for n in names]


def test_batch_byte_limit():
    with genl.GenlSocket("nlctrl") as s:
        s.sndbuf = 4096 + 1024  # pretend: 4 KiB per datagram
        msgs = [_getfamily("x" * 14) for _ in range(300)]
        res = s.batch(msgs)
    assert all(r is not None and r.errno == errno.ENOENT for r in res)


def test_batch_overrun_never_reports_unknown_as_applied():
    """Force a receive-buffer overrun (tiny real buffer, limits computed for a huge one): every
    result is either the true outcome or ENOBUFS (unknown), never a false success."""
    names = [("nlctrl" if i % 2 else f"missing-{i}") for i in range(400)]
    with genl.GenlSocket("nlctrl", rcvbuf=1) as s:
        s.rcvbuf = 1 << 30
        s.max_batch = 400
        res = s.batch([_getfamily(n) for n in names])
        after = s.max_batch
        assert s.request(*_getfamily("nlctrl"))  # still usable
    unknown = [i for i, r in enumerate(res) if r is not None and r.errno == errno.ENOBUFS]
    assert unknown, "expected an overrun with a tiny receive buffer"
    assert after < 400  # it learned to send smaller chunks
    for i, (n, r) in enumerate(zip(names, res, strict=True)):
        if i in unknown:
            continue
        if n == "nlctrl":
            assert r is None, (i, r)
        else:
            assert r is not None and r.errno == errno.ENOENT, (i, r)
    # every message whose reply was lost lies after the last one heard of in its chunk
    assert all(names[i] == "nlctrl" or res[i].errno == errno.ENOBUFS for i in unknown)


def test_batch_without_answer_reports_unknown_and_unsent():
    """The kernel never answers (simulated receive timeout): the chunk in flight is "outcome
    unknown" (ETIMEDOUT), later chunks are not sent (ECANCELED); nothing is reported applied."""
    with genl.GenlSocket("nlctrl", max_batch=3) as s:
        real = s.sock
        sent = []

        class Mute:
            def __getattr__(self, name):
                return getattr(real, name)

            def sendmsg(self, bufs):
                sent.append(1)
                return real.sendmsg(bufs)

            def recvmsg_into(self, bufs):
                raise BlockingIOError(errno.EAGAIN, "timed out")

        s.sock = Mute()  # type: ignore[assignment]
        res = s.batch([_getfamily("nlctrl")] * 7)
        s.sock = real
    assert len(sent) == 1
    assert [r.errno for r in res] == [errno.ETIMEDOUT] * 3 + [errno.ECANCELED] * 4


def test_dump_nlctrl_families():
    with genl.GenlSocket("nlctrl") as s:
        fams = s.dump(genl.CTRL_CMD_GETFAMILY)
    names = {genl.get_str(genl.parse_attrs(p)[genl.CTRL_ATTR_FAMILY_NAME]) for p in fams}
    assert "nlctrl" in names


def test_request_error_raises_with_errno():
    with genl.GenlSocket("nlctrl") as s, pytest.raises(genl.NetlinkError) as ei:
        s.request(*_getfamily("missing-fam"))
    assert ei.value.errno == errno.ENOENT


# --- IPVS encodings (include/uapi/linux/ip_vs.h) ------------------------------------------------


def _attrs(blob: bytes) -> dict[int, bytes]:
    return genl.parse_attrs(blob)


def test_encode_service_ipv4_fields():
    svc = Service(ServiceKey.inet("tcp", "10.0.0.1", 80), "wrr", SVC_F_PERSISTENT, 600, 0xFFFFFF00, "sip")
    top = _attrs(nl.encode_service(svc))
    a = _attrs(top[nl.IPVS_CMD_ATTR_SERVICE])
    assert a[nl.IPVS_SVC_ATTR_AF] == struct.pack("=H", socket.AF_INET)
    assert a[nl.IPVS_SVC_ATTR_PROTOCOL] == struct.pack("=H", 6)
    assert a[nl.IPVS_SVC_ATTR_ADDR] == socket.inet_aton("10.0.0.1")
    assert a[nl.IPVS_SVC_ATTR_PORT] == b"\x00\x50"  # be16
    assert a[nl.IPVS_SVC_ATTR_SCHED_NAME] == b"wrr\0"
    assert a[nl.IPVS_SVC_ATTR_PE_NAME] == b"sip\0"
    assert a[nl.IPVS_SVC_ATTR_FLAGS] == struct.pack("=II", SVC_F_PERSISTENT, 0xFFFFFFFF)  # mask ~0 like ipvsadm
    assert a[nl.IPVS_SVC_ATTR_TIMEOUT] == struct.pack("=I", 600)
    assert a[nl.IPVS_SVC_ATTR_NETMASK] == socket.inet_aton("255.255.255.0")  # be32 mask
    assert nl.IPVS_SVC_ATTR_FWMARK not in a


def test_encode_service_ipv6_netmask_is_host_order_prefix():
    svc = Service(ServiceKey.inet("udp", "2001:db8::1", 53), "rr", netmask=64)
    a = _attrs(_attrs(nl.encode_service(svc))[nl.IPVS_CMD_ATTR_SERVICE])
    assert a[nl.IPVS_SVC_ATTR_AF] == struct.pack("=H", socket.AF_INET6)
    assert a[nl.IPVS_SVC_ATTR_ADDR] == socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    assert a[nl.IPVS_SVC_ATTR_NETMASK] == struct.pack("=I", 64)
    assert nl.IPVS_SVC_ATTR_PE_NAME not in a


def test_encode_fwmark_service_identity():
    a = _attrs(nl.encode_service_id(ServiceKey.fwmark_key(7, AF_INET6)))
    assert a == {nl.IPVS_SVC_ATTR_AF: struct.pack("=H", AF_INET6), nl.IPVS_SVC_ATTR_FWMARK: struct.pack("=I", 7)}


def test_encode_dest_full_and_identity():
    d = Destination(
        DestKey.of("192.168.1.1", 8080), Forward.TUNNEL, 5, 100, 10, TunType.GUE, 6080, 1
    )
    a = _attrs(_attrs(nl.encode_dest(d))[nl.IPVS_CMD_ATTR_DEST])
    assert a[nl.IPVS_DEST_ATTR_ADDR] == socket.inet_aton("192.168.1.1")
    assert a[nl.IPVS_DEST_ATTR_PORT] == struct.pack(">H", 8080)
    assert a[nl.IPVS_DEST_ATTR_FWD_METHOD] == struct.pack("=I", 2)
    assert a[nl.IPVS_DEST_ATTR_WEIGHT] == struct.pack("=I", 5)
    assert a[nl.IPVS_DEST_ATTR_U_THRESH] == struct.pack("=I", 100)
    assert a[nl.IPVS_DEST_ATTR_L_THRESH] == struct.pack("=I", 10)
    assert a[nl.IPVS_DEST_ATTR_TUN_TYPE] == b"\x01"
    assert a[nl.IPVS_DEST_ATTR_TUN_PORT] == struct.pack(">H", 6080)
    assert a[nl.IPVS_DEST_ATTR_TUN_FLAGS] == struct.pack("=H", 1)
    assert a[nl.IPVS_DEST_ATTR_ADDR_FAMILY] == struct.pack("=H", AF_INET)
    ident = _attrs(_attrs(nl.encode_dest(d, full=False))[nl.IPVS_CMD_ATTR_DEST])
    assert set(ident) == {nl.IPVS_DEST_ATTR_ADDR, nl.IPVS_DEST_ATTR_PORT, nl.IPVS_DEST_ATTR_ADDR_FAMILY}


def test_encode_daemon_and_timeouts():
    d = SyncDaemon(1, "eth0", syncid=9, sync_maxlen=1400, mcast_group="239.1.2.3", mcast_port=8849, mcast_ttl=3)
    a = _attrs(_attrs(nl.encode_daemon(d))[nl.IPVS_CMD_ATTR_DAEMON])
    assert a[nl.IPVS_DAEMON_ATTR_STATE] == struct.pack("=I", 1)
    assert a[nl.IPVS_DAEMON_ATTR_MCAST_IFN] == b"eth0\0"
    assert a[nl.IPVS_DAEMON_ATTR_SYNC_ID] == struct.pack("=I", 9)
    assert a[nl.IPVS_DAEMON_ATTR_SYNC_MAXLEN] == struct.pack("=H", 1400)
    assert a[nl.IPVS_DAEMON_ATTR_MCAST_GROUP] == socket.inet_aton("239.1.2.3")
    assert a[nl.IPVS_DAEMON_ATTR_MCAST_PORT] == struct.pack("=H", 8849)
    assert a[nl.IPVS_DAEMON_ATTR_MCAST_TTL] == b"\x03"
    a6 = _attrs(_attrs(nl.encode_daemon(SyncDaemon(2, "eth1", mcast_group="ff02::81")))[nl.IPVS_CMD_ATTR_DAEMON])
    assert a6[nl.IPVS_DAEMON_ATTR_MCAST_GROUP6] == socket.inet_pton(socket.AF_INET6, "ff02::81")
    assert nl.IPVS_DAEMON_ATTR_MCAST_PORT not in a6  # 0 = kernel default: not sent
    cmd, payload = nl.encode_op(Op.stop_daemon(2))
    assert cmd == nl.IPVS_CMD_DEL_DAEMON
    assert _attrs(_attrs(payload)[nl.IPVS_CMD_ATTR_DAEMON]) == {nl.IPVS_DAEMON_ATTR_STATE: struct.pack("=I", 2)}
    cmd, payload = nl.encode_op(Op.set_timeouts(Timeouts(900, 120, 300)))
    assert cmd == nl.IPVS_CMD_SET_CONFIG
    assert {k: genl.get_u32(v) for k, v in _attrs(payload).items()} == {4: 900, 5: 120, 6: 300}


def test_encode_op_commands():
    k = ServiceKey.inet("tcp", "10.0.0.1", 80)
    d = Destination(DestKey.of("10.0.0.2", 80))
    cases = {
        Op.add_service(Service(k)): nl.IPVS_CMD_NEW_SERVICE,
        Op.edit_service(Service(k)): nl.IPVS_CMD_SET_SERVICE,
        Op.del_service(k): nl.IPVS_CMD_DEL_SERVICE,
        Op.add_dest(k, d): nl.IPVS_CMD_NEW_DEST,
        Op.edit_dest(k, d): nl.IPVS_CMD_SET_DEST,
        Op.del_dest(k, d.key): nl.IPVS_CMD_DEL_DEST,
        Op.flush(): nl.IPVS_CMD_FLUSH,
        Op.zero(): nl.IPVS_CMD_ZERO,
        Op.zero(k): nl.IPVS_CMD_ZERO,
    }
    ids: dict = {}
    for op, cmd in cases.items():
        got, payload = nl.encode_op(op, ids)
        assert got == cmd, op
    assert nl.encode_op(Op.zero())[1] == b"" and nl.encode_op(Op.flush())[1] == b""
    # dest ops carry the service identity only
    _, payload = nl.encode_op(Op.add_dest(k, d))
    svc = _attrs(_attrs(payload)[nl.IPVS_CMD_ATTR_SERVICE])
    assert set(svc) == {1, 2, 3, 4}


# --- decoding kernel replies --------------------------------------------------------------------


def _stats_block(wide: bool, vals: list[int]) -> bytes:
    parts = []
    for i, v in enumerate(vals, 1):
        parts.append(genl.nla_u64(i, v) if wide or i in (4, 5) else genl.nla_u32(i, v))
    return b"".join(parts)


def test_decode_service_reply_v4_with_stats64_and_hashed_flag():
    vals = [1, 2, 3, 2**40, 5, 6, 7, 8, 9, 10]
    body = (
        genl.nla_u16(1, AF_INET) + genl.nla_u16(2, 6) + genl.nla(3, socket.inet_aton("10.1.2.3") + b"\0" * 12)
        + genl.nla_be16(4, 443) + genl.nla_str(6, "wlc") + genl.nla(7, struct.pack("=II", 0x3, 0xFFFFFFFF))
        + genl.nla_u32(8, 300) + genl.nla_be32(9, 0xFFFF0000) + genl.nla_nest(10, _stats_block(False, vals))
        + genl.nla_nest(12, _stats_block(True, vals))
    )  # fmt: skip
    svc = nl.decode_service(genl.nla_nest(nl.IPVS_CMD_ATTR_SERVICE, body))
    assert svc.key == ServiceKey(AF_INET, 6, "10.1.2.3", 443, 0)
    assert (svc.scheduler, svc.flags, svc.timeout, svc.netmask, svc.pe_name) == ("wlc", 1, 300, 0xFFFF0000, "")
    assert svc.stats == Stats(*vals)


def test_decode_stats_fallback_to_32bit_and_padded_layout():
    vals = [11, 12, 13, 2**33, 15, 16, 17, 18, 19, 20]
    assert nl.decode_stats(_stats_block(False, vals), False) == Stats(*vals)
    padded = genl.nla(11, b"") + _stats_block(True, vals)  # a PAD attribute breaks the fast path
    assert nl.decode_stats(padded, True) == Stats(*vals)
    assert nl.decode_stats(None, True) == Stats()


def test_decode_service_v6_fwmark_and_pe():
    body = (
        genl.nla_u16(1, AF_INET6) + genl.nla_u32(5, 99) + genl.nla_str(6, "sh") + genl.nla_str(11, "sip")
        + genl.nla(7, struct.pack("=II", 0x18 | 0x2, 0xFFFFFFFF)) + genl.nla_u32(8, 0) + genl.nla_u32(9, 64)
    )  # fmt: skip
    svc = nl.decode_service(genl.nla_nest(nl.IPVS_CMD_ATTR_SERVICE, body))
    assert svc.key == ServiceKey.fwmark_key(99, AF_INET6)
    assert (svc.flags, svc.netmask, svc.pe_name, svc.stats) == (0x18, 64, "sip", Stats())


def test_decode_dest_mixed_family_and_mapped_address():
    def dest(af_attr: bytes, addr: bytes) -> bytes:
        body = (
            genl.nla(1, addr) + genl.nla_be16(2, 53) + genl.nla_u32(3, 2) + genl.nla_u32(4, 7)
            + genl.nla_u32(5, 0) + genl.nla_u32(6, 0) + genl.nla_u32(7, 3) + genl.nla_u32(8, 4) + genl.nla_u32(9, 5)
            + af_attr + genl.nla_u8(13, 2) + genl.nla_be16(14, 0) + genl.nla_u16(15, 2)
        )  # fmt: skip
        return genl.nla_nest(nl.IPVS_CMD_ATTR_DEST, body)

    d = nl.decode_dest(dest(genl.nla_u16(11, AF_INET), socket.inet_aton("192.0.2.1") + b"\0" * 12), AF_INET6)
    assert d.key == DestKey(AF_INET, "192.0.2.1", 53)
    assert (d.forward, d.weight, d.tun_type, d.tun_flags) == (2, 7, 2, 2)
    assert (d.active_conns, d.inact_conns, d.persist_conns) == (3, 4, 5)
    mapped = socket.inet_pton(socket.AF_INET6, "::ffff:192.0.2.1")
    d6 = nl.decode_dest(dest(b"", mapped), AF_INET6)  # no ADDR_FAMILY: the service's family
    assert d6.key == DestKey.of("::ffff:192.0.2.1", 53)


def test_decode_daemon_defaults_filled_by_kernel():
    body = (
        genl.nla_u32(1, 1) + genl.nla_str(2, "eth0") + genl.nla_u32(3, 5) + genl.nla_u16(4, 1472)
        + genl.nla_u16(7, 8848) + genl.nla_u8(8, 1) + genl.nla(5, socket.inet_aton("224.0.0.81"))
    )  # fmt: skip
    d = nl.decode_daemon(genl.nla_nest(nl.IPVS_CMD_ATTR_DAEMON, body))
    assert d == SyncDaemon(1, "eth0", 5, 1472, "224.0.0.81", 8848, 1)


# --- validation before sending ------------------------------------------------------------------


class _RecordingSock:
    def __init__(self) -> None:
        self.batches: list = []

    def batch(self, messages):
        self.batches.append(messages)
        return [None] * len(messages)


def _offline_backend() -> tuple[nl.NetlinkBackend, _RecordingSock]:
    b = object.__new__(nl.NetlinkBackend)
    rec = _RecordingSock()
    b.sock = rec  # type: ignore[assignment]
    return b, rec


def test_out_of_range_values_never_reach_the_kernel():
    b, rec = _offline_backend()
    k = ServiceKey.inet("tcp", "10.0.0.1", 80)
    good = Op.add_service(Service(k))
    bad_ops = [
        Op.add_dest(k, Destination(DestKey.of("10.0.0.2", 80), weight=-1)),
        Op.add_dest(k, Destination(DestKey.of("10.0.0.2", 80), tun_port=70000)),
        Op.add_service(Service(k, "a-scheduler-name-too-long")),
        Op.add_service(Service(ServiceKey.inet("udp", "2001:db8::1", 53), netmask=129)),
        Op.add_dest(k, Destination(DestKey.of("2001:db8::2", 80), forward=Forward.MASQ)),  # mixed family, not tunnel
        Op.start_daemon(SyncDaemon(1, "x" * 16)),
        Op.set_timeouts(Timeouts(tcp=-5)),
    ]
    for bad in bad_ops:
        with pytest.raises(ValueInvalid):
            b.apply([good, bad])
    assert rec.batches == []
    b.apply([good])
    assert len(rec.batches) == 1 and rec.batches[0][0][0] == nl.IPVS_CMD_NEW_SERVICE


# --- fast paths are exact -----------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_EDGES = (-1, 0, 1, 2, 3, 4, 5, 255, 65535, 65536, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000,
          True, False, 1.0, "1", None, Forward.TUNNEL, TunType.GRE)  # fmt: skip
_FIELDS = ("port", "forward", "weight", "u_threshold", "l_threshold", "tun_type", "tun_port", "tun_flags")


def _implication_holds(d: Destination, saf) -> None:
    if nl._dest_fields_ok(d, saf):
        d.validate(saf)  # must not raise: the fast path only accepts what the model accepts


def test_fast_dest_check_never_accepts_what_the_model_rejects_exhaustive():
    """Every field at every edge value (the others valid), and every address form against every
    family pair: whenever the fast path takes a destination, the model's validate() passes."""
    from dataclasses import replace as dc_replace

    base = Destination(DestKey(AF_INET, "10.0.0.1", 80), Forward.TUNNEL, 1)
    accepted = 0
    for field in _FIELDS:
        for v in _EDGES:
            d = dc_replace(base, key=DestKey(AF_INET, "10.0.0.1", v)) if field == "port" else dc_replace(base, **{field: v})
            for saf in (None, AF_INET, AF_INET6):
                _implication_holds(d, saf)
                accepted += nl._dest_fields_ok(d, saf)
    addrs = ["10.0.0.1", "10.0.0.01", "256.1.1.1", "1.2.3", "::1", "2001:DB8::1", "::ffff:1.2.3.4", "[::1]",
             "fe80::1%eth0", "1:2:3:4:5:6:7:8:9", "", "x", "0.0.0.0", "::", "1::2::3", "::1.2.3.04", " 10.0.0.1"]
    for af in (AF_INET, AF_INET6, 0, 7):
        for a in addrs:
            for fwd in (Forward.MASQ, Forward.TUNNEL):
                for saf in (None, AF_INET, AF_INET6):
                    d = Destination(DestKey(af, a, 80), fwd)
                    _implication_holds(d, saf)
                    accepted += nl._dest_fields_ok(d, saf)
    assert accepted > 100  # the fast path does take the ordinary cases


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(_FIELDS), v=st.integers(-(2**34), 2**34), saf=st.sampled_from([None, AF_INET, AF_INET6]))
def test_fast_dest_check_never_accepts_what_the_model_rejects(field, v, saf):
    base = Destination(DestKey(AF_INET6, "2001:db8::1", 80), Forward.TUNNEL, 1)
    d = replace_field(base, field, v)
    _implication_holds(d, saf)


def replace_field(d: Destination, field: str, v: object) -> Destination:
    from dataclasses import replace as dc_replace

    if field == "port":
        return dc_replace(d, key=DestKey(d.key.af, d.key.addr, v))  # type: ignore[arg-type]
    return dc_replace(d, **{field: v})


def test_fast_dest_check_accepts_the_common_cases():
    ok = [
        (Destination(DestKey.of("10.0.0.1", 80), Forward.MASQ, 1), AF_INET),
        (Destination(DestKey.of("2001:db8::1", 80), Forward.ROUTE, 0, 0x7FFFFFFF, 5), AF_INET6),
        (Destination(DestKey.of("10.0.0.1", 0), Forward.TUNNEL, 0x7FFFFFFF, tun_type=TunType.GUE, tun_port=1), AF_INET6),
        (Destination(DestKey(AF_INET6, "2001:DB8::1", 65535), 2, 1, 0x7FFFFFFF, 0xFFFFFFFF, 2, 65535, 0xFFFF), None),
    ]
    for d, saf in ok:
        assert nl._dest_fields_ok(d, saf), d
    assert not nl._dest_fields_ok(Destination(DestKey.of("10.0.0.1", 80), Forward.MASQ), AF_INET6)  # mixed, not tunnel
    assert not nl._dest_fields_ok(Destination(DestKey.of("10.0.0.1", 80), weight=True), AF_INET)  # bool


def test_encode_ops_raises_the_models_first_error_and_matches_encode_op():
    k = ServiceKey.inet("tcp", "10.0.0.1", 80)
    ops = [Op.add_service(Service(k))] + [Op.add_dest(k, Destination(DestKey.of(f"10.1.0.{i}", 80))) for i in range(1, 50)]
    bad1 = Op.add_dest(k, Destination(DestKey(AF_INET, "10.1.1.1", 80), weight=-1))
    bad2 = Op.add_dest(k, Destination(DestKey(AF_INET, "10.1.1.2", 80), tun_type=9))
    assert [c for c, _ in nl.encode_ops(ops)] == [nl.IPVS_CMD_NEW_SERVICE] + [nl.IPVS_CMD_NEW_DEST] * 49
    for seq in (ops[:10] + [bad1] + ops[10:] + [bad2], [bad2, bad1]):
        with pytest.raises(ValueInvalid) as fast:
            nl.encode_ops(seq)
        with pytest.raises(ValueInvalid) as model:
            validate_all(seq)
        assert str(fast.value) == str(model.value)
    # the fast encoding is byte for byte the plain one, also for forms only the model accepts
    odd = [Op.add_dest(k, Destination(DestKey(AF_INET6, "[2001:DB8::1]", 80), Forward.TUNNEL, tun_type=TunType.GUE,
                                      tun_port=9)), Op.edit_dest(k, Destination(DestKey.of("10.9.9.9", 1), weight=7))]
    for op in ops + odd:
        assert nl.encode_ops([op]) == [nl.encode_op(op)]
    # ... and in one batch, where a service op's encoded identity is reused by its dest ops
    batch = ops + odd + [Op.edit_service(Service(k, "rr")), Op.add_dest(k, Destination(DestKey.of("10.2.0.1", 80)))]
    assert nl.encode_ops(batch) == [nl.encode_op(op) for op in batch]


def _kernel_dest_reply(d: Destination, stats: tuple[int, ...]) -> bytes:
    """A GET_DEST reply laid out exactly as ip_vs_genl_fill_dest() writes it (6.1)."""
    raw = socket.inet_pton(socket.AF_INET6 if d.key.af == AF_INET6 else socket.AF_INET, d.key.addr)
    body = (
        genl.nla(1, raw + b"\0" * (16 - len(raw))) + genl.nla_be16(2, d.key.port) + genl.nla_u32(3, d.forward)
        + genl.nla_u32(4, d.weight) + genl.nla_u8(13, d.tun_type) + genl.nla_be16(14, d.tun_port)
        + genl.nla_u16(15, d.tun_flags) + genl.nla_u32(5, d.u_threshold) + genl.nla_u32(6, d.l_threshold)
        + genl.nla_u32(7, 1) + genl.nla_u32(8, 2) + genl.nla_u32(9, 3) + genl.nla_u16(11, d.key.af)
        + genl.nla_nest(10, _stats_block(False, [v & 0xFFFFFFFF for v in stats]))
        + genl.nla_nest(12, _stats_block(True, list(stats)))
    )  # fmt: skip
    return genl.nla_nest(nl.IPVS_CMD_ATTR_DEST, body)


def test_fast_dest_decode_equals_generic_decode():
    dests = [
        Destination(DestKey.of("10.0.0.2", 8080), Forward.MASQ, 3, 100, 10),
        Destination(DestKey.of("2001:db8::5", 443), Forward.TUNNEL, 0x7FFFFFFF, 0, 0, TunType.GUE, 6080, 3),
        Destination(DestKey.of("::ffff:10.1.2.3", 1), Forward.ROUTE, 0),
    ]
    stats = [(0,) * 10, tuple(range(1, 11)), (2**40,) * 10]
    replies = [_kernel_dest_reply(d, s) for d in dests for s in stats]
    assert len(replies[0]) == nl.DEST_REPLY_SIZE and nl.dest_layout_matches(replies[0])
    fast = nl.decode_dests(replies, AF_INET)
    slow = [nl.decode_dest(p, AF_INET) for p in replies]
    assert [repr(a) for a in fast] == [repr(b) for b in slow]
    assert [(a.stats, a.active_conns, a.inact_conns, a.persist_conns) for a in fast] == [
        (b.stats, b.active_conns, b.inact_conns, b.persist_conns) for b in slow
    ]
    assert fast[0] == dests[0] and fast[3] == dests[1] and fast[6] == dests[2]
    # an unknown layout (a PAD attribute, another attribute order) falls back to the generic decoder
    odd = genl.nla_nest(nl.IPVS_CMD_ATTR_DEST, genl.nla(16, b"") + genl.parse_attrs(replies[1])[nl.IPVS_CMD_ATTR_DEST])
    assert not nl.dest_layout_matches(odd)
    assert nl.decode_dests([odd], AF_INET)[0].stats == slow[1].stats
