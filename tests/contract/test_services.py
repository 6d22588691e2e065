"""Virtual services: round trips, edit semantics, fwmark and IPv6, every kernel refusal."""

from __future__ import annotations

import errno

import pytest
from contract_helpers import D1, FWM, FWM6, MISSING, SCTP, UDP, V4, V4_443, V6, assert_service, refused

from lvsd.ipvs.model import (
    AF_INET6,
    SVC_F_HASHED,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    Destination,
    Service,
    ServiceKey,
    ValueInvalid,
    netmask_to_int,
)

#: Schedulers a 6.1 kernel loads on demand ("twos" came in 6.7).
SCHEDULERS_6_1 = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh")

ROUND_TRIP = [
    pytest.param(Service(V4), id="tcp-defaults"),
    pytest.param(Service(V4, "wrr"), id="tcp-wrr"),
    pytest.param(Service(UDP, "rr", SVC_F_ONEPACKET), id="udp-ops"),
    pytest.param(
        Service(V4_443, "sh", SVC_F_PERSISTENT | SVC_F_SCHED1 | SVC_F_SCHED2, 300, netmask_to_int("255.255.255.0")),
        id="sh-flags-persistent-netmask",
    ),
    pytest.param(Service(UDP, "rr", SVC_F_PERSISTENT, 60, pe_name="sip"), id="pe-sip"),
    pytest.param(Service(UDP, "wlc", 0, 0, pe_name="sip"), id="pe-sip-not-persistent"),
    pytest.param(Service(SCTP, "fo"), id="sctp"),
    pytest.param(Service(V6, "mh", SVC_F_SCHED1 | SVC_F_SCHED2), id="ipv6"),
    pytest.param(Service(V6, "nq", SVC_F_PERSISTENT, 120, netmask=64), id="ipv6-prefix-64"),
    pytest.param(Service(V6, "rr", netmask=1), id="ipv6-prefix-1"),
    pytest.param(Service(FWM, "lc"), id="fwmark"),
    pytest.param(Service(FWM6, "nq", SVC_F_PERSISTENT, 120, netmask=64), id="fwmark-ipv6"),
    pytest.param(Service(ServiceKey.fwmark_key(0xFFFFFFFF), "rr"), id="fwmark-max"),
    pytest.param(Service(V4, "none"), id="scheduler-none"),
    pytest.param(Service(V4, "rr", 0xFFFFFFFF & ~SVC_F_HASHED), id="all-flags"),
    pytest.param(Service(V4, "rr", SVC_F_PERSISTENT, 17179869), id="timeout-max-exact"),
    pytest.param(Service(V4, "rr", SVC_F_PERSISTENT, 1, netmask=0), id="netmask-0"),
    pytest.param(Service(ServiceKey.inet("udp", "10.0.0.1", 0), "rr", SVC_F_PERSISTENT, 30), id="port-0"),
    pytest.param(Service(ServiceKey.inet("tcp", "0.0.0.0", 1)), id="addr-any"),
    pytest.param(Service(ServiceKey.inet("tcp", "224.0.0.1", 1)), id="addr-multicast"),
    pytest.param(Service(ServiceKey.inet("tcp", "10.0.0.1", 65535)), id="port-max"),
]


def test_empty_table(backend):
    assert backend.services() == []
    assert backend.dump() == {}


@pytest.mark.parametrize("svc", ROUND_TRIP)
def test_add_round_trip(backend, svc):
    backend.add_service(svc)
    assert_service(backend, svc)
    assert backend.dests(svc.key) == []


@pytest.mark.parametrize("sched", SCHEDULERS_6_1)
def test_every_scheduler(backend, sched):
    svc = Service(V4, sched)
    backend.add_service(svc)
    assert_service(backend, svc)


def test_many_services_all_listed(backend):
    svcs = [Service(ServiceKey.inet("tcp", "10.1.0.1", p), "rr") for p in range(1, 41)]
    svcs += [Service(ServiceKey.fwmark_key(m), "wlc") for m in range(1, 11)]
    svcs += [Service(ServiceKey.inet("udp", f"2001:db8::{i}", 53)) for i in range(1, 11)]
    for s in svcs:
        backend.add_service(s)
    listed = backend.services()
    assert len(listed) == len(svcs)
    assert set(listed) == set(svcs)
    # the kernel dumps its address/port hash table, then its fwmark table; order within each
    # is hash-bucket order and no caller may depend on it
    kinds = [s.key.is_fwmark for s in listed]
    assert kinds == sorted(kinds)


