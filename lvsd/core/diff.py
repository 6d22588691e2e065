"""Keyed diff of two IPVS tables -> the ordered list of operations that turns one into the other.

Pure: no I/O. Services and destinations are matched by key (``ServiceKey``, ``DestKey``) and
compared with the model's equality (kernel-settable fields only), so counters never cause a
write and an unchanged server is never touched. Services lvsd does not manage are left alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from lvsd.ipvs.backend import Op
from lvsd.ipvs.model import ServiceEntry, ServiceKey


def diff(
    desired: Mapping[ServiceKey, ServiceEntry],
    actual: Mapping[ServiceKey, ServiceEntry],
    managed: Collection[ServiceKey],
) -> list[Op]:
    """Ops that make ``actual`` equal ``desired`` for the services in ``desired`` or ``managed``.

    Order: service adds/edits, destination deletes, destination edits, destination adds, service
    deletes. Deleting destinations before adding keeps a service's weight sum from overshooting
    while it is being changed, and services are deleted last so nothing references them. A
    service present in ``actual`` but in neither ``desired`` nor ``managed`` is never touched.
    """
    svc_ops: list[Op] = []
    del_dests: list[Op] = []
    edit_dests: list[Op] = []
    add_dests: list[Op] = []
    for key, want in desired.items():
        have = actual.get(key)
        if have is None:
            svc_ops.append(Op.add_service(want.service))
            for dest in want.dests.values():
                add_dests.append(Op.add_dest(key, dest))
            continue
        if have.service != want.service:
            svc_ops.append(Op.edit_service(want.service))
        have_dests = have.dests
        want_dests = want.dests
        if have_dests == want_dests:  # the common case: one dict compare, no per-dest work
            continue
        for dkey, dest in have_dests.items():
            if dkey not in want_dests:
                del_dests.append(Op.del_dest(key, dest.key))
        for dkey, dest in want_dests.items():
            cur = have_dests.get(dkey)
            if cur is None:
                add_dests.append(Op.add_dest(key, dest))
            elif cur != dest:
                edit_dests.append(Op.edit_dest(key, dest))
    del_svcs = [Op.del_service(key) for key in actual if key in managed and key not in desired]
    return svc_ops + del_dests + edit_dests + add_dests + del_svcs

