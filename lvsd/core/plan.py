"""The one planner: config + health + the table as it is -> the ops that make it what it should be.

Pure: no I/O, no clock, no logging. The daemon's reconciles (``lvsd.daemon.reconciler``: the full
pass after a dump, the per-service pass after a health change) and ``lvsd --plan``
(``lvsd.daemon.main``) all call ``plan``; they differ only in what they pass in (the daemon: its
checks' verdicts, its quorum memory, its managed services; ``--plan``: every server up, no
memory, the services the config and the state file name). Order of the ops: ``set-timeouts``
first, then ``lvsd.core.diff``'s order.

Also here, for both callers: ``retired`` (which recorded services lvsd deletes at start),
``describe`` (an op as one line) and ``summarize_change`` (what a reload changes).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from lvsd.core.desired import ServerId, plan_table
from lvsd.core.diff import diff
from lvsd.core.health import ServerHealth
from lvsd.core.overrides import Override
from lvsd.ipvs.backend import Op, OpKind
from lvsd.ipvs.model import Forward, ServiceEntry, ServiceKey, Timeouts

if TYPE_CHECKING:  # types only: core does not depend on the config package at run time
    from lvsd.config.model import Config


@dataclass(frozen=True, slots=True)
class Plan:
    """What one planning pass decided."""

    #: the kernel operations, in the order to apply them
    ops: list[Op]
    #: the services covered (all configured ones, or ``only``) as the kernel should hold them
    desired: dict[ServiceKey, ServiceEntry]
    #: new quorum states (True = below quorum, sorry server in) of the services covered
    quorum: dict[str, bool]


def plan(
    config: Config,
    health: Mapping[ServerId, ServerHealth],
    actual: Mapping[ServiceKey, ServiceEntry],
    *,
    quorum: Mapping[str, bool] | None = None,
    managed: Collection[ServiceKey] = (),
    timeouts: Timeouts | None = None,
    only: Iterable[str] | None = None,
    overrides: Mapping[ServerId, Override] | None = None,
) -> Plan:
    """The ops that turn ``actual`` into the desired table for ``config`` and ``health``.

    ``actual``: the table as it is (a dump, or lvsd's view of its services). ``quorum``: the
    previous quorum states (hysteresis memory; None = none yet). ``managed``: services lvsd may
    delete when the config does not name them (configured ones, one a reload dropped, ones the
    state file records); a service in ``actual`` that is neither configured nor managed is left
    alone. ``timeouts``: the kernel's current ones, read by the caller only when the config sets
    ``[ipvs] timeouts`` (None = leave timeouts out). ``only``: plan just the named services (a
    health change): no service is deleted and timeouts are not considered. ``overrides``: the
    operator's (``lvsd.core.overrides``), by server.
    """
    desired, states = plan_table(config, health, actual, quorum, only, overrides)
    if only is not None:
        return Plan(diff(desired, actual, ()), desired, states)
    ops = diff(desired, actual, managed)
    op = timeouts_op(config.ipvs.timeouts, timeouts)
    if op is not None:
        ops.insert(0, op)
    return Plan(ops, desired, states)


def timeouts_op(want: Timeouts | None, have: Timeouts | None) -> Op | None:
    """``set-timeouts`` if the configured timeouts differ from the kernel's (0 in ``want``
    means keep the kernel's value), else None."""
    if want is None or have is None:
        return None
    if Timeouts(want.tcp or have.tcp, want.tcp_fin or have.tcp_fin, want.udp or have.udp) == have:
        return None
    return Op.set_timeouts(want)


def retired(
    configured: Collection[ServiceKey], recorded: Collection[ServiceKey], actual: Iterable[ServiceKey]
) -> list[ServiceKey]:
    """Services lvsd managed when it last ran (``recorded``), still in the kernel, that the
    config no longer names: lvsd's own to delete at start. Sorted (logged and printed)."""
    return sorted(k for k in actual if k not in configured and k in recorded)


_FORWARD = {0: "nat", 1: "local", 2: "tun", 3: "dr", 4: "bypass"}


def describe(op: Op) -> str:
    """An op as one readable phrase: what changes in the kernel (``--plan``'s lines, the log's)."""
    k = op.kind
    if k in (OpKind.ADD_SERVICE, OpKind.EDIT_SERVICE) and op.service is not None:
        s = op.service
        extra = f" scheduler {s.scheduler}"
        if s.persistent:
            extra += f" persistent {s.timeout}s"
        return f"{k.value} {s.key}{extra}"
    if k in (OpKind.ADD_DEST, OpKind.EDIT_DEST) and op.dest is not None:
        d = op.dest
        fwd = _FORWARD.get(int(d.forward), str(d.forward))
        if d.forward == Forward.TUNNEL:
            fwd += f"/{d.tun_type}"
        return f"{k.value} {op.key} -> {d.key} weight {d.weight} {fwd}"
    if k is OpKind.SET_TIMEOUTS and op.timeouts is not None:
        t = op.timeouts
        return f"set-timeouts tcp {t.tcp} tcpfin {t.tcp_fin} udp {t.udp}"
    return str(op)


#: ``summarize_change``'s answer when no service and no section differ
NO_CHANGE = "no change"


def summarize_change(old: Config, new: Config) -> str:
    """What a reload changes, by service name: added, removed, changed or reordered (and which
    sections); ``NO_CHANGE`` if nothing. Each service is compared once (at 50,000 servers a whole-config
    compare costs 0.18 s: the daemon takes this answer instead of comparing again)."""
    o = {s.name: s for s in old.services}
    n = {s.name: s for s in new.services}
    added = [x for x in n if x not in o]
    removed = [x for x in o if x not in n]
    changed = [x for x, s in n.items() if x in o and s is not o[x] and s != o[x]]
    parts = []
    for label, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            shown = ", ".join(names[:10]) + (f" (+{len(names) - 10})" if len(names) > 10 else "")
            parts.append(f"{label} {shown}")
    if not (added or removed or changed) and list(o) != list(n):
        parts.append("reordered services")  # the kernel's list order follows the file's
    # every other part of the config, whatever fields it gains ("source" is where it was read)
    other = [f.name for f in fields(old) if f.name not in ("services", "source")
             and getattr(old, f.name) != getattr(new, f.name)]
    if other:
        parts.append("changed [" + "], [".join(other) + "]")
    return "; ".join(parts) or NO_CHANGE
