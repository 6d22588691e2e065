"""Connection-sync daemons: start, list (with the kernel's effective values), stop, refusals.

Only the loopback interface is used (it exists on the host and in the VM; its MTU is 65536)."""

from __future__ import annotations

import errno
import time

import pytest
from contract_helpers import D1, D6, V4, refused

from lvsd.ipvs.backend import BatchError, Op
from lvsd.ipvs.model import DaemonState, Destination, Forward, Service, SyncDaemon, ValueInvalid

MASTER, BACKUP = DaemonState.MASTER, DaemonState.BACKUP


def test_no_daemons_at_start(backend):
    assert backend.daemons() == []


def test_start_list_stop_with_kernel_defaults(backend):
    backend.start_daemon(SyncDaemon(MASTER, "lo", 5))
    assert backend.daemons() == [SyncDaemon(MASTER, "lo", 5, 1472, "224.0.0.81", 8848, 1)]
    refused(errno.EEXIST, backend.start_daemon, SyncDaemon(MASTER, "lo", 6))
    backend.start_daemon(SyncDaemon(BACKUP, "lo", 5))
    # the backup's default length follows the interface MTU: clamp(65536, 1500, 65535) - 28
    assert backend.daemons() == [
        SyncDaemon(MASTER, "lo", 5, 1472, "224.0.0.81", 8848, 1),
        SyncDaemon(BACKUP, "lo", 5, 65507, "224.0.0.81", 8848, 1),
    ]
    refused(errno.EEXIST, backend.start_daemon, SyncDaemon(BACKUP, "lo", 9))
    backend.stop_daemon(MASTER)
    assert backend.daemons() == [SyncDaemon(BACKUP, "lo", 5, 65507, "224.0.0.81", 8848, 1)]
    refused(errno.ESRCH, backend.stop_daemon, MASTER)
    backend.stop_daemon(BACKUP)
    assert backend.daemons() == []
    refused(errno.ESRCH, backend.stop_daemon, BACKUP)


def test_explicit_values_round_trip_and_clamps(backend):
    backend.start_daemon(SyncDaemon(MASTER, "lo", 7, 1400, "224.0.0.82", 8849, 2))
    backend.start_daemon(SyncDaemon(BACKUP, "lo", 255, 100, "239.1.2.3", 65535, 255))
    assert backend.daemons() == [
        SyncDaemon(MASTER, "lo", 7, 1400, "224.0.0.82", 8849, 2),
        SyncDaemon(BACKUP, "lo", 255, 1024, "239.1.2.3", 65535, 255),  # backup length >= 1024
    ]
    backend.stop_daemon(MASTER)
    backend.stop_daemon(BACKUP)
    backend.start_daemon(SyncDaemon(MASTER, "lo", 1, 65535))  # at most 65535 - IPv4/UDP headers
    backend.start_daemon(SyncDaemon(BACKUP, "lo", 0, 0, "ff02::81", 8850))  # IPv6 group: 48 bytes of headers
    assert backend.daemons() == [
        SyncDaemon(MASTER, "lo", 1, 65507, "224.0.0.81", 8848, 1),
        SyncDaemon(BACKUP, "lo", 0, 65487, "ff02::81", 8850, 1),
    ]
    backend.stop_daemon(BACKUP)
    backend.stop_daemon(MASTER)
    backend.start_daemon(SyncDaemon(MASTER, "lo", 2, 1))
    assert backend.daemons()[0].sync_maxlen == 1


@pytest.mark.parametrize("group", ["10.0.0.1", "255.255.255.255", "2001:db8::1", "::"])
def test_non_multicast_group_is_einval(backend, group):
    refused(errno.EINVAL, backend.start_daemon, SyncDaemon(MASTER, "lo", 1, mcast_group=group))
    refused(errno.EINVAL, backend.start_daemon, SyncDaemon(BACKUP, "lo", 1, mcast_group=group))
    assert backend.daemons() == []


def test_unknown_interface_is_enodev(backend):
    refused(errno.ENODEV, backend.start_daemon, SyncDaemon(MASTER, "nosuch0", 1))
    backend.start_daemon(SyncDaemon(MASTER, "lo", 1))
    # the interface is looked up before "already running"
    refused(errno.ENODEV, backend.start_daemon, SyncDaemon(MASTER, "nosuch0", 1))
    refused(errno.EEXIST, backend.start_daemon, SyncDaemon(MASTER, "lo", 1))