def test_hashed_flag_never_read_back(backend):
    backend.add_service(Service(V4, "rr", SVC_F_HASHED | SVC_F_ONEPACKET))
    got = backend.service(V4)
    assert got.flags == SVC_F_ONEPACKET
    assert got == Service(V4, "rr", SVC_F_ONEPACKET)


def test_persistence_timeout_wraps_like_the_kernel(backend):
    # the kernel keeps timeout*HZ (HZ=250) in a u32: 17179870 s is 204 jiffies, read back as 0 s
    backend.add_service(Service(V4, "rr", SVC_F_PERSISTENT, 17179870))
    assert backend.service(V4).timeout == 0
    backend.edit_service(Service(V4, "rr", SVC_F_PERSISTENT, 17179869 + 17179870))
    assert backend.service(V4).timeout == ((17179869 + 17179870) * 250 % 2**32) // 250


def test_duplicate_add_is_eexist_and_changes_nothing(backend):
    svc = Service(V4, "wrr")
    backend.add_service(svc)
    refused(errno.EEXIST, backend.add_service, Service(V4, "rr", SVC_F_PERSISTENT, 60))
    assert_service(backend, svc)


def test_same_address_other_protocol_or_port_are_distinct(backend):
    keys = [V4, V4_443, ServiceKey.inet("udp", "10.0.0.1", 80), ServiceKey.inet("sctp", "10.0.0.1", 80)]
    for k in keys:
        backend.add_service(Service(k))
    assert {s.key for s in backend.services()} == set(keys)


def test_fwmark_v4_and_v6_are_distinct_services(backend):
    backend.add_service(Service(FWM, "rr"))
    backend.add_service(Service(FWM6, "wlc"))
    assert backend.service(FWM).scheduler == "rr"
    assert backend.service(FWM6).scheduler == "wlc"
    refused(errno.EEXIST, backend.add_service, Service(FWM))
    refused(errno.EEXIST, backend.add_service, Service(FWM6))
    backend.del_service(FWM)
    assert [s.key for s in backend.services()] == [FWM6]


@pytest.mark.parametrize("op", ["service", "dests", "edit", "delete", "zero"])
@pytest.mark.parametrize("key", [MISSING, ServiceKey.fwmark_key(77), ServiceKey.inet("tcp", "2001:db8::99", 80)])
def test_missing_service_is_esrch(backend, op, key):
    backend.add_service(Service(V4))
    backend.add_service(Service(FWM))
    call = {
        "service": lambda: backend.service(key),
        "dests": lambda: backend.dests(key),
        "edit": lambda: backend.edit_service(Service(key, "rr")),
        "delete": lambda: backend.del_service(key),
        "zero": lambda: backend.zero(key),
    }[op]
    refused(errno.ESRCH, call)
    assert {s.key for s in backend.services()} == {V4, FWM}


def test_fwmark_lookup_is_by_family_too(backend):
    backend.add_service(Service(FWM))
    refused(errno.ESRCH, backend.service, FWM6)
    refused(errno.ESRCH, backend.del_service, FWM6)


@pytest.mark.parametrize("sched", ["nosuch", "twos", "x" * 15])
def test_unknown_scheduler_is_enoent(backend, sched):
    refused(errno.ENOENT, backend.add_service, Service(V4, sched))
    assert backend.services() == []
    backend.add_service(Service(V4, "wrr"))
    refused(errno.ENOENT, backend.edit_service, Service(V4, sched))
    assert_service(backend, Service(V4, "wrr"))


def test_unknown_persistence_engine_is_enoent(backend):
    refused(errno.ENOENT, backend.add_service, Service(V4, "rr", SVC_F_PERSISTENT, 60, pe_name="nosuch"))
    assert backend.services() == []
    backend.add_service(Service(V4, "rr"))
    refused(errno.ENOENT, backend.edit_service, Service(V4, "wrr", SVC_F_PERSISTENT, 60, pe_name="nosuch"))
    assert_service(backend, Service(V4, "rr"))


