"""TOML -> validated ``Config``, collecting every error in one pass.

Each error is one line ``path: what is wrong``. Paths name TOML keys joined by dots; a service is
``service[NAME]`` when it has a name, else ``service[INDEX]``; servers, checks and list items are
``[INDEX]`` counted from 0 as they appear in the file (``service[web].server[2].weight``).
Nothing raises a Python traceback for a user mistake: ``ConfigError`` carries every line.

Inheritance: a server key not set on the server comes from its service, then ``[defaults]``, then
the built-in default. ``check`` is inherited as a whole (a server's ``check`` replaces its
service's; ``check = []`` means no check).
"""

from __future__ import annotations

import difflib
import grp
import ipaddress
import json
import math
import os
import pwd
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any

from lvsd.ipvs.model import (
    AF_INET,
    AF_INET6,
    DEFAULT_PERSISTENT_TIMEOUT,
    IP_VS_IFNAME_MAXLEN,
    IP_VS_SCHEDNAME_MAXLEN,
    PERSISTENCE_ENGINES,
    SCHEDULERS,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
    TUN_F_CSUM,
    TUN_F_NOCSUM,
    TUN_F_REMCSUM,
    Destination,
    DestKey,
    Forward,
    Protocol,
    Service,
    ServiceKey,
    Timeouts,
    TunType,
)

from .durations import parse_duration
from .model import (
    CHECK_TYPES,
    HA_MODES,
    LOG_LEVELS,
    ON_FAILURE,
    ON_START,
    ON_STOP,
    SYNC_ON_FAULT,
    APIConfig,
    CheckConfig,
    Config,
    DaemonConfig,
    DefaultsConfig,
    DNSCheck,
    HAConfig,
    HTTPCheck,
    IPVSConfig,
    MetricsConfig,
    ScriptCheck,
    ServerConfig,
    ServiceConfig,
    SyncConfig,
    TCPCheck,
    UDPCheck,
    VipConfig,
)

try:  # tomli's compiled wheels parse ~2.5x faster than the stdlib's pure-Python tomllib
    import tomli as _toml
except ImportError:  # pragma: no cover - depends on the environment
    import tomllib as _toml  # type: ignore[no-redef]

DEFAULT_PATH = "/etc/lvsd/lvsd.toml"
INT32_MAX = 0x7FFFFFFF
UINT32_MAX = 0xFFFFFFFF

#: resolver(hostname, family or None) -> addresses (canonical text), in preference order
Resolver = Callable[[str, "int | None"], Sequence[str]]


