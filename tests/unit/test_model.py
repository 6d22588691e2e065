"""lvsd.ipvs.model: every field range the model validates, normalisation, and equality that
ignores counters (so a desired-vs-actual diff never sees traffic as a change)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsd.ipvs.backend import Op, validate_all
from lvsd.ipvs.model import (
    AF_INET,
    AF_INET6,
    SVC_F_HASHED,
    SVC_F_PERSISTENT,
    Connection,
    DaemonState,
    Destination,
    DestKey,
    Forward,
    Info,
    Protocol,
    Service,
    ServiceEntry,
    ServiceKey,
    Stats,
    SyncDaemon,
    Timeouts,
    TunType,
    ValueInvalid,
    family_name,
    int_to_netmask,
    netmask_to_int,
    normalize_addr,
)

V4 = ServiceKey.inet("tcp", "10.0.0.1", 80)
V6 = ServiceKey.inet("tcp", "2001:db8::1", 80)
D = DestKey.of("10.0.0.2", 80)
BUSY = Stats(conns=7, inpkts=70, outpkts=60, inbytes=7000, outbytes=6000, cps=1, inpps=2, outpps=3, inbps=4, outbps=5)


def invalid(field: str, fn, *args, **kwargs) -> ValueInvalid:  # type: ignore[no-untyped-def]
    """fn(*args) raises ValueInvalid naming ``field``, with a one-line message."""
    with pytest.raises(ValueInvalid) as info:
        fn(*args, **kwargs)
    e = info.value
    assert e.field == field, f"expected field {field!r}, got {e.field!r}: {e}"
    assert str(e).startswith(f"{field}: ") and "\n" not in str(e)
    assert isinstance(e, ValueError)
    return e


# --- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, af, canonical",
    [
        ("10.0.0.1", AF_INET, "10.0.0.1"),
        ("2001:DB8:0:0::1", AF_INET6, "2001:db8::1"),
        ("[2001:db8::1]", AF_INET6, "2001:db8::1"),
        ("::ffff:10.0.0.1", AF_INET6, "::ffff:a00:1"),
        ("::", AF_INET6, "::"),
    ],
)
def test_normalize_addr(text, af, canonical):
    assert normalize_addr(text) == (af, canonical)
    assert normalize_addr(text, af) == (af, canonical)


@pytest.mark.parametrize("text", ["", "10.0.0.300", "10.0.0", "host.example", "2001:db8::1::2", "010.0.0.1", " "])
def test_normalize_addr_garbage(text):
    e = invalid("dest.addr", normalize_addr, text, None, "dest.addr")
    assert "not an IP address" in str(e)


def test_normalize_addr_family_mismatch():
    e = invalid("addr", normalize_addr, "10.0.0.1", AF_INET6)
    assert "inet6" in str(e)
    invalid("addr", normalize_addr, "2001:db8::1", AF_INET)


def test_family_names():
    assert family_name(AF_INET) == "inet" and family_name(AF_INET6) == "inet6" and family_name(7) == "7"


def test_netmask_conversions():
    assert netmask_to_int("255.255.255.0") == 0xFFFFFF00
    assert netmask_to_int("0.0.0.0") == 0
    assert int_to_netmask(0xFFFF0000) == "255.255.0.0"
    assert int_to_netmask(netmask_to_int("255.255.255.255")) == "255.255.255.255"
    invalid("netmask", netmask_to_int, "255.255.255.256")
    invalid("netmask", netmask_to_int, "64")


# --- service keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("proto, num", [("tcp", 6), ("UDP", 17), ("sctp", 132), (Protocol.TCP, 6), (17, 17)])
def test_service_key_protocols(proto, num):
    k = ServiceKey.inet(proto, "10.0.0.1", 80)
    assert k.protocol == num and k.fwmark == 0 and not k.is_fwmark
    k.validate()


@pytest.mark.parametrize("proto", ["icmp", "", 0, 1, 255, "fwmark"])
def test_service_key_bad_protocol(proto):
    invalid("protocol", ServiceKey.inet, proto, "10.0.0.1", 80)


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_service_key_port_range_ok(port):
    ServiceKey.inet("tcp", "10.0.0.1", port).validate()


@pytest.mark.parametrize("port", [-1, 65536, 2**32, True, "80", 80.0])
def test_service_key_port_out_of_range(port):
    invalid("port", ServiceKey.inet, "tcp", "10.0.0.1", port)
    invalid("port", ServiceKey(AF_INET, 6, "10.0.0.1", port).validate)


def test_service_key_address_is_normalised():
    assert ServiceKey.inet("tcp", "2001:DB8::0:1", 80) == V6
    assert ServiceKey.inet("tcp", "[2001:db8::1]", 80).addr == "2001:db8::1"
    invalid("addr", ServiceKey.inet, "tcp", "10.0.0.256", 80)


def test_service_key_family_mismatch():
    invalid("addr", ServiceKey(AF_INET, 6, "2001:db8::1", 80).validate)
    invalid("addr", ServiceKey(AF_INET6, 6, "10.0.0.1", 80).validate)
    invalid("af", ServiceKey(3, 6, "10.0.0.1", 80).validate)


@pytest.mark.parametrize("mark", [1, 2, 0xFFFFFFFF])
def test_fwmark_range_ok(mark):
    k = ServiceKey.fwmark_key(mark)
    assert k.is_fwmark and k.af == AF_INET and (k.protocol, k.addr, k.port) == (0, "", 0)
    k.validate()
    ServiceKey.fwmark_key(mark, AF_INET6).validate()


@pytest.mark.parametrize("mark", [0, -1, 2**32, True])
def test_fwmark_out_of_range(mark):
    invalid("fwmark", ServiceKey.fwmark_key, mark)


def test_fwmark_key_family_and_extra_fields():
    invalid("af", ServiceKey.fwmark_key, 1, 3)
    invalid("af", ServiceKey(7, 0, "", 0, 5).validate)
    invalid("fwmark", ServiceKey(AF_INET, 6, "", 0, 5).validate)
    invalid("fwmark", ServiceKey(AF_INET, 0, "10.0.0.1", 0, 5).validate)
    invalid("fwmark", ServiceKey(AF_INET, 0, "", 80, 5).validate)
    invalid("fwmark", ServiceKey(AF_INET, 0, "", 0, 2**32).validate)


def test_service_key_text():
    assert str(V4) == "tcp 10.0.0.1:80"
    assert str(V6) == "tcp [2001:db8::1]:80"
    assert str(ServiceKey.inet("sctp", "10.0.0.1", 3868)) == "sctp 10.0.0.1:3868"
    assert str(ServiceKey.fwmark_key(5)) == "fwmark 5"
    assert str(ServiceKey.fwmark_key(5, AF_INET6)) == "fwmark 5 inet6"


def test_service_keys_order_and_hash():
    keys = [ServiceKey.fwmark_key(2), V6, V4, ServiceKey.inet("udp", "10.0.0.1", 53)]
    assert sorted(keys) == sorted(keys, key=lambda k: (k.af, k.protocol, k.addr, k.port, k.fwmark))
    assert len({V4, ServiceKey.inet("tcp", "10.0.0.1", 80)}) == 1


# --- services ----------------------------------------------------------------------------------


def test_service_defaults_and_normalisation():
    s = Service(V4)
    assert (s.scheduler, s.flags, s.timeout, s.pe_name) == ("wlc", 0, 0, "")
    assert s.netmask == 0xFFFFFFFF and s.netmask_text() == "255.255.255.255"
    s6 = Service(V6)
    assert s6.netmask == 128 and s6.netmask_text() == "128"
    assert Service(V4, flags=SVC_F_HASHED | SVC_F_PERSISTENT).flags == SVC_F_PERSISTENT
    assert Service(V4, flags=SVC_F_HASHED) == Service(V4)
    assert Service(V4, flags=SVC_F_PERSISTENT).persistent and not s.persistent
    s.validate()
    s6.validate()


@pytest.mark.parametrize("name", ["rr", "x", "x" * 15, "wlc"])
def test_scheduler_length_ok(name):
    Service(V4, name).validate()


@pytest.mark.parametrize("name", ["", "x" * 16, "é" * 8])  # 16 bytes in UTF-8: too long with the NUL
def test_scheduler_length_out_of_range(name):
    invalid("scheduler", Service(V4, name).validate)


def test_pe_name_length():
    Service(V4, pe_name="p" * 15).validate()
    invalid("pe_name", Service(V4, pe_name="p" * 16).validate)


@pytest.mark.parametrize("flags", [-1, 2**32])
def test_flags_range(flags):
    invalid("flags", Service(V4, flags=flags).validate)
    Service(V4, flags=0xFFFFFFFF).validate()


@pytest.mark.parametrize("timeout", [-1, 2**32])
def test_persistence_timeout_range(timeout):
    invalid("timeout", Service(V4, flags=SVC_F_PERSISTENT, timeout=timeout).validate)
    Service(V4, flags=SVC_F_PERSISTENT, timeout=0xFFFFFFFF).validate()


@pytest.mark.parametrize("mask, ok", [(0, True), (0xFFFFFF00, True), (0xFFFFFFFF, True), (-2, False), (2**32, False)])
def test_ipv4_netmask_range(mask, ok):
    svc = Service(V4, netmask=mask)
    if ok:
        svc.validate()
    else:
        invalid("netmask", svc.validate)


@pytest.mark.parametrize("prefix, ok", [(1, True), (64, True), (128, True), (0, False), (129, False), (-5, False)])
def test_ipv6_prefix_length_range(prefix, ok):
    for key in (V6, ServiceKey.fwmark_key(1, AF_INET6)):
        svc = Service(key, netmask=prefix)
        if ok:
            svc.validate()
            assert svc.netmask_text() == str(prefix)
        else:
            invalid("netmask", svc.validate)


def test_service_validate_checks_the_key_first():
    invalid("port", Service(ServiceKey(AF_INET, 6, "10.0.0.1", -1), "").validate)


def test_service_equality_ignores_stats():
    a = Service(V4, "rr")
    b = a.with_stats(BUSY)
    assert a == b and hash(a) == hash(b) and b.stats == BUSY
    assert Service(V4, "rr") != Service(V4, "wrr")
    assert Service(V4, "rr", SVC_F_PERSISTENT, 300) != Service(V4, "rr", SVC_F_PERSISTENT, 360)
    assert Service(V4, pe_name="sip") != Service(V4)
    assert Service(V4, netmask=0xFFFFFF00) != Service(V4)


# --- destinations ------------------------------------------------------------------------------


def test_destination_defaults():
    d = Destination(D)
    assert (d.forward, d.weight, d.u_threshold, d.l_threshold) == (Forward.ROUTE, 1, 0, 0)
    assert (d.tun_type, d.tun_port, d.tun_flags) == (TunType.IPIP, 0, 0)
    d.validate(AF_INET)
    assert str(D) == "10.0.0.2:80" and str(DestKey.of("2001:db8::2", 8080)) == "[2001:db8::2]:8080"


@pytest.mark.parametrize(
    "field, value, ok",
    [
        ("weight", 0, True),
        ("weight", 0x7FFFFFFF, True),
        ("weight", -1, False),
        ("weight", 2**31, False),
        ("weight", True, False),
        ("u_threshold", 0x7FFFFFFF, True),
        ("u_threshold", 0x80000000, False),
        ("u_threshold", -1, False),
        ("u_threshold", 2**32, False),
        ("l_threshold", 0xFFFFFFFF, True),
        ("l_threshold", -1, False),
        ("l_threshold", 2**32, False),
        ("forward", Forward.MASQ, True),
        ("forward", Forward.TUNNEL, True),
        ("forward", 4, True),
        ("forward", 5, False),
        ("forward", -1, False),
        ("tun_type", TunType.GRE, True),
        ("tun_type", 3, False),
        ("tun_port", 65535, True),
        ("tun_port", 65536, False),
        ("tun_port", -1, False),
        ("tun_flags", 0xFFFF, True),
        ("tun_flags", 0x10000, False),
    ],
)
def test_destination_field_ranges(field, value, ok):
    d = Destination(D, **{field: value})
    if ok:
        d.validate(AF_INET)
    else:
        invalid(field, d.validate, AF_INET)


@pytest.mark.parametrize("port, ok", [(0, True), (65535, True), (-1, False), (65536, False)])
def test_destination_port_range(port, ok):
    d = Destination(DestKey(AF_INET, "10.0.0.2", port))
    if ok:
        d.validate()
    else:
        invalid("dest.port", d.validate)
        invalid("port", DestKey.of, "10.0.0.2", port)


def test_destination_address_and_family():
    invalid("dest.addr", Destination(DestKey(AF_INET, "10.0.0.300", 80)).validate)
    invalid("dest.addr", Destination(DestKey(AF_INET, "2001:db8::1", 80)).validate)
    invalid("dest.af", Destination(DestKey(3, "10.0.0.2", 80)).validate)
    invalid("addr", DestKey.of, "nonsense", 80)
    assert DestKey.of("2001:DB8::2", 80) == DestKey(AF_INET6, "2001:db8::2", 80)


@pytest.mark.parametrize("forward", [Forward.MASQ, Forward.ROUTE, Forward.LOCAL, Forward.BYPASS])
def test_family_mismatch_needs_a_tunnel(forward):
    v6 = Destination(DestKey.of("2001:db8::2", 80), forward)
    e = invalid("dest.addr", v6.validate, AF_INET)
    assert "tunnel" in str(e)
    invalid("dest.addr", Destination(D, forward).validate, AF_INET6)
    Destination(DestKey.of("2001:db8::2", 80), Forward.TUNNEL).validate(AF_INET)
    Destination(D, Forward.TUNNEL).validate(AF_INET6)
    v6.validate(None)  # no service family given: nothing to compare


def test_destination_equality_ignores_counters():
    a = Destination(D, Forward.MASQ, 3)
    b = Destination(D, Forward.MASQ, 3, active_conns=10, inact_conns=20, persist_conns=5, stats=BUSY)
    assert a == b and hash(a) == hash(b)
    for change in (
        {"forward": Forward.ROUTE},
        {"weight": 4},
        {"u_threshold": 1},
        {"l_threshold": 1},
        {"tun_type": TunType.GUE},
        {"tun_port": 1},
        {"tun_flags": 1},
    ):
        fields = {"forward": Forward.MASQ, "weight": 3, **change}
        assert Destination(D, **fields) != a, change
    assert Destination(DestKey.of("10.0.0.2", 81), Forward.MASQ, 3) != a


def test_service_entry_equality_ignores_traffic():
    idle = ServiceEntry(Service(V4, "rr"), {D: Destination(D, Forward.MASQ)})
    busy = ServiceEntry(Service(V4, "rr").with_stats(BUSY), {D: Destination(D, Forward.MASQ, active_conns=3, stats=BUSY)})
    assert idle == busy
    assert idle != ServiceEntry(Service(V4, "rr"), {D: Destination(D, Forward.MASQ, 2)})


# --- timeouts, daemons, info, connections ----------------------------------------------------------


@pytest.mark.parametrize("field", ["tcp", "tcp_fin", "udp"])
def test_timeout_ranges(field):
    Timeouts(**{field: 0x7FFFFFFF}).validate()
    Timeouts().validate()
    invalid(f"timeout.{field}", Timeouts(**{field: -1}).validate)
    invalid(f"timeout.{field}", Timeouts(**{field: 2**31}).validate)


def test_sync_daemon_ranges():
    SyncDaemon(DaemonState.MASTER, "lo").validate()
    SyncDaemon(DaemonState.BACKUP, "x" * 15, 255, 65535, "ff02::81", 65535, 255).validate()
    invalid("state", SyncDaemon(0, "lo").validate)
    invalid("state", SyncDaemon(3, "lo").validate)
    invalid("mcast_ifn", SyncDaemon(DaemonState.MASTER, "").validate)
    invalid("mcast_ifn", SyncDaemon(DaemonState.MASTER, "x" * 16).validate)
    invalid("syncid", SyncDaemon(DaemonState.MASTER, "lo", 256).validate)
    invalid("syncid", SyncDaemon(DaemonState.MASTER, "lo", -1).validate)
    invalid("sync_maxlen", SyncDaemon(DaemonState.MASTER, "lo", 0, 65536).validate)
    invalid("mcast_port", SyncDaemon(DaemonState.MASTER, "lo", 0, 0, "", 65536).validate)
    invalid("mcast_ttl", SyncDaemon(DaemonState.MASTER, "lo", 0, 0, "", 0, 256).validate)
    invalid("mcast_group", SyncDaemon(DaemonState.MASTER, "lo", 0, 0, "224.0.0.300").validate)


def test_info_version_text():
    assert Info(0x010201, 4096).version_text == "1.2.1"
    assert Info((2 << 16) | (10 << 8) | 255, 1).version_text == "2.10.255"


def test_connection_is_a_value():
    c = Connection("TCP", "10.1.0.2", 40000, "10.0.0.1", 80, "10.0.0.2", 80, "ESTABLISHED", 899)
    assert c == Connection("TCP", "10.1.0.2", 40000, "10.0.0.1", 80, "10.0.0.2", 80, "ESTABLISHED", 899)
    assert c.pe_name == "" and c.pe_data == ""


# --- Op.validate: every kind checks what it would send ---------------------------------------------


def test_op_validation_per_kind():
    good_dest = Destination(D)
    validate_all(
        [
            Op.add_service(Service(V4)),
            Op.edit_service(Service(V6, netmask=64)),
            Op.del_service(V4),
            Op.add_dest(V4, good_dest),
            Op.edit_dest(V4, good_dest),
            Op.del_dest(V4, D),
            Op.del_dest(V4, Destination(DestKey.of("2001:db8::2", 80), Forward.MASQ)),  # only the key matters
            Op.flush(),
            Op.zero(),
            Op.zero(V4),
            Op.set_timeouts(Timeouts(1, 2, 3)),
            Op.start_daemon(SyncDaemon(DaemonState.MASTER, "lo")),
            Op.stop_daemon(DaemonState.BACKUP),
        ]
    )
    invalid("scheduler", Op.add_service(Service(V4, "")).validate)
    invalid("netmask", Op.edit_service(Service(V6, netmask=0)).validate)
    invalid("port", Op.del_service(ServiceKey(AF_INET, 6, "10.0.0.1", -1)).validate)
    invalid("weight", Op.add_dest(V4, Destination(D, weight=-1)).validate)
    invalid("dest.addr", Op.edit_dest(V4, Destination(DestKey.of("2001:db8::2", 80))).validate)
    invalid("dest.port", Op.del_dest(V4, DestKey(AF_INET, "10.0.0.2", 70000)).validate)
    invalid("port", Op.zero(ServiceKey(AF_INET, 6, "10.0.0.1", 70000)).validate)
    invalid("timeout.udp", Op.set_timeouts(Timeouts(0, 0, -1)).validate)
    invalid("syncid", Op.start_daemon(SyncDaemon(DaemonState.MASTER, "lo", 300)).validate)
    invalid("state", Op.stop_daemon(0).validate)


def test_validate_all_reports_the_first_bad_value():
    ops = [Op.add_service(Service(V4)), Op.add_dest(V4, Destination(D, tun_port=-1)), Op.add_service(Service(V4, ""))]
    invalid("tun_port", validate_all, ops)


# --- properties ----------------------------------------------------------------------------------

u16 = st.integers(0, 65535)
u32 = st.integers(0, 0xFFFFFFFF)


@given(
    port=u16,
    weight=st.integers(0, 0x7FFFFFFF),
    u=st.integers(0, 0x7FFFFFFF),
    lo=u32,
    fwd=st.sampled_from([0, 2, 3]),
    tt=st.sampled_from(list(TunType)),
    tp=u16,
    tf=u16,
)
def test_any_in_range_destination_validates(port, weight, u, lo, fwd, tt, tp, tf):
    Destination(DestKey(AF_INET, "10.0.0.2", port), fwd, weight, u, lo, tt, tp, tf).validate(AF_INET)


@given(
    field=st.sampled_from(["weight", "u_threshold", "l_threshold", "tun_port", "tun_flags"]),
    value=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)),
)
def test_any_out_of_range_destination_field_is_named(field, value):
    invalid(field, Destination(D, **{field: value}).validate)


@given(mark=st.integers(1, 0xFFFFFFFF), af=st.sampled_from([AF_INET, AF_INET6]), prefix=st.integers(1, 128))
def test_any_fwmark_service_validates(mark, af, prefix):
    Service(ServiceKey.fwmark_key(mark, af), "rr", netmask=prefix if af == AF_INET6 else -1).validate()


@given(st.ip_addresses())
def test_any_address_normalises_to_a_fixed_point(ip):
    af, text = normalize_addr(str(ip))
    assert normalize_addr(text) == (af, text)
    assert af == (AF_INET6 if ip.version == 6 else AF_INET)
