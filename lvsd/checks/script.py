"""Script check (``type = "script"``): its config and its checker. Run ``argv`` (never through a shell), exit 0 = up, anything else = down.

The script runs in its own session (so its own process group), with stdin/stdout/stderr on
/dev/null, no inherited descriptors (close_fds), optionally as ``user``/``group``, and with the
target in the environment (LVSD_CHECK_ADDR, LVSD_CHECK_PORT). At the timeout the whole process group
is SIGKILLed and the child is reaped by asyncio's child watcher: no zombie, no leaked descriptor.
``dynamic_weight`` maps the exit status as keepalived's misc_dynamic (lvsd.core.health.dynamic_weight);
a script killed by a signal or timed out is down, never a weight.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from lvsd.config.checks import CheckConfig
from lvsd.config.keys import BOOL, Key
from lvsd.config.model import Argv
from lvsd.config.reader import Reader, Table, _p, _show

from .base import LOCAL_ERRNOS, Checker

if TYPE_CHECKING:  # asyncio and subprocess are imported when a script first runs, not by the loader
    import asyncio

    from .base import Done


def _argv(r: Reader, tbl: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
    argv = r.argv(tbl, key, path)
    if argv is None and key not in tbl:
        r.err(_p(path, key), 'missing: the command to run, e.g. ["/usr/local/bin/check", "--quick"]')
    return argv or default


def _principal(lookup: Callable[[str], object]) -> Any:
    """A user or group: a name that must exist (when files are checked), or a numeric id as an int
    (as subprocess takes it: a digit string would be looked up as a name)."""

    def read(r: Reader, c: Table, key: str, path: str, default: Any, vals: dict[str, Any]) -> Any:
        v = c.get(key)
        if v is None:
            return None
        if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) <= 12:  # "²" is no id
            v = int(v)
        if isinstance(v, int) and not isinstance(v, bool):
            if not 0 <= v <= 0xFFFFFFFE:
                r.err(_p(path, key), f"must be a {key} name or an id 0..4294967294, got {_show(v)}")
                return None
            return v
        name = r.get_str(c, key, path)
        if name is None:
            return None
        if r.check_files:
            try:
                lookup(name)
            except KeyError:
                r.err(_p(path, key), f"no such {key} {_show(name)}")
        return name

    return read


@dataclass(frozen=True, slots=True)
class ScriptCheck(CheckConfig):
    """``type = "script"``: run ``argv`` (no shell) as ``user``/``group``; exit 0 = up.
    ``dynamic_weight``: exit status 2..255 sets the weight to status - 2 (keepalived misc_dynamic)."""

    KEYS: ClassVar[tuple[Key, ...]] = (
        Key("argv", _argv, (), doc="the command, a list of strings run without a shell (required)"),
        Key("user", _principal(pwd.getpwnam), None, doc="run as this user (name or id; default lvsd's)"),
        Key("group", _principal(grp.getgrnam), None, doc="run as this group (name or id)"),
        Key("dynamic_weight", BOOL, False, doc="exit status 2..255 sets the weight to status - 2"),
    )

    type: str = "script"
    argv: Argv = KEYS[0].default
    user: str | int | None = KEYS[1].default  # a name, or a numeric id as an int (None = lvsd's own)
    group: str | int | None = KEYS[2].default
    dynamic_weight: bool = KEYS[3].default

    def checker(self, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done) -> Checker:
        return ScriptChecker(self, addr, port, loop, done)


class ScriptChecker(Checker):
    """script: argv, timeout, user/group, dynamic_weight."""

    kind = "script"
    cfg: ScriptCheck

    def __init__(self, cfg: ScriptCheck, addr: str, port: int, loop: asyncio.AbstractEventLoop, done: Done):
        super().__init__(cfg, addr, port, loop, done)
        if not cfg.argv:
            raise ValueError("script check needs argv")
        env = dict(os.environ)
        env["LVSD_CHECK_ADDR"] = self.addr
        env["LVSD_CHECK_PORT"] = str(self.port)
        self.env = env
        self.task: asyncio.Task[None] | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.name = os.path.basename(cfg.argv[0])

    def start(self) -> None:
        self.task = self.loop.create_task(self._run())

    async def _run(self) -> None:
        import asyncio
        import subprocess

        cfg = self.cfg
        try:
            proc = await asyncio.create_subprocess_exec(
                *cfg.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True, env=self.env, user=cfg.user, group=cfg.group,
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
        elif cfg.dynamic_weight:
            from ..core.health import dynamic_weight

            ok, weight = dynamic_weight(rc)
            detail = f"script {self.name} exit {rc}" + (f" -> weight {weight}" if weight is not None else "")
            self.done(ok, detail, weight)
        else:
            self.done(rc == 0, f"script {self.name} exit {rc}", None)

    @staticmethod
    def _kill_group(pgid: int) -> None:
        import signal

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
        return f"script {self.name} timed out after {self.cfg.timeout:g}s (killed)"


_reapers: set[asyncio.Task[None]] = set()


async def wait_reaped(timeout: float = 5.0) -> None:
    """Wait (bounded) until every killed script has been reaped; called when checks stop."""
    import asyncio

    pending = [t for t in _reapers if not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    import asyncio

    try:
        await asyncio.wait_for(proc.wait(), 5)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        pass
