"""Helpers both importers share: addresses, durations, argv from a command string."""

from __future__ import annotations

import ipaddress
import re
import shlex

from .model import MigrateError, Where

#: characters that make a command string need a shell (anything else is split like a shell would)
_SHELL_SYNTAX = re.compile(r"[|&;<>()$`\\*?\[\]{}~\n]")


def ip(text: str, where: Where, what: str = "address") -> str:
    """A normalized IP literal, or MigrateError naming the line."""
    try:
        return str(ipaddress.ip_address(text.split("%", 1)[0] if "%" in text else text))
    except ValueError:
        raise MigrateError(f"{where}: {what} {text!r} is not an IP address") from None


def hostport(addr: str, port: int) -> str:
    """lvsd's ``"addr:port"`` / ``"[v6]:port"``."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def port(text: str, where: Where, what: str = "port") -> int:
    """A port 0..65535."""
    if not text.isdigit() or int(text) > 65535:
        raise MigrateError(f"{where}: {what} {text!r} is not a port 0..65535")
    return int(text)


def integer(text: str, where: Where, what: str, lo: int = 0, hi: int = 2**31 - 1) -> int:
    """An integer within [lo, hi]."""
    try:
        v = int(text)
    except ValueError:
        raise MigrateError(f"{where}: {what} {text!r} is not an integer") from None
    if not lo <= v <= hi:
        raise MigrateError(f"{where}: {what} must be {lo}..{hi}, got {v}")
    return v


def seconds(text: str, where: Where, what: str) -> float:
    """A keepalived/ldirectord timer: seconds, fractions allowed."""
    try:
        v = float(text)
    except ValueError:
        raise MigrateError(f"{where}: {what} {text!r} is not a number of seconds") from None
    if not 0 <= v <= 86400 * 365:
        raise MigrateError(f"{where}: {what} must be a positive number of seconds, got {text}")
    return v


def duration(v: float) -> str:
    """An lvsd duration string: "5s", "500ms", "1m30s"."""
    if v != int(v):
        ms = round(v * 1000)
        return f"{ms}ms" if ms % 1000 else f"{ms // 1000}s"
    n = int(v)
    if n and n % 3600 == 0:
        return f"{n // 3600}h"
    if n >= 60 and n % 60 == 0:
        return f"{n // 60}m"
    return f"{n}s"


def argv_of(command: str, where: Where, notes_add: object) -> list[str]:
    """A command string as an argv list: split when it has no shell syntax, else run through
    ``/bin/sh -c`` (with a note: lvsd never uses a shell by itself)."""
    if not command.strip():
        raise MigrateError(f"{where}: empty command")
    if _SHELL_SYNTAX.search(command):
        if callable(notes_add):
            notes_add(where, "command has shell syntax: run through /bin/sh -c (lvsd runs argv lists without a shell)")
        return ["/bin/sh", "-c", command]
    try:
        return shlex.split(command)
    except ValueError:
        return ["/bin/sh", "-c", command]
