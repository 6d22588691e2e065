"""Check types: type name -> "module:ConfigClass". One line per type; nothing else to register.

The config class (a frozen ``lvsd.config.checks.CheckConfig`` subclass) declares the type's keys,
defaults and validation and builds its Checker. The loader, the manager and the docs test all go
through here; a type's module is imported only when a config uses it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lvsd.config.checks import CheckConfig

REGISTRY = {
    "tcp": "lvsd.checks.tcp:TCPCheck",
    "http": "lvsd.checks.http:HTTPCheck",
    "https": "lvsd.checks.http:HTTPCheck",
    "script": "lvsd.checks.script:ScriptCheck",
    "udp": "lvsd.checks.udp:UDPCheck",
    "dns": "lvsd.checks.dns:DNSCheck",
    "file": "lvsd.checks.file:FileCheck",
}

CHECK_TYPES = tuple(REGISTRY)

_classes: dict[str, type[CheckConfig]] = {}


def check_class(ctype: str) -> type[CheckConfig]:
    """The config class of check type ``ctype`` (its module imported on first use)."""
    cls = _classes.get(ctype)
    if cls is None:
        module, _, name = REGISTRY[ctype].partition(":")
        cls = _classes[ctype] = getattr(importlib.import_module(module), name)
    return cls
