"""Script check: run ``argv`` (never through a shell), exit 0 = up, anything else = down.

The script runs in its own session (so its own process group), with stdin/stdout/stderr on
/dev/null, no inherited descriptors (close_fds), optionally as ``user``/``group``, and with the
target in the environment (LVSD_CHECK_ADDR, LVSD_CHECK_PORT). At the timeout the whole process group
is SIGKILLed and the child is reaped by asyncio's child watcher: no zombie, no leaked descriptor.
``dynamic_weight`` maps the exit status as keepalived's misc_dynamic (lvsd.core.health.dynamic_weight);
a script killed by a signal or timed out is down, never a weight.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

from ..core.health import dynamic_weight
from .base import LOCAL_ERRNOS, Checker


class ScriptChecker(Checker):
    """script: argv, timeout, user/group, dynamic_weight."""

    kind = "script"

    def __init__(self, spec, addr, port, loop, done):  # type: ignore[no-untyped-def]
        super().__init__(spec, addr, port, loop, done)
        if not spec.argv:
            raise ValueError("script check needs argv")
        env = dict(os.environ)
        env["LVSD_CHECK_ADDR"] = self.addr
        env["LVSD_CHECK_PORT"] = str(self.port)
        self.env = env
        self.task: asyncio.Task[None] | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.name = os.path.basename(spec.argv[0])

    def start(self) -> None:
        self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        spec = self.spec
        kw: dict[str, object] = {}
        if spec.user:
            kw["user"] = spec.user
        if spec.group:
            kw["group"] = spec.group
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True, env=self.env, **kw,
            )
        except asyncio.CancelledError:
            raise
        except (OSError, ValueError, KeyError) as e:
            self.task = None
            local = isinstance(e, OSError) and e.errno in LOCAL_ERRNOS  # fork failed: no verdict
            self.done(None if local else False,
                      f"script {self.name}: cannot run: {getattr(e, 'strerror', None) or e}", None)
            return
        self.proc = proc
        try:
            rc = await proc.wait()
        except asyncio.CancelledError:
            self._kill(proc)
            raise
        self.proc = None
        self.task = None
        # leftovers of a script that exited but left children behind in its group: kill them too
        self._kill_group(proc.pid)
        if rc < 0:
            self.done(False, f"script {self.name} killed by signal {-rc}", None)
        elif spec.dynamic_weight:
            ok, weight = dynamic_weight(rc)
            detail = f"script {self.name} exit {rc}" + (f" -> weight {weight}" if weight is not None else "")
            self.done(ok, detail, weight)
        else:
            self.done(rc == 0, f"script {self.name} exit {rc}", None)

    @staticmethod
    def _kill_group(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _kill(self, proc: asyncio.subprocess.Process) -> None:
        """Kill the script's whole process group; asyncio's child watcher reaps the child."""
        if proc.returncode is None:
            self._kill_group(proc.pid)
            try:
                proc.kill()
            except ProcessLookupError:
                pass

    def cancel(self) -> str:
        proc, task = self.proc, self.task
        self.proc = self.task = None
        if proc is not None:
            self._kill(proc)
            # reap in the background so the transport closes and no zombie stays
            t = self.loop.create_task(_reap(proc))
            _reapers.add(t)
            t.add_done_callback(_reapers.discard)
        if task is not None:
            task.cancel()
        return f"script {self.name} timed out after {self.spec.timeout:g}s (killed)"


_reapers: set[asyncio.Task[None]] = set()


async def wait_reaped(timeout: float = 5.0) -> None:
    """Wait (bounded) until every killed script has been reaped; called when checks stop."""
    pending = [t for t in _reapers if not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        pass
