"""The error collector every config module reads through: typed getters that record a one-line
``path: what is wrong`` and return the default, so one pass reports every error.

Paths name TOML keys joined by dots (``service[web].server[2].weight``); ``_p`` builds them,
``_show`` and ``_tname`` render a value and its TOML type inside a message.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from lvsd.ipvs.model import AF_INET, AF_INET6

from .durations import parse_duration, show_number

if TYPE_CHECKING:
    from .checks import CheckConfig

INT32_MAX = 0x7FFFFFFF
UINT32_MAX = 0xFFFFFFFF
#: the highest CONFIG_HZ Debian and Ubuntu ship (Debian: 250; Ubuntu's generic kernel since 24.04
#: and its lowlatency one: 1000). The kernel keeps some timeouts in jiffies (seconds * HZ): a
#: bound divided by this holds on every such kernel.
MAX_HZ = 1000
#: persistence timeout: u32 jiffies (ip_vs_service.timeout); above this it wraps at HZ=1000
PERSISTENCE_MAX = UINT32_MAX // MAX_HZ
#: ipvs timeouts and net.ipv4.vs.sync_refresh_period: int jiffies; ip_vs_set_timeout refuses
#: more than INT_MAX / HZ, proc_dointvec_jiffies too
JIFFIES_INT_MAX = INT32_MAX // MAX_HZ

#: resolver(hostname, family or None) -> addresses (canonical text), in preference order
Resolver = Callable[[str, "int | None"], Sequence[str]]

#: a TOML table as tomli returns it
Table = dict[str, Any]

class ConfigError(Exception):
    """The configuration is invalid. ``errors`` holds one ``path: what is wrong`` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)



_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_KEY_SHOWN: dict[str, str] = {}
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")



def _p(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    shown = _KEY_SHOWN.get(key)
    if shown is None:  # quoted TOML keys are shown quoted and escaped, so an error stays one line
        shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
        if len(_KEY_SHOWN) < 4096:
            _KEY_SHOWN[key] = shown
    return f"{path}.{shown}" if path else shown


#: one int object per value read (ports, weights): the parse makes one per occurrence, and the
#: config keeps them (1.6 MB of port 8080s at 50,000 servers); bounded like _KEY_SHOWN
_INTS: dict[int, int] = {}


def _shared_int(v: int) -> int:
    """``v``, as the one object kept for its value (``v`` itself once the table is full)."""
    if type(v) is not int:
        return v
    got = _INTS.get(v)
    if got is not None:
        return got
    if len(_INTS) < 4096:
        _INTS[v] = v
    return v


#: TOML's names for the Python types a parse yields, bool before int (a bool is an int to Python)
_TOML_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (dict, "table"),
    (list, "array"),
)


def _tname(v: object) -> str:
    """The TOML name of ``v``'s type, for messages."""
    for t, name in _TOML_TYPES:
        if isinstance(v, t):
            return name
    return type(v).__name__  # dates and times