@pytest.mark.parametrize("prefix", [0, 129, 200, 2**32 - 1])
@pytest.mark.parametrize("key", [V6, FWM6])
def test_ipv6_prefix_out_of_range_is_refused_before_sending(backend, key, prefix):
    # the kernel answers EINVAL; the model refuses it first, on both backends alike
    with pytest.raises(ValueInvalid) as e:
        backend.add_service(Service(key, netmask=prefix))
    assert e.value.field == "netmask"
    backend.add_service(Service(key, netmask=64))
    with pytest.raises(ValueInvalid):
        backend.edit_service(Service(key, netmask=prefix))
    assert backend.service(key).netmask == 64


def test_invalid_values_raise_value_invalid_and_send_nothing(backend):
    bad = [
        Service(V4, ""),
        Service(V4, "x" * 16),
        Service(V4, pe_name="y" * 16),
        Service(V4, timeout=-1),
        Service(V4, flags=2**32),
        Service(ServiceKey(2, 6, "10.0.0.1", 70000)),
        Service(ServiceKey(2, 1, "10.0.0.1", 80)),
        Service(ServiceKey(2, 6, "2001:db8::1", 80)),
        Service(ServiceKey(3, 6, "10.0.0.1", 80)),
        Service(ServiceKey(2, 6, "10.0.0.1", 0, fwmark=5)),
    ]
    for svc in bad:
        with pytest.raises(ValueInvalid):
            backend.add_service(svc)
    assert backend.services() == []


def test_edit_replaces_scheduler_flags_persistence_netmask_and_pe(backend):
    backend.add_service(Service(UDP, "rr", SVC_F_ONEPACKET))
    backend.add_dest(UDP, Destination(D1, forward=0, weight=3))
    steps = [
        Service(UDP, "wrr", SVC_F_PERSISTENT, 300, netmask_to_int("255.255.0.0")),
        Service(UDP, "sh", SVC_F_PERSISTENT | SVC_F_SCHED2, 600, netmask_to_int("255.255.255.0"), pe_name="sip"),
        Service(UDP, "sh", SVC_F_PERSISTENT | SVC_F_SCHED2, 600, netmask_to_int("255.255.255.0")),  # pe removed
        Service(UDP, "none"),
        Service(UDP, "wlc", SVC_F_ONEPACKET),  # persistence off again
    ]
    for svc in steps:
        backend.edit_service(svc)
        assert_service(backend, svc)
        assert backend.dests(UDP) == [Destination(D1, forward=0, weight=3)]


def test_edit_ipv6_and_fwmark(backend):
    backend.add_service(Service(V6, "rr"))
    backend.edit_service(Service(V6, "sed", SVC_F_PERSISTENT, 10, netmask=48))
    assert_service(backend, Service(V6, "sed", SVC_F_PERSISTENT, 10, netmask=48))
    backend.add_service(Service(FWM, "rr"))
    backend.edit_service(Service(FWM, "lblc", SVC_F_PERSISTENT, 20, netmask_to_int("255.255.255.0")))
    assert_service(backend, Service(FWM, "lblc", SVC_F_PERSISTENT, 20, netmask_to_int("255.255.255.0")))


def test_delete_removes_service_with_its_destinations(backend):
    backend.add_service(Service(V4, "rr"))
    backend.add_dest(V4, Destination(D1))
    backend.add_service(Service(FWM))
    backend.del_service(V4)
    assert [s.key for s in backend.services()] == [FWM]
    refused(errno.ESRCH, backend.del_service, V4)
    backend.add_service(Service(V4, "rr"))
    assert backend.dests(V4) == []


def test_service_stats_present_and_not_part_of_equality(backend):
    backend.add_service(Service(V4, "rr"))
    got = backend.service(V4)
    assert got.stats.conns == 0 and got.stats.inbytes == 0
    assert got == Service(V4, "rr")
    assert hash(got) == hash(Service(V4, "rr"))


def test_service_key_family_is_kept(backend):
    backend.add_service(Service(V6))
    (svc,) = backend.services()
    assert svc.key.af == AF_INET6 and svc.key.addr == "2001:db8::1"
    assert svc.netmask == 128
