"""SIGHUP before the event loop runs: caught from lvsd's first line and queued, never fatal.

``systemctl reload`` (or a user) may send SIGHUP while lvsd still loads its config and opens the
backend; its default action would end the process (exit 129). ``install`` catches it as soon as
``lvsd.daemon.main`` runs, and the daemon's loop ``take``s the queued request and reloads once
started. Stdlib only: ``lvsd --check-config`` imports it too.
"""

from __future__ import annotations

import signal
from types import FrameType

_pending = False


def _on_hup(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True


def install() -> None:
    """Catch SIGHUP from now on (until the event loop's own handler replaces this one)."""
    signal.signal(signal.SIGHUP, _on_hup)


def take() -> bool:
    """Whether a SIGHUP arrived since the last call (and forget it)."""
    global _pending
    pending, _pending = _pending, False
    return pending
