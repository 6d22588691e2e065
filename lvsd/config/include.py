"""``include = ["/etc/lvsd/conf.d/*.toml"]``: services from other files, one file per service if
configuration management likes it that way.

The main file's top-level ``include`` is a glob pattern or a list of them, relative to the main
file's directory; each pattern's matches are read in sorted order (a pattern that matches nothing
adds nothing; a path without glob characters must exist). An included file holds ``[[service]]``
tables only (no ``include`` of its own, no other section). Its services are appended to the main
file's, in that order, and validated as one config, so every rule across services holds across
files; an error in an included service names its file and its index there. A service defined
twice (the same ``name``, or the same ``vip``/``fwmark``) across files is an error naming both
files. Bounded as one file is: all files together at most ``MAX_CONFIG_BYTES``, at most
``MAX_INCLUDE_FILES`` files.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable
from typing import Any

from .reader import ConfigError, Table, _tname

#: the most files an include list may bring in (one per service is the expected use)
MAX_INCLUDE_FILES = 10_000


class Origins:
    """Which file each merged service came from, to name it in error lines."""

    def __init__(self) -> None:
        #: merged index -> (file, index in that file); None for the main file's services
        self.by_index: list[tuple[str, int] | None] = []
        #: service name -> file, for the included services that set a name
        self.by_name: dict[str, str] = {}

    def rewrite(self, line: str) -> str:
        """``service[web].x: ...`` -> ``FILE: service[web].x: ...`` for an included service
        (an index is renumbered to the one in its file)."""
        m = re.match(r"service\[([^\]]*)\]", line)
        if m is None:
            return line
        ref = m.group(1)
        if ref.isdigit() and int(ref) < len(self.by_index):
            origin = self.by_index[int(ref)]
            if origin is None:
                return line
            return f"{origin[0]}: service[{origin[1]}]{line[m.end():]}"
        f = self.by_name.get(ref)
        return f"{f}: {line}" if f is not None else line


def _patterns(v: Any) -> list[str] | None:
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(x, str) and x for x in v):
        return list(v)
    return None


def _identity(st: Table) -> list[str]:
    """What makes two service tables the same service: its name, its vip (with protocol), its fwmark."""
    out = []
    if isinstance(st.get("name"), str):
        out.append(f"name {st['name']!r}")
    if isinstance(st.get("vip"), str):
        proto = st.get("protocol", "tcp")
        out.append(f"vip {proto}/{st['vip']}")
    if isinstance(st.get("fwmark"), int):
        out.append(f"fwmark {st['fwmark']}")
    return out


def expand(
    data: Table,
    source: str,
    read: Callable[[str, int], bytes],
    parse: Callable[[str, str], Table],
    budget: int,
) -> tuple[Table, Origins]:
    """The document with the included files' services appended (a new dict: ``data`` is not
    changed), and where each came from. ``read(path, limit)`` reads a file, ``parse(text, path)``
    parses TOML; both raise ConfigError. ``budget``: the bytes all included files may take."""
    origins = Origins()
    raw = data.get("include")
    pats = _patterns(raw)
    if pats is None:
        raise ConfigError([f'include: must be a path pattern or a list of them (e.g. ["conf.d/*.toml"]), got {_tname(raw)}'])
    base = os.path.dirname(source) if source and not source.startswith("<") else ""
    files: list[str] = []
    errors: list[str] = []
    for pat in pats:
        full = os.path.join(base, pat) if base else pat
        if glob.has_magic(full):
            files.extend(sorted(glob.glob(full)))
        elif not os.path.exists(full):
            errors.append(f"include: {full}: no such file")
        else:
            files.append(full)
    files = list(dict.fromkeys(files))
    if len(files) > MAX_INCLUDE_FILES:
        raise ConfigError([f"include: {len(files)} files, more than {MAX_INCLUDE_FILES}"])
    main_services = data.get("service", [])
    if not isinstance(main_services, list):
        main_services = []  # build_config reports it
    services: list[Any] = list(main_services)
    origins.by_index = [None] * len(services)
    seen: dict[str, str] = {}
    for st in main_services:
        if isinstance(st, dict):
            for ident in _identity(st):
                seen.setdefault(ident, source)
    for f in files:
        try:
            blob = read(f, budget)
        except ConfigError as e:
            errors.extend(e.errors)
            continue
        budget -= len(blob)
        try:
            text = blob.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            errors.append(f"{f}: not UTF-8 (byte {e.start})")
            continue
        try:
            doc = parse(text, f)
        except ConfigError as e:
            errors.extend(e.errors)
            continue
        other = [k for k in doc if k != "service"]
        if other:
            errors.extend(f"{f}: {k}: not allowed in an included file (only [[service]] tables)" for k in other)
        svcs = doc.get("service", [])
        if not isinstance(svcs, list):
            errors.append(f"{f}: service: must be an array of tables ([[service]]), got {_tname(svcs)}")
            continue
        for i, st in enumerate(svcs):
            if isinstance(st, dict):
                for ident in _identity(st):
                    first = seen.get(ident)
                    if first is not None:
                        errors.append(f"{f}: service[{i}]: {ident} defined twice: also in {first}")
                    else:
                        seen[ident] = f
                if isinstance(st.get("name"), str):
                    origins.by_name.setdefault(st["name"], f)
            origins.by_index.append((f, i))
            services.append(st)
    if errors:
        raise ConfigError(list(dict.fromkeys(errors)))
    out = {k: v for k, v in data.items() if k != "include"}
    out["service"] = services
    return out, origins