class ConfigError(Exception):
    """The configuration is invalid. ``errors`` holds one ``path: what is wrong`` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


# --- key sets ----------------------------------------------------------------------------------

FORWARDS = {"dr": Forward.ROUTE, "tun": Forward.TUNNEL, "nat": Forward.MASQ}
FORWARD_NAMES = {v: k for k, v in FORWARDS.items()}
_FWD_INT = {k: int(v) for k, v in FORWARDS.items()}
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
DNS_QTYPES = ("A", "AAAA", "CNAME", "MX", "NS", "PTR", "SOA", "SRV", "TXT", "CAA", "ANY")
DNS_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")
DIGESTS = {"md5": 32, "sha1": 40, "sha256": 64}
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "OPTIONS")

TOP_KEYS = ("daemon", "ipvs", "defaults", "service", "ha", "sync", "api", "metrics")
DAEMON_KEYS = ("on_start", "on_stop", "resync", "log_level", "hook_timeout", "state_file")
IPVS_KEYS = ("timeouts",)
TIMEOUT_KEYS = ("tcp", "tcpfin", "udp")
#: keys a server may set, and that a service or [defaults] may set for its servers
SERVER_INHERITED = (
    "forward",
    "weight",
    "thresholds",
    "tunnel",
    "check",
    "on_failure",
    "notify_up",
    "notify_down",
)
SERVER_ONLY = ("address", "port", "enabled")
#: service keys [defaults] may also set
SERVICE_INHERITED = (
    "protocol",
    "family",
    "scheduler",
    "persistence",
    "sched_flags",
    "one_packet",
    "quorum",
    "hysteresis",
    "quorum_up",
    "quorum_down",
)
SERVICE_ONLY = ("name", "vip", "fwmark", "server", "sorry_server")
SERVICE_KEYS = SERVICE_ONLY + SERVICE_INHERITED + SERVER_INHERITED
DEFAULTS_KEYS = SERVICE_INHERITED + SERVER_INHERITED
SERVER_KEYS = SERVER_ONLY + SERVER_INHERITED
_SERVER_KEYSET = frozenset(SERVER_KEYS)
_SERVICE_KEYS_ELSEWHERE = {k: "a service key" for k in SERVICE_ONLY + SERVICE_INHERITED}
PERSISTENCE_KEYS = ("timeout", "netmask", "engine")
THRESHOLD_KEYS = ("upper", "lower")
TUNNEL_KEYS = ("type", "port", "csum")
SORRY_KEYS = ("address", "port", "forward", "weight", "tunnel")
CHECK_COMMON = ("type", "interval", "timeout", "rise", "fall", "retry_delay")
CHECK_NET = ("connect", "bind")
CHECK_KEYS = {
    "tcp": CHECK_COMMON + CHECK_NET + ("send", "expect"),
    "http": CHECK_COMMON
    + CHECK_NET
    + ("method", "path", "host", "status", "body", "digest", "digest_algorithm", "headers", "max_body"),
    "script": CHECK_COMMON + ("argv", "user", "group", "dynamic_weight"),
    "udp": CHECK_COMMON + CHECK_NET + ("send", "expect"),
    "dns": CHECK_COMMON + CHECK_NET + ("name", "qtype", "rcode", "expect"),
}
CHECK_KEYS["https"] = CHECK_KEYS["http"] + ("verify", "ca", "sni", "cert", "key")
ALL_CHECK_KEYS = tuple(sorted({k for v in CHECK_KEYS.values() for k in v}))
_CHECK_KEYSETS = {t: frozenset(ks) for t, ks in CHECK_KEYS.items()}
#: [ha] keys that only mode = "vrrp" takes
VRRP_KEYS = (
    "interface",
    "vrid",
    "priority",
    "advert_interval",
    "vips",
    "preempt",
    "preempt_delay",
    "version",
)
HA_KEYS = ("mode", "role") + VRRP_KEYS + ("notify_master", "notify_backup", "notify_fault")
SYNC_KEYS = (
    "interface",
    "syncid",
    "maxlen",
    "group",
    "port",
    "ttl",
    "backup_always",
    "on_fault",
    "manage_sysctls",
    "sync_threshold",
    "sync_refresh_period",
    "sync_retries",
    "sync_persist_mode",
    "sync_version",
    "sync_ports",
    "sync_qlen_max",
    "sync_sock_size",
)
API_KEYS = ("socket", "mode")
METRICS_KEYS = ("listen",)

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,63}")
_HOST_RE = re.compile(r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_DNSNAME_RE = re.compile(r"(?=.{1,254}$)([A-Za-z0-9_*](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+|\.")
_HEADER_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KEY_SHOWN: dict[str, str] = {}
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


# --- the reader ---------------------------------------------------------------------------------


def _p(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    shown = _KEY_SHOWN.get(key)
    if shown is None:  # quoted TOML keys are shown quoted and escaped, so an error stays one line
        shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
        if len(_KEY_SHOWN) < 4096:
            _KEY_SHOWN[key] = shown
    return f"{path}.{shown}" if path else shown


def _tname(v: object) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, dict):
        return "table"
    if isinstance(v, list):
        return "array"
    return type(v).__name__  # dates and times


def _show(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # quoted, control characters escaped: one line
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    return repr(v)


def _quote_list(items: Sequence[str]) -> str:
    q = [f'"{i}"' for i in items]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " or " + q[-1]


#: for a key of another check type: which types have it
_CHECK_ELSEWHERE = {
    t: {
        k: "only for type " + _quote_list([u for u, us in CHECK_KEYS.items() if k in us])
        for k in ALL_CHECK_KEYS
        if k not in ks
    }
    for t, ks in CHECK_KEYS.items()
}


class _Ctx:
    """Error collector and typed getters. Getters record an error and return the default when the
    value is wrong, so one pass reports everything."""

    __slots__ = ("errors", "resolver", "check_files", "_exec_cache", "check_cache")

    def __init__(self, resolver: Resolver | None, check_files: bool) -> None:
        self.errors: list[str] = []
        self.resolver = resolver
        self.check_files = check_files
        self._exec_cache: dict[str, str | None] = {}
        #: frozen raw check table -> its CheckConfig, for tables that parsed without error
        self.check_cache: dict[object, CheckConfig] = {}

    def err(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}")

    # tables ------------------------------------------------------------------------------------
    def keys(
        self, tbl: dict, path: str, allowed: Sequence[str], elsewhere: dict[str, str] | None = None
    ) -> None:
        """Report every key of ``tbl`` not in ``allowed``, suggesting the closest allowed key."""
        for k in tbl:
            if k in allowed:
                continue
            where = elsewhere.get(k) if elsewhere else None
            if where:
                self.err(_p(path, k), f"not allowed here ({where})")
                continue
            close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            self.err(_p(path, k), f"unknown key{hint}")

    def table(self, tbl: dict, key: str, path: str) -> dict | None:
        v = tbl.get(key)
        if v is None:
            return None
        if not isinstance(v, dict):
            self.err(_p(path, key), f"must be a table, got {_tname(v)}")
            return None
        return v

    # scalars -----------------------------------------------------------------------------------
    def int(self, tbl: dict, key: str, path: str, lo: int, hi: int, default: Any = None) -> Any:
        v = tbl.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(_p(path, key), f"must be an integer, got {_tname(v)} {_show(v)}")
            return default
        if not lo <= v <= hi:
            self.err(_p(path, key), f"must be {lo}..{hi}, got {v}")
            return default
        return v

    def bool(self, tbl: dict, key: str, path: str, default: Any = None) -> Any:
        v = tbl.get(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.err(_p(path, key), f"must be true or false, got {_tname(v)} {_show(v)}")
            return default
        return v

    def str(self, tbl: dict, key: str, path: str, default: Any = None, nonempty: bool = True) -> Any:
        v = tbl.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            self.err(_p(path, key), f"must be a string, got {_tname(v)} {_show(v)}")
            return default
        if nonempty and not v:
            self.err(_p(path, key), "must not be empty")
            return default
        return v

    def choice(self, tbl: dict, key: str, path: str, choices: Sequence[str], default: Any = None) -> Any:
        v = tbl.get(key)
        if v is None:
            return default
        if not isinstance(v, str):
            self.err(_p(path, key), f"must be {_quote_list(choices)}, got {_tname(v)} {_show(v)}")
            return default
        if v not in choices:
            close = difflib.get_close_matches(v, choices, n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            self.err(_p(path, key), f"must be {_quote_list(choices)}, got {_show(v)}{hint}")
            return default
        return v

    def duration(
        self,
        tbl: dict,
        key: str,
        path: str,
        default: Any = None,
        lo: float = 0.0,
        whole: bool = False,
        hi: float = 1e9,
    ) -> Any:
        v = tbl.get(key)
        if v is None:
            return default
        try:
            d = parse_duration(v)
        except ValueError as e:
            self.err(_p(path, key), str(e))
            return default
        if whole and d != math.floor(d):
            self.err(_p(path, key), f"must be a whole number of seconds, got {_show(v)}")
            return default
        if d < lo or d > hi:
            what = f"at least {lo:g}s" if d < lo else f"at most {hi:g}s"
            self.err(_p(path, key), f"must be {what}, got {_show(v)}")
            return default
        return int(d) if whole else d

    def argv(self, tbl: dict, key: str, path: str, default: Any = None) -> Any:
        v = tbl.get(key)
        if v is None:
            return default
        p = _p(path, key)
        if isinstance(v, str):
            self.err(
                p,
                f'must be a list of strings (argv, no shell), e.g. ["/usr/bin/logger", "..."], got string {_show(v)}',
            )
            return default
        if not isinstance(v, list) or not v:
            self.err(p, f"must be a non-empty list of strings (argv), got {_tname(v)}")
            return default
        ok = True
        for i, a in enumerate(v):
            if not isinstance(a, str):
                self.err(_p(p, i), f"must be a string, got {_tname(a)} {_show(a)}")
                ok = False
            elif "\0" in a:
                self.err(_p(p, i), "must not contain NUL")
                ok = False
        if not ok:
            return default
        if not v[0]:
            self.err(_p(p, 0), "must not be empty")
            return default
        self.executable(v[0], _p(p, 0))
        return tuple(v)

    def executable(self, prog: str, path: str) -> None:
        """An absolute argv[0] must be an executable file (checked once per program)."""
        if not self.check_files or not prog.startswith("/"):
            return
        if prog not in self._exec_cache:
            if not os.path.exists(prog):
                self._exec_cache[prog] = "no such file"
            elif not os.path.isfile(prog):
                self._exec_cache[prog] = "not a regular file"
            elif not os.access(prog, os.X_OK):
                self._exec_cache[prog] = "not executable"
            else:
                self._exec_cache[prog] = None
        why = self._exec_cache[prog]
        if why:
            self.err(path, f"{_show(prog)}: {why}")

    def file(self, tbl: dict, key: str, path: str) -> Any:
        v = self.str(tbl, key, path)
        if v is not None and self.check_files and not os.path.isfile(v):
            self.err(
                _p(path, key), f"{_show(v)}: {'not a regular file' if os.path.exists(v) else 'no such file'}"
            )
        return v

    def ip(
        self, value: object, path: str, af: int | None = None, unicast: bool = True
    ) -> tuple[int, str] | None:
        """(family, canonical text) of an IP literal (a unicast one unless told), or record an error."""
        if not isinstance(value, str):
            self.err(path, f"must be an IP address string, got {_tname(value)} {_show(value)}")
            return None
        if af != AF_INET6 and _IPV4_RE.fullmatch(value) and 0 < int(value[: value.index(".")]) < 224:
            return AF_INET, value  # a canonical unicast dotted quad: no ipaddress needed
        try:
            ip = ipaddress.ip_address(value[1:-1] if value.startswith("[") and value.endswith("]") else value)
        except ValueError:
            self.err(path, f"not an IP address: {_show(value)}")
            return None
        why = _not_unicast(ip) if unicast else None
        if why:
            self.err(path, f"{_show(value)} is {why}")
            return None
        fam = AF_INET6 if ip.version == 6 else AF_INET
        if af is not None and fam != af:
            self.err(path, f"must be an {'IPv6' if af == AF_INET6 else 'IPv4'} address, got {_show(value)}")
            return None
        return fam, str(ip)


def _not_unicast(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address cannot be a virtual or real server's, or None."""
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.version == 4 and ip == _BROADCAST:
        return "the broadcast address"
    if ip.version == 6 and ip.scope_id:  # type: ignore[union-attr]
        return "scoped (%zone): not supported by IPVS"
    return None


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _split_hostport(text: str) -> tuple[str, str | None] | None:
    """'a.b.c.d:80' / '[v6]:80' / 'host:80' / 'a.b.c.d' / '[v6]' -> (host, port text or None)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        host, rest = text[1:end], text[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            return None
        return host, rest[1:]
    if text.count(":") > 1:  # a bare IPv6 address without brackets: no port possible
        return text, None
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def _parse_port(text: str) -> int | None:
    if not text.isdigit():
        return None
    n = int(text)
    return n if 0 <= n <= 65535 else None


def system_resolver(host: str, af: int | None) -> list[str]:
    """Resolve a hostname with getaddrinfo; addresses in resolver order, IPv4/IPv6 as asked."""
    fam = {AF_INET: socket.AF_INET, AF_INET6: socket.AF_INET6}.get(af or 0, socket.AF_UNSPEC)
    try:
        infos = socket.getaddrinfo(host, None, fam, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    out: list[str] = []
    for info in infos:
        addr = str(ipaddress.ip_address(info[4][0].split("%")[0]))
        if addr not in out:
            out.append(addr)
    return out


# --- checks ------------------------------------------------------------------------------------


def _bytes(ctx: _Ctx, tbl: dict, key: str, path: str) -> bytes | None:
    v = ctx.str(tbl, key, path, nonempty=False)
    return None if v is None else v.encode("utf-8")


def _connect(ctx: _Ctx, tbl: dict, path: str) -> tuple[str | None, int | None]:
    v = ctx.str(tbl, "connect", path)
    if v is None:
        return None, None
    p = _p(path, "connect")
    hp = _split_hostport(v)
    if hp is None or hp[1] is None:
        ctx.err(p, f'must be "address:port", "[v6 address]:port" or ":port", got {_show(v)}')
        return None, None
    host, port_text = hp
    port = _parse_port(port_text)
    if port is None or port == 0:
        ctx.err(p, f"port must be 1..65535, got {_show(port_text)}")
        return None, None
    if not host:
        return None, port
    a = ctx.ip(host, p)
    return (a[1] if a else None), port


def _status(ctx: _Ctx, tbl: dict, path: str) -> tuple[tuple[int, int], ...]:
    v = tbl.get("status")
    if v is None:
        return ((200, 299),)
    p = _p(path, "status")
    items = v if isinstance(v, list) else [v]
    if not items:
        ctx.err(p, "must not be empty")
        return ((200, 299),)
    out: list[tuple[int, int]] = []
    for i, it in enumerate(items):
        ip = _p(p, i) if isinstance(v, list) else p
        if isinstance(it, int) and not isinstance(it, bool):
            lo = hi = it
        elif isinstance(it, str):
            a, sep, b = it.partition("-")
            a, b = a.strip(), b.strip()
            if not a.isdigit() or (sep and not b.isdigit()):
                ctx.err(ip, f'must be a status code or a range like "200-299", got {_show(it)}')
                continue
            lo, hi = int(a), int(b) if sep else int(a)
        else:
            ctx.err(ip, f'must be a status code, a range like "200-299", or a list of them, got {_tname(it)}')
            continue
        if not (100 <= lo <= 599 and 100 <= hi <= 599 and lo <= hi):
            ctx.err(ip, f"must be codes 100..599 with low <= high, got {_show(it)}")
            continue
        out.append((lo, hi))
    return tuple(out) or ((200, 299),)


def _principal(ctx: _Ctx, c: dict, key: str, path: str, lookup: Callable[[str], object]) -> str | int | None:
    """A user or group: a name that must exist (when files are checked), or a numeric id as an int
    (as subprocess takes it: a digit string would be looked up as a name)."""
    v = c.get(key)
    if v is None:
        return None
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool):
        if not 0 <= v <= 0xFFFFFFFE:
            ctx.err(_p(path, key), f"must be a {key} name or an id 0..4294967294, got {v}")
            return None
        return v
    name = ctx.str(c, key, path)
    if name is None:
        return None
    if ctx.check_files:
        try:
            lookup(name)
        except KeyError:
            ctx.err(_p(path, key), f"no such {key} {_show(name)}")
    return name


def _freeze(v: object) -> object:
    """A hashable image of a TOML value that keeps types apart (true is not 1, 1.0 is not 1)."""
    if isinstance(v, dict):
        return ("t", tuple((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("a", tuple(_freeze(x) for x in v))
    return (type(v), v)


def _parse_check(ctx: _Ctx, c: object, path: str) -> CheckConfig | None:
    """A check table -> CheckConfig. The same table written on many servers is parsed once
    (a table with errors is parsed again each time so every error names its own path)."""
    key = _freeze(c)
    hit = ctx.check_cache.get(key)
    if hit is not None:
        return hit
    n = len(ctx.errors)
    out = _parse_check_table(ctx, c, path)
    if out is not None and len(ctx.errors) == n:
        ctx.check_cache[key] = out
    return out


def _parse_check_table(ctx: _Ctx, c: object, path: str) -> CheckConfig | None:
    if not isinstance(c, dict):
        ctx.err(path, f'must be a table such as {{ type = "tcp" }}, got {_tname(c)}')
        return None
    ctype = c.get("type")
    if ctype is None:
        ctx.err(_p(path, "type"), f"missing: one of {_quote_list(CHECK_TYPES)}")
        return None
    ctype = ctx.choice(c, "type", path, CHECK_TYPES)
    if ctype is None:
        return None
    if not _CHECK_KEYSETS[ctype].issuperset(c):
        ctx.keys(c, path, CHECK_KEYS[ctype], _CHECK_ELSEWHERE[ctype])
    interval = ctx.duration(c, "interval", path, 2.0, lo=0.01, hi=86400)
    common = {
        "interval": interval,
        "timeout": ctx.duration(c, "timeout", path, 1.0, lo=0.001, hi=86400),
        "rise": ctx.int(c, "rise", path, 1, 1000, 2),
        "fall": ctx.int(c, "fall", path, 1, 1000, 3),
        "retry_delay": ctx.duration(c, "retry_delay", path, interval, lo=0.01, hi=86400),
    }
    if ctype == "script":
        argv = ctx.argv(c, "argv", path)
        if argv is None and "argv" not in c:
            ctx.err(_p(path, "argv"), 'missing: the command to run, e.g. ["/usr/local/bin/check", "--quick"]')
        user = _principal(ctx, c, "user", path, pwd.getpwnam)
        group = _principal(ctx, c, "group", path, grp.getgrnam)
        return ScriptCheck(
            argv=argv or (),
            user=user,
            group=group,
            dynamic_weight=ctx.bool(c, "dynamic_weight", path, False),
            **common,
        )
    addr, port = _connect(ctx, c, path)
    bind = None
    if "bind" in c:
        b = ctx.ip(c["bind"], _p(path, "bind"))
        bind = b[1] if b else None
    net = {**common, "connect_address": addr, "connect_port": port, "bind": bind}
    if ctype == "tcp":
        send, expect = _bytes(ctx, c, "send", path), _bytes(ctx, c, "expect", path)
        if expect is not None and not expect:
            ctx.err(_p(path, "expect"), "must not be empty")
        return TCPCheck(send=send, expect=expect or None, **net)
    if ctype == "udp":
        send = _bytes(ctx, c, "send", path)
        if send is None:
            ctx.err(_p(path, "send"), "missing: the datagram to send")
        expect = _bytes(ctx, c, "expect", path)
        return UDPCheck(send=send or b"", expect=expect or None, **net)
    if ctype == "dns":
        name = ctx.str(c, "name", path)
        if name is None and "name" not in c:
            ctx.err(_p(path, "name"), 'missing: the name to query, e.g. "www.example.org"')
        elif name is not None and not _DNSNAME_RE.fullmatch(name):
            ctx.err(_p(path, "name"), f"not a DNS name: {_show(name)}")
        qtype = c.get("qtype", "A")
        if isinstance(qtype, str) and qtype.upper() in DNS_QTYPES:
            qtype = qtype.upper()
        elif (
            isinstance(qtype, str) and re.fullmatch(r"TYPE\d{1,5}", qtype.upper()) and int(qtype[4:]) < 65536
        ):
            qtype = qtype.upper()
        else:
            ctx.err(
                _p(path, "qtype"), f"must be one of {', '.join(DNS_QTYPES)} or TYPEnn, got {_show(qtype)}"
            )
            qtype = "A"
        rcode = c.get("rcode", "NOERROR")
        if isinstance(rcode, str) and rcode.upper() in DNS_RCODES:
            rcode = rcode.upper()
        else:
            ctx.err(_p(path, "rcode"), f"must be one of {', '.join(DNS_RCODES)}, got {_show(rcode)}")
            rcode = "NOERROR"
        expect = c.get("expect", [])
        if isinstance(expect, str):
            expect = [expect]
        if not isinstance(expect, list) or not all(isinstance(e, str) and e for e in expect):
            ctx.err(_p(path, "expect"), "must be a string or a list of non-empty strings")
            expect = []
        return DNSCheck(name=name or "", qtype=qtype, rcode=rcode, expect=tuple(expect), **net)
    # http / https
    method = c.get("method", "GET")
    if not isinstance(method, str) or method.upper() not in HTTP_METHODS:
        ctx.err(_p(path, "method"), f"must be one of {', '.join(HTTP_METHODS)}, got {_show(method)}")
        method = "GET"
    path_v = ctx.str(c, "path", path, "/")
    if not path_v.startswith("/") or any(ch in path_v for ch in " \r\n\t"):
        ctx.err(_p(path, "path"), f'must start with "/" and contain no spaces, got {_show(path_v)}')
        path_v = "/"
    host = ctx.str(c, "host", path)
    if host is not None and any(ch in host for ch in " \r\n\t/"):
        ctx.err(_p(path, "host"), f"not a valid Host header value: {_show(host)}")
        host = None
    body = ctx.str(c, "body", path)
    if body is not None:
        try:
            re.compile(body)
        except re.error as e:
            ctx.err(_p(path, "body"), f"not a valid regular expression: {e}")
    algo = ctx.choice(c, "digest_algorithm", path, tuple(DIGESTS), "md5")
    digest = ctx.str(c, "digest", path)
    if digest is not None:
        if not _HEX_RE.fullmatch(digest) or len(digest) != DIGESTS[algo]:
            ctx.err(_p(path, "digest"), f"must be {DIGESTS[algo]} hex digits ({algo}), got {_show(digest)}")
        digest = digest.lower()
    if body is not None and digest is not None:
        ctx.err(_p(path, "digest"), "use body or digest, not both")
    headers: list[tuple[str, str]] = []
    htbl = ctx.table(c, "headers", path)
    for hk, hv in (htbl or {}).items():
        hp = _p(_p(path, "headers"), hk)
        if not _HEADER_RE.fullmatch(hk):
            ctx.err(hp, "not a valid header name")
        elif hk.lower() == "host":  # the probe always sends one Host; a second makes servers answer 400
            ctx.err(hp, 'set the Host header with the check\'s "host" key')
        elif not isinstance(hv, str) or any(ch in hv for ch in "\r\n\0"):
            ctx.err(hp, "must be a string without line breaks")
        else:
            headers.append((hk, hv))
    kw: dict[str, Any] = {}
    if ctype == "https":
        cert, key = ctx.file(c, "cert", path), ctx.file(c, "key", path)
        if key is not None and cert is None:
            ctx.err(_p(path, "key"), "needs cert (the client certificate)")
        sni = ctx.str(c, "sni", path)
        kw = {
            "verify": ctx.bool(c, "verify", path, True),
            "ca": ctx.file(c, "ca", path),
            "sni": sni if sni is not None else host,
            "cert": cert,
            "key": key,
        }
    return HTTPCheck(
        type=ctype,
        method=method.upper(),
        path=path_v,
        host=host,
        status=_status(ctx, c, path),
        body=body,
        digest=digest,
        digest_algorithm=algo,
        headers=tuple(headers),
        max_body=ctx.int(c, "max_body", path, 1, 1 << 30, 1048576),
        **kw,
        **net,
    )


def _parse_checks(ctx: _Ctx, tbl: dict, path: str) -> tuple[CheckConfig, ...] | None:
    """``check`` of a table as a tuple (one table or a list of tables); None if not set. An inherited
    check is parsed once where it is written, so its errors are reported once, at that place."""
    v = tbl.get("check")
    if v is None:
        return None
    p = _p(path, "check")
    if isinstance(v, dict):
        c = _parse_check(ctx, v, p)
        return (c,) if c else ()
    if not isinstance(v, list):
        ctx.err(p, f"must be a table or a list of tables, got {_tname(v)} {_show(v)}")
        return ()
    out = []
    for i, item in enumerate(v):
        c = _parse_check(ctx, item, _p(p, i))
        if c is not None:
            out.append(c)
    return tuple(out)


# --- layers: the keys a server inherits --------------------------------------------------------


def _tunnel(ctx: _Ctx, tbl: dict, path: str) -> tuple[int, int, int] | None:
    t = ctx.table(tbl, "tunnel", path)
    if t is None:
        return None
    p = _p(path, "tunnel")
    ctx.keys(t, p, TUNNEL_KEYS)
    tname = ctx.choice(t, "type", p, tuple(TUN_TYPES), "ipip")
    tport = ctx.int(t, "port", p, 1, 65535)
    csum = ctx.choice(t, "csum", p, tuple(TUN_CSUM))
    if tname == "gue" and tport is None and "port" not in t:
        ctx.err(_p(p, "port"), 'missing: type "gue" needs the tunnel destination port')
    if tname != "gue" and tport is not None:
        ctx.err(_p(p, "port"), f'only with type "gue" (type is "{tname}")')
    if tname == "ipip" and csum is not None:
        ctx.err(_p(p, "csum"), 'only with type "gue" or "gre" (type is "ipip")')
    if tname == "gre" and csum == "remcsum":
        ctx.err(_p(p, "csum"), 'remcsum only with type "gue"')
    return TUN_TYPES[tname], tport or 0, TUN_CSUM.get(csum or "none", 0)


def _server_layer(ctx: _Ctx, tbl: dict, path: str) -> dict[str, Any]:
    """The inheritable server keys set in ``tbl``, validated."""
    out: dict[str, Any] = {}
    if "forward" in tbl:
        f = ctx.choice(tbl, "forward", path, tuple(FORWARDS))
        if f is not None:
            out["forward"] = f
    if "weight" in tbl:
        w = ctx.int(tbl, "weight", path, 0, INT32_MAX)
        if w is not None:
            out["weight"] = w
    if "thresholds" in tbl:
        t = ctx.table(tbl, "thresholds", path)
        if t is not None:
            p = _p(path, "thresholds")
            ctx.keys(t, p, THRESHOLD_KEYS)
            up = ctx.int(t, "upper", p, 0, UINT32_MAX, 0)
            lo = ctx.int(t, "lower", p, 0, UINT32_MAX, 0)
            if lo > up:
                ctx.err(_p(p, "lower"), f"must not exceed upper ({up}; the kernel refuses it), got {lo}")
            out["thresholds"] = (up, lo)
    if "tunnel" in tbl:
        t = _tunnel(ctx, tbl, path)
        if t is not None:
            out["tunnel"] = t
    if "check" in tbl:
        c = _parse_checks(ctx, tbl, path)
        if c is not None:
            out["check"] = c
    if "on_failure" in tbl:
        o = ctx.choice(tbl, "on_failure", path, ON_FAILURE)
        if o is not None:
            out["on_failure"] = o
    for hook in ("notify_up", "notify_down"):
        if hook in tbl:
            a = ctx.argv(tbl, hook, path)
            if a is not None:
                out[hook] = a
    return out


def _service_layer(ctx: _Ctx, tbl: dict, path: str) -> dict[str, Any]:
    """The inheritable service keys set in ``tbl`` (service or [defaults]), validated."""
    out: dict[str, Any] = {}
    if "protocol" in tbl:
        v = ctx.choice(tbl, "protocol", path, ("tcp", "udp", "sctp"))
        if v is not None:
            out["protocol"] = v
    if "family" in tbl:
        v = ctx.choice(tbl, "family", path, tuple(FAMILIES))
        if v is not None:
            out["family"] = v
    if "scheduler" in tbl:
        v = ctx.str(tbl, "scheduler", path)
        if v is not None:
            if v not in SCHEDULERS:
                if not re.fullmatch(r"[a-z][a-z0-9_]*", v) or len(v) >= IP_VS_SCHEDNAME_MAXLEN:
                    close = difflib.get_close_matches(v, SCHEDULERS, n=1, cutoff=0.6)
                    hint = f' (did you mean "{close[0]}"?)' if close else ""
                    ctx.err(
                        _p(path, "scheduler"),
                        f"must be a scheduler name such as {', '.join(SCHEDULERS)}, got {_show(v)}{hint}",
                    )
                    v = None
                else:
                    close = difflib.get_close_matches(v, SCHEDULERS, n=1, cutoff=0.75)
                    if close:  # an unknown module name one typo away from a known one
                        ctx.err(
                            _p(path, "scheduler"),
                            f'unknown scheduler {_show(v)} (did you mean "{close[0]}"?)',
                        )
                        v = None
            if v is not None:
                out["scheduler"] = v
    if "persistence" in tbl:
        v = tbl["persistence"]
        p = _p(path, "persistence")
        if v is False:
            out["persistence"] = None
        elif v is True:
            out["persistence"] = (DEFAULT_PERSISTENT_TIMEOUT, None, "")
        elif not isinstance(v, dict):
            ctx.err(p, f"must be a table {{ timeout, netmask, engine }}, true or false, got {_tname(v)}")
        else:
            ctx.keys(v, p, PERSISTENCE_KEYS)
            timeout = ctx.duration(
                v, "timeout", p, DEFAULT_PERSISTENT_TIMEOUT, lo=1, whole=True, hi=UINT32_MAX
            )
            netmask = v.get("netmask")  # checked against the family when the service is built
            if netmask is not None and (isinstance(netmask, bool) or not isinstance(netmask, int | str)):
                ctx.err(
                    _p(p, "netmask"), f"must be a dotted IPv4 mask or a prefix length, got {_tname(netmask)}"
                )
                netmask = None
            engine = ctx.choice(v, "engine", p, PERSISTENCE_ENGINES, "")
            out["persistence"] = (timeout, netmask, engine)
    if "sched_flags" in tbl:
        v = tbl["sched_flags"]
        p = _p(path, "sched_flags")
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            ctx.err(p, f"must be a list of flags ({', '.join(SCHED_FLAGS)}), got {_tname(v)}")
        else:
            flags = []
            for i, f in enumerate(v):
                if not isinstance(f, str) or f not in SCHED_FLAGS:
                    close = difflib.get_close_matches(f, SCHED_FLAGS, n=1) if isinstance(f, str) else []
                    hint = f' (did you mean "{close[0]}"?)' if close else ""
                    ctx.err(_p(p, i), f"must be one of {', '.join(SCHED_FLAGS)}, got {_show(f)}{hint}")
                else:
                    flags.append(f)
            out["sched_flags"] = tuple(flags)
    if "one_packet" in tbl:
        v = ctx.bool(tbl, "one_packet", path)
        if v is not None:
            out["one_packet"] = v
    if "quorum" in tbl:
        v = ctx.int(tbl, "quorum", path, 0, INT32_MAX)
        if v is not None:
            out["quorum"] = v
    if "hysteresis" in tbl:
        v = ctx.int(tbl, "hysteresis", path, 0, INT32_MAX)
        if v is not None:
            out["hysteresis"] = v
    for hook in ("quorum_up", "quorum_down"):
        if hook in tbl:
            a = ctx.argv(tbl, hook, path)
            if a is not None:
                out[hook] = a
    return out


BUILTIN_SERVER = {
    "forward": "dr",
    "weight": 1,
    "thresholds": (0, 0),
    "tunnel": None,
    "check": (),
    "on_failure": "remove",
    "notify_up": (),
    "notify_down": (),
}
BUILTIN_SERVICE = {
    "protocol": "tcp",
    "family": "inet",
    "scheduler": "wlc",
    "persistence": None,
    "sched_flags": (),
    "one_packet": False,
    "quorum": 1,
    "hysteresis": 0,
    "quorum_up": (),
    "quorum_down": (),
}


# --- services -----------------------------------------------------------------------------------


class _Builder:
    """Builds services and servers from layers; holds cross-service state (names, keys)."""

    def __init__(self, ctx: _Ctx, defaults_service: dict, defaults_server: dict) -> None:
        self.ctx = ctx
        self.dsvc = {**BUILTIN_SERVICE, **defaults_service}
        self.dsrv = {**BUILTIN_SERVER, **defaults_server}
        self.names: dict[str, str] = {}
        self.keys: dict[ServiceKey, str] = {}
        self._addr_cache: dict[tuple[str, int], tuple[int, str]] = {}

    def address(self, value: object, parent: str, af: int) -> tuple[int, str] | None:
        """``parent``.address: an IP literal, or a hostname resolved now: first address of the
        service's family, else (for tunnels) of the other family. Cached per (text, family)."""
        hit = self._addr_cache.get((value, af)) if isinstance(value, str) else None
        if hit is not None:
            return hit
        ctx = self.ctx
        path = _p(parent, "address")
        if not isinstance(value, str) or not value:
            ctx.err(path, f"must be an IP address or hostname string, got {_tname(value)} {_show(value)}")
            return None
        if _IPV4_RE.fullmatch(value) and 0 < int(value[: value.index(".")]) < 224:
            out = (AF_INET, value)  # a canonical unicast dotted quad: the common case, no ipaddress needed
            self._addr_cache[(value, af)] = out
            return out
        text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            why = _not_unicast(ip)
            if why:
                ctx.err(path, f"{_show(value)} is {why}")
                return None
            out = ((AF_INET6 if ip.version == 6 else AF_INET), str(ip))
            self._addr_cache[(value, af)] = out
            return out
        if not _HOST_RE.fullmatch(value) or value.replace(".", "").isdigit():
            ctx.err(path, f"not an IP address or hostname: {_show(value)}")
            return None
        resolver = ctx.resolver or system_resolver
        addrs = list(resolver(value, af)) or list(resolver(value, None))
        if not addrs:
            ctx.err(path, f"hostname {_show(value)} does not resolve")
            return None
        a = ipaddress.ip_address(addrs[0])
        out = ((AF_INET6 if a.version == 6 else AF_INET), str(a))
        self._addr_cache[(value, af)] = out
        return out

    def service(self, tbl: object, index: int) -> ServiceConfig | None:
        ctx = self.ctx
        if not isinstance(tbl, dict):
            ctx.err(f"service[{index}]", f"must be a table ([[service]]), got {_tname(tbl)}")
            return None
        name = tbl.get("name")
        named = isinstance(name, str) and bool(_NAME_RE.fullmatch(name))
        path = f"service[{name}]" if named else f"service[{index}]"
        if name is not None and not named:
            if not isinstance(name, str):
                ctx.err(_p(path, "name"), f"must be a string, got {_tname(name)} {_show(name)}")
            else:
                ctx.err(
                    _p(path, "name"),
                    f"must be 1..64 characters: letters, digits and _ . : @ / + - (starting with a letter or digit), got {_show(name)}",
                )
        ctx.keys(
            tbl,
            path,
            SERVICE_KEYS,
            {
                "address": "a server key: put it in [[service.server]]",
                "port": "a server key; the service's port goes in vip",
            },
        )
        svc_layer = _service_layer(ctx, tbl, path)
        srv_layer = _server_layer(ctx, tbl, path)
        s = {**self.dsvc, **svc_layer}
        sl = {**self.dsrv, **srv_layer}

        # the key: vip or fwmark
        key: ServiceKey | None = None
        vip_text = ""
        has_vip, has_mark = "vip" in tbl, "fwmark" in tbl
        if has_vip and has_mark:
            ctx.err(_p(path, "fwmark"), "use vip or fwmark, not both")
        elif not has_vip and not has_mark:
            ctx.err(path, 'missing vip ("address:port") or fwmark')
        elif has_vip:
            vip_text = tbl["vip"]
            if "family" in svc_layer:
                ctx.err(_p(path, "family"), "only with fwmark (a vip's family is its address's)")
            key = self._vip(vip_text, _p(path, "vip"), s["protocol"])
        else:
            mark = ctx.int(tbl, "fwmark", path, 1, UINT32_MAX)
            if "protocol" in svc_layer:
                ctx.err(_p(path, "protocol"), "a fwmark service matches by mark: it has no protocol")
            if mark is not None:
                key = ServiceKey.fwmark_key(mark, FAMILIES[s["family"]])
                vip_text = f"fwmark {mark}"
        af = key.af if key else AF_INET

        if not named:
            name = (
                f"fwmark/{key.fwmark}" + ("/inet6" if key.af == AF_INET6 else "")
                if key and key.fwmark
                else (
                    f"{Protocol(key.protocol).name.lower()}/{key.addr if key.af == AF_INET else '[' + key.addr + ']'}:{key.port}"
                    if key
                    else f"#{index}"
                )
            )
        if named or key is not None:
            other = self.names.get(name)
            if other is not None:
                ctx.err(
                    _p(path, "name") if named else path,
                    f"duplicate service name {_show(name)} (also service[{other}])",
                )
            else:
                self.names[name] = str(index)
        if key is not None:
            other = self.keys.get(key)
            if other is not None:
                ctx.err(
                    _p(path, "fwmark" if key.fwmark else "vip"),
                    f"duplicate virtual service {key} (also {other})",
                )
            else:
                self.keys[key] = path

        # kernel service
        proto_bad = "protocol" in tbl and "protocol" not in svc_layer
        flags = 0
        timeout = 0
        netmask = -1
        pe = ""
        pers = s["persistence"]
        if pers is not None:
            flags |= SVC_F_PERSISTENT
            timeout, nm, pe = pers
            # an inherited value is judged per service: the error names the service and the origin
            ppath = _p(path, "persistence")
            origin = "" if "persistence" in svc_layer else " (from [defaults])"
            if nm is not None:
                netmask = self._netmask(nm, _p(ppath, "netmask"), af, origin)
            if pe and key is not None and not key.fwmark and key.protocol != Protocol.UDP and not proto_bad:
                ctx.err(
                    _p(ppath, "engine"),
                    f'"{pe}"{origin} works only for UDP services (protocol is {s["protocol"]})',
                )
        elif key is not None and not key.fwmark and key.port == 0:
            ctx.err(_p(path, "vip"), "port 0 (all ports) needs persistence")
        sched = s["scheduler"]
        sched_bad = "scheduler" in tbl and "scheduler" not in svc_layer
        for f in s["sched_flags"]:
            bit, needs = SCHED_FLAGS[f]
            if needs is not None and sched != needs and not sched_bad:
                origin = "" if "sched_flags" in svc_layer else " (from [defaults])"
                ctx.err(
                    _p(path, "sched_flags"),
                    f'"{f}"{origin} needs scheduler = "{needs}" (scheduler is "{sched}")',
                )
            flags |= bit
        if s["one_packet"]:
            if key is not None and not key.fwmark and key.protocol != Protocol.UDP and not proto_bad:
                origin = "" if "one_packet" in svc_layer else " (one_packet from [defaults])"
                ctx.err(
                    _p(path, "one_packet"),
                    f"only for UDP (or fwmark) services (protocol is {s['protocol']}){origin}",
                )
            flags |= SVC_F_ONEPACKET
        fwd_bad = "forward" in tbl and "forward" not in srv_layer
        if "tunnel" in srv_layer and sl["forward"] != "tun" and not fwd_bad:
            ctx.err(_p(path, "tunnel"), f'only with forward = "tun" (forward is "{sl["forward"]}")')

        # servers
        servers: list[ServerConfig] = []
        seen: dict[DestKey, int] = {}
        raw = tbl.get("server", [])
        if not isinstance(raw, list):
            ctx.err(_p(path, "server"), f"must be an array of tables ([[service.server]]), got {_tname(raw)}")
            raw = []
        for i, st in enumerate(raw):
            srv = self.server(st, f"{path}.server[{i}]", name, key, sl, seen, i)
            if srv is not None:
                servers.append(srv)

        # sorry server
        sorry = None
        if "sorry_server" in tbl:
            sorry = self.sorry(tbl, path, key, sl, seen)
        if s["hysteresis"] and not s["quorum"]:
            ctx.err(_p(path, "hysteresis"), "only meaningful with quorum > 0")

        if key is None:
            return None
        svc = Service(key, scheduler=sched, flags=flags, timeout=timeout, netmask=netmask, pe_name=pe)
        return ServiceConfig(
            name=name,
            key=key,
            service=svc,
            servers=tuple(servers),
            vip=vip_text if isinstance(vip_text, str) else "",
            quorum=s["quorum"],
            hysteresis=s["hysteresis"],
            sorry_server=sorry,
            on_failure=sl["on_failure"],
            notify_up=sl["notify_up"],
            notify_down=sl["notify_down"],
            quorum_up=s["quorum_up"],
            quorum_down=s["quorum_down"],
            checks=sl["check"],
        )

    def _vip(self, vip: object, path: str, protocol: str) -> ServiceKey | None:
        ctx = self.ctx
        if not isinstance(vip, str):
            ctx.err(path, f'must be a string "address:port", got {_tname(vip)} {_show(vip)}')
            return None
        hp = _split_hostport(vip)
        if hp is None or hp[1] is None:
            ctx.err(path, f'must be "address:port" (IPv6: "[address]:port"), got {_show(vip)}')
            return None
        a = ctx.ip(hp[0], path)
        port = _parse_port(hp[1])
        if port is None:
            ctx.err(path, f"port must be 0..65535, got {_show(hp[1])}")
        if a is None or port is None:
            return None
        return ServiceKey(a[0], int(Protocol[protocol.upper()]), a[1], port, 0)

    def _netmask(self, nm: int | str, path: str, af: int, origin: str = "") -> int:
        ctx = self.ctx
        if af == AF_INET6:
            if isinstance(nm, int) and 1 <= nm <= 128:
                return nm
            ctx.err(path, f"must be an IPv6 prefix length 1..128, got {_show(nm)}{origin}")
            return -1
        if isinstance(nm, int):
            if 0 <= nm <= 32:
                return (UINT32_MAX << (32 - nm)) & UINT32_MAX
            ctx.err(path, f"must be a dotted IPv4 mask or a prefix length 0..32, got {nm}{origin}")
            return -1
        try:
            return int(ipaddress.IPv4Address(nm))
        except ValueError:
            ctx.err(path, f'must be a dotted IPv4 mask such as "255.255.255.0", got {_show(nm)}{origin}')
            return -1

    def _dest(
        self, dk: DestKey, fwd: str, weight: int, thr: tuple[int, int], tun: tuple[int, int, int] | None
    ) -> Destination:
        if fwd != "tun" or tun is None:
            tun = (TunType.IPIP, 0, TUN_F_NOCSUM)
        return Destination(dk, _FWD_INT[fwd], weight, thr[0], thr[1], int(tun[0]), tun[1], tun[2])

    def server(
        self,
        st: object,
        path: str,
        svc_name: str,
        skey: ServiceKey | None,
        inherited: dict,
        seen: dict[DestKey, int],
        index: int,
    ) -> ServerConfig | None:
        ctx = self.ctx
        if not isinstance(st, dict):
            ctx.err(path, f"must be a table ([[service.server]]), got {_tname(st)}")
            return None
        if not _SERVER_KEYSET.issuperset(st):
            ctx.keys(st, path, SERVER_KEYS, _SERVICE_KEYS_ELSEWHERE)
        layer = _server_layer(ctx, st, path)
        m = {**inherited, **layer} if layer else inherited
        enabled = st.get("enabled", True)
        if enabled is not True:
            enabled = ctx.bool(st, "enabled", path, True)
        if "address" not in st:
            ctx.err(_p(path, "address"), "missing")
            addr = None
        else:
            addr = self.address(st["address"], path, skey.af if skey else AF_INET)
        vport = skey.port if skey else 0
        port = ctx.int(st, "port", path, 0, 65535, vport) if "port" in st else vport
        fwd = m["forward"]
        # a bad forward is already reported: judge nothing else by a method we do not know
        fwd_ok = not ("forward" in st and "forward" not in layer)
        if fwd_ok and skey is not None and not skey.fwmark and fwd in ("dr", "tun") and port != vport:
            ctx.err(
                _p(path, "port"), f'must equal the VIP\'s port ({vport}) with forward = "{fwd}", got {port}'
            )
        if fwd_ok and "tunnel" in layer and fwd != "tun":
            ctx.err(_p(path, "tunnel"), f'only with forward = "tun" (forward is "{fwd}")')
        if addr is None or skey is None:
            return None
        af, text = addr
        if fwd_ok and af != skey.af and fwd != "tun":
            ctx.err(
                _p(path, "address"),
                f"an {'IPv6' if af == AF_INET6 else 'IPv4'} server behind an {'IPv6' if skey.af == AF_INET6 else 'IPv4'} "
                f'service needs forward = "tun" (forward is "{fwd}")',
            )
        dk = DestKey(af, text, port)
        if dk in seen:
            ctx.err(path, f"duplicate server {dk} (also server[{seen[dk]}])")
            return None
        seen[dk] = index
        checks = m["check"]
        if port == 0 and checks:
            for j, c in enumerate(checks):
                if getattr(c, "connect_port", 0) is None:
                    if "check" in layer:
                        cp = _p(path, "check")
                        cp = _p(cp, j) if isinstance(st["check"], list) else cp
                        what = f"{c.type} check"
                    else:
                        cp, what = path, f"inherited {c.type} check"
                    ctx.err(cp, f'{what} of a server with port 0 needs connect = "address:port" or ":port"')
        if not enabled or not fwd_ok:
            return None
        tun = m["tunnel"]
        dest = self._dest(dk, fwd, m["weight"], m["thresholds"], tun)
        return ServerConfig(
            service=svc_name,
            key=dk,
            dest=dest,
            address=st["address"],
            checks=checks,
            on_failure=m["on_failure"],
            notify_up=m["notify_up"],
            notify_down=m["notify_down"],
        )

    def sorry(
        self, tbl: dict, path: str, skey: ServiceKey | None, inherited: dict, seen: dict
    ) -> Destination | None:
        ctx = self.ctx
        p = _p(path, "sorry_server")
        t = ctx.table(tbl, "sorry_server", path)
        if t is None:
            return None
        ctx.keys(t, p, SORRY_KEYS)
        if "address" not in t:
            ctx.err(_p(p, "address"), "missing")
            return None
        addr = self.address(t["address"], p, skey.af if skey else AF_INET)
        vport = skey.port if skey else 0
        port = ctx.int(t, "port", p, 0, 65535, vport)
        fwd = ctx.choice(t, "forward", p, tuple(FORWARDS), inherited["forward"])
        weight = ctx.int(t, "weight", p, 1, INT32_MAX, 1)
        tun = _tunnel(ctx, t, p) if "tunnel" in t else None
        if tun is not None and fwd != "tun":
            ctx.err(_p(p, "tunnel"), f'only with forward = "tun" (forward is "{fwd}")')
        if addr is None or skey is None:
            return None
        if not skey.fwmark and fwd in ("dr", "tun") and port != vport:
            ctx.err(_p(p, "port"), f'must equal the VIP\'s port ({vport}) with forward = "{fwd}", got {port}')
        if addr[0] != skey.af and fwd != "tun":
            ctx.err(_p(p, "address"), 'address family differs from the service\'s: needs forward = "tun"')
        dk = DestKey(addr[0], addr[1], port)
        if dk in seen:
            ctx.err(p, f"the sorry server {dk} is also server[{seen[dk]}]")
        if tun is None and fwd == "tun":
            tun = (TunType.IPIP, 0, TUN_F_NOCSUM)
        return self._dest(dk, fwd, weight, (0, 0), tun)


