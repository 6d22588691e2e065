"""Run an operator's hook (notify_up, quorum_down, notify_master, ...) without ever blocking lvsd.

One runner for every hook: argv only (never a shell), its own process group so a timeout kills
whatever it started, stdin closed, output read to its end but only its last HOOK_OUTPUT_MAX
bytes kept (a hook printing without end costs no memory), its last line reported escaped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from contextlib import suppress

from lvsd.daemon.limits import HOOK_LINE_MAX, HOOK_OUTPUT_MAX

log = logging.getLogger("lvsd")


async def run_hook(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> str:
    """Run argv with env added to lvsd's own; return "ok", "exit N[: last line]",
    "killed after T s" or "cannot run PROG: why". Cancelling it kills the hook's group.

    The output goes to a pipe of lvsd's own (not asyncio's: its ``wait()`` waits for the pipes
    to close, so a killed hook whose output was no longer read, or a child that escaped its
    group, could hold lvsd's task for ever): read as it comes, its tail kept, closed at the end."""
    rfd, wfd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=wfd,
            stderr=wfd,
            start_new_session=True,  # its own process group, killed whole at the timeout
        )
    except OSError as e:
        os.close(rfd)
        return f"cannot run {argv[0]}: {e.strerror or e}"
    finally:
        os.close(wfd)
    tail = _Tail(rfd, HOOK_OUTPUT_MAX)
    try:
        await asyncio.wait_for(asyncio.gather(tail.eof, proc.wait()), timeout)
    except asyncio.TimeoutError:
        _kill_group(proc.pid)  # and the children still holding its output pipe
        await proc.wait()
        return f"killed after {timeout:g} s"
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        await proc.wait()
        raise
    finally:
        tail.close()
    if proc.returncode == 0:
        return "ok"
    last = last_line(tail.data)
    return f"exit {proc.returncode}" + (f": {last}" if last else "")


class _Tail:
    """Reads a non-blocking pipe from the event loop to its end, keeping its last ``limit`` bytes."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd, self.limit = fd, limit
        self.data = b""
        self.loop = asyncio.get_running_loop()
        self.eof: asyncio.Future[None] = self.loop.create_future()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.loop.remove_reader(self.fd)
            if not self.eof.done():
                self.eof.set_result(None)
            return
        self.data = (self.data + chunk)[-self.limit :]

    def close(self) -> None:
        """Stop reading and close the pipe (a process still writing gets EPIPE)."""
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        if not self.eof.done():
            self.eof.cancel()


def last_line(out: bytes) -> str:
    """The last non-blank line of a hook's output, for the log: control characters escaped
    (a terminal escape or a carriage return cannot rewrite the log), at most HOOK_LINE_MAX
    characters."""
    lines = [ln for ln in out.decode(errors="replace").split("\n") if ln.strip()]
    if not lines:
        return ""
    return escape(lines[-1].strip())[:HOOK_LINE_MAX]


def escape(text: str) -> str:
    """``text`` with every non-printable character shown as its Python escape (\\x1b, \\r, \\u2028)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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
