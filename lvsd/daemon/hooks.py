"""Run an operator's hook (notify_up, quorum_down, notify_master, ...) without ever blocking lvsd.

One runner for every hook: argv only (never a shell), its own process group so a timeout kills
whatever it started, stdin closed, output kept only to report its last line.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence
from contextlib import suppress


async def run_hook(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> str:
    """Run argv with env added to lvsd's own; return "ok", "exit N[: last line]",
    "killed after T s" or "cannot run PROG: why". Cancelling it kills the hook's group."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed whole at the timeout
        )
    except OSError as e:
        return f"cannot run {argv[0]}: {e.strerror or e}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        _kill_group(proc.pid)  # and the children still holding its output pipe
        await proc.wait()
        return f"killed after {timeout:g} s"
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        await proc.wait()
        raise
    if proc.returncode == 0:
        return "ok"
    lines = out.decode(errors="replace").strip().splitlines()
    return f"exit {proc.returncode}" + (f": {lines[-1][:200]}" if lines else "")


def _kill_group(pid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
