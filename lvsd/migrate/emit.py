"""The TOML writer for ``lvsd import``: an ``Imported`` model as an lvsd config file.

Written by hand (the standard library reads TOML but does not write it, and the output wants
comments and a layout a person reviews: one ``[[service]]`` per service, one ``[[service.server]]``
per server, checks as a multi-line array of one-line inline tables).
"""

from __future__ import annotations

import math
from typing import Any

from .model import Imported

SECTION_ORDER = ("daemon", "ipvs", "ha", "sync")


def value(v: Any) -> str:
    """A TOML value (strings as basic strings with escapes, tables inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"not a TOML number: {v}")
        return repr(v)
    if isinstance(v, str):
        return string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = [f"{key(k)} = {value(x)}" for k, x in v.items() if not k.startswith("_")]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def string(s: str) -> str:
    """A TOML basic string."""
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def key(k: str) -> str:
    """A bare key when it can be one, else quoted."""
    if k and all(ch.isascii() and (ch.isalnum() or ch in "_-") for ch in k):
        return k
    return string(k)


def _comment(text: str) -> str:
    return "# " + text.replace("\n", " ")


def render(m: Imported, command: str) -> str:
    """The whole file."""
    lines = [
        f"# Imported by `{command}` from {m.source}.",
        "# Review it and the notes printed with it (docs/migration.md lists every difference);",
        "# the source's defaults are written out so that no lvsd default changes the behaviour.",
        "",
    ]
    for name in [*SECTION_ORDER, *(n for n in m.sections if n not in SECTION_ORDER)]:
        sec = m.sections.get(name)
        if not sec:
            continue
        lines.append(f"[{name}]")
        lines.extend(f"{key(k)} = {value(v)}" for k, v in sec.items() if not k.startswith("_"))
        lines.append("")
    for svc in m.services:
        if "_comment" in svc:
            lines.append(_comment(svc["_comment"]))
        lines.append("[[service]]")
        for k, v in svc.items():
            if k.startswith("_") or k == "server":
                continue
            lines.append(f"{key(k)} = {value(v)}")
        for srv in svc.get("server", []):
            lines.append("")
            if "_comment" in srv:
                lines.append("  " + _comment(srv["_comment"]))
            lines.append("  [[service.server]]")
            for k, v in srv.items():
                if k.startswith("_") or k == "check":
                    continue
                lines.append(f"  {key(k)} = {value(v)}")
            checks = srv.get("check")
            if checks:
                lines.append("  check = [")
                lines.extend(f"    {value(ck)}," for ck in checks)
                lines.append("  ]")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