def _show(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return show_number(v)  # a 5000-digit integer has no repr()
    if isinstance(v, str):
        if len(v) > _SHOW_CHARS:
            return f"{json.dumps(v[:_SHOW_CHARS], ensure_ascii=False)}... ({len(v)} characters)"
        return json.dumps(v, ensure_ascii=False)  # quoted, control characters escaped: one line
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    return repr(v)


def _secs(x: float) -> str:
    """A bound in seconds as a message shows it: whole numbers exactly (2147483, not 2.14748e+06)."""
    return str(int(x)) if x == int(x) else f"{x:g}"


#: a string longer than this is shown cut, with its length (a message stays a readable line)
_SHOW_CHARS = 200

#: what ``Reader.typed`` returns for a key that is absent or of the wrong type
ABSENT: Any = object()


def _is_dict(v: object) -> bool:
    """A table."""
    return isinstance(v, dict)


def _is_int(v: object) -> bool:
    """An integer, not a bool (TOML true is no number)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_bool(v: object) -> bool:
    """true or false."""
    return isinstance(v, bool)


def _is_str(v: object) -> bool:
    """A string."""
    return isinstance(v, str)


def _quote_list(items: Sequence[str]) -> str:
    q = [f'"{i}"' for i in items]
    return q[0] if len(q) == 1 else ", ".join(q[:-1]) + " or " + q[-1]




class Reader:
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
        """Record one error line."""
        self.errors.append(f"{path}: {msg}")

    # tables ------------------------------------------------------------------------------------
    def keys(
        self, tbl: Table, path: str, allowed: Sequence[str], elsewhere: dict[str, str] | None = None
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

    def typed(self, tbl: Table, key: str, path: str, ok: Callable[[Any], bool], want: str, show: bool = True) -> Any:
        """``tbl[key]`` when ``ok(value)``; else ABSENT, after the error "must be <want>, got <type>
        <value>" when present (the value left out if not ``show``). The first step of every getter."""
        v = tbl.get(key)
        if v is None:
            return ABSENT
        if not ok(v):
            got = f"{_tname(v)} {_show(v)}" if show else _tname(v)
            self.err(_p(path, key), f"must be {want}, got {got}")
            return ABSENT
        return v

    def table(self, tbl: Table, key: str, path: str) -> Table | None:
        """The sub-table ``tbl[key]``, None if absent or not a table (an error then)."""
        v = self.typed(tbl, key, path, _is_dict, "a table", show=False)
        return None if v is ABSENT else v

    # scalars -----------------------------------------------------------------------------------
    def get_int(self, tbl: Table, key: str, path: str, lo: int, hi: int, default: Any = None) -> Any:
        v = self.typed(tbl, key, path, _is_int, "an integer")
        if v is ABSENT:
            return default
        if not lo <= v <= hi:
            self.err(_p(path, key), f"must be {lo}..{hi}, got {show_number(v)}")
            return default
        return _shared_int(v)

    def get_bool(self, tbl: Table, key: str, path: str, default: Any = None) -> Any:
        v = self.typed(tbl, key, path, _is_bool, "true or false")
        return default if v is ABSENT else v

    def get_str(
        self, tbl: Table, key: str, path: str, default: Any = None, nonempty: bool = True, nul_ok: bool = False
    ) -> Any:
        """A string; ``nul_ok``: it may hold NUL (bytes sent on the wire), else a NUL is an error."""
        v = self.typed(tbl, key, path, _is_str, "a string")
        if v is ABSENT:
            return default
        if nonempty and not v:
            self.err(_p(path, key), "must not be empty")
            return default
        if not nul_ok and "\0" in v:  # a NUL reaches the OS as a ValueError (user, path, name)
            self.err(_p(path, key), "must not contain NUL")
            return default
        return v

    def choice(self, tbl: Table, key: str, path: str, choices: Sequence[str], default: Any = None) -> Any:
        v = self.typed(tbl, key, path, _is_str, _quote_list(choices))
        if v is ABSENT:
            return default
        if v not in choices:
            close = difflib.get_close_matches(v, choices, n=1, cutoff=0.6)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            self.err(_p(path, key), f"must be {_quote_list(choices)}, got {_show(v)}{hint}")
            return default
        return v

    def duration(
        self,
        tbl: Table,
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
        if whole and math.isfinite(d) and d != math.floor(d):
            self.err(_p(path, key), f"must be a whole number of seconds, got {_show(v)}")
            return default
        if d < lo or d > hi:
            what = f"at least {_secs(lo)}s" if d < lo else f"at most {_secs(hi)}s"
            self.err(_p(path, key), f"must be {what}, got {_show(v)}")
            return default
        return int(d) if whole else d

    def argv(self, tbl: Table, key: str, path: str, default: Any = None) -> Any:
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

    def file(self, tbl: Table, key: str, path: str) -> Any:
        v = self.get_str(tbl, key, path)
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
    if ip.version == 6 and ip.scope_id:
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
    if not (text.isascii() and text.isdigit()) or len(text) > 5:  # "²" and 5000 digits are no port
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
        addr = str(ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        if addr not in out:
            out.append(addr)
    return out

