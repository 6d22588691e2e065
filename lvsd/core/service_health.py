"""Is a service healthy? One rule for everything that follows the LVS state: VRRP's
``track_services`` (a failing service lowers the priority) and BGP's announce (a VIP is
announced while a service on it is healthy). Pure: no asyncio, no I/O.

A service with a ``quorum`` is healthy while the planner's quorum verdict says it is at or above
quorum (``lvsd.core.desired``: below ``quorum`` -> failing; healthy again at ``quorum +
hysteresis``), the very verdict that adds the sorry server, so the two never disagree. A service
without a quorum is healthy while any of its servers carries weight (summed live weight > 0).
No verdict (None) while its checks have not answered since start: a starting director neither
lowers its priority nor withdraws anything before it knows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lvsd.core.desired import _service_pass
from lvsd.core.health import ServerHealth

#: (service name, destination key), as the checks report health
ServerId = tuple[str, Any]


def healthy(quorum: int, below: bool | None, live: int, pending: bool) -> bool | None:
    """The rule. ``quorum``: the service's (0 = none); ``below``: the planner's quorum state (None =
    no verdict yet); ``live``: summed weight its servers carry now; ``pending``: some of its checked
    servers have no verdict yet. True healthy, False failing, None not known yet."""
    if quorum > 0:
        return None if below is None else not below
    if live > 0:
        return True
    return None if pending else False


def service_verdicts(
    config: Any,
    health: Mapping[ServerId, ServerHealth],
    quorum_states: Mapping[str, bool],
    only: Iterable[str] | None = None,
) -> dict[str, bool | None]:
    """``healthy`` for every configured service (or those in ``only``), from the checks' verdicts
    and the planner's quorum states (the reconciler's ``quorum``)."""
    names = set(only) if only is not None else None
    out: dict[str, bool | None] = {}
    for svc in config.services:
        if names is not None and svc.name not in names:
            continue
        _dests, live, pending = _service_pass(svc, health, {})
        out[svc.name] = healthy(getattr(svc, "quorum", 0) or 0, quorum_states.get(svc.name), live, pending)
    return out
