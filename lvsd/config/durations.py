"""Durations as the config writes them: ``"500ms"``, ``"2s"``, ``"1m30s"``, ``"1h"`` or a number of seconds."""

from __future__ import annotations

import json
import math
import re

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(us|ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:us|ms|s|m|h|d))+")


def parse_duration(value: object) -> float:
    """Seconds from a number (seconds) or a string of number+unit parts (us, ms, s, m, h, d).

    Raises ValueError with a one-line reason for anything else (negative, NaN, bool, no unit).
    A value too large for a float is ``inf``: the caller's range check refuses it.
    """
    if isinstance(value, bool):
        raise ValueError(f'must be a duration such as "2s" or "500ms", got {_show(value)}')
    if isinstance(value, int | float):
        if isinstance(value, int) and value.bit_length() > 1000:  # float() would overflow: inf
            if value < 0:
                raise ValueError(f"must be a non-negative duration, got {show_number(value)}")
            return math.inf  # above every key's range: the caller says "must be at most ..."
        f = float(value)
        if not math.isfinite(f) or f < 0:
            raise ValueError(f"must be a non-negative duration, got {value!r}")
        return f
    if not isinstance(value, str):
        raise ValueError(f'must be a duration such as "2s" or "500ms", got {type(value).__name__}')
    text = value.strip().replace(" ", "")
    if not text or not _WHOLE.fullmatch(text):
        if text and _NUMBER.fullmatch(text):
            raise ValueError(
                f"needs a unit (us, ms, s, m, h, d), or write a bare number of seconds: got {_show(value)}"
            )
        raise ValueError(f'must be a duration such as "2s", "500ms" or "1m30s", got {_show(value)}')
    total = 0.0
    for num, unit in _PART.findall(text):
        total += float(num) * _UNITS[unit]
    return total  # "999...9s" is inf: above every key's range (the caller says so)


#: integers longer than this are shown by their length (Python refuses str() above 4300 digits)
_SHOW_DIGITS = 40


def show_number(v: int | float) -> str:
    """A number as a message shows it: a very long integer as its sign and digit count."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > _SHOW_DIGITS * 3:
        digits = int(v.bit_length() * 0.30103) + 1
        return f"{'a negative' if v < 0 else 'an'} integer of about {digits} digits"
    return repr(v)


def _show(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, int | float):
        return show_number(v)
    return repr(v)


_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


def format_duration(seconds: float) -> str:
    """Short text that parse_duration reads back as ``seconds`` (for messages and dumps)."""

    def num(x: float) -> str:
        return format(x, ".6f").rstrip("0").rstrip(".")

    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{num(seconds * 1000)}ms"
    if seconds == int(seconds):
        s = int(seconds)
        if s % 3600 == 0:
            return f"{s // 3600}h"
        if s % 60 == 0:
            return f"{s // 60}m"
        return f"{s}s"
    return f"{num(seconds)}s"
