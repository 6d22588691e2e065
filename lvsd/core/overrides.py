"""Operator overrides (``lvsctl disable|enable|drain|weight``) and what they do to the desired table.

Pure: no I/O, no clock (the caller passes ``now``). The daemon keeps the overrides and their state
file (``lvsd.daemon.overrides``); the planner (``lvsd.core.desired``) applies them server by
server after the health verdict:

* ``disable``: out now, as the server's ``on_failure`` says (``remove`` -> absent, ``inhibit`` ->
  weight 0); its checks keep running, their verdict stays visible, it just does not count;
* ``drain``: weight 0 (no new connections) until its connections reach 0 or the timeout passes
  (``drain_finished``), then out (``drained``) until ``enable``;
* ``weight``: the pinned weight replaces the configured and the dynamic one while the server is
  in (a DOWN server still leaves as ``on_failure`` says: a pin is not a health verdict);
* a drain carrying ``dest`` is a server a reload removed (``drain_on_remove``): not in the config
  any more, kept at weight 0 until its drain finishes, then deleted with its override.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from lvsd.ipvs.model import Destination, DestKey

#: the override kinds, as lvsctl names them
KINDS = ("disable", "drain", "weight")

ServerId = tuple[str, DestKey]


@dataclass(frozen=True, slots=True)
class Override:
    """One server's override: what, who set it, why and when."""

    kind: str  # disable | drain | weight
    weight: int | None = None  # "weight": the pinned weight
    reason: str = ""
    by: str = ""  # "uid 1000 (alice)", or "config" for drain_on_remove
    at: float = 0.0  # wall time it was set
    until: float = 0.0  # "drain": wall time at which the drain ends whatever the connections (0 = never)
    drained: bool = False  # "drain": finished, the server is out
    dest: Destination | None = None  # a removed server drained by drain_on_remove (else None)

    def label(self, conns: int | None = None) -> str:
        """How ``lvsctl services`` shows it: ``disabled``, ``draining (N conns)``, ``drained``, ``weight N``."""
        if self.kind == "disable":
            return "disabled"
        if self.kind == "weight":
            return f"weight pinned {self.weight}"
        if self.drained:
            return "drained"
        return "draining" if conns is None else f"draining ({conns} conns)"


def by_service(overrides: Mapping[ServerId, Override]) -> dict[str, dict[DestKey, Override]]:
    """The overrides grouped by service name (the planner walks one service at a time)."""
    out: dict[str, dict[DestKey, Override]] = {}
    for (name, key), ov in overrides.items():
        out.setdefault(name, {})[key] = ov
    return out


def apply_override(ov: Override, dest: Destination | None, on_failure: str) -> Destination | None:
    """The destination as ``ov`` leaves it: ``dest`` is what health alone decided (None = absent)."""
    if ov.kind == "disable":
        if dest is None or on_failure != "inhibit":
            return None
        return dest if dest.weight == 0 else replace(dest, weight=0)
    if ov.kind == "drain":
        if dest is None or ov.drained:
            return None
        return dest if dest.weight == 0 else replace(dest, weight=0)
    if ov.kind == "weight" and dest is not None and ov.weight is not None and dest.weight != ov.weight:
        return replace(dest, weight=ov.weight)
    return dest


def removed_drains(ovs: Mapping[DestKey, Override], configured: Any) -> list[Destination]:
    """The destinations of servers a reload removed that are still draining (at weight 0)."""
    out = []
    for key, ov in ovs.items():
        if ov.dest is not None and not ov.drained and key not in configured:
            out.append(ov.dest if ov.dest.weight == 0 else replace(ov.dest, weight=0))
    return out


def drain_finished(ov: Override, in_kernel: Destination | None, now: float) -> bool:
    """Whether a drain is over: the server is not in the kernel, its active and inactive
    connections are 0, or its timeout has passed."""
    if ov.kind != "drain" or ov.drained:
        return False
    if in_kernel is None:
        return True
    if in_kernel.active_conns + in_kernel.inact_conns == 0:
        return True
    return bool(ov.until) and now >= ov.until
