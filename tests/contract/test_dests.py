"""Destinations (real servers): round trips, kernel list order, tunnels, mixed families, refusals."""

from __future__ import annotations

import errno

import pytest
from contract_helpers import D1, D2, D3, D6, D6B, FWM, FWM6, MISSING, V4, V6, assert_dests, refused

from lvsd.ipvs.model import (
    TUN_F_CSUM,
    TUN_F_NOCSUM,
    TUN_F_REMCSUM,
    Destination,
    DestKey,
    Forward,
    Service,
    TunType,
    ValueInvalid,
)

ROUND_TRIP = [
    pytest.param(Destination(D1), id="defaults-route"),
    pytest.param(Destination(D1, Forward.MASQ, 3), id="masq"),
    pytest.param(Destination(D1, Forward.MASQ, 0), id="weight-0"),
    pytest.param(Destination(D1, Forward.MASQ, 65536), id="weight-65536"),
    pytest.param(Destination(D1, Forward.MASQ, 0x7FFFFFFF), id="weight-max"),
    pytest.param(Destination(D1, Forward.MASQ, 1, 100, 50), id="thresholds"),
    pytest.param(Destination(D1, Forward.MASQ, 1, 7, 7), id="thresholds-equal"),
    pytest.param(Destination(D1, Forward.MASQ, 1, 0x7FFFFFFF, 0x7FFFFFFF), id="thresholds-max"),
    pytest.param(Destination(D1, Forward.TUNNEL), id="tunnel-ipip"),
    pytest.param(Destination(D1, Forward.TUNNEL, 1, tun_type=TunType.GUE, tun_port=6080, tun_flags=TUN_F_NOCSUM), id="gue"),
    pytest.param(Destination(D1, Forward.TUNNEL, 1, tun_type=TunType.GUE, tun_port=65535, tun_flags=TUN_F_REMCSUM), id="gue-remcsum"),
    pytest.param(Destination(D1, Forward.TUNNEL, 1, tun_type=TunType.GRE, tun_flags=TUN_F_CSUM), id="gre-csum"),
    pytest.param(Destination(D1, Forward.TUNNEL, 1, tun_type=TunType.GRE, tun_flags=0xFFFF), id="tun-flags-all"),
    # the kernel stores tunnel options whatever the method (ipvsadm refuses them client-side)
    pytest.param(Destination(D1, Forward.MASQ, 1, tun_type=TunType.GRE, tun_flags=TUN_F_CSUM), id="gre-options-on-masq"),
    pytest.param(Destination(D1, Forward.ROUTE, 1, tun_type=TunType.GUE, tun_port=5555), id="gue-options-on-route"),
    pytest.param(Destination(DestKey.of("10.0.0.2", 0)), id="port-0"),
    pytest.param(Destination(DestKey.of("127.0.0.1", 80), Forward.MASQ), id="loopback"),
    pytest.param(Destination(DestKey.of("0.1.2.3", 80)), id="zeronet-not-zero"),
    pytest.param(Destination(DestKey.of("240.0.0.1", 80)), id="class-e"),
]


@pytest.mark.parametrize("dest", ROUND_TRIP)
def test_add_round_trip(backend, dest):
    backend.add_service(Service(V4, "wrr"))
    backend.add_dest(V4, dest)
    assert_dests(backend, V4, [dest])


@pytest.mark.parametrize(
    "dest",
    [
        Destination(D6, Forward.MASQ, 2),
        Destination(D6B, Forward.ROUTE, 0, 10, 5),
        Destination(DestKey.of("::1", 80), Forward.MASQ),
        Destination(DestKey.of("::1.2.3.4", 80)),
        Destination(DestKey.of("fec0::1", 80)),
        Destination(DestKey.of("fc00::1", 80)),
        Destination(D6, Forward.TUNNEL, 1, tun_type=TunType.GUE, tun_port=6080),
    ],
)
def test_ipv6_round_trip(backend, dest):
    backend.add_service(Service(V6, "mh"))
    backend.add_dest(V6, dest)
    assert_dests(backend, V6, [dest])


