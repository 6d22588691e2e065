"""The key rows of services, servers and ``[defaults]``, and the inheritance layers they make.

A server key not set on the server comes from its service, then ``[defaults]``, then the row's
built-in default (level ``SERVER_WIDE``); a service key a service does not set comes from
``[defaults]``, then the built-in default (``SERVICE_WIDE``). ``check`` is inherited as a whole
(a server's ``check`` replaces its service's; ``check = []`` means no check). Keys whose rules
span several keys (``vip``, ``fwmark``, ``address``, ...) are read by ``services.Builder``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from lvsd.ipvs.model import (
    AF_INET,
    AF_INET6,
    DEFAULT_PERSISTENT_TIMEOUT,
    IP_VS_SCHEDNAME_MAXLEN,
    PERSISTENCE_ENGINES,
    SCHEDULERS,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    TUN_F_CSUM,
    TUN_F_NOCSUM,
    TUN_F_REMCSUM,
    Forward,
    TunType,
)

from .checks import parse_checks
from .keys import (
    ARGV,
    BOOL,
    CODE,
    INT,
    SERVER,
    SERVER_WIDE,
    SERVICE,
    SERVICE_WIDE,
    Choice,
    Duration,
    Key,
    Layer,
    names,
    read_table,
)
from .reader import INT32_MAX, PERSISTENCE_MAX, Reader, Table, _p, _show, _tname

FORWARDS = {"dr": Forward.ROUTE, "tun": Forward.TUNNEL, "nat": Forward.MASQ}
FORWARD_NAMES = {v: k for k, v in FORWARDS.items()}
FAMILIES = {"inet": AF_INET, "inet6": AF_INET6}
TUN_TYPES = {"ipip": TunType.IPIP, "gue": TunType.GUE, "gre": TunType.GRE}
TUN_CSUM = {"none": TUN_F_NOCSUM, "csum": TUN_F_CSUM, "remcsum": TUN_F_REMCSUM}
SCHED_FLAGS = {
    "flag-1": (SVC_F_SCHED1, None),
    "flag-2": (SVC_F_SCHED2, None),
    "flag-3": (SVC_F_SCHED3, None),
    "sh-fallback": (SVC_F_SCHED1, "sh"),
    "sh-port": (SVC_F_SCHED2, "sh"),
    "mh-fallback": (SVC_F_SCHED1, "mh"),
    "mh-port": (SVC_F_SCHED2, "mh"),
}
ON_FAILURE = ("remove", "inhibit")
#: below quorum: "add" the sorry server beside the live servers, or "replace" them (keepalived)
SORRY_MODES = ("add", "replace")

# --- sub-tables ----------------------------------------------------------------------------------

def _sub_table(r: Reader, tbl: Table, key: str, path: str, rows: Sequence[Key]) -> tuple[Table, str, dict[str, Any]] | None:
    """The inline table ``tbl[key]`` read by ``rows``, as (table, its path, values); None when
    absent or not a table. The start every sub-table reader shares before its own cross-checks."""
    t = r.table(tbl, key, path)
    if t is None:
        return None
    p = _p(path, key)
    return t, p, read_table(r, t, p, rows)


TUNNEL_ROWS = (
    Key("type", Choice(tuple(TUN_TYPES)), "ipip", doc="the tunnel: " + ", ".join(TUN_TYPES)),
    Key("port", INT(1, 65535), None, doc='the tunnel destination port (type "gue" only, required)'),
    Key("csum", Choice(tuple(TUN_CSUM)), None, doc='checksum: none, csum, remcsum ("gue"/"gre")'),
)


def tunnel(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """``tunnel = { type, port, csum }`` -> (TunType, port, csum flags)."""
    sub = _sub_table(r, tbl, key, path, TUNNEL_ROWS)
    if sub is None:
        return default
    t, p, v = sub
    tname, tport, csum = v["type"], v["port"], v["csum"]
    if tname == "gue" and tport is None and "port" not in t:
        r.err(_p(p, "port"), 'missing: type "gue" needs the tunnel destination port')
    if tname != "gue" and tport is not None:
        r.err(_p(p, "port"), f'only with type "gue" (type is "{tname}")')
    if tname == "ipip" and csum is not None:
        r.err(_p(p, "csum"), 'only with type "gue" or "gre" (type is "ipip")')
    if tname == "gre" and csum == "remcsum":
        r.err(_p(p, "csum"), 'remcsum only with type "gue"')
    return TUN_TYPES[tname], tport or 0, TUN_CSUM.get(csum or "none", 0)


THRESHOLD_ROWS = (
    # u32 on the wire, but the kernel refuses an upper threshold above INT_MAX (EINVAL, 6.1)
    Key("upper", INT(0, INT32_MAX), 0, doc="stop new connections above this many (0 = no limit)"),
    Key("lower", INT(0, INT32_MAX), 0, doc="accept again below this many"),
)


def _thresholds(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    sub = _sub_table(r, tbl, key, path, THRESHOLD_ROWS)
    if sub is None:
        return default
    _, p, v = sub
    up, lo = v["upper"], v["lower"]
    if lo > up:
        r.err(_p(p, "lower"), f"must not exceed upper ({up}; the kernel refuses it), got {lo}")
    return up, lo


def _netmask(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """Checked against the family when the service is built."""
    netmask = tbl.get(key)
    if netmask is not None and (isinstance(netmask, bool) or not isinstance(netmask, int | str)):
        r.err(_p(path, key), f"must be a dotted IPv4 mask or a prefix length, got {_tname(netmask)}")
        return default
    return netmask


PERSISTENCE_ROWS = (
    Key("timeout", Duration(1, PERSISTENCE_MAX, whole=True), DEFAULT_PERSISTENT_TIMEOUT, doc="how long"),
    Key("netmask", _netmask, None, doc="clients in one mask (IPv4) or prefix (IPv6) share a server"),
    Key("engine", Choice(PERSISTENCE_ENGINES), "", doc='a persistence engine ("sip"), UDP only'),
)


def _persistence(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """false -> None, true -> the default timeout, a table -> (timeout, netmask, engine)."""
    v = tbl[key]
    if v is False:
        return None
    if v is True:
        return (DEFAULT_PERSISTENT_TIMEOUT, None, "")
    p = _p(path, key)
    if not isinstance(v, dict):
        r.err(p, f"must be a table {{ timeout, netmask, engine }}, true or false, got {_tname(v)}")
        return default
    got = read_table(r, v, p, PERSISTENCE_ROWS)
    return (got["timeout"], got["netmask"], got["engine"])


def _scheduler(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """A known scheduler, or an unknown module name that is not one typo away from a known one."""
    v = r.get_str(tbl, key, path)
    if v is None or v in SCHEDULERS:
        return default if v is None else v
    if not re.fullmatch(r"[a-z][a-z0-9_]*", v) or len(v) >= IP_VS_SCHEDNAME_MAXLEN:
        close = difflib.get_close_matches(v, SCHEDULERS, n=1, cutoff=0.6)
        hint = f' (did you mean "{close[0]}"?)' if close else ""
        r.err(_p(path, key), f"must be a scheduler name such as {', '.join(SCHEDULERS)}, got {_show(v)}{hint}")
        return default
    close = difflib.get_close_matches(v, SCHEDULERS, n=1, cutoff=0.75)
    if close:  # an unknown module name one typo away from a known one
        r.err(_p(path, key), f'unknown scheduler {_show(v)} (did you mean "{close[0]}"?)')
        return default
    return v


def _sched_flags(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = tbl[key]
    p = _p(path, key)
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list):
        r.err(p, f"must be a list of flags ({', '.join(SCHED_FLAGS)}), got {_tname(v)}")
        return default
    flags = []
    for i, f in enumerate(v):
        if not isinstance(f, str) or f not in SCHED_FLAGS:
            close = difflib.get_close_matches(f, SCHED_FLAGS, n=1) if isinstance(f, str) else []
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            r.err(_p(p, i), f"must be one of {', '.join(SCHED_FLAGS)}, got {_show(f)}{hint}")
        else:
            flags.append(f)
    return tuple(flags)


def _check(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    c = parse_checks(r, tbl, path)
    return default if c is None else c


# --- the rows ---------------------------------------------------------------------------------------

#: every key of a [[service]], [[service.server]] or [defaults] table; the level says which
#: tables may set it and how it inherits. Keys of level SERVICE and SERVER are read by
#: services.Builder (their rules span several keys); the others through the layers below.
ROWS = (
    Key("name", CODE, None, SERVICE, "the service's name (default: protocol/vip or fwmark/N)"),
    Key("vip", CODE, None, SERVICE, '"address:port" of the virtual service'),
    Key("fwmark", CODE, None, SERVICE, "a firewall-mark service (instead of vip)"),
    Key("server", CODE, (), SERVICE, "the real servers, [[service.server]]"),
    Key("sorry_server", CODE, None, SERVICE, "added while the servers up are below quorum"),
    Key("protocol", Choice(("tcp", "udp", "sctp")), "tcp", SERVICE_WIDE, "tcp, udp or sctp"),
    Key("family", Choice(tuple(FAMILIES)), "inet", SERVICE_WIDE, "inet or inet6 (fwmark services)"),
    Key("scheduler", _scheduler, "wlc", SERVICE_WIDE, "the IPVS scheduler"),
    Key("persistence", _persistence, None, SERVICE_WIDE, "{ timeout, netmask, engine }, true or false"),
    Key("sched_flags", _sched_flags, (), SERVICE_WIDE, "scheduler flags: " + ", ".join(SCHED_FLAGS)),
    Key("one_packet", BOOL, False, SERVICE_WIDE, "schedule each UDP datagram on its own"),
    Key("quorum", INT(0, INT32_MAX), 1, SERVICE_WIDE, "the weight of up servers the service needs"),
    Key("hysteresis", INT(0, INT32_MAX), 0, SERVICE_WIDE, "quorum is back at quorum + hysteresis"),
    Key("quorum_up", ARGV, (), SERVICE_WIDE, "run when quorum is regained"),
    Key("quorum_down", ARGV, (), SERVICE_WIDE, "run when quorum is lost"),
    Key("sorry_mode", Choice(SORRY_MODES), "add", SERVICE_WIDE, "below quorum: add the sorry server, or replace the live servers"),
    Key("sorry_inhibit", BOOL, False, SERVICE_WIDE, "keep the sorry server at weight 0 instead of removing it"),
    Key("drain_on_remove", Duration(0, 86400), 0.0, SERVICE_WIDE, "a server a reload removes is drained this long (0 = cut)"),
    Key("address", CODE, None, SERVER, "the server's IP address or hostname (required)"),
    Key("port", CODE, None, SERVER, "the server's port (default: the vip's)"),
    Key("enabled", BOOL, True, SERVER, "false: configured but left out of the kernel"),
    Key("forward", Choice(tuple(FORWARDS)), "dr", SERVER_WIDE, "dr, tun or nat"),
    Key("weight", INT(0, INT32_MAX), 1, SERVER_WIDE, "the server's weight (0 = no new connections)"),
    Key("thresholds", _thresholds, (0, 0), SERVER_WIDE, "{ upper, lower } connection thresholds"),
    Key("tunnel", tunnel, None, SERVER_WIDE, '{ type, port, csum } with forward = "tun"'),
    Key("check", _check, (), SERVER_WIDE, "a check table or a list of them; [] = none"),
    Key("on_failure", Choice(ON_FAILURE), "remove", SERVER_WIDE, "a failed server: remove or inhibit"),
    Key("notify_up", ARGV, (), SERVER_WIDE, "run when the server comes up"),
    Key("notify_down", ARGV, (), SERVER_WIDE, "run when the server goes down"),
)
SERVICE_ROWS = tuple(k for k in ROWS if k.level == SERVICE)
#: keys a service or [defaults] may set: service <- [defaults] <- built-in
SERVICE_WIDE_ROWS = tuple(k for k in ROWS if k.level == SERVICE_WIDE)
SERVER_ROWS = tuple(k for k in ROWS if k.level == SERVER)
#: keys a server, its service or [defaults] may set: server <- service <- [defaults] <- built-in
SERVER_WIDE_ROWS = tuple(k for k in ROWS if k.level == SERVER_WIDE)

#: a sorry server (its forward defaults to its service's servers')
SORRY_ROWS = (
    Key("address", CODE, None, doc="the sorry server's IP address or hostname (required)"),
    Key("port", CODE, None, doc="its port (default: the vip's)"),
    Key("forward", CODE, None, doc="dr, tun or nat (default: the service's)"),
    Key("weight", INT(1, INT32_MAX), 1, doc="its weight"),
    Key("tunnel", tunnel, None, doc='{ type, port, csum } with forward = "tun"'),
)

SERVER_INHERITED = names(SERVER_WIDE_ROWS)
SERVER_ONLY = names(SERVER_ROWS)
SERVICE_INHERITED = names(SERVICE_WIDE_ROWS)
SERVICE_ONLY = names(SERVICE_ROWS)
SERVICE_KEYS = SERVICE_ONLY + SERVICE_INHERITED + SERVER_INHERITED
DEFAULTS_KEYS = SERVICE_INHERITED + SERVER_INHERITED
#: for a key [defaults] cannot take: where it goes instead
DEFAULTS_ELSEWHERE = {k.name: f"set it per {k.level}" for k in ROWS if k.level in (SERVICE, SERVER)}
SERVER_KEYS = SERVER_ONLY + SERVER_INHERITED
PERSISTENCE_KEYS = names(PERSISTENCE_ROWS)
THRESHOLD_KEYS = names(THRESHOLD_ROWS)
TUNNEL_KEYS = names(TUNNEL_ROWS)
SORRY_KEYS = names(SORRY_ROWS)
#: the built-in layers under [defaults]
BUILTIN_SERVER = {k.name: k.default for k in SERVER_WIDE_ROWS}
BUILTIN_SERVICE = {k.name: k.default for k in SERVICE_WIDE_ROWS}


#: the inheritable server keys set in a table (server, service or [defaults]), validated
server_layer = Layer(SERVER_WIDE_ROWS).read
#: the inheritable service keys set in a table (service or [defaults]), validated
service_layer = Layer(SERVICE_WIDE_ROWS).read
