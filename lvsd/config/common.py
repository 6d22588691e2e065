"""What several config tables share: the hook argv type, a rows' defaults, the interface-name kind."""

from __future__ import annotations

from typing import Any

from lvsd.ipvs.model import IP_VS_IFNAME_MAXLEN

from .keys import Key
from .reader import Reader, Table, _p, _show

#: Argv of a hook: a tuple of strings, run without a shell; () = no hook.
Argv = tuple[str, ...]


def _d(rows: tuple[Key, ...]) -> dict[str, Any]:
    return {k.name: k.default for k in rows}


def _ifname(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    """A network interface name (what fits the kernel's IFNAMSIZ)."""
    v = r.get_str(tbl, key, path, default)
    if v and len(v.encode()) >= IP_VS_IFNAME_MAXLEN:
        r.err(_p(path, key), f"must be at most {IP_VS_IFNAME_MAXLEN - 1} bytes, got {_show(v)}")
    return v
