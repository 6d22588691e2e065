"""What the import tests share: validating an imported config with the real loader.

``PENDING_KEYS`` are keys the importer writes that came with issue 12's runtime half
(``sorry_mode``, ``sorry_inhibit``, ``[ha] auth_pass``): an "unknown key" error about exactly these
is reported apart (``pending``), so a checkout where they are missing says so plainly; the tests
require ``pending == []``."""

from __future__ import annotations

import os
import tempfile

from lvsd.config import ConfigError, load_config

PENDING_KEYS = ("sorry_mode", "sorry_inhibit", "auth_pass")


def validate(text: str) -> tuple[list[str], list[str]]:
    """(errors, pending) of an lvsd config text, files and users not looked up (the scripts a
    keepalived.conf names are not on this machine)."""
    fd, path = tempfile.mkstemp(suffix=".toml")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            load_config(path, check_files=False)
        except ConfigError as e:
            errors = list(e.errors)
        else:
            errors = []
    finally:
        os.unlink(path)
    pending = [e for e in errors if any(f".{k}: unknown key" in e or e.startswith(f"{k}: unknown key")
                                        for k in PENDING_KEYS)]
    return [e for e in errors if e not in pending], pending