# --- sections -------------------------------------------------------------------------------------


def _daemon(ctx: _Ctx, t: dict) -> DaemonConfig:
    ctx.keys(t, "daemon", DAEMON_KEYS)
    return DaemonConfig(
        on_start=ctx.choice(t, "on_start", "daemon", ON_START, "adopt"),
        on_stop=ctx.choice(t, "on_stop", "daemon", ON_STOP, "keep"),
        resync=ctx.duration(t, "resync", "daemon", 30.0, hi=86400),
        log_level=ctx.choice(t, "log_level", "daemon", LOG_LEVELS, "info"),
        hook_timeout=ctx.duration(t, "hook_timeout", "daemon", 10.0, lo=0.01, hi=3600),
        state_file=_state_file(ctx, t),
    )


def _state_file(ctx: _Ctx, t: dict) -> str:
    path = ctx.str(t, "state_file", "daemon", "")
    if path and (not path.startswith("/") or path.endswith("/") or "\0" in path):
        ctx.err("daemon.state_file", f'must be an absolute file path, or "" for none, got {_show(path)}')
        return ""
    return path


def _ipvs(ctx: _Ctx, t: dict) -> IPVSConfig:
    ctx.keys(t, "ipvs", IPVS_KEYS)
    tt = ctx.table(t, "timeouts", "ipvs")
    if tt is None:
        return IPVSConfig()
    p = "ipvs.timeouts"
    ctx.keys(tt, p, TIMEOUT_KEYS)
    vals = [ctx.duration(tt, k, p, 0, whole=True, hi=INT32_MAX) for k in TIMEOUT_KEYS]
    if not tt:
        return IPVSConfig()
    return IPVSConfig(Timeouts(*vals))


