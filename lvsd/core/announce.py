"""Which VIPs a director announces in ``[ha] mode = "bgp"``, and why: pure (no asyncio, no I/O).

The health of a service is the planner's quorum verdict (``lvsd.core.desired``: summed live
weight below ``quorum`` -> below; back at ``quorum + hysteresis``; no verdict while its checks
have not answered yet), the same rule that adds a sorry server, so there is one rule for both.

A VIP is announced while ANY service on it is healthy (services sharing a VIP share its route:
withdrawing it would take the healthy ones down with the sick one). A VIP whose last healthy
service goes below quorum stays announced for ``withdraw_delay`` (flapping checks do not flap
routes), then is withdrawn. A VIP whose services have no verdict yet (checks not answered since
start) keeps what it has: announced after a restart with ``on_stop = "keep"``, not yet after a
fresh start. A drained director, or ``announce = false``, withdraws every VIP at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: why a VIP is (not) announced, as status, the API and metrics show it
QUORUM = "quorum"  # announced: a service on it is at or above quorum
DELAY = "delay"  # still announced: below quorum, withdrawn when withdraw_delay has passed
BELOW = "below-quorum"  # withdrawn: no service on it is at quorum
PENDING = "pending"  # no verdict yet (checks not answered since start): kept as it is
DRAIN = "drain"  # withdrawn: the director is drained (lvsctl drain-director)
DISABLED = "disabled"  # withdrawn: [ha] announce = false
REASONS = (QUORUM, DELAY, BELOW, PENDING, DRAIN, DISABLED)


@dataclass(frozen=True, slots=True)
class ServiceInput:
    """One service as the announce rule sees it: its VIP and its quorum verdict (``below``:
    True below quorum, False at or above, None no verdict yet); ``live``/``quorum`` for the text."""

    name: str
    vip: str
    below: bool | None
    live: int = 0
    quorum: int = 0


@dataclass(frozen=True, slots=True)
class VipStatus:
    """The decision for one VIP: announced or not, the reason (one of ``REASONS``), a line of
    detail, the services on it; ``below_since``/``withdraw_at`` while the withdraw delay runs."""

    vip: str
    announced: bool
    reason: str
    detail: str = ""
    services: tuple[str, ...] = ()
    below_since: float | None = None
    withdraw_at: float | None = None


def decide(
    services: Iterable[ServiceInput],
    previous: Mapping[str, VipStatus],
    now: float,
    *,
    withdraw_delay: float,
    drained: bool = False,
    enabled: bool = True,
    present: frozenset[str] = frozenset(),
) -> dict[str, VipStatus]:
    """The status of every VIP of ``services`` at ``now`` (monotonic seconds), given the last
    decisions ``previous`` and the VIPs ``present`` on the announce interface (what a restart left)."""
    by_vip: dict[str, list[ServiceInput]] = {}
    for s in services:
        by_vip.setdefault(s.vip, []).append(s)
    out: dict[str, VipStatus] = {}
    for vip, svcs in by_vip.items():
        names = tuple(s.name for s in svcs)
        out[vip] = _one(vip, svcs, names, previous.get(vip), now, withdraw_delay, drained, enabled, vip in present)
    return out


def _one(
    vip: str,
    svcs: list[ServiceInput],
    names: tuple[str, ...],
    prev: VipStatus | None,
    now: float,
    delay: float,
    drained: bool,
    enabled: bool,
    present: bool,
) -> VipStatus:
    if not enabled:
        return VipStatus(vip, False, DISABLED, "[ha] announce = false", names)
    if drained:
        return VipStatus(vip, False, DRAIN, "director drained (lvsctl undrain-director to announce)", names)
    healthy = [s for s in svcs if s.below is False]
    if healthy:
        s = healthy[0]
        return VipStatus(vip, True, QUORUM, f"{s.name}: live weight {s.live} >= quorum {s.quorum}", names)
    if all(s.below is None for s in svcs):
        was = prev.announced if prev is not None else present
        return VipStatus(vip, was, PENDING, "waiting for the first check results", names)
    sick = ", ".join(f"{s.name} {s.live} < {s.quorum}" for s in svcs if s.below)
    if prev is not None and prev.announced:
        since = prev.below_since if prev.below_since is not None else now
        if now - since < delay:
            at = since + delay
            return VipStatus(vip, True, DELAY, f"below quorum ({sick}): withdraw in {at - now:.1f}s", names, since, at)
    return VipStatus(vip, False, BELOW, f"below quorum ({sick})", names)


def next_change(statuses: Mapping[str, VipStatus]) -> float | None:
    """The earliest time a withdraw delay ends (the caller decides again then), or None."""
    times = [s.withdraw_at for s in statuses.values() if s.withdraw_at is not None]
    return min(times) if times else None


def announced(statuses: Mapping[str, VipStatus]) -> frozenset[str]:
    """The VIPs to hold on the announce interface."""
    return frozenset(v for v, s in statuses.items() if s.announced)
