"""The key table: one ``Key`` row per config key (name, kind, default, level, one-line doc).

A row's kind reads and validates its value through the ``Reader`` (with today's messages) and
returns the row's default when the key is absent or wrong. ``read_table`` reads a table by its
rows: every key that is no row is reported (with a did-you-mean), then every row's value in row
order (``read_rows``). A ``Layer`` reads only the keys a table sets (what a server inherits from
its service and ``[defaults]``). Cross-field rules stay plain code next to the rows that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .reader import Reader, Table

#: read(reader, table, key, path, default, values read so far) -> the value (default if absent/bad)
Kind = Callable[[Reader, Table, str, str, Any, dict[str, Any]], Any]

# --- levels: which tables may set a key, and how it inherits ------------------------------------
#: only the table the row belongs to (a section, a check, a sub-table)
OWN = "own"
#: a server only
SERVER = "server"
#: a service only
SERVICE = "service"
#: a service or ``[defaults]``: service <- [defaults] <- built-in
SERVICE_WIDE = "service, [defaults]"
#: a server, its service or ``[defaults]``: server <- service <- [defaults] <- built-in
SERVER_WIDE = "server, service, [defaults]"


@dataclass(frozen=True, slots=True)
class Key:
    """One config key: how to read it, its default, where it may be set, what it means."""

    name: str
    kind: Kind
    default: Any = None
    level: str = OWN
    doc: str = ""


def names(rows: Sequence[Key]) -> tuple[str, ...]:
    """The key names of ``rows``, in order."""
    return tuple(r.name for r in rows)


def row(rows: Sequence[Key], name: str) -> Key:
    """The row called ``name`` (for a dataclass default stated by its row)."""
    for r in rows:
        if r.name == name:
            return r
    raise KeyError(name)


def pick(rows: Sequence[Key], *wanted: str) -> tuple[Key, ...]:
    """The rows called ``wanted``, in that order (a reader that interleaves cross-field rules)."""
    return tuple(row(rows, n) for n in wanted)


def read_table(
    r: Reader, tbl: Table, path: str, rows: Sequence[Key], elsewhere: dict[str, str] | None = None
) -> dict[str, Any]:
    """A table read by its rows: every key not a row is reported (with a did-you-mean, or where
    it belongs per ``elsewhere``), then every row's value as ``read_rows``."""
    r.keys(tbl, path, names(rows), elsewhere)
    return read_rows(r, tbl, path, rows)


def read_rows(
    r: Reader, tbl: Table, path: str, rows: Sequence[Key], vals: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every row's value (its default when absent or invalid), in row order: the order errors appear."""
    out: dict[str, Any] = {} if vals is None else vals
    for k in rows:
        out[k.name] = k.kind(r, tbl, k.name, path, k.default, out)
    return out


#: the default a layer reads with: a kind returns it for an invalid value (None may be a value)
UNSET: Any = object()


class Layer:
    """Rows read as an inheritance layer: only the keys a table sets, valid ones kept (absent
    keys inherit from the layer below). Name/kind pairs are kept apart: this runs per server."""

    __slots__ = ("rows", "_pairs")

    def __init__(self, rows: Sequence[Key]) -> None:
        self.rows = tuple(rows)
        self._pairs = tuple((k.name, k.kind) for k in rows)

    def read(self, r: Reader, tbl: Table, path: str) -> dict[str, Any]:
        """The valid values of the rows ``tbl`` sets, in row order."""
        out: dict[str, Any] = {}
        for name, kind in self._pairs:
            if name in tbl:
                v = kind(r, tbl, name, path, UNSET, out)
                if v is not UNSET:
                    out[name] = v
        return out


# --- kinds -----------------------------------------------------------------------------------------


# Plain slotted classes and functions, not dataclasses: building a dataclass costs ~0.5 ms of
# import, and ``lvsd --check-config`` (systemd's ExecStartPre) imports this module.


class Int:
    """An integer lo..hi."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi

    def __call__(self, r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
        v = tbl.get(key)
        if v.__class__ is int and self.lo <= v <= self.hi:  # the common case, without the getter's call
            return v
        return r.get_int(tbl, key, path, self.lo, self.hi, default)


class Str:
    """A string (non-empty unless told)."""

    __slots__ = ("nonempty",)

    def __init__(self, nonempty: bool = True) -> None:
        self.nonempty = nonempty

    def __call__(self, r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
        return r.get_str(tbl, key, path, default, self.nonempty)


class Choice:
    """One of ``choices`` (a did-you-mean for a near miss)."""

    __slots__ = ("choices",)

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def __call__(self, r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
        v = tbl.get(key)
        if v.__class__ is str and v in self.choices:
            return v
        return r.choice(tbl, key, path, self.choices, default)


class Duration:
    """A duration lo..hi seconds ("2s", "500ms", a number); ``whole``: whole seconds, as an int."""

    __slots__ = ("lo", "hi", "whole")

    def __init__(self, lo: float = 0.0, hi: float = 1e9, whole: bool = False) -> None:
        self.lo, self.hi, self.whole = lo, hi, whole

    def __call__(self, r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
        return r.duration(tbl, key, path, default, lo=self.lo, whole=self.whole, hi=self.hi)


def boolean(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """true or false."""
    v = tbl.get(key)
    if v is True or v is False:
        return v
    return r.get_bool(tbl, key, path, default)


def argv(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """A command as a list of strings (no shell); an absolute argv[0] must be executable."""
    return r.argv(tbl, key, path, default)


def file(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """A path to a regular file (checked when files are checked)."""
    v = r.file(tbl, key, path)
    return default if v is None else v


def by_code(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """A key read by its table's own code (its rules span several keys): its row names and
    documents it."""
    raise AssertionError(f"{path}.{key} is read by its table's code")


INT = Int
STR = Str()
BOOL = boolean
ARGV = argv
FILE = file
CODE = by_code