def _ha(ctx: _Ctx, t: dict) -> HAConfig:
    p = "ha"
    ctx.keys(t, p, HA_KEYS)
    mode = ctx.choice(t, "mode", p, HA_MODES, "static")
    role_default = {"static": "master", "external": "backup", "vrrp": "backup"}[mode]
    role = role_default
    if "role" in t:
        if mode == "vrrp":
            ctx.err(_p(p, "role"), 'not with mode = "vrrp" (VRRP elects the role)')
        else:
            choices = ("master", "backup") if mode == "static" else ("master", "backup", "fault")
            role = ctx.choice(t, "role", p, choices, role_default)
    version = ctx.int(t, "version", p, 2, 3, 3)
    if mode != "vrrp":
        for k in VRRP_KEYS:
            if k in t:
                ctx.err(_p(p, k), f'only with mode = "vrrp" (mode is "{mode}")')
    interface = ctx.str(t, "interface", p, "")
    if interface and len(interface.encode()) >= IP_VS_IFNAME_MAXLEN:
        ctx.err(
            _p(p, "interface"), f"must be at most {IP_VS_IFNAME_MAXLEN - 1} bytes, got {_show(interface)}"
        )
    vrid = ctx.int(t, "vrid", p, 1, 255, 0)
    priority = ctx.int(t, "priority", p, 1, 254, 100)
    adv = ctx.duration(t, "advert_interval", p, 1.0, lo=0.01, hi=40.95)
    if version == 2 and adv != int(adv):
        ctx.err(_p(p, "advert_interval"), "VRRPv2 counts whole seconds (use version = 3 for less)")
    elif abs(adv * 100 - round(adv * 100)) > 1e-6:
        ctx.err(_p(p, "advert_interval"), "VRRPv3 counts centiseconds: must be a multiple of 10ms")
    vips: list[VipConfig] = []
    raw = t.get("vips", [])
    if not isinstance(raw, list):
        ctx.err(_p(p, "vips"), f'must be a list of "address/prefix" strings, got {_tname(raw)}')
        raw = []
    for i, v in enumerate(raw):
        vp = _p(_p(p, "vips"), i)
        if not isinstance(v, str):
            ctx.err(vp, f'must be "address" or "address/prefix", got {_tname(v)}')
            continue
        try:
            iface = ipaddress.ip_interface(v)
        except ValueError:
            ctx.err(vp, f'must be "address" or "address/prefix", got {_show(v)}')
            continue
        why = _not_unicast(iface.ip)
        if why:
            ctx.err(vp, f"{_show(v)} is {why}")
            continue
        vip = VipConfig(AF_INET6 if iface.version == 6 else AF_INET, str(iface.ip), iface.network.prefixlen)
        if any(x.address == vip.address for x in vips):
            ctx.err(vp, f"duplicate address {vip.address}")
            continue
        vips.append(vip)
    if vips and len({v.af for v in vips}) > 1:
        ctx.err(_p(p, "vips"), "mixes IPv4 and IPv6: a VRRP instance is one family")
    if vips and version == 2 and vips[0].af == AF_INET6:
        ctx.err(_p(p, "version"), "VRRPv2 is IPv4 only")
    if mode == "vrrp":
        for k in ("interface", "vrid"):
            if k not in t:
                ctx.err(_p(p, k), 'missing (required with mode = "vrrp")')
        if "vips" not in t:
            ctx.err(_p(p, "vips"), 'missing (required with mode = "vrrp")')
        elif not raw:
            ctx.err(_p(p, "vips"), 'must list at least one address with mode = "vrrp"')
    if len(vips) > 255:
        ctx.err(_p(p, "vips"), f"at most 255 addresses fit in a VRRP advertisement, got {len(vips)}")
    return HAConfig(
        mode=mode,
        role=role,
        interface=interface,
        vrid=vrid,
        priority=priority,
        advert_interval=adv,
        vips=tuple(vips),
        preempt=ctx.bool(t, "preempt", p, True),
        preempt_delay=ctx.duration(t, "preempt_delay", p, 0.0, hi=3600),
        version=version,
        notify_master=ctx.argv(t, "notify_master", p, ()),
        notify_backup=ctx.argv(t, "notify_backup", p, ()),
        notify_fault=ctx.argv(t, "notify_fault", p, ()),
    )