def test_fwmark_destinations_keep_their_port(backend):
    backend.add_service(Service(FWM, "lc"))
    a = Destination(DestKey.of("10.0.0.9", 0), weight=10)
    b = Destination(DestKey.of("10.0.0.10", 80), Forward.MASQ, 20, 1000, 800)
    backend.add_dest(FWM, a)
    backend.add_dest(FWM, b)
    assert_dests(backend, FWM, [b, a])
    backend.add_service(Service(FWM6))
    c = Destination(DestKey.of("2001:db8::9", 0))
    backend.add_dest(FWM6, c)
    assert_dests(backend, FWM6, [c])
    assert_dests(backend, FWM, [b, a])


def test_kernel_order_is_newest_first_and_edit_keeps_position(backend):
    backend.add_service(Service(V4, "wrr"))
    a, b, c = Destination(D1, Forward.MASQ, 3), Destination(D2, Forward.MASQ, 1), Destination(D3, Forward.MASQ, 0)
    for d in (a, b, c):
        backend.add_dest(V4, d)
    assert_dests(backend, V4, [c, b, a])
    b2 = Destination(D2, Forward.ROUTE, 9, 50, 5)
    backend.edit_dest(V4, b2)
    assert_dests(backend, V4, [c, b2, a])
    backend.del_dest(V4, D2)
    assert_dests(backend, V4, [c, a])
    backend.add_dest(V4, b)  # back at the head
    assert_dests(backend, V4, [b, c, a])


def test_many_destinations(backend):
    backend.add_service(Service(V4, "rr"))
    ds = [Destination(DestKey.of(f"10.2.{i // 250}.{i % 250 + 1}", 80), Forward.MASQ, i % 7) for i in range(300)]
    for d in ds:
        backend.add_dest(V4, d)
    assert_dests(backend, V4, ds[::-1])


def test_duplicate_is_eexist(backend):
    backend.add_service(Service(V4))
    backend.add_dest(V4, Destination(D1, Forward.MASQ, 3))
    refused(errno.EEXIST, backend.add_dest, V4, Destination(D1, Forward.ROUTE, 5))
    assert_dests(backend, V4, [Destination(D1, Forward.MASQ, 3)])


def test_same_address_other_port_or_family_are_distinct(backend):
    backend.add_service(Service(V4))
    a = Destination(DestKey.of("10.0.0.2", 80))
    b = Destination(DestKey.of("10.0.0.2", 81))
    c = Destination(DestKey.of("2001:db8::a", 80), Forward.TUNNEL)
    for d in (a, b, c):
        backend.add_dest(V4, d)
    assert_dests(backend, V4, [c, b, a])


def test_same_destination_in_two_services(backend):
    backend.add_service(Service(V4))
    backend.add_service(Service(FWM))
    backend.add_dest(V4, Destination(D1, Forward.MASQ, 2))
    backend.add_dest(FWM, Destination(D1, Forward.ROUTE, 5))
    assert_dests(backend, V4, [Destination(D1, Forward.MASQ, 2)])
    assert_dests(backend, FWM, [Destination(D1, Forward.ROUTE, 5)])
    backend.del_dest(V4, D1)
    assert_dests(backend, FWM, [Destination(D1, Forward.ROUTE, 5)])


@pytest.mark.parametrize("op", ["add", "edit", "delete", "list"])
def test_on_missing_service_is_esrch(backend, op):
    backend.add_service(Service(V4))
    backend.add_dest(V4, Destination(D1))
    call = {
        "add": lambda: backend.add_dest(MISSING, Destination(D1)),
        "edit": lambda: backend.edit_dest(MISSING, Destination(D1)),
        "delete": lambda: backend.del_dest(MISSING, D1),
        "list": lambda: backend.dests(MISSING),
    }[op]
    refused(errno.ESRCH, call)
    assert_dests(backend, V4, [Destination(D1)])


def test_missing_destination_is_enoent(backend):
    backend.add_service(Service(V4))
    backend.add_dest(V4, Destination(D1))
    refused(errno.ENOENT, backend.edit_dest, V4, Destination(D2, weight=4))
    refused(errno.ENOENT, backend.del_dest, V4, D2)
    refused(errno.ENOENT, backend.del_dest, V4, DestKey.of("10.0.0.2", 81))
    backend.del_dest(V4, D1)
    refused(errno.ENOENT, backend.del_dest, V4, D1)
    assert backend.dests(V4) == []