def test_mixed_family_destinations_and_daemons_exclude_each_other(backend):
    backend.add_service(Service(V4))
    backend.add_dest(V4, Destination(D6, Forward.TUNNEL))
    refused(errno.EINVAL, backend.start_daemon, SyncDaemon(MASTER, "lo", 1))
    refused(errno.EINVAL, backend.start_daemon, SyncDaemon(BACKUP, "lo", 1))
    refused(errno.EINVAL, backend.start_daemon, SyncDaemon(MASTER, "nosuch0", 1))  # before the interface
    assert backend.daemons() == []
    backend.del_dest(V4, D6)
    backend.start_daemon(SyncDaemon(BACKUP, "lo", 1))
    # any running daemon (even a backup) refuses mixed-family destinations, added or edited
    refused(errno.EINVAL, backend.add_dest, V4, Destination(D6, Forward.TUNNEL))
    # checked before the destination's own values (bad thresholds would be ERANGE)
    refused(errno.EINVAL, backend.add_dest, V4, Destination(D6, Forward.TUNNEL, u_threshold=1, l_threshold=2))
    backend.add_dest(V4, Destination(D1, Forward.TUNNEL))
    assert backend.dests(V4) == [Destination(D1, Forward.TUNNEL)]
    backend.stop_daemon(BACKUP)
    backend.add_dest(V4, Destination(D6, Forward.TUNNEL))
    refused(errno.EINVAL, backend.start_daemon, SyncDaemon(MASTER, "lo", 1))
    # deleting the service (with its mixed destination) lifts the restriction
    backend.del_service(V4)
    backend.start_daemon(SyncDaemon(MASTER, "lo", 1))
    assert [d.state for d in backend.daemons()] == [MASTER]


def test_editing_a_mixed_destination_needs_no_daemon(backend):
    backend.add_service(Service(V4))
    backend.add_dest(V4, Destination(D6, Forward.TUNNEL))
    backend.edit_dest(V4, Destination(D6, Forward.TUNNEL, 5))
    assert backend.dests(V4) == [Destination(D6, Forward.TUNNEL, 5)]


@pytest.mark.parametrize(
    "daemon",
    [
        SyncDaemon(3, "lo"),
        SyncDaemon(MASTER, ""),
        SyncDaemon(MASTER, "x" * 16),
        SyncDaemon(MASTER, "lo", 256),
        SyncDaemon(MASTER, "lo", 0, 65536),
        SyncDaemon(MASTER, "lo", 0, 0, "not-an-ip"),
        SyncDaemon(MASTER, "lo", 0, 0, "", 70000),
        SyncDaemon(MASTER, "lo", 0, 0, "", 0, 256),
    ],
)
def test_invalid_daemon_values_are_value_invalid(backend, daemon):
    with pytest.raises(ValueInvalid):
        backend.start_daemon(daemon)
    assert backend.daemons() == []


def test_stop_invalid_state_is_value_invalid(backend):
    with pytest.raises(ValueInvalid):
        backend.stop_daemon(0)


def test_stop_right_after_start(backend):
    """Start then stop at once: each stop returns promptly and the daemon is gone.

    Linux 6.1 quirk: a sync thread stopped before it first ran makes kthread_stop() return
    -EINTR, and netlink_rcv_skb() then sends no reply at all to the DEL_DAEMON request, not even
    the ACK asked for; the daemon is stopped all the same. A backend waiting for that ACK hangs
    until its receive timeout. In one batch the thread never gets to run before the stop."""
    for _ in range(3):
        backend.start_daemon(SyncDaemon(MASTER, "lo", 1))
        t0 = time.monotonic()
        backend.stop_daemon(MASTER)
        assert time.monotonic() - t0 < 10
        assert backend.daemons() == []
    for state in (MASTER, BACKUP, MASTER):
        t0 = time.monotonic()
        backend.apply([Op.start_daemon(SyncDaemon(state, "lo", 2)), Op.stop_daemon(state)])
        assert time.monotonic() - t0 < 10
        assert backend.daemons() == []
    with pytest.raises(BatchError) as info:
        backend.apply(
            [
                Op.start_daemon(SyncDaemon(MASTER, "lo", 3)),
                Op.start_daemon(SyncDaemon(BACKUP, "lo", 3)),
                Op.stop_daemon(MASTER),
                Op.add_service(Service(V4)),  # the ops after a reply-less one still report
                Op.stop_daemon(MASTER),  # ESRCH
            ]
        )
    assert len(info.value.applied) == 4
    assert [(op.kind, e.errno) for op, e in info.value.failed] == [(Op.stop_daemon(MASTER).kind, errno.ESRCH)]
    assert [d.state for d in backend.daemons()] == [BACKUP]
    assert [s.key for s in backend.services()] == [V4]