def _sync(ctx: _Ctx, t: dict) -> SyncConfig | None:
    p = "sync"
    ctx.keys(t, p, SYNC_KEYS)
    interface = ctx.str(t, "interface", p)
    if interface is None and "interface" not in t:
        ctx.err(_p(p, "interface"), "missing: the interface the sync daemon sends and listens on")
    if interface and len(interface.encode()) >= IP_VS_IFNAME_MAXLEN:
        ctx.err(
            _p(p, "interface"), f"must be at most {IP_VS_IFNAME_MAXLEN - 1} bytes, got {_show(interface)}"
        )
    group = ""
    if "group" in t:
        a = ctx.ip(t["group"], _p(p, "group"), unicast=False)
        if a is not None:
            if not ipaddress.ip_address(a[1]).is_multicast:
                ctx.err(_p(p, "group"), f"must be a multicast address, got {_show(t['group'])}")
            group = a[1]
    thr = t.get("sync_threshold", [3, 0])
    if (
        not isinstance(thr, list)
        or len(thr) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= INT32_MAX for x in thr)
    ):
        ctx.err(
            _p(p, "sync_threshold"),
            f"must be [threshold, period] (two non-negative integers), got {_show(thr)}",
        )
        thr = [3, 0]
    elif thr[1] and thr[0] >= thr[1]:
        ctx.err(
            _p(p, "sync_threshold"),
            f"threshold must be below period unless period is 0 (the kernel refuses it), got {thr}",
        )
        thr = [3, 0]
    return SyncConfig(
        interface=interface or "",
        syncid=ctx.int(t, "syncid", p, 0, 255, 0),
        maxlen=ctx.int(t, "maxlen", p, 0, 65535, 0),
        group=group,
        port=ctx.int(t, "port", p, 0, 65535, 0),
        ttl=ctx.int(t, "ttl", p, 0, 255, 0),
        backup_always=ctx.bool(t, "backup_always", p, False),
        on_fault=ctx.choice(t, "on_fault", p, SYNC_ON_FAULT, "backup"),
        manage_sysctls=ctx.bool(t, "manage_sysctls", p, True),
        sync_threshold=(thr[0], thr[1]),
        sync_refresh_period=ctx.duration(t, "sync_refresh_period", p, 10, whole=True, hi=INT32_MAX // 1000),
        sync_retries=ctx.int(t, "sync_retries", p, 0, 3, 0),
        sync_persist_mode=ctx.int(t, "sync_persist_mode", p, 0, 1, 0),
        sync_version=ctx.int(t, "sync_version", p, 0, 1, 1),
        sync_ports=ctx.int(t, "sync_ports", p, 1, 1024, None),
        sync_qlen_max=ctx.int(t, "sync_qlen_max", p, 1, INT32_MAX, None),
        sync_sock_size=ctx.int(t, "sync_sock_size", p, 0, INT32_MAX, None),
    )


def _api(ctx: _Ctx, t: dict) -> APIConfig:
    ctx.keys(t, "api", API_KEYS)
    sock = ctx.str(t, "socket", "api", "/run/lvsd/lvsd.sock")
    if not sock.startswith("/") or len(sock.encode()) > 107:
        ctx.err("api.socket", f"must be an absolute path of at most 107 bytes, got {_show(sock)}")
    mode = t.get("mode", "0660")
    if isinstance(mode, str) and re.fullmatch(r"0?[0-7]{3}", mode):
        mode = int(mode, 8)
    else:
        ctx.err("api.mode", f'must be an octal permission string such as "0660", got {_show(mode)}')
        mode = 0o660
    return APIConfig(sock, mode)


def _metrics(ctx: _Ctx, t: dict) -> MetricsConfig:
    ctx.keys(t, "metrics", METRICS_KEYS)
    listen = ctx.str(t, "listen", "metrics")
    if listen is None:
        return MetricsConfig()
    hp = _split_hostport(listen)
    port = _parse_port(hp[1]) if hp and hp[1] is not None else None
    if hp is None or port is None or port == 0:
        ctx.err("metrics.listen", f'must be "address:port" (IPv6: "[address]:port"), got {_show(listen)}')
        return MetricsConfig()
    host = hp[0]
    if host:
        a = ctx.ip(host, "metrics.listen", unicast=False)  # "0.0.0.0" / "::" = every address
        if a is None:
            return MetricsConfig()
        host = a[1]
    else:
        host = "0.0.0.0"
    return MetricsConfig(listen, host, port)


def _toml_error(e: Exception, source: str) -> str:
    msg = str(e)
    m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
    if m:
        msg = msg[: m.start()].strip()
        return f"{source}:{m.group(1)}:{m.group(2)}: TOML syntax error: {msg}"
    return f"{source}: TOML syntax error: {msg}"


# --- entry points ---------------------------------------------------------------------------------


def build_config(
    data: dict, source: str = "<string>", resolver: Resolver | None = None, check_files: bool = True
) -> Config:
    """Validate a parsed TOML document and build the Config; ConfigError lists every problem."""
    ctx = _Ctx(resolver, check_files)
    ctx.keys(data, "", TOP_KEYS)

    def section(name: str) -> dict:
        v = data.get(name)
        if v is None:
            return {}
        if not isinstance(v, dict):
            ctx.err(name, f"must be a table [{name}], got {_tname(v)}")
            return {}
        return v

    daemon = _daemon(ctx, section("daemon"))
    ipvs = _ipvs(ctx, section("ipvs"))
    dt = section("defaults")
    ctx.keys(
        dt,
        "defaults",
        DEFAULTS_KEYS,
        {k: "set it per service" for k in SERVICE_ONLY} | {k: "set it per server" for k in SERVER_ONLY},
    )
    d_svc = _service_layer(ctx, dt, "defaults")
    d_srv = _server_layer(ctx, dt, "defaults")
    if "tunnel" in d_srv and d_srv.get("forward", "dr") != "tun":
        ctx.err("defaults.tunnel", f'only with forward = "tun" (forward is "{d_srv.get("forward", "dr")}")')
    builder = _Builder(ctx, d_svc, d_srv)
    services: list[ServiceConfig] = []
    raw = data.get("service", [])
    if not isinstance(raw, list):
        ctx.err("service", f"must be an array of tables ([[service]]), got {_tname(raw)}")
        raw = []
    for i, st in enumerate(raw):
        s = builder.service(st, i)
        if s is not None:
            services.append(s)
    ha = _ha(ctx, section("ha"))
    sync = _sync(ctx, section("sync")) if "sync" in data else None
    api = _api(ctx, section("api"))
    metrics = _metrics(ctx, section("metrics"))
    if ctx.errors:
        raise ConfigError(list(dict.fromkeys(ctx.errors)))  # the same line once, in file order
    m = builder.dsrv
    sv = builder.dsvc
    defaults = DefaultsConfig(
        protocol=sv["protocol"],
        scheduler=sv["scheduler"],
        forward=m["forward"],
        weight=m["weight"],
        on_failure=m["on_failure"],
        quorum=sv["quorum"],
        hysteresis=sv["hysteresis"],
        checks=m["check"],
    )
    return Config(daemon, ipvs, defaults, tuple(services), ha, sync, api, metrics, source)


def parse_config(
    text: str, source: str = "<string>", resolver: Resolver | None = None, check_files: bool = True
) -> Config:
    """Parse and validate TOML text. ``resolver`` resolves server hostnames (default getaddrinfo);
    ``check_files`` verifies that scripts, certificates, users and groups exist.

    The TOML parse of the last text is remembered: a reload of an unchanged file only re-validates
    (hostnames, files and users are looked up again), which is most of a no-op reload's cost saved."""
    global _last_parse
    last = _last_parse
    if last is not None and last[0] == text:
        data = last[1]
    else:
        try:
            data = _toml.loads(text)
        except _toml.TOMLDecodeError as e:
            raise ConfigError([_toml_error(e, source)]) from None
        _last_parse = (text, data)
    return build_config(data, source, resolver, check_files)


#: (text, parsed document) of the last parse_config; build_config never mutates a document.
_last_parse: tuple[str, dict] | None = None


def clear_parse_cache() -> None:
    """Forget the remembered parse (benchmarks of a cold parse call this before each run)."""
    global _last_parse
    _last_parse = None


def load_config(
    path: str = DEFAULT_PATH, resolver: Resolver | None = None, check_files: bool = True
) -> Config:
    """Read, parse and validate the file at ``path``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    try:
        text = raw.decode("utf-8-sig")  # a BOM left by some editors is not a syntax error
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 (byte {e.start})"]) from None
    return parse_config(text, path, resolver, check_files)