@pytest.mark.parametrize("upper, lower", [(10, 20), (0, 5), (1, 0xFFFFFFFF)])
def test_lower_threshold_above_upper_is_erange(backend, upper, lower):
    backend.add_service(Service(V4))
    refused(errno.ERANGE, backend.add_dest, V4, Destination(D1, u_threshold=upper, l_threshold=lower))
    backend.add_dest(V4, Destination(D1, u_threshold=100, l_threshold=50))
    refused(errno.ERANGE, backend.edit_dest, V4, Destination(D1, u_threshold=upper, l_threshold=lower))
    assert_dests(backend, V4, [Destination(D1, u_threshold=100, l_threshold=50)])


@pytest.mark.parametrize("upper, lower", [(2**31, 0), (2**31, 5), (0xFFFFFFFF, 0xFFFFFFFF), (2**31, 2**31)])
def test_upper_threshold_above_int_max_is_refused_before_sending(backend, upper, lower):
    # Linux 6.1 answers EINVAL for u_threshold > INT_MAX (and ipvsadm refuses it itself), so the
    # model refuses it before anything is sent, naming the field.
    backend.add_service(Service(V4))
    backend.add_dest(V4, Destination(D1))
    for call, svc, dk in (
        (backend.add_dest, V4, D2),
        (backend.edit_dest, V4, D1),
        (backend.add_dest, MISSING, D1),
    ):
        with pytest.raises(ValueInvalid, match="u_threshold"):
            call(svc, Destination(dk, u_threshold=upper, l_threshold=lower))
    assert_dests(backend, V4, [Destination(D1)])


def test_threshold_order_is_the_kernels_erange(backend):
    backend.add_service(Service(V4))
    refused(errno.ERANGE, backend.add_dest, V4, Destination(D1, u_threshold=0x7FFFFFFF, l_threshold=2**31))
    backend.add_dest(V4, Destination(D1))
    refused(errno.ERANGE, backend.edit_dest, V4, Destination(D1, u_threshold=5, l_threshold=0xFFFFFFFF))
    assert backend.dests(V4) == [Destination(D1)]


@pytest.mark.parametrize("forward", [Forward.TUNNEL, Forward.MASQ, Forward.ROUTE])
def test_gue_without_port_is_einval(backend, forward):
    backend.add_service(Service(V4))
    refused(errno.EINVAL, backend.add_dest, V4, Destination(D1, forward, tun_type=TunType.GUE, tun_port=0))
    backend.add_dest(V4, Destination(D1, forward))
    refused(errno.EINVAL, backend.edit_dest, V4, Destination(D1, forward, tun_type=TunType.GUE, tun_port=0))
    assert_dests(backend, V4, [Destination(D1, forward)])


def test_refusal_order_erange_before_eexist_and_einval(backend):
    backend.add_service(Service(V4))
    backend.add_dest(V4, Destination(D1))
    # an existing destination with bad thresholds: the range check comes first
    refused(errno.ERANGE, backend.add_dest, V4, Destination(D1, u_threshold=1, l_threshold=2))
    # GUE without a port comes before the duplicate check
    refused(errno.EINVAL, backend.add_dest, V4, Destination(D1, Forward.TUNNEL, tun_type=TunType.GUE))
    # bad thresholds on a missing destination: ERANGE, not ENOENT
    refused(errno.ERANGE, backend.edit_dest, V4, Destination(D2, u_threshold=1, l_threshold=2))
    # a missing service comes before everything
    refused(errno.ESRCH, backend.add_dest, MISSING, Destination(D1, u_threshold=1, l_threshold=2))


@pytest.mark.parametrize(
    "addr", ["0.0.0.0", "224.0.0.1", "239.255.255.255", "255.255.255.255", "127.255.255.255"]
)
def test_non_unicast_ipv4_destination_is_einval(backend, addr):
    backend.add_service(Service(V4))
    refused(errno.EINVAL, backend.add_dest, V4, Destination(DestKey.of(addr, 80)))
    assert backend.dests(V4) == []


