"""The desired IPVS table: what the config says, adjusted by what the health checks say.

Pure: no I/O. ``lvsd.core.plan`` computes it (``plan_table``) for every reconcile and for
``lvsd --plan``, and diffs it against the table as it is.

Rules (docs/operations.md, interfaces.md):

* a server without checks is in, at its configured weight;
* UP: in, at the configured weight or the dynamic one a script check gave;
* DOWN: ``on_failure = "remove"`` -> absent, ``"inhibit"`` -> weight 0 (existing connections kept);
* UNKNOWN (checks not decided yet): if the kernel already has it (adopted from a running table,
  or added earlier) it keeps the kernel's weight, so a restart or reload drops nothing; otherwise
  it is absent (remove) or at weight 0 (inhibit): no traffic to a server nobody has checked;
* overrides (``lvsctl disable|drain|weight``, ``drain_on_remove``) apply after the health verdict
  (``lvsd.core.overrides``); the weight they leave is what counts for the quorum;
* quorum: when the summed weight of the service's live servers falls below ``quorum`` the sorry
  server is added; it leaves again only at ``quorum + hysteresis`` or more (the caller keeps
  that state between runs, see ``quorum_states``). ``sorry_mode = "replace"`` (keepalived's):
  below quorum the live servers leave (weight 0 if their ``on_failure`` is inhibit) and the sorry
  server serves alone. ``sorry_inhibit``: out of use the sorry server stays at weight 0 instead
  of leaving.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from lvsd.core.health import Health, ServerHealth
from lvsd.core.overrides import Override, apply_override, by_service, removed_drains
from lvsd.ipvs.model import Destination, DestKey, ServiceEntry, ServiceKey

ServerId = tuple[str, DestKey]

_NO_CHECK = ServerHealth(Health.UP)
_UNKNOWN = ServerHealth(Health.UNKNOWN)


def server_health(svc: Any, srv: Any, health: Mapping[ServerId, ServerHealth]) -> ServerHealth:
    """The verdict that applies to one server: UP if it has no checks, else the checks' (UNKNOWN if none yet)."""
    if not srv.checks:
        return _NO_CHECK
    return health.get((svc.name, srv.key), _UNKNOWN)


def _server_dest(
    svc: Any, srv: Any, health: Mapping[ServerId, ServerHealth], actual_dests: Mapping[DestKey, Destination] | None
) -> Destination | None:
    """The destination as it should be in the kernel, or None if it should be absent."""
    return _dest_for(srv, server_health(svc, srv, health), actual_dests)


def _dest_for(srv: Any, h: ServerHealth, actual_dests: Mapping[DestKey, Destination] | None) -> Destination | None:
    dest: Destination = srv.dest
    if h.state is Health.UP:
        if h.weight is not None and h.weight != dest.weight:
            return replace(dest, weight=h.weight)
        return dest
    if h.state is Health.UNKNOWN and actual_dests is not None:
        have = actual_dests.get(srv.key)
        if have is not None:
            # Adopted: keep the weight the kernel has until the checks decide; every other
            # attribute follows the config (a forwarding-method edit is not a health question).
            return dest if have.weight == dest.weight else replace(dest, weight=have.weight)
    if srv.on_failure == "inhibit":
        return dest if dest.weight == 0 else replace(dest, weight=0)
    return None


def _sorry_dest(svc: Any) -> Destination | None:
    sorry = getattr(svc, "sorry_server", None)
    if sorry is None:
        return None
    return sorry if isinstance(sorry, Destination) else sorry.dest


def _service_pass(
    svc: Any,
    health: Mapping[ServerId, ServerHealth],
    actual: Mapping[ServiceKey, ServiceEntry],
    ovs: Mapping[DestKey, Override] | None = None,
) -> tuple[dict[DestKey, Destination], int, bool]:
    """One pass over a service's servers: (their destinations, summed weight, any still UNKNOWN).
    ``ovs``: the service's overrides by destination (none: the fast path)."""
    entry = actual.get(svc.key)
    adests = entry.dests if entry is not None else None
    dests: dict[DestKey, Destination] = {}
    total = 0
    unknown = False
    name = svc.name
    for srv in svc.servers:
        d: Destination | None
        if srv.checks:
            h = health.get((name, srv.key), _UNKNOWN)
            if h.state is Health.UNKNOWN:
                unknown = True
            d = _dest_for(srv, h, adests)
        else:
            d = srv.dest  # no checks: in, at the configured weight
        if ovs and (ov := ovs.get(srv.key)) is not None:
            d = apply_override(ov, d, srv.on_failure)
        if d is None:
            continue
        dests[d.key] = d
        total += d.weight
    if ovs:
        configured = {srv.key for srv in svc.servers}
        for d in removed_drains(ovs, configured):
            dests.setdefault(d.key, d)
    return dests, total, unknown


