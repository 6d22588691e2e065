"""``[ha]``: where the director's role comes from (static, external, vrrp, or a plugged-in mode).

The section is rows groups: ``COMMON_ROWS`` (any mode), ``VRRP_ROWS`` (only ``mode = "vrrp"``)
and one group per plugged-in mode (``HAMode``: its rows, its reader, the value it builds, kept in
``HAConfig.mode_config``). A mode's keys are refused under any other mode. A new mode is a module
of its own holding an ``HAMode``, named in ``PLUGGED_MODES`` below (one line).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lvsd.ipvs.model import AF_INET, AF_INET6

from .common import Argv, _d, _ifname
from .ha_bgp import BGP_ROWS, build_bgp
from .ha_bgp import MODE as BGP_MODE
from .keys import ARGV, BOOL, CODE, INT, Choice, Duration, Key, names, pick, read_rows
from .reader import ABSENT, Reader, Table, _not_unicast, _p, _show, _tname


@dataclass(frozen=True, slots=True)
class HAMode:
    """A mode of ``[ha]`` that brings its own keys: ``rows`` (read only under this mode, refused
    under any other), ``build(reader, table, path, values)`` applying its cross-field rules to the
    values its rows read and returning the mode's frozen value (``HAConfig.mode_config``), and the
    role the director starts in."""

    name: str
    rows: tuple[Key, ...]
    build: Callable[[Reader, Table, str, dict[str, Any]], object]
    role: str = "backup"


#: modes defined in their own module (e.g. ``from .ha_bgp import BGP``; ``PLUGGED_MODES = (BGP,)``)
PLUGGED_MODES: tuple[HAMode, ...] = (HAMode(BGP_MODE, BGP_ROWS, build_bgp, role="master"),)

HA_MODES = ("static", "external", "vrrp", *(m.name for m in PLUGGED_MODES))

#: the role when ``role`` is not set, by mode
ROLE_DEFAULT = {
    "static": "master",
    "external": "backup",
    "vrrp": "backup",
    **{m.name: m.role for m in PLUGGED_MODES},
}


@dataclass(frozen=True, slots=True)
class TrackInterface:
    """``track_interfaces`` entry: a link whose state (admin up and carrier) moves the priority.
    keepalived's semantics: weight > 0 adds while OK, < 0 subtracts while failing, 0 = fault."""

    name: str
    weight: int = 0


@dataclass(frozen=True, slots=True)
class TrackService:
    """``track_services`` entry: a service whose health (``lvsd.core.service_health``) moves the
    priority, with ``TrackInterface``'s weight semantics."""

    service: str
    weight: int = 0


@dataclass(frozen=True, slots=True)
class TrackScript:
    """``track_scripts`` entry: argv run every ``interval`` (killed at ``timeout``: failing);
    ``fall`` failures in a row make it failing, ``rise`` successes OK again."""

    argv: Argv
    interval: float = 2.0
    timeout: float = 10.0
    rise: int = 1
    fall: int = 1
    weight: int = 0


WEIGHT_MIN, WEIGHT_MAX = -253, 253


def _entries(r: Reader, tbl: Table, key: str, path: str) -> list[tuple[str, Table]]:
    """A list of inline tables: (path of each, table); errors for what is not."""
    raw = tbl.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        r.err(_p(path, key), f"must be a list of tables, got {_tname(raw)}")
        return []
    out = []
    for i, e in enumerate(raw):
        ep = _p(_p(path, key), i)
        if not isinstance(e, dict):
            r.err(ep, f"must be a table, got {_tname(e)}")
            continue
        out.append((ep, e))
    return out


def _named_weights(
    r: Reader, tbl: Table, key: str, path: str, field: str, missing: str, name_of: Callable[[Table, str], str]
) -> list[tuple[str, int]]:
    """The ``{<field> = name, weight = n}`` entries of a track list as (name, weight): the shape
    track_interfaces and track_services share; ``name_of`` reads and checks the name."""
    out = []
    for ep, e in _entries(r, tbl, key, path):
        r.keys(e, ep, (field, "weight"))
        if field not in e:
            r.err(_p(ep, field), f"missing: {missing}")
            continue
        name = name_of(e, ep)
        weight = r.get_int(e, "weight", ep, WEIGHT_MIN, WEIGHT_MAX, 0)
        if name:
            out.append((name, weight))
    return out


