"""The importers' neutral model: services, servers and checks as plain dicts of lvsd keys, plus
the notes (what could not be translated) and the errors (what makes the input invalid)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class MigrateError(Exception):
    """The input is invalid (the source program would refuse it too): ``file:line: what``."""


@dataclass
class Where:
    """A place in an input file (for notes and errors)."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Notes:
    """What could not be translated, each once per place; the same message is shown at most
    ``per_message`` times and then counted, so a 150-service file stays readable."""

    per_message: int = 5
    lines: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def add(self, where: Where | None, msg: str) -> None:
        """Record one note about ``where``."""
        line = f"{where}: {msg}" if where else msg
        if line in self.seen:
            return  # the same place again (a virtual_server_group expands one block many times)
        self.seen.add(line)
        n = self.counts.get(msg, 0) + 1
        self.counts[msg] = n
        if n <= self.per_message:
            self.lines.append(line)

    def render(self) -> list[str]:
        """Every note, then how many were left out per message."""
        out = list(self.lines)
        for msg, n in self.counts.items():
            if n > self.per_message:
                out.append(f"(and {n - self.per_message} more: {msg})")
        return out


@dataclass
class Imported:
    """An lvsd config as TOML-ready values: top-level sections and the list of services. Each
    service may carry ``_comment`` (where it came from), servers likewise."""

    source: str
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    services: list[dict[str, Any]] = field(default_factory=list)
    notes: Notes = field(default_factory=Notes)
