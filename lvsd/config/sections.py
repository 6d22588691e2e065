"""The daemon-wide sections: ``[daemon]``, ``[ipvs]``, ``[sync]``, ``[api]``, ``[metrics]`` (``[ha]`` is
``ha.py``, re-exported here).

Each section is one definition here: its frozen value (re-exported by ``model``), its key rows
(defaults, kinds, docs) and its reader with the cross-field rules. The dataclass defaults are the
rows' defaults.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from lvsd.ipvs.model import DaemonState, SyncDaemon, Timeouts

from .common import Argv as Argv  # re-exported
from .common import _d, _ifname
from .ha import HA_KEYS as HA_KEYS  # re-exported: [ha] lives in ha.py
from .ha import HA_MODES as HA_MODES  # re-exported: [ha] lives in ha.py
from .ha import HA_ROWS as HA_ROWS  # re-exported: [ha] lives in ha.py
from .ha import ROLE_DEFAULT as ROLE_DEFAULT  # re-exported: [ha] lives in ha.py
from .ha import VRRP_KEYS as VRRP_KEYS  # re-exported: [ha] lives in ha.py
from .ha import HAConfig as HAConfig  # re-exported: [ha] lives in ha.py
from .ha import VipConfig as VipConfig  # re-exported: [ha] lives in ha.py
from .ha import _ha as _ha  # re-exported: [ha] lives in ha.py
from .keys import BOOL, CODE, INT, Choice, Duration, Key, names, read_table
from .reader import (
    INT32_MAX,
    JIFFIES_INT_MAX,
    Reader,
    Table,
    _p,
    _parse_port,
    _show,
    _split_hostport,
)

ON_START = ("adopt", "flush")
ON_STOP = ("keep", "remove")
LOG_LEVELS = ("debug", "info", "warning", "error")
ROLES = ("master", "backup", "fault")
SYNC_ON_FAULT = ("backup", "none")

TOP_KEYS = ("daemon", "ipvs", "defaults", "service", "ha", "sync", "api", "metrics")


# --- [daemon] ------------------------------------------------------------------------------------


def _state_file(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = r.get_str(tbl, key, path, default, nonempty=False)  # "" = no state file, as documented
    if v and (not v.startswith("/") or v.endswith("/") or "\0" in v):
        r.err(_p(path, key), f'must be an absolute file path, or "" for none, got {_show(v)}')
        return default
    return v


DAEMON_ROWS = (
    Key("on_start", Choice(ON_START), "adopt", doc="adopt the kernel's services, or flush them first"),
    Key("on_stop", Choice(ON_STOP), "keep", doc="keep the kernel's services at exit, or remove them"),
    Key("resync", Duration(0, 86400), 30.0, doc="seconds between full compares with the kernel; 0 = never"),
    Key("log_level", Choice(LOG_LEVELS), "info", doc="debug, info, warning or error"),
    Key("hook_timeout", Duration(0.01, 3600), 10.0, doc="a notify hook running longer is killed"),
    Key("state_file", _state_file, "", doc='where lvsd records the services it manages ("" = nowhere)'),
    Key("allow_empty", BOOL, False, doc="a config of no service may remove every managed service"),
    Key("max_servers", INT(1, INT32_MAX), 200_000, doc="a config of more servers is refused before they are built"),
)
_DAEMON = _d(DAEMON_ROWS)


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """``[daemon]``: start/stop behaviour, resync period, logging.

    ``state_file``: at start, a service recorded there that the config no longer names (removed
    while lvsd was stopped) is deleted. ``allow_empty``: a config of no service may remove every
    managed service (else such a reload or start is refused: an emptied or truncated file)."""

    on_start: str = _DAEMON["on_start"]
    on_stop: str = _DAEMON["on_stop"]
    resync: float = _DAEMON["resync"]
    log_level: str = _DAEMON["log_level"]
    hook_timeout: float = _DAEMON["hook_timeout"]
    state_file: str = _DAEMON["state_file"]
    allow_empty: bool = _DAEMON["allow_empty"]
    #: more [[service.server]] entries than this (all files together) refuse the whole config,
    #: counted before any server is built (``load._build``): a runaway generator's file costs
    #: its parse, not the memory of every server
    max_servers: int = _DAEMON["max_servers"]


def _daemon(r: Reader, t: Table) -> DaemonConfig:
    return DaemonConfig(**read_table(r, t, "daemon", DAEMON_ROWS))


# --- [ipvs] --------------------------------------------------------------------------------------

IPVS_ROWS = (Key("timeouts", CODE, None, doc="{ tcp, tcpfin, udp }: the kernel's connection timeouts"),)
TIMEOUT_ROWS = (
    Key("tcp", Duration(0, JIFFIES_INT_MAX, whole=True), 0, doc="established TCP (0 = leave the kernel's)"),
    Key("tcpfin", Duration(0, JIFFIES_INT_MAX, whole=True), 0, doc="TCP after FIN (0 = leave the kernel's)"),
    Key("udp", Duration(0, JIFFIES_INT_MAX, whole=True), 0, doc="UDP (0 = leave the kernel's)"),
)


@dataclass(frozen=True, slots=True)
class IPVSConfig:
    """``[ipvs]``: global kernel settings. ``timeouts`` None = leave the kernel's as they are;
    a 0 field inside it also means "leave this one" (as ipvsadm --set)."""

    timeouts: Timeouts | None = None


def _ipvs(r: Reader, t: Table) -> IPVSConfig:
    r.keys(t, "ipvs", IPVS_KEYS)
    tt = r.table(t, "timeouts", "ipvs")
    if tt is None:
        return IPVSConfig()
    p = "ipvs.timeouts"
    vals = read_table(r, tt, p, TIMEOUT_ROWS)
    if not tt:
        return IPVSConfig()
    return IPVSConfig(Timeouts(*vals.values()))


# --- [sync] --------------------------------------------------------------------------------------


def _sync_interface(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    if key not in tbl:
        r.err(_p(path, key), "missing: the interface the sync daemon sends and listens on")
    return _ifname(r, tbl, key, path, None, vals) or default


def _group(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    if key not in tbl:
        return default
    a = r.ip(tbl[key], _p(path, key), unicast=False)
    if a is None:
        return default
    if not ipaddress.ip_address(a[1]).is_multicast:
        r.err(_p(path, key), f"must be a multicast address, got {_show(tbl[key])}")
    return a[1]


def _threshold(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    thr = tbl.get(key, list(default))
    if (
        not isinstance(thr, list)
        or len(thr) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= INT32_MAX for x in thr)
    ):
        r.err(
            _p(path, key),
            f"must be [threshold, period] (two non-negative integers), got {_show(thr)}",
        )
        return default
    elif thr[1] and thr[0] >= thr[1]:
        r.err(
            _p(path, key),
            f"threshold must be below period unless period is 0 (the kernel refuses it), got {thr}",
        )
        return default
    return (thr[0], thr[1])


#: the sync message length the kernel keeps as given for both roles: a backup raises a smaller one
#: to 1024, and either caps it at 65535 minus the IP/UDP headers (48 bytes over IPv6)
SYNC_MAXLEN = (1024, 65535 - 48)


def _maxlen(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = r.get_int(tbl, key, path, 0, 65535, default)
    if v and not SYNC_MAXLEN[0] <= v <= SYNC_MAXLEN[1]:
        lo, hi = SYNC_MAXLEN
        r.err(_p(path, key), f"must be 0 or {lo}..{hi} (the kernel changes other values), got {v}")
        return default
    return v


def _sync_ports(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    v = r.get_int(tbl, key, path, 1, 1024, default)
    if v is not None and v & (v - 1):
        r.err(_p(path, key), f"must be a power of two (the kernel refuses others), got {v}")
        return default
    return v


SYNC_ROWS = (
    Key("interface", _sync_interface, "", doc="the interface the sync daemon sends and listens on"),
    Key("group", _group, "", doc='multicast group ("" = the kernel\'s: 224.0.0.81 / ff02::81)'),
    Key("sync_threshold", _threshold, (3, 0), doc="[threshold, period] (net.ipv4.vs.sync_threshold)"),
    Key("syncid", INT(0, 255), 0, doc="sync id (0 = every id)"),
    Key("maxlen", _maxlen, 0, doc="largest sync message (0 = the kernel's)"),
    Key("port", INT(0, 65535), 0, doc="UDP port (0 = the kernel's, 8848)"),
    Key("ttl", INT(0, 255), 0, doc="multicast TTL (0 = the kernel's, 1)"),
    Key("backup_always", BOOL, False, doc="also run the backup daemon while master"),
    Key("on_fault", Choice(SYNC_ON_FAULT), "backup", doc="in fault: run the backup daemon, or none"),
    Key("manage_sysctls", BOOL, True, doc="write the sync_* sysctls below"),
    Key("sync_refresh_period", Duration(0, JIFFIES_INT_MAX, whole=True), 10, doc="net.ipv4.vs sysctl"),
    Key("sync_retries", INT(0, 3), 0, doc="net.ipv4.vs sysctl"),
    Key("sync_persist_mode", INT(0, 1), 0, doc="net.ipv4.vs sysctl"),
    Key("sync_version", INT(0, 1), 1, doc="net.ipv4.vs sysctl"),
    Key("sync_ports", _sync_ports, None, doc="net.ipv4.vs sysctl (unset = leave the kernel's)"),
    Key("sync_qlen_max", INT(1, INT32_MAX), None, doc="net.ipv4.vs sysctl (unset = leave the kernel's)"),
    Key("sync_sock_size", INT(0, INT32_MAX), None, doc="net.ipv4.vs sysctl (unset = leave the kernel's)"),
)
_SYNC = _d(SYNC_ROWS)


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """``[sync]``: the kernel connection-sync daemon run by role, and the sync sysctls.

    Sysctl fields None = leave the kernel's value. The defaults make every connection reach the
    backup (handshake-only and idle ones included): threshold 3, period 0, refresh every 10 s."""

    interface: str
    syncid: int = _SYNC["syncid"]
    maxlen: int = _SYNC["maxlen"]
    group: str = _SYNC["group"]
    port: int = _SYNC["port"]
    ttl: int = _SYNC["ttl"]
    backup_always: bool = _SYNC["backup_always"]
    on_fault: str = _SYNC["on_fault"]
    manage_sysctls: bool = _SYNC["manage_sysctls"]
    sync_threshold: tuple[int, int] = _SYNC["sync_threshold"]
    sync_refresh_period: int = _SYNC["sync_refresh_period"]
    sync_retries: int = _SYNC["sync_retries"]
    sync_persist_mode: int = _SYNC["sync_persist_mode"]
    sync_version: int = _SYNC["sync_version"]
    sync_ports: int | None = _SYNC["sync_ports"]
    sync_qlen_max: int | None = _SYNC["sync_qlen_max"]
    sync_sock_size: int | None = _SYNC["sync_sock_size"]

    def daemon(self, state: int) -> SyncDaemon:
        """The kernel sync daemon value for ``DaemonState.MASTER`` or ``BACKUP``."""
        return SyncDaemon(
            state=int(DaemonState(state)),
            mcast_ifn=self.interface,
            syncid=self.syncid,
            sync_maxlen=self.maxlen,
            mcast_group=self.group,
            mcast_port=self.port,
            mcast_ttl=self.ttl,
        )

    def daemons_for(self, role: str) -> tuple[SyncDaemon, ...]:
        """Which sync daemons should run in ``role`` (master/backup/fault)."""
        if role == "master":
            if self.backup_always:
                return (self.daemon(DaemonState.MASTER), self.daemon(DaemonState.BACKUP))
            return (self.daemon(DaemonState.MASTER),)
        if role == "backup" or (role == "fault" and self.on_fault == "backup"):
            return (self.daemon(DaemonState.BACKUP),)
        return ()

    def sysctls(self) -> dict[str, str]:
        """net.ipv4.vs.* name -> value text to write ({} if manage_sysctls is false)."""
        if not self.manage_sysctls:
            return {}
        out = {
            "sync_threshold": f"{self.sync_threshold[0]} {self.sync_threshold[1]}",
            "sync_refresh_period": str(self.sync_refresh_period),
            "sync_retries": str(self.sync_retries),
            "sync_persist_mode": str(self.sync_persist_mode),
            "sync_version": str(self.sync_version),
        }
        for name in ("sync_ports", "sync_qlen_max", "sync_sock_size"):
            v = getattr(self, name)
            if v is not None:
                out[name] = str(v)
        return out


def _sync(r: Reader, t: Table) -> SyncConfig | None:
    return SyncConfig(**read_table(r, t, "sync", SYNC_ROWS))


# --- [api], [metrics] ------------------------------------------------------------------------------


def _socket(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    sock = r.get_str(tbl, key, path, default)
    if not sock.startswith("/") or len(sock.encode()) > 107:
        r.err(_p(path, key), f"must be an absolute path of at most 107 bytes, got {_show(sock)}")
    return sock


def _mode(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    mode = tbl.get(key, f"{default:04o}")
    if isinstance(mode, str) and re.fullmatch(r"0?[0-7]{3}", mode):
        return int(mode, 8)
    r.err(_p(path, key), f'must be an octal permission string such as "0660", got {_show(mode)}')
    return default


API_ROWS = (
    Key("socket", _socket, "/run/lvsd/lvsd.sock", doc="the control socket lvsctl talks to"),
    Key("mode", _mode, 0o660, doc='its permissions, an octal string such as "0660"'),
    Key("allow_world", BOOL, False, doc="allow a mode that lets every local user connect (o+w)"),
)
_API = _d(API_ROWS)


@dataclass(frozen=True, slots=True)
class APIConfig:
    """``[api]``: the control socket lvsctl talks to."""

    socket: str = _API["socket"]
    mode: int = _API["mode"]
    allow_world: bool = _API["allow_world"]


def _api(r: Reader, t: Table) -> APIConfig:
    """Connecting to a unix socket needs write permission on it, nothing else: a mode with the
    others' write bit lets every local user reload, change the role or drain servers."""
    vals = read_table(r, t, "api", API_ROWS)
    if vals["mode"] & 0o002 and not vals["allow_world"]:
        r.err(
            _p("api", "mode"),
            f'"{vals["mode"]:04o}" lets every local user control lvsd (reload, role, drain): '
            'use "0660" and a group, or set allow_world = true',
        )
    return APIConfig(**vals)


