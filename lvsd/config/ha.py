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
from .reader import Reader, Table, _not_unicast, _p, _show, _tname


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
)
NOTIFY_ROWS = (
    Key("notify_master", ARGV, (), doc="run on becoming master"),
    Key("notify_backup", ARGV, (), doc="run on becoming backup"),
    Key("notify_fault", ARGV, (), doc="run on entering fault"),
)
HA_ROWS = COMMON_ROWS + VRRP_ROWS + NOTIFY_ROWS + tuple(k for m in PLUGGED_MODES for k in m.rows)
#: [ha] keys that only mode = "vrrp" takes
VRRP_KEYS = names(VRRP_ROWS)
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
    mode_config: object = None


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


def _ha(r: Reader, t: Table) -> HAConfig:
    p = "ha"
    r.keys(t, p, HA_KEYS)
    vals = read_rows(r, t, p, pick(HA_ROWS, "mode"))
    mode = vals["mode"]
    role = ROLE_DEFAULT[mode]
    if "role" in t:
        if mode == "vrrp":
            r.err(_p(p, "role"), 'not with mode = "vrrp" (VRRP elects the role)')
        else:
            choices = ("master", "backup") if mode == "static" else ("master", "backup", "fault")
            role = r.choice(t, "role", p, choices, role)
    version = read_rows(r, t, p, pick(HA_ROWS, "version"), vals)["version"]
    if mode != "vrrp":
        for k in VRRP_KEYS:
            if k in t:
                r.err(_p(p, k), f'only with mode = "vrrp" (mode is "{mode}")')
    for m in PLUGGED_MODES:
        if mode != m.name:
            for k in names(m.rows):
                if k in t:
                    r.err(_p(p, k), f'only with mode = "{m.name}" (mode is "{mode}")')
    read_rows(r, t, p, pick(HA_ROWS, "interface", "vrid", "priority", "advert_interval"), vals)
    adv = vals["advert_interval"]
    if version == 2 and adv != int(adv):
        r.err(_p(p, "advert_interval"), "VRRPv2 counts whole seconds (use version = 3 for less)")
    elif abs(adv * 100 - round(adv * 100)) > 1e-6:
        r.err(_p(p, "advert_interval"), "VRRPv3 counts centiseconds: must be a multiple of 10ms")
    vips = _vips(r, t, p, version, mode == "vrrp")
    read_rows(r, t, p, pick(HA_ROWS, "preempt", "preempt_delay") + NOTIFY_ROWS, vals)
    for m in PLUGGED_MODES:
        if mode == m.name:
            mvals = read_rows(r, t, p, m.rows)
            vals["mode_config"] = m.build(r, t, p, mvals)
    vals.update(role=role, vips=vips)
    return HAConfig(**vals)
