"""Shared values and assertions of the contract suite."""

from __future__ import annotations

import errno
from collections.abc import Callable

import pytest

from lvsd.ipvs.backend import Backend, BatchError, IPVSError
from lvsd.ipvs.model import Destination, DestKey, Service, ServiceKey, Stats

V4 = ServiceKey.inet("tcp", "10.0.0.1", 80)
V4_443 = ServiceKey.inet("tcp", "10.0.0.1", 443)
UDP = ServiceKey.inet("udp", "10.0.0.1", 53)
SCTP = ServiceKey.inet("sctp", "10.0.0.1", 3868)
V6 = ServiceKey.inet("tcp", "2001:db8::1", 80)
FWM = ServiceKey.fwmark_key(1)
FWM6 = ServiceKey.fwmark_key(1, af=10)
MISSING = ServiceKey.inet("tcp", "10.0.0.99", 80)

D1 = DestKey.of("10.0.0.2", 80)
D2 = DestKey.of("10.0.0.3", 8080)
D3 = DestKey.of("10.0.0.4", 80)
D6 = DestKey.of("2001:db8::2", 80)
D6B = DestKey.of("2001:db8::3", 8080)


def refused(err: int, fn: Callable[..., object], *args: object) -> IPVSError:
    """Call fn(*args) and check the backend refuses it with exactly ``err`` (a plain IPVSError)."""
    with pytest.raises(IPVSError) as info:
        fn(*args)
    e = info.value
    assert not isinstance(e, BatchError), "a single operation must raise its own IPVSError"
    assert e.errno == err, f"expected {errno.errorcode[err]}, got {errno.errorcode.get(e.errno, e.errno)}: {e}"
    return e


def assert_service(b: Backend, svc: Service) -> None:
    """What was written is what reads back, by every read path; stats are present."""
    got = b.service(svc.key)
    assert got == svc
    assert isinstance(got.stats, Stats)
    assert [s for s in b.services() if s.key == svc.key] == [svc]
    assert b.dump()[svc.key].service == svc


def assert_dests(b: Backend, key: ServiceKey, expected: list[Destination]) -> None:
    """The destinations read back, in the kernel's order (newest first), by dests() and dump()."""
    got = b.dests(key)
    assert got == expected
    assert all(isinstance(d.stats, Stats) for d in got)
    assert list(b.dump()[key].dests.values()) == expected
    assert list(b.dump()[key].dests) == [d.key for d in expected]


def table_shape(b: Backend) -> dict[ServiceKey, tuple[Service, list[Destination]]]:
    """The whole table with destination order, comparable with ==."""
    return {k: (e.service, list(e.dests.values())) for k, e in b.dump().items()}