def _quorum_verdict(svc: Any, total: int, unknown: bool, prev: Mapping[str, bool]) -> bool | None:
    """Below quorum (True), at/above it (False), or no verdict yet / no quorum (None)."""
    quorum = getattr(svc, "quorum", 0) or 0
    if quorum <= 0:
        return None
    if svc.name not in prev and unknown:
        return None  # first verdict waits for the checks: no sorry server or hook at start-up
    if total < quorum:
        return True
    if total >= quorum + (getattr(svc, "hysteresis", 0) or 0):
        return False
    return prev.get(svc.name, False)


def live_weight(
    svc: Any,
    health: Mapping[ServerId, ServerHealth],
    actual: Mapping[ServiceKey, ServiceEntry],
    overrides: Mapping[ServerId, Override] | None = None,
) -> int:
    """Summed weight the service's configured servers would carry (the quorum measure)."""
    ovs = by_service(overrides).get(svc.name) if overrides else None
    return _service_pass(svc, health, actual, ovs)[1]


def quorum_states(
    config: Any,
    health: Mapping[ServerId, ServerHealth],
    actual: Mapping[ServiceKey, ServiceEntry],
    previous: Mapping[str, bool] | None = None,
    only: Iterable[str] | None = None,
    overrides: Mapping[ServerId, Override] | None = None,
) -> dict[str, bool]:
    """Per service name: True while the service is below quorum (sorry server in).

    Below ``quorum`` -> True; at or above ``quorum + hysteresis`` -> False; in between the
    previous state holds (no flapping). Services without a quorum are absent, and so is a
    service seen for the first time while some of its servers are still UNKNOWN (its first
    verdict waits for the checks). ``only`` restricts the result to the named services.
    """
    return plan_table(config, health, actual, previous, only, overrides)[1]


def desired_table(
    config: Any,
    health: Mapping[ServerId, ServerHealth],
    actual: Mapping[ServiceKey, ServiceEntry],
    below_quorum: Mapping[str, bool] | None = None,
    only: Iterable[str] | None = None,
    overrides: Mapping[ServerId, Override] | None = None,
) -> dict[ServiceKey, ServiceEntry]:
    """The table the kernel should hold for the configured services (see the module docstring).

    ``below_quorum`` is ``quorum_states()``'s result (computed here without memory if omitted);
    ``only`` restricts the result to the named services (a health change touches one service).
    """
    if below_quorum is None:
        return plan_table(config, health, actual, None, only, overrides)[0]
    names = set(only) if only is not None else None
    grouped = by_service(overrides) if overrides else {}
    out: dict[ServiceKey, ServiceEntry] = {}
    for svc in config.services:
        if names is not None and svc.name not in names:
            continue
        dests = _service_pass(svc, health, actual, grouped.get(svc.name))[0]
        _sorry(svc, dests, bool(below_quorum.get(svc.name)))
        out[svc.key] = ServiceEntry(svc.service, dests)
    return out


def _sorry(svc: Any, dests: dict[DestKey, Destination], below: bool) -> None:
    """The sorry server's part: in while ``below`` (alone, its live servers out, with
    ``sorry_mode = "replace"``), else absent or at weight 0 (``sorry_inhibit``)."""
    sorry = _sorry_dest(svc)
    if sorry is None:
        return
    if not below:
        if getattr(svc, "sorry_inhibit", False) and sorry.key not in dests:
            dests[sorry.key] = replace(sorry, weight=0)
        return
    if getattr(svc, "sorry_mode", "add") == "replace":
        on_failure = {srv.key: srv.on_failure for srv in svc.servers}
        for key in list(dests):
            how = on_failure.get(key)
            if how == "inhibit":
                if dests[key].weight:
                    dests[key] = replace(dests[key], weight=0)
            elif how is not None:  # a server a reload removed keeps draining at weight 0
                del dests[key]
    if sorry.key not in dests:
        dests[sorry.key] = sorry


def plan_table(
    config: Any,
    health: Mapping[ServerId, ServerHealth],
    actual: Mapping[ServiceKey, ServiceEntry],
    previous: Mapping[str, bool] | None = None,
    only: Iterable[str] | None = None,
    overrides: Mapping[ServerId, Override] | None = None,
) -> tuple[dict[ServiceKey, ServiceEntry], dict[str, bool]]:
    """``desired_table`` and ``quorum_states`` in one pass over the servers (what the daemon uses).

    ``previous`` is the last quorum states (hysteresis memory); the returned states replace them
    for the services covered (all, or ``only``). ``overrides``: the operator's, by server.
    """
    prev = previous or {}
    names = set(only) if only is not None else None
    grouped = by_service(overrides) if overrides else {}
    table: dict[ServiceKey, ServiceEntry] = {}
    states: dict[str, bool] = {}
    for svc in config.services:
        if names is not None and svc.name not in names:
            continue
        dests, total, unknown = _service_pass(svc, health, actual, grouped.get(svc.name))
        below = _quorum_verdict(svc, total, unknown, prev)
        if below is not None:
            states[svc.name] = below
        _sorry(svc, dests, bool(below))
        table[svc.key] = ServiceEntry(svc.service, dests)
    return table, states
