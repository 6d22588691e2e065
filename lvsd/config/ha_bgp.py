"""``[ha] mode = "bgp"``: N active directors behind ECMP, each announcing its healthy VIPs.

lvsd speaks no BGP: it keeps exactly the VIPs to announce on a dummy interface it owns
(``announce_interface``, default ``lvsd0``) and the routing daemon (BIRD ``protocol direct``,
FRR ``redistribute connected``) exports that interface's /32 and /128 routes. These are the
mode's rows, its frozen value (``HAConfig.mode_config``), its reader, and the load-time rules
across the sections: ``mh`` is the scheduler that keeps a flow's real server when the routers
move it to another director (another one is a warning saying so), and ``mh-port`` is the default
``sched_flags`` of an ``mh`` service (``mh`` hashes the source address alone otherwise: every
client behind one NAT gateway would land on one real server). What needs the running system
(the interface rights, a VIP held by another interface, a non-dummy link of that name) is
checked when the daemon starts or reloads (``lvsd.daemon.announce``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from lvsd.ipvs.model import SVC_F_MH_PORT

from .common import _d, _ifname
from .keys import BOOL, Duration, Key, Str
from .reader import Reader, Table, _p, _show

log = logging.getLogger("lvsd")

MODE = "bgp"


def _state(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = r.get_str(tbl, key, path, default, nonempty=False)
    if v and (not v.startswith("/") or v.endswith("/") or "\0" in v):
        r.err(_p(path, key), f'must be an absolute file path, or "" for none, got {_show(v)}')
        return default
    return v


def _announce_ifname(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = _ifname(r, tbl, key, path, default, vals)
    if v in ("lo", "all", "default") or "/" in v or any(c.isspace() for c in v) or v in (".", ".."):
        r.err(_p(path, key), f"{_show(v)} cannot be lvsd's own dummy interface")
        return default
    return v


BGP_ROWS = (
    Key("announce_interface", _announce_ifname, "lvsd0", doc="the dummy interface lvsd owns; its VIPs are exported (bgp)"),
    Key("announce", BOOL, True, doc="announce the healthy VIPs; false withdraws them all (bgp)"),
    Key("withdraw_delay", Duration(0, 3600), 2.0, doc="below quorum this long before a VIP is withdrawn (bgp)"),
    Key("withdraw_grace", Duration(0, 600), 2.0, doc='on_stop = "remove": wait this long after withdrawing (bgp)'),
    Key("sloppy_tcp", BOOL, True, doc="net.ipv4.vs.sloppy_tcp: schedule mid-flow TCP packets (bgp)"),
    Key("sloppy_sctp", BOOL, True, doc="net.ipv4.vs.sloppy_sctp: the same for SCTP (bgp)"),
    Key("drain_file", _state, "/var/lib/lvsd/drain", doc='where the drained state survives restarts ("" = not kept) (bgp)'),
    Key("bird_socket", Str(nonempty=False), "", doc='BIRD\'s control socket: status shows its BGP sessions ("" = not read) (bgp)'),
)
_BGP = _d(BGP_ROWS)


@dataclass(frozen=True, slots=True)
class BGPConfig:
    """``[ha] mode = "bgp"``: the dummy interface, the announce rule's timings, the sloppy sysctls,
    where the drained state is kept, and (optional) the BIRD socket status reads sessions from."""

    announce_interface: str = _BGP["announce_interface"]
    announce: bool = _BGP["announce"]
    withdraw_delay: float = _BGP["withdraw_delay"]
    withdraw_grace: float = _BGP["withdraw_grace"]
    sloppy_tcp: bool = _BGP["sloppy_tcp"]
    sloppy_sctp: bool = _BGP["sloppy_sctp"]
    drain_file: str = _BGP["drain_file"]
    bird_socket: str = _BGP["bird_socket"]

    def sysctls(self) -> dict[str, str]:
        """net.ipv4.vs.* name -> value lvsd writes in bgp mode."""
        return {"sloppy_tcp": str(int(self.sloppy_tcp)), "sloppy_sctp": str(int(self.sloppy_sctp))}


def build_bgp(r: Reader, t: Table, p: str, vals: dict[str, Any]) -> BGPConfig:
    """The mode's value from its rows' values; ``role`` is refused (every director is active)."""
    if "role" in t:
        r.err(_p(p, "role"), f'not with mode = "{MODE}" (every director is active)')
    return BGPConfig(**vals)


def bgp_of(config: Any) -> BGPConfig | None:
    """The bgp-mode value of a ``Config``, or None in another mode."""
    mc = getattr(config.ha, "mode_config", None)
    return mc if isinstance(mc, BGPConfig) else None


def scheduler_warnings(services: Any) -> list[str]:
    """One line per service whose scheduler loses connections when a director dies in bgp mode."""
    out = []
    for s in services:
        if s.service.scheduler != "mh":
            out.append(
                f'service[{s.name}].scheduler: "{s.service.scheduler}" in bgp mode: when the routers move a '
                "flow to another director, that director picks its real server anew and the connection "
                'is reset; "mh" picks the same one on every director'
            )
    return out


def _sets_on_failure(tbl: Table) -> bool:
    servers = tbl.get("server")
    return "on_failure" in tbl or (
        isinstance(servers, list) and any(isinstance(x, dict) and "on_failure" in x for x in servers)
    )


def apply_bgp_rules(data: Table, services: tuple[Any, ...], ha: Any) -> tuple[Any, ...]:
    """In bgp mode: ``mh`` services without ``sched_flags`` in their table or ``[defaults]`` get
    ``mh-port``; services whose config sets no ``on_failure`` get ``"inhibit"`` (a failed server
    keeps its place in the kernel's list at weight 0: ``mh`` builds its table from that list's
    order, so a server removed and added back would land elsewhere in it and this director's
    table would differ from the others'); the scheduler warnings are logged. Other modes:
    ``services`` as they are."""
    if not isinstance(getattr(ha, "mode_config", None), BGPConfig):
        return services
    defaults = data.get("defaults")
    dflt_set = isinstance(defaults, dict) and "sched_flags" in defaults
    dflt_fail = isinstance(defaults, dict) and "on_failure" in defaults
    raw = data.get("service")
    tables = raw if isinstance(raw, list) else []
    if len(tables) == len(services):  # one service per table (a config with errors never gets here)
        pairs = [(s, t if isinstance(t, dict) else {}) for s, t in zip(services, tables, strict=True)]
    else:
        by_name = {t["name"]: t for t in tables if isinstance(t, dict) and isinstance(t.get("name"), str)}
        pairs = [(s, by_name.get(s.name, {})) for s in services]
    out = []
    for s, tbl in pairs:
        if s.service.scheduler == "mh" and not dflt_set and "sched_flags" not in tbl:
            s = replace(s, service=replace(s.service, flags=s.service.flags | SVC_F_MH_PORT))
        if not dflt_fail and not _sets_on_failure(tbl):
            s = replace(s, on_failure="inhibit", servers=tuple(replace(x, on_failure="inhibit") for x in s.servers))
        out.append(s)
    for w in scheduler_warnings(out):
        log.warning("%s", w)
    return tuple(out)
