"""Batches: validated as a whole first, then applied op by op like the kernel, failures collected."""

from __future__ import annotations

import errno

import pytest
from contract_helpers import D1, D2, D3, FWM, MISSING, V4, V6, assert_dests, table_shape

from lvsd.ipvs.backend import BatchError, IPVSError, Op
from lvsd.ipvs.model import (
    DaemonState,
    Destination,
    DestKey,
    Forward,
    Service,
    ServiceKey,
    SyncDaemon,
    Timeouts,
    ValueInvalid,
)


def test_empty_batch_is_a_no_op(backend):
    backend.apply([])
    assert backend.services() == []


def test_a_whole_table_in_one_batch_with_dependencies(backend):
    ops = [
        Op.add_service(Service(V4, "wrr")),
        Op.add_dest(V4, Destination(D1, Forward.MASQ, 3)),
        Op.add_dest(V4, Destination(D2, Forward.MASQ, 1)),
        Op.add_service(Service(FWM, "lc")),
        Op.add_dest(FWM, Destination(D3, Forward.ROUTE, 10)),
        Op.edit_dest(V4, Destination(D1, Forward.MASQ, 5)),
        Op.set_timeouts(Timeouts(1000, 0, 0)),
        Op.zero(),
        Op.zero(V4),
    ]
    backend.apply(ops)
    assert_dests(backend, V4, [Destination(D2, Forward.MASQ, 1), Destination(D1, Forward.MASQ, 5)])
    assert_dests(backend, FWM, [Destination(D3, Forward.ROUTE, 10)])
    assert backend.timeouts() == Timeouts(1000, 120, 300)


def test_partial_failure_reports_applied_and_failed_in_order(backend):
    backend.add_service(Service(V4, "rr"))
    ops = [
        Op.add_service(Service(V4, "wrr")),  # EEXIST
        Op.add_dest(V4, Destination(D1, Forward.MASQ)),  # ok
        Op.add_dest(MISSING, Destination(D1)),  # ESRCH
        Op.add_dest(V4, Destination(D1, Forward.ROUTE)),  # EEXIST (added two ops ago)
        Op.add_service(Service(V6, "nosuch")),  # ENOENT
        Op.add_dest(V4, Destination(D2, u_threshold=1, l_threshold=2)),  # ERANGE
        Op.add_service(Service(FWM, "lc")),  # ok: the kernel goes on after failures
        Op.del_dest(V4, D3),  # ENOENT
        Op.edit_service(Service(V4, "sh")),  # ok
    ]
    with pytest.raises(BatchError) as info:
        backend.apply(ops)
    e = info.value
    assert e.applied == [ops[1], ops[6], ops[8]]
    assert [op for op, _ in e.failed] == [ops[0], ops[2], ops[3], ops[4], ops[5], ops[7]]
    assert [err.errno for _, err in e.failed] == [
        errno.EEXIST,
        errno.ESRCH,
        errno.EEXIST,
        errno.ENOENT,
        errno.ERANGE,
        errno.ENOENT,
    ]
    for op, err in e.failed:
        assert isinstance(err, IPVSError) and err.op == op
    assert isinstance(e, IPVSError) and e.errno == errno.EEXIST  # the first failure's errno
    assert "6 of 9" in str(e)
    assert table_shape(backend) == {
        V4: (Service(V4, "sh"), [Destination(D1, Forward.MASQ)]),
        FWM: (Service(FWM, "lc"), []),
    }


def test_a_batch_of_one_raises_its_own_error(backend):
    with pytest.raises(IPVSError) as info:
        backend.apply([Op.del_service(MISSING)])
    assert not isinstance(info.value, BatchError)
    assert info.value.errno == errno.ESRCH
    assert info.value.op == Op.del_service(MISSING)


def test_all_failed(backend):
    ops = [Op.del_service(MISSING), Op.zero(MISSING), Op.stop_daemon(DaemonState.MASTER)]
    with pytest.raises(BatchError) as info:
        backend.apply(ops)
    assert info.value.applied == []
    assert [err.errno for _, err in info.value.failed] == [errno.ESRCH, errno.ESRCH, errno.ESRCH]


def test_one_invalid_value_sends_nothing(backend):
    backend.add_service(Service(V4))
    ops = [
        Op.add_dest(V4, Destination(D1)),
        Op.add_service(Service(FWM)),
        Op.add_dest(V4, Destination(D2, weight=-1)),  # invalid
        Op.del_service(V4),
    ]
    with pytest.raises(ValueInvalid) as info:
        backend.apply(ops)
    assert info.value.field == "weight"
    assert table_shape(backend) == {V4: (Service(V4), [])}


def test_daemon_ops_in_a_batch(backend):
    ops = [
        Op.start_daemon(SyncDaemon(DaemonState.MASTER, "lo", 4)),
        Op.start_daemon(SyncDaemon(DaemonState.MASTER, "lo", 4)),  # EEXIST
        Op.start_daemon(SyncDaemon(DaemonState.BACKUP, "nosuch0", 4)),  # ENODEV
    ]
    with pytest.raises(BatchError) as info:
        backend.apply(ops)
    assert info.value.applied == [ops[0]]
    assert [err.errno for _, err in info.value.failed] == [errno.EEXIST, errno.ENODEV]
    assert [(d.state, d.syncid) for d in backend.daemons()] == [(DaemonState.MASTER, 4)]


def test_flush_in_the_middle_of_a_batch(backend):
    ops = [
        Op.add_service(Service(V4)),
        Op.add_dest(V4, Destination(D1)),
        Op.flush(),
        Op.add_dest(V4, Destination(D2)),  # ESRCH: flushed
        Op.add_service(Service(FWM)),
    ]
    with pytest.raises(BatchError) as info:
        backend.apply(ops)
    assert [err.errno for _, err in info.value.failed] == [errno.ESRCH]
    assert table_shape(backend) == {FWM: (Service(FWM), [])}


def test_large_batch(backend):
    ops = []
    for i in range(50):
        k = ServiceKey.inet("tcp", "10.5.0.1", 1000 + i)
        ops.append(Op.add_service(Service(k, "rr")))
        ops += [Op.add_dest(k, Destination(DestKey.of(f"10.6.{i}.{j + 1}", 80), Forward.MASQ, j)) for j in range(10)]
    backend.apply(ops)
    dump = backend.dump()
    assert len(dump) == 50
    assert all(len(e.dests) == 10 for e in dump.values())
    # and removing it all in one batch
    backend.apply([Op.del_service(k) for k in dump])
    assert backend.services() == []