def _listen(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """``"address:port"`` -> (text, address, port); None = not set or invalid."""
    listen = r.get_str(tbl, key, path)
    if listen is None:
        return default
    hp = _split_hostport(listen)
    port = _parse_port(hp[1]) if hp and hp[1] is not None else None
    if hp is None or port is None or port == 0:
        r.err(_p(path, key), f'must be "address:port" (IPv6: "[address]:port"), got {_show(listen)}')
        return default
    host = hp[0]
    if host:
        a = r.ip(host, _p(path, key), unicast=False)  # "0.0.0.0" / "::" = every address
        if a is None:
            return default
        host = a[1]
    else:
        host = "0.0.0.0"
    return listen, host, port


METRICS_ROWS = (Key("listen", _listen, None, doc='serve /metrics on "address:port" (unset = only the API)'),)


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: Prometheus text over HTTP on ``listen`` ("addr:port"); None = only via the API socket."""

    listen: str | None = None
    address: str | None = None
    port: int | None = None


def _metrics(r: Reader, t: Table) -> MetricsConfig:
    v = read_table(r, t, "metrics", METRICS_ROWS)["listen"]
    return MetricsConfig() if v is None else MetricsConfig(*v)


DAEMON_KEYS = names(DAEMON_ROWS)
IPVS_KEYS = names(IPVS_ROWS)
TIMEOUT_KEYS = names(TIMEOUT_ROWS)
SYNC_KEYS = names(SYNC_ROWS)
API_KEYS = names(API_ROWS)
METRICS_KEYS = names(METRICS_ROWS)
