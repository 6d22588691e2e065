"""The desired IPVS table: what the config says, adjusted by what the health checks say.

Pure: no I/O. The daemon computes it on every reconcile and diffs it against the kernel.

Rules (docs/operations.md, interfaces.md):

* a server without checks is in, at its configured weight;
* UP: in, at the configured weight or the dynamic one a script check gave;
* DOWN: ``on_failure = "remove"`` -> absent, ``"inhibit"`` -> weight 0 (existing connections kept);
* UNKNOWN (checks not decided yet): if the kernel already has it (adopted from a running table,
  or added earlier) it keeps the kernel's weight, so a restart or reload drops nothing; otherwise
  it is absent (remove) or at weight 0 (inhibit): no traffic to a server nobody has checked;
* quorum: when the summed weight of the service's live servers falls below ``quorum`` the sorry
  server is added; it leaves again only at ``quorum + hysteresis`` or more (the caller keeps
  that state between runs, see ``quorum_states``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from lvsd.core.health import Health, ServerHealth
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
    h = server_health(svc, srv, health)
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


def live_weight(svc: Any, health: Mapping[ServerId, ServerHealth], actual: Mapping[ServiceKey, ServiceEntry]) -> int:
    """Summed weight the service's configured servers would carry (the quorum measure)."""
    entry = actual.get(svc.key)
    adests = entry.dests if entry is not None else None
    total = 0
    for srv in svc.servers:
        d = _server_dest(svc, srv, health, adests)
        if d is not None:
            total += d.weight
    return total


def quorum_states(
    config: Any,
    health: Mapping[ServerId, ServerHealth],
    actual: Mapping[ServiceKey, ServiceEntry],
    previous: Mapping[str, bool] | None = None,
    only: Iterable[str] | None = None,
) -> dict[str, bool]:
    """Per service name: True while the service is below quorum (sorry server in).

    Below ``quorum`` -> True; at or above ``quorum + hysteresis`` -> False; in between the
    previous state holds (no flapping). Services without a quorum are absent, and so is a
    service seen for the first time while some of its servers are still UNKNOWN (its first
    verdict waits for the checks). ``only`` restricts the result to the named services.
    """
    prev = previous or {}
    names = set(only) if only is not None else None
    out: dict[str, bool] = {}
    for svc in config.services:
        if names is not None and svc.name not in names:
            continue
        quorum = getattr(svc, "quorum", 0) or 0
        if quorum <= 0:
            continue
        if svc.name not in prev and any(
            server_health(svc, srv, health).state is Health.UNKNOWN for srv in svc.servers
        ):
            continue  # first verdict waits for the checks: no sorry server or hook at start-up
        hysteresis = getattr(svc, "hysteresis", 0) or 0
        weight = live_weight(svc, health, actual)
        if weight < quorum:
            out[svc.name] = True
        elif weight >= quorum + hysteresis:
            out[svc.name] = False
        else:
            out[svc.name] = prev.get(svc.name, False)
    return out


def desired_table(
    config: Any,
    health: Mapping[ServerId, ServerHealth],
    actual: Mapping[ServiceKey, ServiceEntry],
    below_quorum: Mapping[str, bool] | None = None,
    only: Iterable[str] | None = None,
) -> dict[ServiceKey, ServiceEntry]:
    """The table the kernel should hold for the configured services (see the module docstring).

    ``below_quorum`` is ``quorum_states()``'s result (computed here without memory if omitted);
    ``only`` restricts the result to the named services (a health change touches one service).
    """
    if below_quorum is None:
        below_quorum = quorum_states(config, health, actual)
    names = set(only) if only is not None else None
    out: dict[ServiceKey, ServiceEntry] = {}
    for svc in config.services:
        if names is not None and svc.name not in names:
            continue
        entry = actual.get(svc.key)
        adests = entry.dests if entry is not None else None
        dests: dict[DestKey, Destination] = {}
        for srv in svc.servers:
            d = _server_dest(svc, srv, health, adests)
            if d is not None:
                dests[d.key] = d
        if below_quorum.get(svc.name):
            sorry = _sorry_dest(svc)
            if sorry is not None and sorry.key not in dests:
                dests[sorry.key] = sorry
        out[svc.key] = ServiceEntry(svc.service, dests)
    return out
