"""Health-check config: the base check types, their common key rows, and check-table parsing.

A check type is one module under ``lvsd/checks/`` holding its frozen config class (a subclass of
``CheckConfig`` or ``NetCheckConfig`` with its key rows, defaults and validation) and its Checker;
``lvsd.checks.registry`` names the module of each type. The loader imports a type's module only
when a config uses that type, so ``lvsd --check-config`` pays only for the types it meets.

Check values are frozen and hashable: identical checks against the same target are one probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from lvsd.checks.registry import CHECK_TYPES, check_class

from .keys import INT, Duration, Key, names, read_rows, row
from .reader import Reader, Table, _p, _parse_port, _quote_list, _show, _split_hostport, _tname

if TYPE_CHECKING:
    import asyncio

    from lvsd.checks.base import Checker, Done
    from lvsd.ipvs.model import DestKey


def _retry_delay(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """Defaults to the interval just read."""
    return r.duration(tbl, key, path, vals["interval"], lo=0.01, hi=86400)


def _type(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """Read by ``parse_check`` before the rows (it picks the rows): nothing to do here."""
    return None


#: keys every check has
COMMON_KEYS = (
    Key("type", _type, None, doc="the check type: " + ", ".join(CHECK_TYPES)),
    Key("interval", Duration(0.01, 86400), 2.0, doc="time between probes while passing"),
    Key("timeout", Duration(0.001, 86400), 1.0, doc="a probe not done by then fails"),
    Key("rise", INT(1, 1000), 2, doc="consecutive passes that make a server up"),
    Key("fall", INT(1, 1000), 3, doc="consecutive failures that make a server down"),
    Key("retry_delay", _retry_delay, None, doc="time between probes while failing (default: interval)"),
)
_C = COMMON_KEYS


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """Keys common to every check. Subclasses add their type's keys; ``type`` tells them apart.

    ``retry_delay`` is the interval while a check is failing (the loader defaults it to
    ``interval``; a negative value, the constructor's default, means the same)."""

    type: str = ""
    interval: float = row(_C, "interval").default
    timeout: float = row(_C, "timeout").default
    rise: int = row(_C, "rise").default
    fall: int = row(_C, "fall").default
    retry_delay: float = -1.0

    #: the type's own key rows, after the base class's (see ``rows``)
    KEYS: ClassVar[tuple[Key, ...]] = ()

    def __post_init__(self) -> None:
        if self.retry_delay < 0:
            object.__setattr__(self, "retry_delay", self.interval)

    @classmethod
    def rows(cls, ctype: str) -> tuple[Key, ...]:
        """Every key a check of ``ctype`` takes, in reading (and error) order."""
        return COMMON_KEYS + cls.KEYS

    @classmethod
    def build(cls, r: Reader, c: Table, path: str, ctype: str, vals: dict[str, Any]) -> CheckConfig:
        """The check from the values its rows read (cross-field rules go in an override)."""
        del vals["type"]
        return cls(type=ctype, **vals)

    def target(self, server: DestKey) -> tuple[str, int]:
        """(address, port) to probe for this server."""
        return self.target_of(server.addr, server.port)

    def target_of(self, addr: str, port: int) -> tuple[str, int]:
        """(address, port) to probe for a server at addr:port."""
        return addr, port

    def checker(self, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done) -> Checker:
        """The Checker that probes addr:port (the server's; net checks apply ``connect``)."""
        raise NotImplementedError


def _connect(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """``"address:port"``, ``"[v6]:port"`` or ``":port"`` -> (address or None, port or None)."""
    v = r.get_str(tbl, key, path)
    if v is None:
        return None, None
    p = _p(path, key)
    hp = _split_hostport(v)
    port_text = hp[1] if hp is not None else None
    if hp is None or port_text is None:
        r.err(p, f'must be "address:port", "[v6 address]:port" or ":port", got {_show(v)}')
        return None, None
    host = hp[0]
    port = _parse_port(port_text)
    if port is None or port == 0:
        r.err(p, f"port must be 1..65535, got {_show(port_text)}")
        return None, None
    if not host:
        return None, port
    a = r.ip(host, p)
    return (a[1] if a else None), port


def _bind(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    if key not in tbl:
        return None
    b = r.ip(tbl[key], _p(path, key))
    return b[1] if b else None


NET_KEYS = (
    Key("connect", _connect, None, doc='probe "address:port" or ":port" instead of the server'),
    Key("bind", _bind, None, doc="source address of the probe"),
)


@dataclass(frozen=True, slots=True)
class NetCheckConfig(CheckConfig):
    """A check that talks to the network. ``connect_address``/``connect_port`` None = the
    server's own; ``bind`` is the source address (None = the kernel picks)."""

    connect_address: str | None = None  # these two are the ``connect`` row (default: unset)
    connect_port: int | None = None
    bind: str | None = NET_KEYS[1].default

    @classmethod
    def rows(cls, ctype: str) -> tuple[Key, ...]:
        return COMMON_KEYS + NET_KEYS + cls.KEYS

    @classmethod
    def build(cls, r: Reader, c: Table, path: str, ctype: str, vals: dict[str, Any]) -> CheckConfig:
        vals["connect_address"], vals["connect_port"] = vals.pop("connect")
        del vals["type"]
        return cls(type=ctype, **vals)  # (no super(): slots=True dataclasses are new classes)

    def target_of(self, addr: str, port: int) -> tuple[str, int]:
        return (
            self.connect_address if self.connect_address is not None else addr,
            self.connect_port if self.connect_port is not None else port,
        )


def bytes_kind(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """A string sent or expected on the wire, as UTF-8 bytes (may be empty)."""
    v = r.get_str(tbl, key, path, nonempty=False, nul_ok=True)  # a payload may hold NUL
    return default if v is None else v.encode("utf-8")


# --- parsing -------------------------------------------------------------------------------------


def check_keys() -> dict[str, tuple[str, ...]]:
    """type -> the key names it takes (imports every check type: for errors, docs and tests)."""
    return {t: names(check_class(t).rows(t)) for t in CHECK_TYPES}


_elsewhere: dict[str, dict[str, str]] = {}


def _check_elsewhere(ctype: str) -> dict[str, str]:
    """For a key of another check type: which types have it (computed on the first such error)."""
    if not _elsewhere:
        ck = check_keys()
        every = sorted({k for ks in ck.values() for k in ks})
        for t, ks in ck.items():
            _elsewhere[t] = {
                k: "only for type " + _quote_list([u for u, us in ck.items() if k in us])
                for k in every
                if k not in ks
            }
    return _elsewhere[ctype]


_keysets: dict[str, frozenset[str]] = {}


def _freeze(v: object) -> object:
    """A hashable image of a TOML value that keeps types apart (true is not 1, 1.0 is not 1)."""
    if isinstance(v, dict):
        return ("t", tuple((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return ("a", tuple(_freeze(x) for x in v))
    return (type(v), v)


def parse_check(r: Reader, c: object, path: str) -> CheckConfig | None:
    """A check table -> CheckConfig. The same table written on many servers is parsed once
    (a table with errors is parsed again each time so every error names its own path)."""
    key = _freeze(c)
    hit = r.check_cache.get(key)
    if hit is not None:
        return hit
    n = len(r.errors)
    out = _parse_check_table(r, c, path)
    if out is not None and len(r.errors) == n:
        r.check_cache[key] = out
    return out


def _parse_check_table(r: Reader, c: object, path: str) -> CheckConfig | None:
    if not isinstance(c, dict):
        r.err(path, f'must be a table such as {{ type = "tcp" }}, got {_tname(c)}')
        return None
    ctype = c.get("type")
    if ctype is None:
        r.err(_p(path, "type"), f"missing: one of {_quote_list(CHECK_TYPES)}")
        return None
    ctype = r.choice(c, "type", path, CHECK_TYPES)
    if ctype is None:
        return None
    cls = check_class(ctype)
    rows = cls.rows(ctype)
    keyset = _keysets.get(ctype)
    if keyset is None:
        keyset = _keysets[ctype] = frozenset(names(rows))
    if not keyset.issuperset(c):
        r.keys(c, path, names(rows), _check_elsewhere(ctype))
    return cls.build(r, c, path, ctype, read_rows(r, c, path, rows))


def parse_checks(r: Reader, tbl: Table, path: str) -> tuple[CheckConfig, ...] | None:
    """``check`` of a table as a tuple (one table or a list of tables); None if not set. An inherited
    check is parsed once where it is written, so its errors are reported once, at that place."""
    v = tbl.get("check")
    if v is None:
        return None
    p = _p(path, "check")
    if isinstance(v, dict):
        c = parse_check(r, v, p)
        return (c,) if c else ()
    if not isinstance(v, list):
        r.err(p, f"must be a table or a list of tables, got {_tname(v)} {_show(v)}")
        return ()
    out = []
    for i, item in enumerate(v):
        c = parse_check(r, item, _p(p, i))
        if c is not None:
            out.append(c)
    return tuple(out)
