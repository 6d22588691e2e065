"""Table-wide operations: info, connection timeouts, flush, zero."""

from __future__ import annotations

import errno

import pytest
from contract_helpers import D1, D6, FWM, MISSING, V4, V6, refused, table_shape

from lvsd.ipvs.model import Connection, Destination, Forward, Service, Timeouts, ValueInvalid

INT_MAX_OVER_HZ = 0x7FFFFFFF // 250  # 8589934 s: the kernel's bound (HZ=250)


def test_info(backend):
    info = backend.info()
    assert info.version == 0x010201
    assert info.version_text == "1.2.1"
    assert info.conn_tab_size == 4096


def test_default_timeouts(backend):
    assert backend.timeouts() == Timeouts(900, 120, 300)


def test_set_timeouts_and_zero_means_unchanged(backend):
    backend.set_timeouts(Timeouts(1000, 60, 30))
    assert backend.timeouts() == Timeouts(1000, 60, 30)
    backend.set_timeouts(Timeouts(0, 0, 45))
    assert backend.timeouts() == Timeouts(1000, 60, 45)
    backend.set_timeouts(Timeouts(0, 7, 0))
    assert backend.timeouts() == Timeouts(1000, 7, 45)
    backend.set_timeouts(Timeouts(0, 0, 0))
    assert backend.timeouts() == Timeouts(1000, 7, 45)
    backend.set_timeouts(Timeouts(1, 1, 1))
    assert backend.timeouts() == Timeouts(1, 1, 1)


def test_timeouts_bounded_by_int_max_over_hz(backend):
    backend.set_timeouts(Timeouts(INT_MAX_OVER_HZ, INT_MAX_OVER_HZ, INT_MAX_OVER_HZ))
    assert backend.timeouts() == Timeouts(INT_MAX_OVER_HZ, INT_MAX_OVER_HZ, INT_MAX_OVER_HZ)
    backend.set_timeouts(Timeouts(900, 120, 300))
    for t in (
        Timeouts(INT_MAX_OVER_HZ + 1, 0, 0),
        Timeouts(0, INT_MAX_OVER_HZ + 1, 0),
        Timeouts(0, 0, 0x7FFFFFFF),
        Timeouts(10, 20, INT_MAX_OVER_HZ + 1),  # the whole set is refused: nothing changes
    ):
        refused(errno.EINVAL, backend.set_timeouts, t)
        assert backend.timeouts() == Timeouts(900, 120, 300)


@pytest.mark.parametrize("t", [Timeouts(-1, 0, 0), Timeouts(0, 2**31, 0), Timeouts(0, 0, -5)])
def test_timeouts_out_of_model_range_are_value_invalid(backend, t):
    with pytest.raises(ValueInvalid):
        backend.set_timeouts(t)
    assert backend.timeouts() == Timeouts(900, 120, 300)


def test_flush_empties_the_table_only(backend):
    backend.add_service(Service(V4, "rr"))
    backend.add_dest(V4, Destination(D1, Forward.MASQ))
    backend.add_service(Service(V6))
    backend.add_dest(V6, Destination(D6))
    backend.add_service(Service(FWM))
    backend.set_timeouts(Timeouts(100, 20, 30))
    backend.flush()
    assert backend.services() == []
    assert backend.dump() == {}
    assert backend.timeouts() == Timeouts(100, 20, 30)
    refused(errno.ESRCH, backend.dests, V4)
    backend.flush()  # flushing an empty table is fine
    backend.add_service(Service(V4, "rr"))
    assert backend.dests(V4) == []


def test_flush_keeps_sync_daemons(backend):
    from lvsd.ipvs.model import DaemonState, SyncDaemon

    backend.add_service(Service(V4))
    backend.start_daemon(SyncDaemon(DaemonState.MASTER, "lo", 3))
    backend.flush()
    assert [(d.state, d.mcast_ifn, d.syncid) for d in backend.daemons()] == [(DaemonState.MASTER, "lo", 3)]
    backend.stop_daemon(DaemonState.MASTER)
    assert backend.daemons() == []


def test_zero_all_and_one(backend):
    backend.zero()  # an empty table: fine
    backend.add_service(Service(V4, "rr"))
    backend.add_dest(V4, Destination(D1, Forward.MASQ))
    backend.add_service(Service(FWM))
    before = table_shape(backend)
    backend.zero()
    backend.zero(V4)
    backend.zero(FWM)
    assert table_shape(backend) == before
    for svc in backend.services():
        assert svc.stats.conns == 0 and svc.stats.inpkts == 0 and svc.stats.outbytes == 0
    assert all(d.stats.conns == 0 for d in backend.dests(V4))
    refused(errno.ESRCH, backend.zero, MISSING)


def test_connections_are_connection_values(backend):
    # a fresh table has no traffic of its own; a kernel may still hold other tests' entries
    conns = backend.connections()
    assert isinstance(conns, list)
    for c in conns:
        assert isinstance(c, Connection)
        assert c.protocol and c.state and isinstance(c.expires, int)