def _track_interfaces(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """track_interfaces: the interfaces whose state moves the priority (or faults the instance)."""
    named = _named_weights(
        r, tbl, key, path, "name", "the interface to track", lambda e, ep: _ifname(r, e, "name", ep, "", {})
    )
    return tuple(TrackInterface(name, weight) for name, weight in named)


def _track_services(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """track_services: the services whose quorum verdict moves the priority."""
    named = _named_weights(
        r,
        tbl,
        key,
        path,
        "service",
        "the name of the service to track",
        lambda e, ep: r.get_str(e, "service", ep, ""),
    )
    return tuple(TrackService(name, weight) for name, weight in named)


def _track_scripts(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    out = []
    for ep, e in _entries(r, tbl, key, path):
        r.keys(e, ep, ("argv", "interval", "timeout", "rise", "fall", "weight"))
        if "argv" not in e:
            r.err(_p(ep, "argv"), "missing: the command to run")
            continue
        argv = ARGV(r, e, "argv", ep, (), {})
        interval = r.duration(e, "interval", ep, 2.0, lo=0.01, hi=86400)
        timeout = r.duration(e, "timeout", ep, 10.0, lo=0.01, hi=3600)
        rise = r.get_int(e, "rise", ep, 1, 100, 1)
        fall = r.get_int(e, "fall", ep, 1, 100, 1)
        weight = r.get_int(e, "weight", ep, WEIGHT_MIN, WEIGHT_MAX, 0)
        if argv:
            out.append(TrackScript(argv, interval, timeout, rise, fall, weight))
    return tuple(out)


def _peers(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    raw = r.typed(tbl, key, path, lambda v: isinstance(v, list), "a list of IP address strings", show=False)
    if raw is ABSENT:
        return default
    out: list[str] = []
    for i, v in enumerate(raw):
        a = r.ip(v, _p(_p(path, key), i))
        if a is None:
            continue
        if a[1] in out:
            r.err(_p(_p(path, key), i), f"duplicate address {a[1]}")
            continue
        out.append(a[1])
    if not out and raw:
        return default
    if not raw:
        r.err(_p(path, key), "must list at least one address (or leave it out for multicast)")
    return tuple(out)


def _address(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    if key not in tbl:
        return default
    a = r.ip(tbl[key], _p(path, key))
    return default if a is None else a[1]


def _fifo(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = r.get_str(tbl, key, path, default, nonempty=False)
    if v and (not v.startswith("/") or v.endswith("/")):
        r.err(_p(path, key), f'must be an absolute file path, or "" for none, got {_show(v)}')
        return default
    return v


def _auth_pass(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = r.get_str(tbl, key, path, default)
    if v and len(v.encode()) > 8:
        r.err(_p(path, key), f"at most 8 bytes fit in a VRRPv2 advertisement, got {len(v.encode())}")
        return default
    return v


COMMON_ROWS = (
    Key("mode", Choice(HA_MODES), "static", doc="static, external (lvsctl role) or vrrp"),
    Key("role", CODE, ROLE_DEFAULT["static"], doc="master or backup (external: also fault); not vrrp"),
)
VRRP_ROWS = (
    Key("interface", _ifname, "", doc="the interface VRRP runs on (vrrp, required)"),
    Key("vrid", INT(1, 255), 0, doc="the virtual router id (vrrp, required)"),
    Key("priority", INT(1, 254), 100, doc="higher wins the election"),
    Key("advert_interval", Duration(0.01, 40.95), 1.0, doc="time between advertisements"),
    Key("vips", CODE, (), doc='the addresses VRRP moves, "address/prefix" (vrrp, required)'),
    Key("preempt", BOOL, True, doc="a higher priority takes over from a lower master"),
    Key("preempt_delay", Duration(0, 3600), 0.0, doc="wait this long after start before preempting"),
    Key("version", INT(2, 3), 3, doc="VRRP version 2 (IPv4, whole seconds) or 3"),
    Key("auth_pass", _auth_pass, "", doc="VRRPv2 auth_type PASS: a clear-text password, not security"),
    Key(
        "unicast_peers", _peers, (), doc="send adverts to these addresses, accept only theirs (no multicast)"
    ),
    Key("unicast_src", _address, "", doc="the address unicast adverts come from (default: the interface's)"),
    Key("track_interfaces", _track_interfaces, (), doc="[{ name, weight }]: link state moves the priority"),
    Key("track_scripts", _track_scripts, (), doc="[{ argv, interval, timeout, rise, fall, weight }]"),
    Key(
        "track_services",
        _track_services,
        (),
        doc="[{ service, weight }]: a service below quorum moves the priority",
    ),
    Key(
        "garp_refresh",
        Duration(0, 86400),
        0.0,
        doc="repeat gratuitous ARP / NA this often while master (0 = never)",
    ),
    Key("garp_repeat", INT(1, 20), 4, doc="announcements on takeover (at 0, 0.5, 2, 5 s, then every 5 s)"),
    Key("use_vmac", BOOL, False, doc="carry the VIPs on a macvlan with the VRRP MAC 00:00:5e:00:01:{vrid}"),
    Key("vmac_name", _ifname, "", doc="the virtual MAC interface's name (default vrrp.{vrid})"),
    Key("vmac_xmit_base", BOOL, False, doc="send adverts on the interface itself, not the virtual MAC one"),
)
NOTIFY_ROWS = (
    Key("notify_master", ARGV, (), doc="run on becoming master"),
    Key("notify_backup", ARGV, (), doc="run on becoming backup"),
    Key("notify_fault", ARGV, (), doc="run on entering fault"),
    Key("notify", ARGV, (), doc="run on every change, with instance, state and priority appended"),
    Key("notify_stop", ARGV, (), doc="run when lvsd's VRRP stops"),
    Key("notify_fifo", _fifo, "", doc="also write each change to this FIFO, in keepalived's format"),
)
#: [[ha.instance]] and [[ha.group]]: several VRRP instances per daemon, and sync groups
MULTI_ROWS = (
    Key("instance", CODE, (), doc="[[ha.instance]]: one VRRP instance each (name + the VRRP keys)"),
    Key("group", CODE, (), doc="[[ha.group]]: { name, instances }: instances that change role together"),
)
HA_ROWS = COMMON_ROWS + VRRP_ROWS + MULTI_ROWS + NOTIFY_ROWS + tuple(k for m in PLUGGED_MODES for k in m.rows)
#: [ha] keys that only mode = "vrrp" takes
VRRP_KEYS = names(VRRP_ROWS) + names(MULTI_ROWS)
#: what one [[ha.instance]] table takes
INSTANCE_KEYS = ("name", *names(VRRP_ROWS))
HA_KEYS = names(HA_ROWS)
_HA = _d(HA_ROWS)


@dataclass(frozen=True, slots=True)
class VipConfig:
    """A virtual address VRRP moves: address, prefix length and family."""

    af: int
    address: str
    prefixlen: int

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}"


@dataclass(frozen=True, slots=True)
class HAConfig:
    """``[ha]``: where the director's role comes from.

    static: ``role`` is fixed (master or backup). external: ``role`` is the initial role, changed
    by ``lvsctl role``. vrrp: lvsd runs VRRP (``role`` is what VRRP decides; starts as backup).
    A plugged-in mode's value is ``mode_config`` (None for the built-in modes)."""

    mode: str = _HA["mode"]
    role: str = _HA["role"]
    interface: str = _HA["interface"]
    vrid: int = _HA["vrid"]
    priority: int = _HA["priority"]
    advert_interval: float = _HA["advert_interval"]
    vips: tuple[VipConfig, ...] = _HA["vips"]
    preempt: bool = _HA["preempt"]
    preempt_delay: float = _HA["preempt_delay"]
    version: int = _HA["version"]
    notify_master: Argv = _HA["notify_master"]
    notify_backup: Argv = _HA["notify_backup"]
    notify_fault: Argv = _HA["notify_fault"]
    auth_pass: str = _HA["auth_pass"]
    unicast_peers: tuple[str, ...] = _HA["unicast_peers"]
    unicast_src: str = _HA["unicast_src"]
    track_interfaces: tuple[TrackInterface, ...] = _HA["track_interfaces"]
    track_scripts: tuple[TrackScript, ...] = _HA["track_scripts"]
    track_services: tuple[TrackService, ...] = _HA["track_services"]
    garp_refresh: float = _HA["garp_refresh"]
    garp_repeat: int = _HA["garp_repeat"]
    notify: Argv = _HA["notify"]
    notify_stop: Argv = _HA["notify_stop"]
    notify_fifo: str = _HA["notify_fifo"]
    use_vmac: bool = _HA["use_vmac"]
    vmac_name: str = _HA["vmac_name"]
    vmac_xmit_base: bool = _HA["vmac_xmit_base"]
    mode_config: object = None
    #: an instance's name ("" for the single-instance shorthand: called VI_<vrid>)
    name: str = ""
    #: [[ha.instance]]: each a vrrp HAConfig of its own (its VRRP fields and name)
    instances: tuple[HAConfig, ...] = ()
    #: [[ha.group]]: (group name, instance names) that change role together (master, backup, fault)
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def vrrp_instances(self) -> tuple[HAConfig, ...]:
        """The VRRP instances to run: the ``[[ha.instance]]`` list, or this section itself
        (the shorthand) in vrrp mode, else none."""
        if self.mode != "vrrp":
            return ()
        return self.instances or (self,)

    @property
    def vmac_ifname(self) -> str:
        """The virtual MAC interface's name: ``vmac_name``, or ``vrrp.<vrid>`` (keepalived's)."""
        return self.vmac_name or f"vrrp.{self.vrid}"

    @property
    def label(self) -> str:
        """The instance's name in notify and the FIFO: its name, or ``VI_<vrid>``."""
        return self.name or f"VI_{self.vrid}"


def _vips(r: Reader, t: Table, p: str, version: int, required: bool) -> tuple[VipConfig, ...]:
    """``vips``: one family, unicast, no duplicate, at most 255 (what fits an advertisement)."""
    vips: list[VipConfig] = []
    raw = t.get("vips", [])
    if not isinstance(raw, list):
        r.err(_p(p, "vips"), f'must be a list of "address/prefix" strings, got {_tname(raw)}')
        raw = []
    for i, v in enumerate(raw):
        vp = _p(_p(p, "vips"), i)
        if not isinstance(v, str):
            r.err(vp, f'must be "address" or "address/prefix", got {_tname(v)}')
            continue
        try:
            iface = ipaddress.ip_interface(v)
        except ValueError:
            r.err(vp, f'must be "address" or "address/prefix", got {_show(v)}')
            continue
        why = _not_unicast(iface.ip)
        if why:
            r.err(vp, f"{_show(v)} is {why}")
            continue
        vip = VipConfig(AF_INET6 if iface.version == 6 else AF_INET, str(iface.ip), iface.network.prefixlen)
        if any(x.address == vip.address for x in vips):
            r.err(vp, f"duplicate address {vip.address}")
            continue
        vips.append(vip)
    if vips and len({v.af for v in vips}) > 1:
        r.err(_p(p, "vips"), "mixes IPv4 and IPv6: a VRRP instance is one family")
    if vips and version == 2 and vips[0].af == AF_INET6:
        r.err(_p(p, "version"), "VRRPv2 is IPv4 only")
    if required:
        for k in ("interface", "vrid"):
            if k not in t:
                r.err(_p(p, k), 'missing (required with mode = "vrrp")')
        if "vips" not in t:
            r.err(_p(p, "vips"), 'missing (required with mode = "vrrp")')
        elif not raw:
            r.err(_p(p, "vips"), 'must list at least one address with mode = "vrrp"')
    if len(vips) > 255:
        r.err(_p(p, "vips"), f"at most 255 addresses fit in a VRRP advertisement, got {len(vips)}")
    return tuple(vips)


def _row(name: str) -> Key:
    return pick(VRRP_ROWS, name)[0]


def _vrrp_rules(r: Reader, t: Table, p: str, vals: dict[str, Any], vips: tuple[VipConfig, ...]) -> None:
    """What spans the new VRRP keys: auth only in v2 (AH refused); unicast addresses of the VIPs'
    family; a tracked object named once."""
    if vals["auth_pass"] and vals["version"] != 2:
        r.err(_p(p, "auth_pass"), "only with version = 2 (VRRPv3 has no authentication)")
    fam = vips[0].af if vips else None
    for k in ("unicast_peers", "unicast_src"):
        v = vals[k]
        for a in v if isinstance(v, tuple) else (v,) if v else ():
            af = AF_INET6 if ":" in a else AF_INET
            if fam is not None and af != fam:
                r.err(_p(p, k), f"{a} is not of the family of the vips")
    if vals["unicast_src"] and not vals["unicast_peers"]:
        r.err(_p(p, "unicast_src"), "only with unicast_peers")
    for k in ("vmac_name", "vmac_xmit_base"):
        if vals[k] and not vals["use_vmac"]:
            r.err(_p(p, k), "only with use_vmac = true")
    if vals["use_vmac"]:
        if fam == AF_INET6:
            r.err(
                _p(p, "use_vmac"), "IPv4 only for now (an IPv6 virtual MAC needs its own link-local address)"
            )
        name = vals["vmac_name"] or f"vrrp.{vals['vrid']}"
        if name == vals["interface"]:
            r.err(_p(p, "vmac_name"), f"{name!r} is the VRRP interface itself")
        elif name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
            r.err(_p(p, "vmac_name"), f"{name!r} is not a valid interface name")
    for k, attr in (("track_interfaces", "name"), ("track_services", "service")):
        seen: set[str] = set()
        for e in vals[k]:
            n = getattr(e, attr)
            if n in seen:
                r.err(_p(p, k), f"{n!r} is tracked twice")
            seen.add(n)


def _vrrp_part(r: Reader, t: Table, p: str, vals: dict[str, Any], required: bool) -> tuple[VipConfig, ...]:
    """The VRRP keys of ``t`` (the [ha] shorthand or one [[ha.instance]]) into ``vals``; the vips."""
    version = read_rows(r, t, p, pick(HA_ROWS, "version"), vals)["version"]
    read_rows(r, t, p, pick(HA_ROWS, "interface", "vrid", "priority", "advert_interval"), vals)
    adv = vals["advert_interval"]
    if version == 2 and adv != int(adv):
        r.err(_p(p, "advert_interval"), "VRRPv2 counts whole seconds (use version = 3 for less)")
    elif abs(adv * 100 - round(adv * 100)) > 1e-6:
        r.err(_p(p, "advert_interval"), "VRRPv3 counts centiseconds: must be a multiple of 10ms")
    vips = _vips(r, t, p, version, required)
    read_rows(r, t, p, pick(HA_ROWS, "preempt", "preempt_delay"), vals)
    read_rows(r, t, p, VRRP_ROWS[VRRP_ROWS.index(_row("auth_pass")) :], vals)
    _vrrp_rules(r, t, p, vals, vips)
    vals["vips"] = vips
    return vips


def _instances(r: Reader, t: Table, p: str) -> tuple[HAConfig, ...]:
    """``[[ha.instance]]``: each a named VRRP instance; names unique, (interface, vrid) unique."""
    raw = t.get("instance")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        r.err(_p(p, "instance"), "must be one or more [[ha.instance]] tables")
        return ()
    out: list[HAConfig] = []
    for i, it in enumerate(raw):
        ip = f"{p}.instance[{i}]"
        if not isinstance(it, dict):
            r.err(ip, f"must be a table, got {_tname(it)}")
            continue
        r.keys(it, ip, INSTANCE_KEYS)
        name = r.get_str(it, "name", ip, "")
        if "name" not in it:
            r.err(_p(ip, "name"), "missing: each instance is named (notify, status, groups)")
        vals: dict[str, Any] = {"mode": "vrrp", "role": "backup", "name": name}
        _vrrp_part(r, it, ip, vals, True)
        if name and any(x.name == name for x in out):
            r.err(_p(ip, "name"), f"duplicate instance name {name!r}")
            continue
        if any((x.interface, x.vrid) == (vals["interface"], vals["vrid"]) for x in out):
            r.err(_p(ip, "vrid"), f"vrid {vals['vrid']} is already used on {vals['interface']}")
            continue
        new = HAConfig(**vals)
        if new.use_vmac:
            taken = [x for x in out if x.use_vmac and x.vmac_ifname == new.vmac_ifname]
            if taken:
                r.err(
                    _p(ip, "vmac_name" if new.vmac_name else "use_vmac"),
                    f"virtual MAC interface {new.vmac_ifname!r} is already used by instance"
                    f" {taken[0].name!r} (set vmac_name)",
                )
                continue
        out.append(new)
    return tuple(out)


def _group_weights(r: Reader, t: Table, p: str, inst: HAConfig) -> None:
    """A sync group member's tracked objects fault it (weight 0); a weight is refused, as
    keepalived ignores it: one member's lower priority alone cannot move the group (its peer's
    members still hear a higher master, and a group becomes master only when all its members
    want to), so it would hold the group on a director that no longer wins."""
    raw = t.get("instance", [])
    idx = next(i for i, it in enumerate(raw) if isinstance(it, dict) and it.get("name") == inst.name)
    tracks: tuple[tuple[str, tuple[TrackInterface | TrackScript | TrackService, ...]], ...] = (
        ("track_interfaces", inst.track_interfaces),
        ("track_scripts", inst.track_scripts),
        ("track_services", inst.track_services),
    )
    for key, items in tracks:
        for j, item in enumerate(items):
            if item.weight:
                r.err(
                    f"{p}.instance[{idx}].{key}[{j}].weight",
                    "must be 0 (fault) in a sync group member: a priority change cannot move the group",
                )


def _groups(
    r: Reader, t: Table, p: str, instances: tuple[HAConfig, ...]
) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``[[ha.group]]``: named sets of instances (each in one group at most)."""
    raw = t.get("group")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.err(_p(p, "group"), f"must be [[ha.group]] tables, got {_tname(raw)}")
        return ()
    known = {x.name for x in instances}
    seen: dict[str, str] = {}
    out = []
    for i, g in enumerate(raw):
        gp = f"{p}.group[{i}]"
        if not isinstance(g, dict):
            r.err(gp, f"must be a table, got {_tname(g)}")
            continue
        r.keys(g, gp, ("name", "instances"))
        name = r.get_str(g, "name", gp, f"group{i}")
        members = g.get("instances")
        if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, str) for m in members):
            r.err(_p(gp, "instances"), "must list two or more instance names")
            continue
        for m in members:
            if m not in known:
                r.err(_p(gp, "instances"), f"no [[ha.instance]] named {m!r}")
            elif m in seen:
                r.err(_p(gp, "instances"), f"{m!r} is already in group {seen[m]!r}")
            else:
                _group_weights(r, t, p, next(x for x in instances if x.name == m))
            seen.setdefault(m, name)
        out.append((name, tuple(members)))
    return tuple(out)


def _ha(r: Reader, t: Table) -> HAConfig:
    p = "ha"
    r.keys(t, p, HA_KEYS, {"auth_type": "auth_pass alone means PASS; AH (IPsec) is not supported"})
    vals = read_rows(r, t, p, pick(HA_ROWS, "mode"))
    mode = vals["mode"]
    role = ROLE_DEFAULT[mode]
    if "role" in t:
        if mode == "vrrp":
            r.err(_p(p, "role"), 'not with mode = "vrrp" (VRRP elects the role)')
        else:
            choices = ("master", "backup") if mode == "static" else ("master", "backup", "fault")
            role = r.choice(t, "role", p, choices, role)
    if mode != "vrrp":
        for k in VRRP_KEYS:
            if k in t:
                r.err(_p(p, k), f'only with mode = "vrrp" (mode is "{mode}")')
    for m in PLUGGED_MODES:
        if mode != m.name:
            for k in names(m.rows):
                if k in t:
                    r.err(_p(p, k), f'only with mode = "{m.name}" (mode is "{mode}")')
    multi = "instance" in t
    if multi and mode == "vrrp":
        shorthand = [k for k in names(VRRP_ROWS) if k in t]
        if shorthand:
            r.err(_p(p, shorthand[0]), "not with [[ha.instance]]: set it in each instance")
    vips = _vrrp_part(r, t, p, vals, mode == "vrrp" and not multi)
    read_rows(r, t, p, NOTIFY_ROWS, vals)
    if mode == "vrrp":
        vals["instances"] = _instances(r, t, p)
        vals["groups"] = _groups(r, t, p, vals["instances"])
    for m in PLUGGED_MODES:
        if mode == m.name:
            mvals = read_rows(r, t, p, m.rows)
            vals["mode_config"] = m.build(r, t, p, mvals)
    vals.update(role=role, vips=vips)
    return HAConfig(**vals)