@pytest.mark.parametrize("addr", ["::", "fe80::1", "febf::1", "ff02::1", "ff00::1", "::ffff:1.2.3.4"])
def test_non_unicast_ipv6_destination_is_einval(backend, addr):
    backend.add_service(Service(V6))
    refused(errno.EINVAL, backend.add_dest, V6, Destination(DestKey.of(addr, 80)))
    assert backend.dests(V6) == []


def test_mixed_family_needs_a_tunnel(backend):
    backend.add_service(Service(V4))
    backend.add_service(Service(V6))
    v6_on_v4 = Destination(D6, Forward.TUNNEL, 2)
    v4_on_v6 = Destination(D1, Forward.TUNNEL, 3, tun_type=TunType.GRE, tun_flags=TUN_F_CSUM)
    backend.add_dest(V4, v6_on_v4)
    backend.add_dest(V6, v4_on_v6)
    assert_dests(backend, V4, [v6_on_v4])
    assert_dests(backend, V6, [v4_on_v6])
    for fwd in (Forward.MASQ, Forward.ROUTE):
        with pytest.raises(ValueInvalid):
            backend.add_dest(V4, Destination(D6B, fwd))
        with pytest.raises(ValueInvalid):
            backend.edit_dest(V4, Destination(D6, fwd))
    assert_dests(backend, V4, [v6_on_v4])
    edited = Destination(D6, Forward.TUNNEL, 7, tun_type=TunType.GUE, tun_port=6080)
    backend.edit_dest(V4, edited)
    assert_dests(backend, V4, [edited])
    backend.del_dest(V4, D6)
    backend.del_dest(V6, D1)
    assert backend.dests(V4) == [] and backend.dests(V6) == []


def test_mixed_family_on_fwmark_service(backend):
    backend.add_service(Service(FWM))
    d = Destination(DestKey.of("2001:db8::7", 0), Forward.TUNNEL)
    backend.add_dest(FWM, d)
    assert_dests(backend, FWM, [d])


def test_edit_changes_every_settable_field(backend):
    backend.add_service(Service(V4, "wlc"))
    backend.add_dest(V4, Destination(D1, Forward.MASQ, 1))
    for d in [
        Destination(D1, Forward.ROUTE, 5),
        Destination(D1, Forward.TUNNEL, 0, 100, 10, TunType.GUE, 6080, TUN_F_REMCSUM),
        Destination(D1, Forward.TUNNEL, 2, 0, 0, TunType.GRE, 0, TUN_F_CSUM),
        Destination(D1, Forward.MASQ, 0x7FFFFFFF, 5, 5),
    ]:
        backend.edit_dest(V4, d)
        assert_dests(backend, V4, [d])


def test_delete_uses_only_the_key(backend):
    backend.add_service(Service(V4))
    backend.add_dest(V4, Destination(D1, Forward.MASQ, 9, 10, 5))
    backend.del_dest(V4, Destination(D1, Forward.TUNNEL, 1))
    assert backend.dests(V4) == []


def test_destination_stats_and_counts_present_and_ignored_by_equality(backend):
    backend.add_service(Service(V4))
    backend.add_dest(V4, Destination(D1, Forward.MASQ, 2))
    (d,) = backend.dests(V4)
    assert (d.active_conns, d.inact_conns, d.persist_conns) == (0, 0, 0)
    assert d.stats.conns == 0
    assert d == Destination(D1, Forward.MASQ, 2)


@pytest.mark.parametrize(
    "dest",
    [
        Destination(D1, weight=-1),
        Destination(D1, weight=2**31),
        Destination(D1, u_threshold=-1),
        Destination(D1, l_threshold=2**32),
        Destination(D1, forward=5),
        Destination(D1, tun_type=3),
        Destination(D1, tun_port=65536),
        Destination(D1, tun_flags=0x10000),
        Destination(DestKey(2, "10.0.0.2", 65536)),
        Destination(DestKey(2, "2001:db8::1", 80), Forward.TUNNEL),
        Destination(DestKey(7, "10.0.0.2", 80)),
    ],
)
def test_invalid_values_raise_value_invalid(backend, dest):
    backend.add_service(Service(V4))
    with pytest.raises(ValueInvalid):
        backend.add_dest(V4, dest)
    assert backend.dests(V4) == []
