"""Run an operator's hook (notify_up, quorum_down, notify_master, ...) without ever blocking lvsd.

One runner for every hook: argv only (never a shell), its own process group so a timeout kills
whatever it started, stdin closed, output kept only to report its last line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from contextlib import suppress

log = logging.getLogger("lvsd")


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


class Hooks:
    """The daemon's background hooks (notify_up/down, quorum_up/down): started without waiting,
    each killed after ``timeout`` seconds, its outcome logged; ``drain`` lets running ones finish."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout  # daemon.hook_timeout; a reload updates it
        self.tasks: set[asyncio.Task[None]] = set()

    def run(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        """Start argv in the background (nothing if empty); never blocks the caller."""
        if not argv:
            return
        task = asyncio.get_running_loop().create_task(self._run(argv, env))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        result = await run_hook(argv, env, self.timeout)
        if result.startswith("cannot run"):
            log.error("hook %s", result)
        elif result != "ok":
            log.warning("hook %s (%s): %s", argv[0], env.get("LVSD_EVENT", ""), result)

    async def drain(self) -> None:
        """Let running hooks finish (each within its own timeout), then cancel any left."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=self.timeout + 1)
        for t in list(self.tasks):
            t.cancel()
